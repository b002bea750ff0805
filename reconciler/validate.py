"""Validation of desired state: the JSON Schema, then every value against
its property definition and the deal's pipeline.

Every problem is collected as a Finding; nothing stops at the first one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from collections.abc import Mapping as CollectionsMapping
from dataclasses import dataclass
from typing import Any

from reconciler import schema
from reconciler.desired import (
    DesiredDeal,
    DesiredState,
    Document,
    Mapping,
    Node,
    Sequence_,
)
from reconciler.errors import Finding, InvalidInputError, Location
from reconciler.properties import (
    YAML_FLOAT,
    YAML_INT,
    Definitions,
    Pipeline,
    PropertyDefinition,
    Scalar,
    ValueProblem,
    known_type,
    suggest,
    to_wire,
)
from reconciler.snapshot import Snapshot

PipelineMap = CollectionsMapping[str, Pipeline]
# HubSpot record IDs are signed 64-bit integers.
MAX_DEAL_ID = 2**63 - 1
NUMBER_START = frozenset("0123456789+-.")


@dataclass(frozen=True)
class DesiredValue:
    """A checked desired value, ready to diff: the wire string HubSpot gets."""

    deal: str
    property: str
    wire: str
    definition: PropertyDefinition
    location: Location


def validate_state(
    state: DesiredState, definitions: Definitions, snapshot: Snapshot | None = None
) -> list[DesiredValue]:
    """Check everything; return the values or raise with every problem found."""
    findings = list(state.problems)
    for document in state.documents:
        if document.readable:
            findings.extend(check_schema(document))
    values: list[DesiredValue] = []
    for deal in state.ordered_deals():
        deal_values, problems = check_deal(deal, definitions, snapshot)
        values.extend(deal_values)
        findings.extend(problems)
    if findings:
        raise InvalidInputError(findings)
    return values


# --- the schema ----------------------------------------------------------------


def check_schema(document: Document) -> list[Finding]:
    """Schema violations of one file, each placed at the value at fault."""
    if document.root is None or (
        isinstance(document.root, Scalar) and document.root.is_null()
    ):
        location = Location(document.path, 1, 1)
        return [
            Finding(location, "the file is empty; it needs a deals mapping", "schema")
        ]
    findings = []
    for problem in schema.iter_desired_problems(as_json(document.root)):
        path = problem.path
        node = _node_at(document.root, path, problem.key)
        deal = str(path[1]) if len(path) > 1 and path[0] == "deals" else None
        prop = str(path[2]) if len(path) > 2 else None
        message = _schema_message(problem, node)
        findings.append(Finding(node.location, message, "schema", deal, prop))
    return findings


def _schema_message(problem: schema.SchemaProblem, node: Node) -> str:
    depth = len(problem.path)
    if problem.rule == "propertyNames" and problem.path == ("deals",):
        return f"deal IDs are whole numbers: {problem.key!r} is not one"
    if problem.rule == "additionalProperties" and depth == 0:
        return (
            f"unexpected top-level key {problem.key!r}; a file holds"
            " 'version' and 'deals'"
        )
    if problem.path == ("version",):
        return "version must be 1"
    if depth == 0 or problem.path == ("deals",):
        return "a desired-state file is a mapping with a 'deals' mapping inside"
    if depth == 2 and problem.rule == "minProperties":
        return "a deal lists at least one property to manage"
    if depth == 2:
        return "a deal is a mapping of property names to values"
    if depth >= 3 and isinstance(node, Sequence_):
        return "list items are option values: text or numbers, not null or lists"
    if depth >= 3:
        return (
            "a value is text, a number, true/false, null, or a list of these"
            " (for multi-select properties)"
        )
    return problem.message


def as_json(node: Node) -> Any:
    """The data a YAML 1.2 (core schema) loader would build, for the schema."""
    if isinstance(node, Mapping):
        return {key.text: as_json(value) for key, value in node.items}
    if isinstance(node, Sequence_):
        return [as_json(item) for item in node.items]
    return _resolve(node)


def _resolve(scalar: Scalar) -> Any:
    if not scalar.plain:
        return scalar.text
    text = scalar.text
    if scalar.is_null():
        return None
    if text in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return text.lower() == "true"
    if text[0] not in NUMBER_START:
        return text
    if YAML_INT.fullmatch(text):
        return int(text)
    if YAML_FLOAT.fullmatch(text):
        return float(text)
    return text


def _node_at(root: Node, path: tuple[str | int, ...], key: str | None) -> Node:
    """The node a schema path points at; the key itself when one is at fault."""
    node = root
    for part in path:
        child = _child(node, part)
        if child is None:
            return node
        node = child
    if key is not None and isinstance(node, Mapping):
        for candidate, _ in node.items:
            if candidate.text == key:
                return candidate
    return node


def _child(node: Node, part: str | int) -> Node | None:
    if isinstance(node, Mapping):
        for key, value in node.items:
            if key.text == part:
                return value
    if isinstance(node, Sequence_) and isinstance(part, int) and part < len(node.items):
        return node.items[part]
    return None


# --- property definitions --------------------------------------------------------


def check_deal(
    deal: DesiredDeal, definitions: Definitions, snapshot: Snapshot | None
) -> tuple[list[DesiredValue], list[Finding]]:
    """The wire values of one deal, and the problems of the rest."""
    values: list[DesiredValue] = []
    findings: list[Finding] = []
    if not 1 <= int(deal.id) <= MAX_DEAL_ID:
        message = f"deal ID {deal.id} is outside HubSpot's IDs (1 to {MAX_DEAL_ID})"
        return [], [Finding(deal.key.location, message, "deal-id", deal.id)]
    for key, node in deal.properties:
        if isinstance(node, Mapping):
            continue  # the schema check reports nested mappings
        definition, problem = _definition_for(key, definitions)
        if definition is None:
            findings.append(
                Finding(key.location, problem, "property", deal.id, key.text)
            )
            continue
        try:
            wire = to_wire(definition, _scalars(node))
        except ValueProblem as error:
            location = node.location
            findings.append(Finding(location, str(error), "value", deal.id, key.text))
            continue
        values.append(DesiredValue(deal.id, key.text, wire, definition, node.location))
    findings.extend(check_stages(deal.id, values, definitions, snapshot))
    return values, findings


def _scalars(node: Node) -> Scalar | list[Scalar]:
    if isinstance(node, Sequence_):
        return [item for item in node.items if isinstance(item, Scalar)]
    assert isinstance(node, Scalar)
    return node


def _definition_for(
    key: Scalar, definitions: Definitions
) -> tuple[PropertyDefinition | None, str]:
    definition = definitions.properties.get(key.text)
    if definition is None:
        source = definitions.properties_source
        hint = _name_hint(key.text, definitions)
        return None, f'unknown property "{key.text}" in {source}{hint}'
    if not known_type(definition):
        kind = f"type {definition.type!r}" if definition.type else "no type"
        return None, (
            f'"{key.text}" has {kind} in {definitions.properties_source}, so its'
            " values cannot be checked; fix the definition"
        )
    if definition.calculated:
        return None, f'"{key.text}" is calculated by HubSpot and read-only'
    if definition.read_only:
        return None, f'"{key.text}" is read-only; HubSpot sets its value'
    return definition, ""


def _name_hint(text: str, definitions: Definitions) -> str:
    writable = [d for d in definitions.properties.values() if _writable(d)]
    for definition in writable:
        if definition.label and definition.label.lower() == text.lower():
            return f'; "{text}" is the label of "{definition.name}", use the name'
    close = suggest(text, [d.name for d in writable])
    return f' (did you mean "{close}"?)' if close else ""


def _writable(definition: PropertyDefinition) -> bool:
    return not (definition.read_only or definition.calculated)


def check_pipelines(
    values: Sequence[DesiredValue], definitions: Definitions, snapshot: Snapshot
) -> list[Finding]:
    """Stage checks that need each deal's current pipeline from the snapshot."""
    by_deal: dict[str, list[DesiredValue]] = {}
    for value in values:
        by_deal.setdefault(value.deal, []).append(value)
    return [
        finding
        for deal, deal_values in by_deal.items()
        for finding in check_stages(deal, deal_values, definitions, snapshot)
    ]


