"""Snapshots: the values HubSpot holds now, from a file or read live.

Accepted files: the tool's own snapshot JSON, a v1 deal, v1 paged deal pages,
v3 batch-read answers and v3 list pages; a folder of pages is one snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from reconciler import schema
from reconciler.errors import Finding, InvalidInputError, Location
from reconciler.properties import load_json_file

SNAPSHOT_FORMAT = "reconciler-snapshot"
MERGED_IDS = "hs_merged_object_ids"


@dataclass
class Snapshot:
    """Current values by deal ID, plus what HubSpot said of IDs it lacks."""

    deals: dict[str, dict[str, str | None]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def merged_into(self, deal_id: str) -> str | None:
        """The surviving deal that lists ``deal_id`` among its merged IDs."""
        for survivor, values in self.deals.items():
            merged = values.get(MERGED_IDS) or ""
            if deal_id in {part.strip() for part in merged.split(";")}:
                return survivor
        return None

    def value(self, deal_id: str, name: str) -> str | None:
        return self.deals.get(deal_id, {}).get(name)


def canonical_id(text: str) -> str:
    """Deal IDs compare as whole numbers: ``"007"`` and ``7`` are one deal."""
    return text.lstrip("0") or "0"


def id_order(deal_id: str) -> tuple[int, str]:
    """Sort key putting canonical deal IDs in ascending numeric order."""
    return (len(deal_id), deal_id)


def sorted_ids(ids: Iterable[str]) -> list[str]:
    """Distinct canonical deal IDs in ascending numeric order."""
    return sorted(set(ids), key=id_order)


# --- reading files ---------------------------------------------------------


def load_snapshot(paths: Sequence[Path]) -> Snapshot:
    """Read every snapshot file under ``paths`` into one snapshot."""
    snapshot = Snapshot(source=", ".join(str(path) for path in paths))
    findings: list[Finding] = []
    origins: dict[str, str] = {}
    for path in _json_files(paths, findings):
        part = Snapshot()
        try:
            add_response(part, load_json_file(path), str(path))
        except InvalidInputError as error:
            findings.extend(error.findings)
            continue
        findings.extend(_merge(snapshot, part, str(path), origins))
    if findings:
        raise InvalidInputError(findings)
    return snapshot


def _merge(
    snapshot: Snapshot, part: Snapshot, source: str, origins: dict[str, str]
) -> list[Finding]:
    """Add one file's deals; a deal two files disagree on is a finding."""
    findings = []
    for deal_id, values in part.deals.items():
        known = snapshot.deals.setdefault(deal_id, {})
        for name, value in values.items():
            if name in known and known[name] != value:
                message = (
                    f"deal {deal_id} property {name} is {value!r} here but"
                    f" {known[name]!r} in {origins[deal_id]}; use one snapshot"
                )
                findings.append(Finding(Location(source, 1, 1), message, "conflict"))
        known.update(values)
        origins.setdefault(deal_id, source)
    snapshot.missing.update(part.missing)
    return findings


