"""The apply report: what became of every planned deal, batch and value.

Each deal has one fate, recorded when HubSpot answers a request holding it;
a batch's state and every count are derived from those fates, so they can
never disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from reconciler.errors import ExitCode
from reconciler.hubspot import PropertyError
from reconciler.plan import Change, change_to_json
from reconciler.snapshot import id_order, sorted_ids

BatchState = Literal[
    "applied",
    "rejected",
    "partly applied",
    "failed",
    "refused: daily limit",
    "interrupted",
    "not attempted",
]
VerifyState = Literal["verified", "accepted, not yet visible", "not checked"]
StopCause = Literal["daily limit", "error", "fail fast", "interrupted"]
# What became of one deal; every planned deal has exactly one.
DealFate = Literal[
    "applied",
    "rejected",
    "rejected with batch",
    "failed",
    "refused: daily limit",
    "unanswered",
    "not attempted",
]

APPLIED: BatchState = "applied"
REJECTED: BatchState = "rejected"
PARTLY_APPLIED: BatchState = "partly applied"
FAILED: BatchState = "failed"
REFUSED_DAILY: BatchState = "refused: daily limit"
INTERRUPTED: BatchState = "interrupted"
NOT_ATTEMPTED: BatchState = "not attempted"
VERIFIED: VerifyState = "verified"
NOT_VISIBLE: VerifyState = "accepted, not yet visible"
NOT_CHECKED: VerifyState = "not checked"

# When no deal of a batch was applied, the first fate found here names the
# batch: a failure stopped the run, a rejection is HubSpot's verdict, and an
# unanswered request or the daily limit only says why nothing is known.
_STATE_WITHOUT_APPLIED: tuple[tuple[DealFate, BatchState], ...] = (
    ("failed", FAILED),
    ("rejected", REJECTED),
    ("rejected with batch", REJECTED),
    ("unanswered", INTERRUPTED),
    ("refused: daily limit", REFUSED_DAILY),
)


def batch_state(fates: Collection[DealFate]) -> BatchState:
    """The state of a batch whose deals met ``fates``."""
    applied = sum(1 for fate in fates if fate == "applied")
    if fates and applied == len(fates):
        return APPLIED
    if applied:
        return PARTLY_APPLIED
    for fate, state in _STATE_WITHOUT_APPLIED:
        if fate in fates:
            return state
    return NOT_ATTEMPTED


@dataclass
class BatchOutcome:
    """What became of one planned batch, deal by deal.

    ``fates`` holds every deal of the batch, "not attempted" until a request
    holding it is answered. ``reason`` is HubSpot's or the run's last word on
    what went wrong, if anything did.
    """

    index: int
    deals: list[str]
    fates: dict[str, DealFate] = field(default_factory=dict)
    requests: int = 0
    reason: str | None = None
    correlation_id: str | None = None

    def __post_init__(self) -> None:
        for deal in self.deals:
            self.fates.setdefault(deal, "not attempted")

    def settle(self, deals: Iterable[str], fate: DealFate) -> None:
        """Record what became of ``deals`` as HubSpot answered for them."""
        for deal in deals:
            self.fates[deal] = fate

    @property
    def state(self) -> BatchState:
        """The batch's state, from the fates of its deals."""
        return batch_state(list(self.fates.values()))

    @property
    def applied(self) -> list[str]:
        """The deals HubSpot accepted, ascending."""
        return self._deals_that("applied")

    @property
    def rejected(self) -> list[str]:
        """The deals HubSpot refused when each was sent alone, ascending."""
        return self._deals_that("rejected")

    @property
    def unanswered(self) -> list[str]:
        """The deals of a request an interruption cut off, ascending."""
        return self._deals_that("unanswered")

    def _deals_that(self, fate: DealFate) -> list[str]:
        return sorted_ids(deal for deal, met in self.fates.items() if met == fate)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; deals in ascending ID order.

        ``not_applied`` is every deal HubSpot did not accept, rejected or not;
        ``unanswered`` those sent in a request that an interruption cut off.
        """
        return {
            "index": self.index,
            "state": self.state,
            "deals": sorted_ids(self.deals),
            "applied": self.applied,
            "rejected": self.rejected,
            "not_applied": sorted_ids(
                deal for deal, fate in self.fates.items() if fate != "applied"
            ),
            "unanswered": self.unanswered,
            "requests": self.requests,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
        }


@dataclass(frozen=True)
class RejectedDeal:
    """A deal HubSpot refused when it was sent alone, with HubSpot's reason."""

    deal: str
    batch: int
    changes: tuple[Change, ...]
    status: int
    reason: str
    correlation_id: str | None = None
    errors: tuple[PropertyError, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; changes by property name."""
        return {
            "deal": self.deal,
            "batch": self.batch,
            "status": self.status,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
            "changes": [_change_to_dict(change) for change in self.changes],
            "errors": [
                {"property": e.property, "code": e.code, "message": e.message}
                for e in self.errors
            ],
        }


@dataclass(frozen=True)
class UnseenValue:
    """An accepted change HubSpot did not show yet when waiting ended."""

    change: Change
    current: str | None

    def to_dict(self) -> dict[str, Any]:
        """The change, plus the value HubSpot showed last."""
        return {**_change_to_dict(self.change), "current": self.current}


@dataclass
class ApplyReport:
    """Everything an apply did, for the text, Markdown and JSON renderers."""

    fingerprint: str
    batches: list[BatchOutcome] = field(default_factory=list)
    rejected: list[RejectedDeal] = field(default_factory=list)
    applied_changes: list[Change] = field(default_factory=list)
    unseen: list[UnseenValue] = field(default_factory=list)
    verify: VerifyState = NOT_CHECKED
    stopped_by: StopCause | None = None
    stop_reason: str | None = None
    requests: int = 0
    rate_limit_retries: int = 0
    server_error_retries: int = 0

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code; the most serious outcome decides."""
        if self.stopped_by == "interrupted":
            return ExitCode.INTERRUPTED
        if self.stopped_by == "error":
            return ExitCode.ERROR
        if self.stopped_by == "daily limit":
            return ExitCode.DAILY_LIMIT
        if self.rejected or any(b.state == REJECTED for b in self.batches):
            return ExitCode.PARTIAL_APPLY
        if self.verify == NOT_VISIBLE:
            return ExitCode.WAIT_TIMEOUT
        return ExitCode.OK

    def count_requests(
        self, start: tuple[int, int, int], end: tuple[int, int, int]
    ) -> None:
        """Take the client's counters before and after this apply."""
        self.requests = end[0] - start[0]
        self.rate_limit_retries = end[1] - start[1]
        self.server_error_retries = end[2] - start[2]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data, complete and stable: batches in order, deals
        ascending, changes by deal then property."""
        return {
            "fingerprint": self.fingerprint,
            "exit_code": int(self.exit_code),
            "stop_reason": self.stop_reason,
            "verify": self.verify,
            "counts": self._counts(),
            "batches": [outcome.to_dict() for outcome in self.batches],
            "rejected": [
                deal.to_dict() for deal in sorted(self.rejected, key=_deal_key)
            ],
            "not_visible": [
                value.to_dict()
                for value in sorted(self.unseen, key=lambda u: change_key(u.change))
            ],
        }

    def _counts(self) -> dict[str, int]:
        states = [outcome.state for outcome in self.batches]
        fates = Counter(
            fate for outcome in self.batches for fate in outcome.fates.values()
        )
        return {
            "batches": len(self.batches),
            "batches_applied": states.count(APPLIED),
            "batches_not_attempted": states.count(NOT_ATTEMPTED),
            "deals": sum(fates.values()),
            "deals_applied": fates["applied"],
            "deals_rejected": fates["rejected"],
            "deals_rejected_with_batch": fates["rejected with batch"],
            "deals_failed": fates["failed"],
            "deals_refused_daily_limit": fates["refused: daily limit"],
            "deals_unanswered": fates["unanswered"],
            "deals_not_attempted": fates["not attempted"],
            "changes_applied": len(self.applied_changes),
            "requests": self.requests,
            "rate_limit_retries": self.rate_limit_retries,
            "server_error_retries": self.server_error_retries,
        }


def change_key(change: Change) -> tuple[tuple[int, str], str]:
    """Sort key: deal ID ascending, then property name."""
    return (id_order(change.deal), change.property)


def _deal_key(deal: RejectedDeal) -> tuple[int, str]:
    return id_order(deal.deal)


def _change_to_dict(change: Change) -> dict[str, Any]:
    return {"deal": change.deal, **change_to_json(change)}
