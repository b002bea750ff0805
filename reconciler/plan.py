"""Plans: the changes to send, grouped into the fewest batches.

A plan is deterministic: deals in ascending ID order, properties by name, at
most ``batch_size`` deals a batch. Saved plans carry, per change, the value
expected in HubSpot (``before``) and the value sent (``after``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import __version__, schema
from reconciler.errors import Finding, InvalidInputError, Location
from reconciler.properties import PropertyDefinition, load_json_file
from reconciler.snapshot import id_order, sorted_ids

PLAN_FORMAT = "reconciler-plan"
MAX_BATCH_SIZE = 100


@dataclass(frozen=True)
class Change:
    """One property of one deal going from ``before`` to ``after``."""

    deal: str
    property: str
    type: str
    field_type: str
    before: str | None
    after: str
    location: Location | None = None
    note: str | None = None

    def definition(self) -> PropertyDefinition:
        """What the plan knows of the property: enough to compare and show."""
        return PropertyDefinition(self.property, self.type, self.field_type)


@dataclass(frozen=True)
class Batch:
    """The changes of at most ``batch_size`` deals, sent in one request."""

    index: int
    changes: tuple[Change, ...]
    # Managed values of these deals that already match: not sent, but checked
    # before applying so that a plan is refused if any of them moved.
    checks: tuple[Change, ...] = ()

    @property
    def deals(self) -> list[str]:
        return sorted_ids(change.deal for change in self.changes)

    def request_body(self) -> list[dict[str, Any]]:
        """The JSON array ``POST /deals/v1/batch-async/update`` expects."""
        return build_request_body(self.changes)


@dataclass
class Plan:
    """The batches to apply, and the deals whose values already match."""

    batches: list[Batch]
    unchanged_deals: int = 0
    batch_size: int = MAX_BATCH_SIZE
    # Deals left out with --skip-missing, and why; shown for review, not sent.
    skipped: list[Finding] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return [change for batch in self.batches for change in batch.changes]

    @property
    def checks(self) -> list[Change]:
        return [check for batch in self.batches for check in batch.checks]

    @property
    def deal_count(self) -> int:
        return sum(len(batch.deals) for batch in self.batches)

    @property
    def is_empty(self) -> bool:
        return not self.batches

    def fingerprint(self) -> str:
        """A digest of what the plan sends and expects; names one plan."""
        payload = [
            [c.deal, c.property, c.type, c.field_type, c.before, c.after]
            for c in (*self.changes, *self.checks)
        ]
        digest = hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()
        return f"sha256:{digest}"


def build_request_body(changes: Iterable[Change]) -> list[dict[str, Any]]:
    """Group changes by deal into v1 batch-update entries, values as strings."""
    by_deal: dict[str, list[Change]] = {}
    for change in changes:
        by_deal.setdefault(change.deal, []).append(change)
    return [
        {
            "objectId": int(deal),
            "properties": [
                {"name": change.property, "value": change.after}
                for change in sorted(by_deal[deal], key=lambda c: c.property)
            ],
        }
        for deal in sorted(by_deal, key=id_order)
    ]


def build_plan(
    changes: Sequence[Change],
    batch_size: int = MAX_BATCH_SIZE,
    unchanged: int = 0,
    checks: Sequence[Change] = (),
) -> Plan:
    """Order changes and cut them into batches of at most ``batch_size`` deals.

    ``checks`` are managed values of the same deals that need no change; each
    batch keeps those of its deals.
    """
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch size must be 1 to {MAX_BATCH_SIZE}")
    ordered = sorted(changes, key=lambda c: (id_order(c.deal), c.property))
    deals = list(dict.fromkeys(change.deal for change in ordered))
    checked = sorted(checks, key=lambda c: (id_order(c.deal), c.property))
    batches: list[Batch] = []
    for start in range(0, len(deals), batch_size):
        members = set(deals[start : start + batch_size])
        chosen = tuple(change for change in ordered if change.deal in members)
        kept = tuple(check for check in checked if check.deal in members)
        batches.append(Batch(len(batches) + 1, chosen, kept))
    return Plan(batches, unchanged_deals=unchanged, batch_size=batch_size)


# --- the saved plan file ----------------------------------------------------


def plan_to_document(plan: Plan, notes: bool = False) -> dict[str, Any]:
    """The saved plan as JSON data, in the shape of ``plan.schema.json``.

    Review notes ("submitted N s ago") depend on this machine's journal and
    the time, so the saved file leaves them out: the same desired state and
    HubSpot values always give the same file, wherever it is made.
    """
    return {
        "format": PLAN_FORMAT,
        "version": 1,
        "tool_version": __version__,
        "fingerprint": plan.fingerprint(),
        "batch_size": plan.batch_size,
        "summary": {
            "deals": plan.deal_count,
            "properties": len(plan.changes),
            "batches": len(plan.batches),
            "unchanged_deals": plan.unchanged_deals,
        },
        **(
            {"skipped": [_skipped_to_json(f) for f in plan.skipped]}
            if plan.skipped
            else {}
        ),
        "batches": [
            {
                "index": batch.index,
                "deals": [_deal_to_json(batch, deal, notes) for deal in batch.deals],
            }
            for batch in plan.batches
        ],
    }


def _skipped_to_json(finding: Finding) -> dict[str, Any]:
    entry: dict[str, Any] = {"deal": finding.deal, "reason": finding.message}
    if finding.location is not None:
        where = finding.location
        entry["source"] = {
            "file": where.file,
            "line": where.line,
            "column": where.column,
        }
    return entry


def _skipped_from_json(entry: dict[str, Any]) -> Finding:
    source = entry.get("source")
    where = (
        Location(source["file"], source["line"], source["column"]) if source else None
    )
    return Finding(where, entry["reason"], "missing-deal", deal=entry["deal"])


def _deal_to_json(batch: Batch, deal: str, notes: bool) -> dict[str, Any]:
    changes = [c for c in batch.changes if c.deal == deal]
    entry: dict[str, Any] = {
        "id": deal,
        "changes": [
            change_to_json(c if notes else dataclasses.replace(c, note=None))
            for c in changes
        ],
    }
    unchanged = [change_to_json(c) for c in batch.checks if c.deal == deal]
    if unchanged:
        entry["unchanged"] = unchanged
    return entry


def change_to_json(change: Change) -> dict[str, Any]:
    """One change as the saved plan and reports write it."""
    entry: dict[str, Any] = {
        "property": change.property,
        "type": change.type,
        "field_type": change.field_type,
        "before": change.before,
        "after": change.after,
    }
    if change.note is not None:
        entry["note"] = change.note
    if change.location is not None:
        entry["source"] = {
            "file": change.location.file,
            "line": change.location.line,
            "column": change.location.column,
        }
    return entry


def render_plan_file(plan: Plan, notes: bool = False) -> str:
    """The saved plan file's text; the same plan always gives the same bytes.

    With ``notes`` (for ``--format json``) review notes are included.
    """
    document = plan_to_document(plan, notes)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def load_plan(path: Path) -> Plan:
    """Read a saved plan, refusing one that does not match the schema."""
    data = load_json_file(path)
    problems = schema.validate_document("plan", data)
    if problems:
        findings = [Finding(Location(str(path), 1, 1), p, "schema") for p in problems]
        raise InvalidInputError(findings, f"{path} is not a valid saved plan")
    batches = [
        Batch(
            batch["index"],
            tuple(_changes_from_json(batch["deals"], "changes")),
            tuple(_changes_from_json(batch["deals"], "unchanged")),
        )
        for batch in data["batches"]
    ]
    plan = Plan(
        batches,
        unchanged_deals=data["summary"].get("unchanged_deals", 0),
        batch_size=data["batch_size"],
        skipped=[_skipped_from_json(entry) for entry in data.get("skipped", [])],
    )
    edits = _edits(plan, data)
    if edits:
        findings = [
            Finding(Location(str(path), 1, 1), f"the plan was edited: {edit}", "edited")
            for edit in edits
        ]
        raise InvalidInputError(findings, f"{path} is not a valid saved plan")
    return plan


def _edits(plan: Plan, data: dict[str, Any]) -> list[str]:
    """What in a saved plan disagrees with the plan it describes."""
    edits = []
    if plan.fingerprint() != data["fingerprint"]:
        edits.append("its changes do not match its fingerprint")
    summary = data["summary"]
    counted = (plan.deal_count, len(plan.changes), len(plan.batches))
    if (summary["deals"], summary["properties"], summary["batches"]) != counted:
        edits.append("its summary does not count what its batches hold")
    if [batch.index for batch in plan.batches] != list(range(1, len(plan.batches) + 1)):
        edits.append("its batches are not numbered 1, 2, 3, ... in order")
    if any(len(batch.deals) > plan.batch_size for batch in plan.batches):
        edits.append(f"a batch holds more than its batch size ({plan.batch_size})")
    deals = [deal for batch in plan.batches for deal in batch.deals]
    if deals != sorted(set(deals), key=id_order):
        edits.append("its deals are repeated or out of order")
    return edits


def _changes_from_json(deals: list[dict[str, Any]], key: str) -> Iterator[Change]:
    for deal in deals:
        for entry in deal.get(key, []):
            source = entry.get("source")
            location = (
                Location(source["file"], source["line"], source["column"])
                if source
                else None
            )
            yield Change(
                deal=deal["id"],
                property=entry["property"],
                type=entry["type"],
                field_type=entry["field_type"],
                before=entry["before"],
                after=entry["after"],
                location=location,
            )