def _json_files(paths: Sequence[Path], findings: list[Finding]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            pages = sorted(path.rglob("*.json"))
            if not pages:
                findings.append(
                    Finding(
                        Location(str(path), 1, 1), "folder holds no .json files", "io"
                    )
                )
            yield from pages
        elif path.exists():
            yield path
        else:
            findings.append(Finding(Location(str(path), 1, 1), "no such file", "io"))


def add_response(snapshot: Snapshot, data: Any, source: str) -> None:
    """Merge one HubSpot answer (or the tool's own snapshot) into ``snapshot``."""
    if isinstance(data, dict) and "http_status" in data and "body" in data:
        data = data["body"]
    if isinstance(data, dict) and data.get("format") == SNAPSHOT_FORMAT:
        _add_own(snapshot, data, source)
    elif isinstance(data, dict) and isinstance(data.get("deals"), list):
        for deal in data["deals"]:
            _add_v1_deal(snapshot, deal, source)
    elif isinstance(data, dict) and "dealId" in data:
        _add_v1_deal(snapshot, data, source)
    elif isinstance(data, dict) and isinstance(data.get("results"), list):
        for record in data["results"]:
            _add_v3_record(snapshot, record, source)
        add_errors(snapshot, data.get("errors") or [])
    else:
        raise _unknown(source)


def _add_own(snapshot: Snapshot, data: dict[str, Any], source: str) -> None:
    problems = schema.validate_document("snapshot", data)
    if problems:
        raise InvalidInputError(
            [Finding(Location(source, 1, 1), problem, "schema") for problem in problems]
        )
    for deal_id, values in data["deals"].items():
        snapshot.deals.setdefault(canonical_id(deal_id), {}).update(values)
    for deal_id, reason in data.get("missing", {}).items():
        snapshot.missing[canonical_id(deal_id)] = reason


def _add_v1_deal(snapshot: Snapshot, deal: Any, source: str) -> None:
    if not isinstance(deal, dict) or "dealId" not in deal:
        raise _unknown(source)
    if deal.get("isDeleted") is True:
        return
    values = snapshot.deals.setdefault(canonical_id(str(deal["dealId"])), {})
    for name, entry in (deal.get("properties") or {}).items():
        values[name] = entry.get("value") if isinstance(entry, dict) else None


def _add_v3_record(snapshot: Snapshot, record: Any, source: str) -> None:
    if not isinstance(record, dict) or "id" not in record:
        raise _unknown(source)
    if record.get("archived") is True:
        return
    values = snapshot.deals.setdefault(canonical_id(str(record["id"])), {})
    for name, value in (record.get("properties") or {}).items():
        values[name] = _text(value, source, record["id"], name)


def _text(value: Any, source: str, deal: Any, name: str) -> str | None:
    """A property value as HubSpot's strings; JSON scalars are accepted too."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    message = f"deal {deal} property {name}: a value must be text, not {value!r}"
    raise InvalidInputError([Finding(Location(source, 1, 1), message, "format")])


def add_errors(snapshot: Snapshot, errors: Iterable[Any]) -> None:
    """Record the IDs a batch read (200 or 207) reported as missing."""
    for error in errors:
        if not isinstance(error, dict):
            continue
        message = str(error.get("message") or error.get("category") or "not found")
        for deal_id in (error.get("context") or {}).get("ids") or []:
            snapshot.missing[canonical_id(str(deal_id))] = message


def _unknown(source: str) -> InvalidInputError:
    message = (
        "not a snapshot: expected the tool's snapshot JSON, a v1 deal, v1 paged"
        " deals, or v3 batch-read or list results"
    )
    return InvalidInputError([Finding(Location(source, 1, 1), message, "format")])


# --- reading live and saving -----------------------------------------------


class DealReader(Protocol):
    def read_deals(
        self, ids: Sequence[str], properties: Sequence[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...


def read_snapshot(
    reader: DealReader, ids: Sequence[str], properties: Sequence[str]
) -> Snapshot:
    """Read the managed properties of ``ids`` live, 100 deals a request."""
    snapshot = Snapshot(source="HubSpot")
    wanted = sorted(set(properties) | {MERGED_IDS})
    results, errors = reader.read_deals(ids, wanted)
    for record in results:
        _add_v3_record(snapshot, record, "HubSpot")
    add_errors(snapshot, errors)
    for deal_id in ids:
        if deal_id not in snapshot.deals and deal_id not in snapshot.missing:
            snapshot.missing[deal_id] = "not returned by HubSpot"
    return snapshot


def render_snapshot(snapshot: Snapshot) -> str:
    """The tool's own snapshot JSON, deals in ascending ID order."""
    document = {
        "format": SNAPSHOT_FORMAT,
        "version": 1,
        "deals": {
            deal_id: dict(sorted(snapshot.deals[deal_id].items()))
            for deal_id in sorted(snapshot.deals, key=id_order)
        },
        "missing": {
            deal_id: snapshot.missing[deal_id]
            for deal_id in sorted(snapshot.missing, key=id_order)
        },
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