# --- pipelines and stages -------------------------------------------------------


def check_stages(
    deal_id: str,
    values: list[DesiredValue],
    definitions: Definitions,
    snapshot: Snapshot | None,
) -> Iterator[Finding]:
    """``dealstage`` must be a stage of the pipeline the deal will be in."""
    wanted = {value.property: value for value in values}
    pipelines = definitions.pipelines
    pipeline_value = wanted.get("pipeline")
    stage_value = wanted.get("dealstage")
    current_pipeline = snapshot.value(deal_id, "pipeline") if snapshot else None

    for value in (pipeline_value, stage_value):
        if value is not None and value.wire == "":
            yield _stage_finding(value, f"{value.property} cannot be cleared")
    if pipeline_value and pipeline_value.wire not in (*pipelines, ""):
        unknown = _unknown_pipeline(pipeline_value.wire, definitions)
        yield _stage_finding(pipeline_value, unknown)
        return
    target = pipeline_value.wire if pipeline_value else current_pipeline
    if stage_value and stage_value.wire:
        moved = pipeline_value is not None
        problem = _stage_problem(stage_value.wire, target, deal_id, pipelines, moved)
        if problem:
            yield _stage_finding(stage_value, problem)
    elif pipeline_value and pipeline_value.wire and snapshot is not None:
        current_stage = snapshot.value(deal_id, "dealstage")
        new = pipelines[pipeline_value.wire]
        if current_stage and current_stage not in new.stage_ids():
            yield _stage_finding(
                pipeline_value,
                f'pipeline changes to "{new.id}" but the current stage'
                f' "{current_stage}" is not in it; set dealstage too',
            )


