"""Loading desired state: YAML files of deal property values.

Files are read from libyaml's event stream rather than built by a YAML
constructor, for three reasons: every scalar keeps its exact text and
position, YAML 1.1 coercions (``no`` to false, ``10:30`` to 630, ``0x1F`` to
31) never happen, and aliases are refused before anything can expand them.
Scalars are typed later, by the property definition they are written for.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import Finding, InvalidInputError, Location
from reconciler.properties import Scalar
from reconciler.snapshot import canonical_id, id_order

# libyaml's parser; the pure-Python one gives the same events, only slower.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAML_SUFFIXES = (".yaml", ".yml")
# Desired state needs three levels; the cap keeps hostile nesting from
# exhausting Python's recursion limit.
MAX_DEPTH = 20
STR_TAGS = ("!", "tag:yaml.org,2002:str")


@dataclass
class Mapping:
    """A YAML mapping: keys are scalars in the order written."""

    items: list[tuple[Scalar, Node]]
    location: Location


@dataclass
class Sequence_:
    """A YAML sequence."""

    items: list[Node]
    location: Location


Node = Scalar | Mapping | Sequence_


@dataclass
class DesiredDeal:
    """One deal as written: its canonical ID and the properties it manages."""

    id: str
    key: Scalar
    properties: list[tuple[Scalar, Node]]


@dataclass
class Document:
    """One desired-state file after loading."""

    path: str
    root: Node | None
    readable: bool = True


@dataclass
class DesiredState:
    """Every deal of every file, by canonical deal ID."""

    documents: list[Document] = field(default_factory=list)
    deals: dict[str, DesiredDeal] = field(default_factory=dict)
    problems: list[Finding] = field(default_factory=list)

    def ordered_deals(self) -> list[DesiredDeal]:
        return [self.deals[deal_id] for deal_id in sorted(self.deals, key=id_order)]


# --- finding files -----------------------------------------------------------


def find_files(paths: Sequence[Path]) -> tuple[list[Path], list[Finding]]:
    """Every YAML file named or below a named folder, folders in sorted order."""
    files: list[Path] = []
    findings: list[Finding] = []
    for path in paths:
        if path.is_dir():
            below = [p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES]
            files.extend(sorted(p for p in below if p.is_file()))
            if not below:
                findings.append(_at(path, "folder holds no .yaml or .yml files"))
        elif path.is_file():
            files.append(path)
        else:
            findings.append(_at(path, "no such file or folder"))
    return list(dict.fromkeys(files)), findings


def _at(path: Path, message: str, rule: str = "io") -> Finding:
    return Finding(Location(str(path), 1, 1), message, rule)


# --- reading one file ---------------------------------------------------------


class _Abort(Exception):
    """Stops reading a file that must not be read further (aliases, syntax)."""


class _Reader:
    """Builds nodes from parser events, collecting problems as it goes."""

    def __init__(self, path: str, events: Iterator[yaml.Event]) -> None:
        self.path = path
        self.events = events
        self.findings: list[Finding] = []

    def where(self, mark: Any) -> Location:
        return Location(self.path, mark.line + 1, mark.column + 1)

    def next(self) -> yaml.Event:
        event = next(self.events)
        if event.__class__ is yaml.AliasEvent:
            self.findings.append(
                Finding(
                    self.where(event.start_mark),
                    "YAML aliases are not allowed in desired state;"
                    " write each value out",
                    "alias",
                )
            )
            raise _Abort
        return event

    def too_deep(self, event: Any) -> _Abort:
        self.findings.append(
            Finding(
                self.where(event.start_mark),
                f"nested deeper than {MAX_DEPTH} levels; desired state is deals,"
                " their properties and values",
                "depth",
            )
        )
        return _Abort()

    def read_stream(self) -> Node | None:
        root: Node | None = None
        documents = 0
        while True:
            event = self.next()
            if isinstance(event, yaml.StreamEndEvent):
                return root
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.findings.append(
                        Finding(
                            self.where(event.start_mark),
                            "a desired-state file holds one YAML document; split"
                            " this one into files",
                            "documents",
                        )
                    )
                    raise _Abort
                root = self.read_node(self.next(), ())
                self.next()  # the document's end

    def read_node(self, event: Any, trail: tuple[str, ...]) -> Node:
        kind = event.__class__
        if kind is yaml.ScalarEvent and event.tag is None:
            # The common case, kept short: it runs once per value.
            mark = event.start_mark
            location = Location(self.path, mark.line + 1, mark.column + 1)
            return Scalar(event.value, not event.style, location)
        if kind is yaml.ScalarEvent:
            return self.read_tagged(event)
        if kind is yaml.SequenceStartEvent:
            if len(trail) > MAX_DEPTH:
                raise self.too_deep(event)
            trail = (*trail, "-")
            items: list[Node] = []
            while (item := self.next()).__class__ is not yaml.SequenceEndEvent:
                items.append(self.read_node(item, trail))
            return Sequence_(items, self.where(event.start_mark))
        if kind is yaml.MappingStartEvent:
            return self.read_mapping(event, trail)
        raise _Abort  # pragma: no cover - the parser yields nothing else here

    def read_tagged(self, event: yaml.ScalarEvent) -> Scalar:
        location = self.where(event.start_mark)
        if event.tag not in STR_TAGS:
            self.findings.append(
                Finding(
                    location,
                    f"YAML tag {event.tag} is not allowed; quote the value instead",
                    "tag",
                )
            )
        return Scalar(event.value, False, location)

    def read_mapping(
        self, event: yaml.MappingStartEvent, trail: tuple[str, ...]
    ) -> Mapping:
        if len(trail) > MAX_DEPTH:
            raise self.too_deep(event)
        items: list[tuple[Scalar, Node]] = []
        seen: dict[str, Location] = {}
        while (key_event := self.next()).__class__ is not yaml.MappingEndEvent:
            key = self.read_node(key_event, trail)
            if not isinstance(key, Scalar):
                self.findings.append(
                    Finding(key.location, "mapping keys must be plain text", "key")
                )
                self.read_node(self.next(), trail)
                continue
            value_event = self.next()
            inner = value_event.__class__ is yaml.MappingStartEvent
            value = self.read_node(value_event, (*trail, key.text) if inner else trail)
            if key.text in seen:
                self.findings.append(_duplicate_key(key, seen[key.text], trail))
                continue
            seen[key.text] = key.location
            items.append((key, value))
        return Mapping(items, self.where(event.start_mark))


def _duplicate_key(key: Scalar, first: Location, trail: tuple[str, ...]) -> Finding:
    again = f"(first defined at line {first.line})"
    if trail == ("deals",):
        message = f'duplicate key "{key.text}" under deals {again}'
        return Finding(key.location, message, "duplicate-key", deal=key.text)
    if len(trail) == 2 and trail[0] == "deals":
        message = f'duplicate key "{key.text}" in deal {trail[1]} {again}'
        return Finding(key.location, message, "duplicate-key", trail[1], key.text)
    where = f"under {trail[-1]}" if trail else "at the top level"
    message = f'duplicate key "{key.text}" {where} {again}'
    return Finding(key.location, message, "duplicate-key")


def _byte_location(path: Path, position: int) -> Location:
    """Line and column of the character at ``position`` (libyaml counts bytes)."""
    head = path.read_bytes()[:position].decode("utf-8", errors="replace")
    line = head.count("\n") + 1
    return Location(str(path), line, len(head) - (head.rfind("\n") + 1) + 1)


def read_document(path: Path) -> tuple[Document, list[Finding]]:
    """Parse one file into nodes; problems come back as findings."""
    name = str(path)
    try:
        with path.open("rb") as handle:
            reader = _Reader(name, iter(yaml.parse(handle, Loader=_Loader)))
            try:
                root = reader.read_stream()
            except _Abort:
                return Document(name, None, readable=False), reader.findings
    except OSError as error:
        return Document(name, None, readable=False), [
            _at(path, f"cannot read: {error.strerror}")
        ]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        location = reader.where(mark) if mark else Location(name, 1, 1)
        problem = " ".join(filter(None, [error.context, error.problem]))
        return Document(name, None, readable=False), [
            Finding(location, f"YAML syntax: {problem}", "syntax")
        ]
    except yaml.reader.ReaderError as error:
        location = _byte_location(path, error.position)
        message = f"cannot read this character: {error.reason}"
        return Document(name, None, readable=False), [
            Finding(location, message, "encoding")
        ]
    except yaml.YAMLError as error:
        return Document(name, None, readable=False), [
            _at(path, f"YAML error: {error}", "syntax")
        ]
    return Document(name, root), reader.findings


# --- collecting deals across files --------------------------------------------


def read_desired(paths: Sequence[Path]) -> DesiredState:
    """Read every file under ``paths``, keeping loading problems in the state.

    A file that cannot be read at all (syntax, aliases) contributes only its
    problem; the others still contribute their deals, so that validation can
    report every problem of every file in one run.
    """
    files, findings = find_files(paths)
    state = DesiredState(problems=findings)
    with _collector_paused():
        for path in files:
            document, problems = read_document(path)
            state.problems.extend(problems)
            state.documents.append(document)
        for document in state.documents:
            state.problems.extend(_collect_deals(state, document))
    return state


def load_desired(paths: Sequence[Path]) -> DesiredState:
    """Read every file under ``paths``; raise with all loading problems at once."""
    state = read_desired(paths)
    if state.problems:
        raise InvalidInputError(state.problems)
    return state


@contextmanager
def _collector_paused() -> Iterator[None]:
    # Loading makes one small object per YAML node and none form cycles, so
    # the cycle collector's repeated full scans are pure cost (a third of the
    # time on a 100,000-deal file).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def deals_mapping(root: Node | None) -> Mapping | None:
    """The ``deals`` mapping of a file, if it has one of the right shape."""
    if not isinstance(root, Mapping):
        return None
    for key, value in root.items:
        if key.text == "deals" and isinstance(value, Mapping):
            return value
    return None


def _collect_deals(state: DesiredState, document: Document) -> list[Finding]:
    findings: list[Finding] = []
    deals = deals_mapping(document.root)
    for key, value in deals.items if deals else []:
        if not key.text.isdigit() or not isinstance(value, Mapping):
            continue  # the schema check reports these
        deal_id = canonical_id(key.text)
        first = state.deals.get(deal_id)
        if first is not None:
            findings.append(
                Finding(
                    key.location,
                    f"deal {deal_id} is declared twice: here and at"
                    f" {first.key.location}; a deal may appear in one place only",
                    "duplicate-deal",
                    deal=deal_id,
                )
            )
            continue
        state.deals[deal_id] = DesiredDeal(deal_id, key, value.items)
    return findings
