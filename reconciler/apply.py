"""Apply a plan: check it still holds, send its batches, verify the values.

HubSpot's batch update is all-or-nothing per request, so a rejected batch is
split in halves until the deals at fault stand alone and every other deal is
applied. A 202 only means "accepted": ``wait`` reads the deals back until they
show the planned values.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reconciler.errors import (
    DailyLimitError,
    ExitCode,
    HubSpotError,
    StalePlanError,
    UsageError,
)
from reconciler.hubspot import HubSpotClient, PropertyError, UpdateResult
from reconciler.plan import (
    Batch,
    Change,
    Plan,
    build_plan,
    build_request_body,
    change_to_json,
)
from reconciler.properties import PropertyDefinition, display_value, same_value
from reconciler.snapshot import canonical_id, id_order

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

DAILY_LIMIT_REASON = "daily API limit reached (resets at midnight, account time zone)"
UNANSWERED_REASON = "interrupted before HubSpot answered; HubSpot may still apply it"
INTERRUPTED_REASONS = {
    "checking": "interrupted before anything was sent",
    "sending": "interrupted; make a new plan to send the deals not applied",
    "sent": "interrupted after every batch was applied",
    "waiting": "interrupted while waiting for HubSpot to show the values",
}
FIRST_POLL_SECONDS = 1.0
MAX_POLL_SECONDS = 30.0

Values = dict[str, str | None]
_VERIFIABLE = (None, "fail fast")
# The deals of a batch that are neither applied nor rejected alone share the
# batch's fate, except those of a request that never got an answer.
_REMAINING_FATE: dict[BatchState, DealFate] = {
    APPLIED: "applied",
    REJECTED: "rejected with batch",
    PARTLY_APPLIED: "rejected with batch",
    FAILED: "failed",
    REFUSED_DAILY: "refused: daily limit",
    INTERRUPTED: "unanswered",
    NOT_ATTEMPTED: "not attempted",
}


# --- the report ------------------------------------------------------------


@dataclass
class BatchOutcome:
    """What became of one planned batch, deal by deal."""

    index: int
    deals: list[str]
    state: BatchState = NOT_ATTEMPTED
    applied: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    requests: int = 0
    reason: str | None = None

    def fates(self) -> dict[str, DealFate]:
        """What became of each deal of the batch."""
        fates: dict[str, DealFate] = {}
        for deal in self.deals:
            if deal in self.applied:
                fates[deal] = "applied"
            elif deal in self.rejected:
                fates[deal] = "rejected"
            elif deal in self.unanswered:
                fates[deal] = "unanswered"
            else:
                fates[deal] = _REMAINING_FATE[self.state]
        return fates

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; deals in ascending ID order.

        ``not_applied`` is every deal HubSpot did not accept, rejected or not;
        ``unanswered`` those sent in a request that an interruption cut off.
        """
        applied = set(self.applied)
        return {
            "index": self.index,
            "state": self.state,
            "deals": _sorted_ids(self.deals),
            "applied": _sorted_ids(self.applied),
            "rejected": _sorted_ids(self.rejected),
            "not_applied": _sorted_ids(d for d in self.deals if d not in applied),
            "unanswered": _sorted_ids(self.unanswered),
            "requests": self.requests,
            "reason": self.reason,
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
                for value in sorted(self.unseen, key=lambda u: _change_key(u.change))
            ],
        }

    def _counts(self) -> dict[str, int]:
        states = [outcome.state for outcome in self.batches]
        fates = Counter(
            fate for outcome in self.batches for fate in outcome.fates().values()
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


# --- the journal -----------------------------------------------------------


class Journal:
    """A local record of submitted changes, one JSON line per accepted request.

    HubSpot applies accepted updates minutes later, so a plan made meanwhile
    would offer the same change again; the journal lets it say "submitted".
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock

    def record(
        self, fingerprint: str, changes: Iterable[Change], at: float | None = None
    ) -> None:
        """Append the accepted ``changes`` of the plan ``fingerprint``."""
        entry = {
            "fingerprint": fingerprint,
            "at": self._clock() if at is None else at,
            "changes": [
                {"deal": c.deal, "property": c.property, "after": c.after}
                for c in changes
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one whole line, flushed to disk, so a crash leaves at
        # worst a torn last line, which reading skips.
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def was_applied(self, fingerprint: str) -> float | None:
        """When the plan ``fingerprint`` first had a change accepted, if ever."""
        times = [e["at"] for e in self._entries() if e["fingerprint"] == fingerprint]
        return min(times) if times else None

    def pending(self, deal: str, property: str, after: str) -> float | None:
        """When ``after`` was last submitted for the deal's property, if ever."""
        wanted = (canonical_id(deal), property, after)
        times = [
            entry["at"]
            for entry in self._entries()
            if wanted in {_journal_key(change) for change in entry["changes"]}
        ]
        return max(times) if times else None

    def _entries(self) -> Iterator[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if _is_entry(entry):
                yield entry


def _journal_key(change: Any) -> tuple[str, Any, Any]:
    if not isinstance(change, dict):
        return ("", None, None)
    deal = canonical_id(str(change.get("deal")))
    return (deal, change.get("property"), change.get("after"))


def _is_entry(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("fingerprint"), str)
        and isinstance(entry.get("at"), (int, float))
        and isinstance(entry.get("changes"), list)
    )


# --- the stale check -------------------------------------------------------


def check_stale(plan: Plan, client: HubSpotClient) -> None:
    """Raise ``StalePlanError`` if a planned deal moved since the plan was made.

    Reads the planned deals and properties live; sends no update.
    """
    changes = [*plan.changes, *plan.checks]
    if not changes:
        return
    current = read_values(client, changes)
    drifts = [
        _drift(change, current.get(canonical_id(change.deal))) for change in changes
    ]
    found = [drift for drift in drifts if drift is not None]
    if found:
        raise StalePlanError(found)


def read_values(client: HubSpotClient, changes: Sequence[Change]) -> dict[str, Values]:
    """The live values of the changed properties, by canonical deal ID."""
    deals = _sorted_ids({change.deal for change in changes})
    properties = sorted({change.property for change in changes})
    results, _missing = client.read_deals(deals, properties)
    current: dict[str, Values] = {}
    for record in results:
        if record.get("archived") is True:
            continue
        values = record.get("properties") or {}
        current[canonical_id(str(record.get("id")))] = {
            name: None if value is None else str(value)
            for name, value in values.items()
        }
    return current


def _drift(change: Change, values: Values | None) -> str | None:
    definition = _definition(change)
    planned = display_value(definition, change.before)
    where = f"{change.location}: " if change.location else ""
    subject = f"{where}deal {change.deal} {change.property}"
    if values is None:
        return (
            f"{subject}: planned against {planned}, now the deal is not in"
            " HubSpot (deleted or merged)"
        )
    current = values.get(change.property)
    if same_value(definition, current, change.before or ""):
        return None
    now = display_value(definition, current)
    return f"{subject}: planned against {planned}, now {now}"


def _definition(change: Change) -> PropertyDefinition:
    return PropertyDefinition(
        name=change.property, type=change.type, field_type=change.field_type
    )


# --- applying --------------------------------------------------------------


def apply_plan(
    plan: Plan,
    client: HubSpotClient,
    *,
    fail_fast: bool = False,
    wait: bool = False,
    timeout: float = 600.0,
    journal: Journal | None = None,
    progress: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ApplyReport:
    """Check the plan still holds, send its batches and optionally verify.

    Raises ``StalePlanError`` (nothing sent) when a planned deal moved.
    Failures while sending end up in the report, not as exceptions, and so
    does an interruption (Ctrl-C): it stops the run, and the report says
    what HubSpot accepted until then.
    """
    start = _counters(client)
    run = _Run(plan, client, journal, progress or _quiet)
    try:
        check_stale(plan, client)
        run.send_all(fail_fast)
        # A run stopped by an error or the daily limit cannot read back either.
        if wait and run.report.applied_changes and run.report.stopped_by in _VERIFIABLE:
            run.verify(timeout, sleep, clock)
    except KeyboardInterrupt:
        run.interrupt()
    run.report.count_requests(start, _counters(client))
    return run.report


def rebatch_plan(plan: Plan, batch_size: int) -> Plan:
    """The same plan cut into batches of at most ``batch_size`` deals.

    The fingerprint names what a plan sends, not how it is batched, so the
    journal knows the re-batched plan as the one that was saved.
    """
    rebatched = build_plan(plan.changes, batch_size, plan.unchanged_deals, plan.checks)
    rebatched.warnings = list(plan.warnings)
    if rebatched.fingerprint() != plan.fingerprint():
        # Only a plan whose changes are not in plan order can get here.
        raise UsageError(
            "--batch-size cannot re-batch this plan without changing it;"
            " make a new plan with --batch-size instead"
        )
    return rebatched


class _Run:
    """The state of one apply: the client, the journal and the growing report."""

    def __init__(
        self,
        plan: Plan,
        client: HubSpotClient,
        journal: Journal | None,
        progress: Callable[[str], None],
    ) -> None:
        self.plan = plan
        self.client = client
        self.journal = journal
        self.progress = progress
        self.fingerprint = plan.fingerprint()
        self.report = ApplyReport(
            self.fingerprint,
            batches=[BatchOutcome(batch.index, batch.deals) for batch in plan.batches],
        )
        # Where an interruption finds the run: the phase, the batch being
        # sent, the request awaiting its answer, the last read while waiting.
        self._phase = "checking"
        self._current: BatchOutcome | None = None
        self._batch_start = 0
        self._in_flight: tuple[list[str], int] | None = None
        self._last_read: list[UnseenValue] | None = None

    def send_all(self, fail_fast: bool) -> None:
        self._phase = "sending"
        total = len(self.plan.batches)
        for batch, outcome in zip(self.plan.batches, self.report.batches, strict=True):
            if self.report.stopped_by is not None:
                return
            self._current, self._batch_start = outcome, self.client.requests_sent
            self._send_batch(batch, outcome, fail_fast)
            self._current = None
            self.progress(_batch_message(outcome, total))

    def _send_batch(self, batch: Batch, outcome: BatchOutcome, fail_fast: bool) -> None:
        try:
            result = self._update(batch.changes, outcome)
            if result.accepted:
                outcome.state = APPLIED
                return
            outcome.state = REJECTED
            outcome.reason = result.reason
            if fail_fast:
                self._stop_fail_fast(batch, result, outcome)
                return
            self._bisect(batch.changes, result, outcome)
            if outcome.applied:
                outcome.state = PARTLY_APPLIED
        except DailyLimitError as error:
            self._stop_daily(outcome, error)
        except HubSpotError as error:
            outcome.state = FAILED
            outcome.reason = str(error)
            self._stop("error", f"batch {batch.index} failed: {error}")

    def _update(self, changes: Sequence[Change], outcome: BatchOutcome) -> UpdateResult:
        deals = _sorted_ids({change.deal for change in changes})
        outcome.requests += 1
        self._in_flight = (deals, self.client.requests_sent)
        result = self.client.update_deals(build_request_body(changes))
        if result.accepted:
            # The journal first: it is what keeps a plan from being sent twice.
            if self.journal is not None:
                self.journal.record(self.fingerprint, changes)
            outcome.applied.extend(deals)
            self.report.applied_changes.extend(changes)
        self._in_flight = None
        return result

    def _bisect(
        self, changes: Sequence[Change], result: UpdateResult, outcome: BatchOutcome
    ) -> None:
        """Halve a rejected set until each deal at fault is refused alone."""
        deals = _sorted_ids({change.deal for change in changes})
        if len(deals) == 1:
            self._reject(deals[0], changes, result, outcome)
            return
        middle = (len(deals) + 1) // 2
        for part in (set(deals[:middle]), set(deals[middle:])):
            subset = [change for change in changes if change.deal in part]
            answer = self._update(subset, outcome)
            if not answer.accepted:
                self._bisect(subset, answer, outcome)

    def _reject(
        self,
        deal: str,
        changes: Sequence[Change],
        result: UpdateResult,
        outcome: BatchOutcome,
    ) -> None:
        outcome.rejected.append(deal)
        self.report.rejected.append(
            RejectedDeal(
                deal=deal,
                batch=outcome.index,
                changes=tuple(sorted(changes, key=_change_key)),
                status=result.status,
                reason=result.reason,
                correlation_id=result.correlation_id,
                errors=result.property_errors,
            )
        )

    def _stop_fail_fast(
        self, batch: Batch, result: UpdateResult, outcome: BatchOutcome
    ) -> None:
        # A lone deal is known to be at fault without splitting anything.
        if len(outcome.deals) == 1:
            self._reject(outcome.deals[0], batch.changes, result, outcome)
        self._stop(
            "fail fast", f"stopped after batch {batch.index} was rejected (fail fast)"
        )

    def _stop_daily(self, outcome: BatchOutcome, error: DailyLimitError) -> None:
        if outcome.applied:
            outcome.state = PARTLY_APPLIED
        elif outcome.state != REJECTED:
            # A 429 answered the batch itself; without one, the client knew
            # the limit was spent and sent nothing.
            outcome.state = REFUSED_DAILY if error.status == 429 else NOT_ATTEMPTED
        if outcome.reason is None and outcome.state != NOT_ATTEMPTED:
            outcome.reason = DAILY_LIMIT_REASON
        self._stop("daily limit", DAILY_LIMIT_REASON)

    def interrupt(self) -> None:
        """Stop where an interruption found the run and settle the report."""
        if self._current is not None:
            self._interrupt_batch(self._current)
        phase = self._phase
        if phase == "sending" and all(b.state == APPLIED for b in self.report.batches):
            phase = "sent"
        if self._last_read is not None and self.report.verify == NOT_CHECKED:
            self.report.verify = NOT_VISIBLE if self._last_read else VERIFIED
            self.report.unseen = self._last_read
        self._stop("interrupted", INTERRUPTED_REASONS[phase])

    def _interrupt_batch(self, outcome: BatchOutcome) -> None:
        if self._in_flight is not None:
            deals, sent_before = self._in_flight
            if self.client.requests_sent > sent_before:
                outcome.unanswered = [d for d in deals if d not in outcome.applied]
            else:
                outcome.requests -= 1
        if outcome.applied:
            whole = len(set(outcome.applied)) == len(outcome.deals)
            outcome.state = APPLIED if whole else PARTLY_APPLIED
        elif outcome.state == NOT_ATTEMPTED and self._sent_for_batch():
            # Sent, and its answer never recorded: HubSpot may have taken it.
            outcome.state = INTERRUPTED
            outcome.unanswered = list(outcome.deals)
        if outcome.unanswered and outcome.reason is None:
            outcome.reason = UNANSWERED_REASON

    def _sent_for_batch(self) -> bool:
        return self.client.requests_sent > self._batch_start

    def _stop(self, cause: StopCause, reason: str) -> None:
        self.report.stopped_by = cause
        self.report.stop_reason = reason

    def verify(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> None:
        """Read back until every accepted value shows or ``timeout`` passes."""
        self._phase = "waiting"
        try:
            unseen = self._poll(timeout, sleep, clock)
        except DailyLimitError:
            self._stop("daily limit", DAILY_LIMIT_REASON)
            return
        except HubSpotError as error:
            self._stop("error", f"could not verify: {error}")
            return
        if unseen:
            self.report.verify = NOT_VISIBLE
            self.report.unseen = unseen
            self.progress(f"timed out: {len(unseen)} value(s) not visible yet")
        else:
            self.report.verify = VERIFIED
            self.progress("verified: HubSpot shows every applied value")

    def _poll(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> list[UnseenValue]:
        # HubSpot processes accepted updates asynchronously, sometimes for
        # minutes, so one stale read proves nothing: pause 1, 2, 4 ... 30 s.
        unseen = [UnseenValue(c, c.before) for c in self.report.applied_changes]
        deadline = clock() + timeout
        delay = FIRST_POLL_SECONDS
        while True:
            pause = min(delay, deadline - clock())
            if pause > 0:
                sleep(pause)
            unseen = self._unseen([value.change for value in unseen])
            self._last_read = unseen
            if not unseen or clock() >= deadline:
                return unseen
            self.progress(f"waiting: {len(unseen)} value(s) not visible yet")
            delay = min(delay * 2, MAX_POLL_SECONDS)

    def _unseen(self, changes: Sequence[Change]) -> list[UnseenValue]:
        current = read_values(self.client, changes)
        unseen = []
        for change in changes:
            value = current.get(canonical_id(change.deal), {}).get(change.property)
            if not same_value(_definition(change), value, change.after):
                unseen.append(UnseenValue(change, value))
        return unseen


# --- helpers ---------------------------------------------------------------


def _quiet(message: str) -> None:
    """Progress goes nowhere unless the caller asks for it."""


def _counters(client: HubSpotClient) -> tuple[int, int, int]:
    return (
        client.requests_sent,
        client.rate_limit_retries,
        client.server_error_retries,
    )


def _batch_message(outcome: BatchOutcome, total: int) -> str:
    message = f"batch {outcome.index}/{total} {outcome.state}"
    if outcome.state == PARTLY_APPLIED:
        message += f" ({len(outcome.applied)} of {len(outcome.deals)} deals)"
    return message


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    return sorted(set(ids), key=id_order)


def _change_key(change: Change) -> tuple[tuple[int, str], str]:
    return (id_order(change.deal), change.property)


def _deal_key(deal: RejectedDeal) -> tuple[int, str]:
    return id_order(deal.deal)


def _change_to_dict(change: Change) -> dict[str, Any]:
    return {"deal": change.deal, **change_to_json(change)}
