"""Apply a plan: check it still holds, send its batches, verify the values.

HubSpot's batch update is all-or-nothing per request, so a rejected batch is
split in halves until the deals at fault stand alone and every other deal is
applied. A 202 only means "accepted": ``wait`` reads the deals back until they
show the planned values. Each deal's fate is recorded as HubSpot answers for
it; the report derives everything else from those fates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.errors import (
    DailyLimitError,
    HubSpotError,
    StalePlanError,
    UsageError,
)
from reconciler.hubspot import HubSpotClient, UpdateResult
from reconciler.journal import Journal
from reconciler.plan import Batch, Change, Plan, build_plan, build_request_body
from reconciler.properties import display_value, same_value
from reconciler.report import (
    APPLIED,
    FAILED,
    INTERRUPTED,
    NOT_ATTEMPTED,
    NOT_CHECKED,
    NOT_VISIBLE,
    PARTLY_APPLIED,
    REFUSED_DAILY,
    REJECTED,
    VERIFIED,
    ApplyReport,
    BatchOutcome,
    BatchState,
    DealFate,
    RejectedDeal,
    StopCause,
    UnseenValue,
    VerifyState,
    change_key,
)
from reconciler.snapshot import Snapshot, add_response, canonical_id, sorted_ids

# Callers may import the report model and the journal from here as well.
__all__ = [
    "APPLIED",
    "DAILY_LIMIT_REASON",
    "FAILED",
    "FIRST_POLL_SECONDS",
    "INTERRUPTED",
    "INTERRUPTED_REASONS",
    "MAX_POLL_SECONDS",
    "NOT_ATTEMPTED",
    "NOT_CHECKED",
    "NOT_VISIBLE",
    "PARTLY_APPLIED",
    "REFUSED_DAILY",
    "REJECTED",
    "UNANSWERED_REASON",
    "VERIFIED",
    "ApplyReport",
    "BatchOutcome",
    "BatchState",
    "DealFate",
    "Journal",
    "RejectedDeal",
    "StopCause",
    "UnseenValue",
    "VerifyState",
    "apply_plan",
    "check_stale",
    "read_values",
    "rebatch_plan",
]

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
    deals = sorted_ids(change.deal for change in changes)
    properties = sorted({change.property for change in changes})
    results, _missing = client.read_deals(deals, properties)
    current = Snapshot(source="HubSpot")
    add_response(current, {"results": results}, "HubSpot")
    return current.deals


def _drift(change: Change, values: Values | None) -> str | None:
    definition = change.definition()
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
    what HubSpot accepted until then. The journal records every accepted
    request and, when waiting ends with every value shown, the verification.
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
    if journal is not None and run.report.verify == VERIFIED:
        journal.record_verified(run.fingerprint)
    run.report.count_requests(start, _counters(client))
    return run.report


def rebatch_plan(plan: Plan, batch_size: int) -> Plan:
    """The same plan cut into batches of at most ``batch_size`` deals.

    The fingerprint names what a plan sends, not how it is batched, so the
    journal knows the re-batched plan as the one that was saved.
    """
    rebatched = build_plan(plan.changes, batch_size, plan.unchanged_deals, plan.checks)
    rebatched.skipped = list(plan.skipped)
    if rebatched.fingerprint() != plan.fingerprint():
        # Only a plan whose changes are not in plan order can get here.
        raise UsageError(
            "--batch-size cannot re-batch this plan without changing it;"
            " make a new plan with --batch-size instead"
        )
    return rebatched


@dataclass(frozen=True)
class _InFlight:
    """A request sent or about to be: its batch, its deals, and the client's
    request count before it, which tells whether it went out."""

    outcome: BatchOutcome
    changes: Sequence[Change]
    deals: list[str]
    sent_before: int


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
        # Where an interruption finds the run: its phase, and the request
        # whose answer is not recorded yet.
        self._phase = "checking"
        self._in_flight: _InFlight | None = None

    # --- sending -------------------------------------------------------------

    def send_all(self, fail_fast: bool) -> None:
        """Send every batch in order until the run is stopped."""
        self._phase = "sending"
        total = len(self.plan.batches)
        for batch, outcome in zip(self.plan.batches, self.report.batches, strict=True):
            if self.report.stopped_by is not None:
                return
            self._send_batch(batch, outcome, fail_fast)
            self.progress(_batch_message(outcome, total))

    def _send_batch(self, batch: Batch, outcome: BatchOutcome, fail_fast: bool) -> None:
        try:
            result = self._update(batch.changes, outcome)
            if result.accepted:
                return
            outcome.reason = result.reason
            outcome.correlation_id = result.correlation_id
            if fail_fast:
                self._stop_fail_fast(batch, result, outcome)
            else:
                self._bisect(batch.changes, result, outcome)
        except DailyLimitError:
            if outcome.reason is None and outcome.state != NOT_ATTEMPTED:
                outcome.reason = DAILY_LIMIT_REASON
            self._stop("daily limit", DAILY_LIMIT_REASON)
        except HubSpotError as error:
            outcome.reason = str(error)
            self._stop("error", f"batch {batch.index} failed: {error}")

    def _update(self, changes: Sequence[Change], outcome: BatchOutcome) -> UpdateResult:
        """Send one request and record what became of its deals."""
        deals = sorted_ids({change.deal for change in changes})
        outcome.requests += 1
        self._in_flight = _InFlight(outcome, changes, deals, self.client.requests_sent)
        try:
            result = self.client.update_deals(build_request_body(changes))
        except HubSpotError as error:
            self._in_flight = None
            fate = _fate_of_error(error)
            if fate is not None:
                outcome.settle(deals, fate)
            raise
        if result.accepted:
            # The journal first: it is what keeps a plan from being sent twice.
            if self.journal is not None:
                self.journal.record(self.fingerprint, changes)
            outcome.settle(deals, "applied")
            self.report.applied_changes.extend(changes)
        else:
            outcome.settle(deals, "rejected with batch")
        self._in_flight = None
        return result

    def _bisect(
        self, changes: Sequence[Change], result: UpdateResult, outcome: BatchOutcome
    ) -> None:
        """Halve a rejected set until each deal at fault is refused alone."""
        deals = sorted_ids({change.deal for change in changes})
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
        outcome.settle([deal], "rejected")
        self.report.rejected.append(
            RejectedDeal(
                deal=deal,
                batch=outcome.index,
                changes=tuple(sorted(changes, key=change_key)),
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

    # --- stopping ------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop where an interruption found the run and settle the report."""
        if self._in_flight is not None:
            self._settle_cut_off(self._in_flight)
        phase = self._phase
        if phase == "sending" and all(b.state == APPLIED for b in self.report.batches):
            phase = "sent"
        self._stop("interrupted", INTERRUPTED_REASONS[phase])

    def _settle_cut_off(self, request: _InFlight) -> None:
        outcome = request.outcome
        if self.client.requests_sent == request.sent_before:
            # Stopped while pacing: the request never went out.
            outcome.requests -= 1
            return
        # Sent, and its answer never recorded: HubSpot may have taken it, so
        # the journal counts it as submitted and keeps the plan from going
        # out again while HubSpot may still be processing it.
        unknown = [d for d in request.deals if outcome.fates[d] != "applied"]
        if unknown and self.journal is not None:
            self.journal.record(self.fingerprint, request.changes)
        outcome.settle(unknown, "unanswered")
        if unknown and outcome.reason is None:
            outcome.reason = UNANSWERED_REASON

    def _stop(self, cause: StopCause, reason: str) -> None:
        self.report.stopped_by = cause
        self.report.stop_reason = reason

    # --- verifying -----------------------------------------------------------

    def verify(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> None:
        """Read back until every accepted value shows or ``timeout`` passes.

        The report holds what the last read showed, so an interruption while
        waiting leaves it saying so; a failed read leaves it "not checked".
        """
        self._phase = "waiting"
        try:
            self._poll(timeout, sleep, clock)
        except DailyLimitError:
            self._show_read(None)
            self._stop("daily limit", DAILY_LIMIT_REASON)
            return
        except HubSpotError as error:
            self._show_read(None)
            self._stop("error", f"could not verify: {error}")
            return
        if self.report.unseen:
            count = len(self.report.unseen)
            self.progress(f"timed out: {count} value(s) not visible yet")
        else:
            self.progress("verified: HubSpot shows every applied value")

    def _poll(
        self, timeout: float, sleep: Callable[[float], None], clock: Callable[[], float]
    ) -> None:
        # HubSpot processes accepted updates asynchronously, sometimes for
        # minutes, so one stale read proves nothing: pause 1, 2, 4 ... 30 s.
        changes = list(self.report.applied_changes)
        deadline = clock() + timeout
        delay = FIRST_POLL_SECONDS
        while True:
            pause = min(delay, deadline - clock())
            if pause > 0:
                sleep(pause)
            unseen = self._unseen(changes)
            self._show_read(unseen)
            if not unseen or clock() >= deadline:
                return
            self.progress(f"waiting: {len(unseen)} value(s) not visible yet")
            changes = [value.change for value in unseen]
            delay = min(delay * 2, MAX_POLL_SECONDS)

    def _show_read(self, unseen: list[UnseenValue] | None) -> None:
        """Put what a read showed in the report; ``None`` for no read."""
        self.report.unseen = unseen or []
        if unseen is None:
            self.report.verify = NOT_CHECKED
        else:
            self.report.verify = NOT_VISIBLE if unseen else VERIFIED

    def _unseen(self, changes: Sequence[Change]) -> list[UnseenValue]:
        current = read_values(self.client, changes)
        unseen = []
        for change in changes:
            value = current.get(canonical_id(change.deal), {}).get(change.property)
            if not same_value(change.definition(), value, change.after):
                unseen.append(UnseenValue(change, value))
        return unseen


# --- helpers ---------------------------------------------------------------


def _fate_of_error(error: HubSpotError) -> DealFate | None:
    """What a request that raised did to its deals; ``None`` if never sent."""
    if isinstance(error, DailyLimitError):
        # A 429 answered the request; without one, the client knew the limit
        # was spent and sent nothing.
        return "refused: daily limit" if error.status == 429 else None
    return "failed"


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
