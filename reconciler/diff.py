"""Diffing desired values against a snapshot, by meaning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.desired import DesiredState
from reconciler.errors import Finding
from reconciler.plan import Change
from reconciler.properties import same_value
from reconciler.snapshot import Snapshot
from reconciler.validate import DesiredValue


@dataclass
class Diff:
    """The changes, how many deals already match, and deals HubSpot lacks."""

    changes: list[Change] = field(default_factory=list)
    checks: list[Change] = field(default_factory=list)
    # Every desired value HubSpot already holds, changed deal or not.
    matching: list[Change] = field(default_factory=list)
    unchanged_deals: int = 0
    missing: list[Finding] = field(default_factory=list)


def diff_values(
    state: DesiredState, values: Sequence[DesiredValue], snapshot: Snapshot
) -> Diff:
    """Compare each desired value with the snapshot; only differences remain.

    A deal the snapshot lacks cannot be updated (the batch endpoint does not
    create deals), so it becomes a finding naming why it is missing.
    """
    result = Diff()
    by_deal: dict[str, list[DesiredValue]] = {}
    for value in values:
        by_deal.setdefault(value.deal, []).append(value)
    for deal_id, deal_values in by_deal.items():
        current = snapshot.deals.get(deal_id)
        if current is None:
            result.missing.append(_missing(state, snapshot, deal_id))
            continue
        changes: list[Change] = []
        checks: list[Change] = []
        for value in deal_values:
            before = current.get(value.property)
            same = same_value(value.definition, before, value.wire)
            (checks if same else changes).append(_change(value, before))
        result.changes.extend(changes)
        result.matching.extend(checks)
        if changes:
            result.checks.extend(checks)
        result.unchanged_deals += not changes
    return result


def _change(value: DesiredValue, before: str | None) -> Change:
    return Change(
        deal=value.deal,
        property=value.property,
        type=value.definition.type,
        field_type=value.definition.field_type,
        before=before if before not in ("", None) else None,
        after=value.wire,
        location=value.location,
    )


def _missing(state: DesiredState, snapshot: Snapshot, deal_id: str) -> Finding:
    location = state.deals[deal_id].key.location
    survivor = snapshot.merged_into(deal_id)
    if survivor is not None:
        message = (
            f"was merged into deal {survivor}; update the desired state to use"
            f" {survivor} (nothing is written to {survivor} under the old ID)"
        )
    elif deal_id in snapshot.missing:
        message = (
            "not found in HubSpot (deleted or never existed):"
            f" {snapshot.missing[deal_id]}"
        )
    else:
        message = (
            f"is not in the snapshot ({snapshot.source}); the batch endpoint"
            " cannot create deals"
        )
    return Finding(location, message, "missing-deal", deal=deal_id)
