"""Checking a v1 batch update the way HubSpot does: all or nothing.

HubSpot refuses the whole request when any part of it is wrong and lists
every invalid value, so the checks here collect problems before answering.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.errors import Location
from reconciler.properties import (
    Pipeline,
    PropertyDefinition,
    Scalar,
    ValueProblem,
    check_wire_value,
    to_wire,
)
from reconciler.sandbox import shapes
from reconciler.sandbox.state import DealStore, Update

MAX_DEALS = 100
DEFAULT_PIPELINE = "default"
ERROR_CODES = {
    "number": "INVALID_INTEGER",
    "date": "INVALID_DATE",
    "datetime": "INVALID_LONG",
    "bool": "INVALID_BOOLEAN",
    "enumeration": "INVALID_OPTION",
}
_NOWHERE = Location("request", 1, 1)


class Refusal(Exception):
    """A request the sandbox answers with an error status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("message")))
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Catalog:
    """What values are checked against: property definitions and pipelines."""

    properties: Mapping[str, PropertyDefinition]
    pipelines: Mapping[str, Pipeline]

    def default_pipeline(self) -> Pipeline | None:
        """The pipeline HubSpot puts a deal in when it names none."""
        if DEFAULT_PIPELINE in self.pipelines:
            return self.pipelines[DEFAULT_PIPELINE]
        if len(self.pipelines) == 1:
            return next(iter(self.pipelines.values()))
        return None


@dataclass(frozen=True)
class _Entry:
    deal_id: int
    values: tuple[tuple[str, object], ...]


def check_batch(data: Any, store: DealStore, catalog: Catalog) -> list[Update]:
    """The updates of an acceptable batch; raise Refusal with HubSpot's answer."""
    entries = _parse_batch(data)
    _check_deals_exist(entries, store)
    results = _check_entries(entries, store, catalog)
    if results:
        raise Refusal(400, shapes.validation_failed(results))
    return [_update(entry, catalog) for entry in entries]


# --- shape of the request ----------------------------------------------------


def _parse_batch(data: Any) -> list[_Entry]:
    if not isinstance(data, list):
        raise _malformed('expected a JSON array of {"objectId", "properties"} objects')
    if len(data) > MAX_DEALS:
        message = (
            f"The batch holds {len(data)} deals; at most {MAX_DEALS} deals may be"
            " updated in one request"
        )
        raise Refusal(400, shapes.legacy_error(message))
    return [_parse_entry(index, item) for index, item in enumerate(data)]


def _parse_entry(index: int, item: Any) -> _Entry:
    if not isinstance(item, dict):
        raise _malformed(f"item {index} is not an object")
    deal_id = item.get("objectId")
    if isinstance(deal_id, bool) or not isinstance(deal_id, int):
        raise _malformed(f"item {index}: objectId must be a number")
    pairs = item.get("properties")
    if not isinstance(pairs, list):
        raise _malformed(f"item {index}: properties must be an array")
    values: list[tuple[str, object]] = []
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("name"), str):
            raise _malformed(f"item {index}: every property needs a name")
        if "value" not in pair:
            raise _malformed(f"item {index}: property {pair['name']} has no value")
        values.append((pair["name"], pair["value"]))
    return _Entry(deal_id, tuple(values))


def _malformed(reason: str) -> Refusal:
    return Refusal(400, shapes.invalid_json(reason))


def _check_deals_exist(entries: list[_Entry], store: DealStore) -> None:
    missing = sorted(
        {entry.deal_id for entry in entries if not store.exists(entry.deal_id)}
    )
    if not missing:
        return
    listed = ", ".join(str(deal_id) for deal_id in missing)
    message = (
        "Could not update some deals, they may be deleted or not exist."
        f" Check that objectIds are valid: {listed}"
    )
    ids = [str(deal_id) for deal_id in missing]
    raise Refusal(
        400,
        shapes.legacy_error(message, category="OBJECT_NOT_FOUND", context={"ids": ids}),
    )


# --- values ------------------------------------------------------------------


def _check_entries(
    entries: list[_Entry], store: DealStore, catalog: Catalog
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    # Stage checks need the values each deal will hold once the entries
    # before it (in this batch and in the queue) are applied.
    planned: dict[int, dict[str, str]] = {}
    for entry in entries:
        if entry.deal_id not in planned:
            planned[entry.deal_id] = store.projected(entry.deal_id)
        sent: dict[str, str] = {}
        for name, value in entry.values:
            result = _check_value(catalog, name, value)
            if result is not None:
                results.append(result)
            elif isinstance(value, str):
                sent[name] = value
        planned[entry.deal_id].update(sent)
        results.extend(_check_stage(catalog, planned[entry.deal_id], sent))
    return results


def _check_value(catalog: Catalog, name: str, value: object) -> dict[str, Any] | None:
    definition = catalog.properties.get(name)
    if definition is None:
        message = f'Property "{name}" does not exist'
        return shapes.validation_result(name, "PROPERTY_DOESNT_EXIST", message)
    if definition.calculated or definition.read_only:
        kind = "calculated" if definition.calculated else "read only"
        message = f'"{name}" is a {kind} property; its value cannot be set.'
        return shapes.validation_result(name, "READ_ONLY_VALUE", message)
    if not isinstance(value, str):
        # The tool must send strings, and a JSON null must never pass for
        # "clear the value", which is "" on the wire.
        message = f"{json.dumps(value)} is not a string; property values are strings"
        return shapes.validation_result(name, "INVALID_VALUE", message)
    if name == "pipeline" and value and value not in catalog.pipelines:
        message = (
            f"{value} was not one of the allowed options: {sorted(catalog.pipelines)}"
        )
        return shapes.validation_result(name, "INVALID_OPTION", message)
    problem = check_wire_value(definition, value)
    if problem is None:
        return None
    return shapes.validation_result(
        name, ERROR_CODES.get(definition.type, "INVALID_VALUE"), problem
    )


def _check_stage(
    catalog: Catalog, values: Mapping[str, str], sent: Mapping[str, str]
) -> list[dict[str, Any]]:
    if "pipeline" not in sent and "dealstage" not in sent:
        return []
    stage = values.get("dealstage", "")
    pipeline_id = values.get("pipeline", "")
    pipeline = (
        catalog.pipelines.get(pipeline_id)
        if pipeline_id
        else catalog.default_pipeline()
    )
    if not stage or pipeline is None:
        return []
    stage_ids = [each.id for each in pipeline.stages]
    if stage in stage_ids:
        return []
    if "dealstage" in sent:
        message = (
            f"{stage} was not one of the allowed options for pipeline {pipeline.id}:"
            f" {stage_ids}"
        )
    else:
        message = (
            f"the deal's stage {stage} is not a stage of pipeline {pipeline.id};"
            " send a dealstage of that pipeline with the pipeline"
        )
    return [shapes.validation_result("dealstage", "INVALID_OPTION", message)]


def _update(entry: _Entry, catalog: Catalog) -> Update:
    values = tuple(
        (name, _stored(catalog.properties[name], str(value)))
        for name, value in entry.values
    )
    return Update(entry.deal_id, values)


def _stored(definition: PropertyDefinition, value: str) -> str:
    # HubSpot keeps datetimes as epoch milliseconds whatever form they came in.
    if definition.type != "datetime" or not value or value.lstrip("-").isdigit():
        return value
    try:
        return to_wire(definition, Scalar(value, False, _NOWHERE))
    except ValueProblem:
        return value