def _stage_finding(value: DesiredValue, message: str) -> Finding:
    return Finding(value.location, message, "stage", value.deal, value.property)


def _unknown_pipeline(text: str, definitions: Definitions) -> str:
    for pipeline in definitions.pipelines.values():
        if pipeline.label == text:
            return f'"{text}" is a pipeline label; use its ID "{pipeline.id}"'
    known = ", ".join(f'"{p}"' for p in sorted(definitions.pipelines))
    return f'"{text}" is not a pipeline in {definitions.pipelines_source}: {known}'


def _stage_problem(
    stage: str,
    target: str | None,
    deal_id: str,
    pipelines: PipelineMap,
    pipeline_written: bool = False,
) -> str | None:
    current = pipelines.get(target) if target else None
    owners = [p for p in pipelines.values() if stage in p.stage_ids()]
    if current is not None and stage in current.stage_ids():
        return None
    if current is None and owners:
        return None  # the deal's pipeline is not known; the stage exists
    if owners:
        owner = owners[0]
        if pipeline_written:
            return (
                f'stage "{stage}" is not in pipeline "{target}"; it belongs to'
                f' pipeline "{owner.id}" ({owner.label})'
            )
        return (
            f'stage "{stage}" belongs to pipeline "{owner.id}" ({owner.label}) but'
            f' deal {deal_id} is in "{target}"; set pipeline too'
        )
    return _not_a_stage(stage, current, pipelines)


def _not_a_stage(stage: str, current: Pipeline | None, pipelines: PipelineMap) -> str:
    scope = [current] if current is not None else list(pipelines.values())
    labelled = [
        (p, s) for p in pipelines.values() for s in p.stages if s.label == stage
    ]
    in_scope = [(p, s) for p, s in labelled if p in scope]
    if in_scope:
        pipeline, found = in_scope[0]
        message = (
            f'"{stage}" is a stage label; the internal ID in pipeline'
            f' "{pipeline.id}" is "{found.id}"'
        )
        if len(labelled) > 1:
            message += (
                f" (the label is ambiguous: {len(labelled)} pipelines have a"
                f' "{stage}" stage)'
            )
        return message
    ids = [s.id for p in scope for s in p.stages]
    close = suggest(stage, ids)
    if close:
        return (
            f'"{stage}" is not a stage ID (IDs are case-sensitive;'
            f' did you mean "{close}"?)'
        )
    where = f'pipeline "{current.id}"' if current is not None else "any pipeline"
    return f'"{stage}" is not a stage of {where}'
