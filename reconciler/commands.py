"""The work behind each command, free of any command-line concerns.

Each function takes plain settings, does one command's job and returns a
result for the renderer; expected failures are raised as ReconcilerError.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from reconciler import properties
from reconciler.apply import ApplyReport, apply_plan, rebatch_plan
from reconciler.desired import DesiredState, read_desired
from reconciler.diff import diff_values
from reconciler.errors import InvalidInputError, ReconcilerError, UsageError
from reconciler.hubspot import HubSpotClient, client_from_env
from reconciler.journal import PENDING_WINDOW_SECONDS, Journal
from reconciler.plan import MAX_BATCH_SIZE, Change, Plan, build_plan, load_plan
from reconciler.properties import Definitions
from reconciler.snapshot import Snapshot, load_snapshot, read_snapshot
from reconciler.validate import DesiredValue, check_pipelines, validate_state

log = logging.getLogger("reconciler")
JOURNAL_PATH = Path(".reconciler") / "journal.jsonl"


@dataclass
class Settings:
    """What every command may be told: inputs, limits and the environment."""

    properties_file: Path | None = None
    pipelines_file: Path | None = None
    snapshot_paths: list[Path] = field(default_factory=list)
    batch_size: int = MAX_BATCH_SIZE
    rate_limit: int = 100
    skip_missing: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    transport: httpx.BaseTransport | None = None
    journal_path: Path = JOURNAL_PATH
    _client: HubSpotClient | None = field(default=None, init=False, repr=False)

    def client(self) -> HubSpotClient | None:
        """The one HubSpot client of this command, or None without a token.

        One client per command, so that planning and applying share its rate
        limit window and its request count.
        """
        if self._client is None:
            self._client = client_from_env(
                self.env, transport=self.transport, rate_limit=self.rate_limit
            )
        return self._client

    def require_client(self, why: str) -> HubSpotClient:
        """The client, or a usage error saying ``why`` needs a token."""
        client = self.client()
        if client is None:
            raise UsageError(f"{why} needs HUBSPOT_ACCESS_TOKEN to be set")
        return client

    def close(self) -> None:
        """Close the HubSpot client's connections, if one was made."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Settings:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class Validated:
    """Desired state that passed every check."""

    state: DesiredState
    values: list[DesiredValue]
    definitions: Definitions


def load_definitions(settings: Settings, client: HubSpotClient | None) -> Definitions:
    """Definitions from --properties, else the API, else the shipped standard."""
    if settings.properties_file is not None:
        props = properties.load_definitions(settings.properties_file)
        props_source = str(settings.properties_file)
    elif client is not None:
        props = properties.parse_definitions(client.get_properties(), "HubSpot")
        props_source = "HubSpot's property definitions"
    else:
        props = properties.load_definitions(None)
        props_source = "the standard deal properties"
    if settings.pipelines_file is not None:
        pipelines = properties.load_pipelines(settings.pipelines_file)
        pipes_source = str(settings.pipelines_file)
    elif client is not None:
        pipelines = properties.parse_pipelines(client.get_pipelines(), "HubSpot")
        pipes_source = "HubSpot's pipelines"
    else:
        pipelines = properties.load_pipelines(None)
        pipes_source = "the default pipeline"
    return Definitions(props, pipelines, props_source, pipes_source)


def validate_paths(paths: Sequence[Path], settings: Settings) -> Validated:
    """``reconciler validate``: schema and property checks, all problems at once."""
    state = read_desired(paths)
    definitions = load_definitions(settings, settings.client())
    snapshot = (
        load_snapshot(settings.snapshot_paths) if settings.snapshot_paths else None
    )
    values = validate_state(state, definitions, snapshot)
    if snapshot is None and len(definitions.pipelines) > 1:
        _warn_unknown_pipelines(values)
    return Validated(state, values, definitions)


def _warn_unknown_pipelines(values: Sequence[DesiredValue]) -> None:
    """Say so when stages could not be checked against the deal's own pipeline."""
    with_pipeline = {v.deal for v in values if v.property == "pipeline"}
    unknown = {v.deal for v in values if v.property == "dealstage"} - with_pipeline
    if unknown:
        log.warning(
            "%d deal(s) set dealstage without pipeline; without --snapshot their"
            " current pipeline is unknown, so those stages were only checked to"
            " exist in some pipeline",
            len(unknown),
        )


def plan_paths(paths: Sequence[Path], settings: Settings) -> Plan:
    """``reconciler plan``: validate, read the snapshot, diff and batch."""
    state = read_desired(paths)
    client = settings.client()
    if not settings.snapshot_paths and client is None:
        raise UsageError(
            "plan needs --snapshot FILE, or HUBSPOT_ACCESS_TOKEN to read HubSpot"
        )
    definitions = load_definitions(settings, client)
    if settings.snapshot_paths:
        if state.problems:
            validate_state(state, definitions)  # raises with every problem
        snapshot = load_snapshot(settings.snapshot_paths)
        values = validate_state(state, definitions, snapshot)
    else:
        assert client is not None
        # The desired state's own problems come first, before HubSpot is read;
        # the stage checks that need each deal's pipeline follow the read.
        values = validate_state(state, definitions)
        names = [value.property for value in values]
        snapshot = read_snapshot(client, list(state.deals), _read_names(names))
        problems = check_pipelines(values, definitions, snapshot)
        if problems:
            raise InvalidInputError(problems)
    return _plan(state, values, snapshot, settings, live=not settings.snapshot_paths)


def _read_names(properties: Iterable[str]) -> list[str]:
    """The properties to read: the managed ones, and both of a deal's pipeline
    and stage when either is managed, since each is checked against the other."""
    names = set(properties)
    if names & {"dealstage", "pipeline"}:
        names |= {"dealstage", "pipeline"}
    return sorted(names)


def _plan(
    state: DesiredState,
    values: list[DesiredValue],
    snapshot: Snapshot,
    settings: Settings,
    live: bool,
) -> Plan:
    diff = diff_values(state, values, snapshot)
    if diff.missing and not settings.skip_missing:
        raise InvalidInputError(
            diff.missing,
            f"{len(diff.missing)} deal(s) cannot be updated; fix the desired state,"
            " or plan with --skip-missing to leave them out",
        )
    # Only HubSpot itself can lag behind an apply; a snapshot file is as old
    # as it is, so the journal says nothing about it.
    changes = diff.changes
    if live and settings.journal_path.exists():
        changes = _consult_journal(changes, diff.matching, settings.journal_path)
    plan = build_plan(changes, settings.batch_size, diff.unchanged_deals, diff.checks)
    plan.skipped = diff.missing
    return plan


def _consult_journal(
    changes: list[Change], matching: list[Change], journal_path: Path
) -> list[Change]:
    """Note what HubSpot now shows of earlier applies, and mark what it does not.

    Values HubSpot already holds (``matching``) are recorded as seen, so that
    a later revert is a fresh change; changes an apply submitted and HubSpot
    does not show yet are marked as awaiting processing. The journal only adds
    notes: if it cannot be read, the plan goes on without them.
    """
    journal = Journal(journal_path)
    try:
        journal.record_seen((c.deal, c.property, c.after) for c in matching)
        return [_mark_pending(change, journal, time.time()) for change in changes]
    except ReconcilerError as error:
        log.warning("%s; the plan shows no 'awaiting processing' notes", error)
        return changes


def _mark_pending(change: Change, journal: Journal, now: float) -> Change:
    submitted = journal.pending(change.deal, change.property, change.after)
    if submitted is None or now - submitted >= PENDING_WINDOW_SECONDS:
        return change
    # A clock set back since the apply must not print a negative age.
    age = max(0, int(now - submitted))
    note = f"submitted {age} s ago, awaiting processing"
    return dataclasses.replace(change, note=note)


def take_snapshot(paths: Sequence[Path], settings: Settings) -> Snapshot:
    """``reconciler snapshot``: the live values of the managed deals.

    Only the files' structure must be sound; values need not be valid, since
    nothing is sent and the snapshot is often what helps to fix them.
    """
    state = read_desired(paths)
    if state.problems:
        raise InvalidInputError(state.problems)
    client = settings.require_client("snapshot")
    names = (key.text for deal in state.deals.values() for key, _ in deal.properties)
    return read_snapshot(client, list(state.deals), _read_names(names))


@dataclass
class PlanToApply:
    """The plan ``apply`` will send, and whether it was saved (reviewed) first."""

    plan: Plan
    saved: bool


def plan_for_apply(
    targets: Sequence[Path], settings: Settings, batch_size: int | None
) -> PlanToApply:
    """A saved plan (``plan.json``), re-batched if asked, or a fresh plan."""
    if len(targets) == 1 and targets[0].suffix == ".json":
        saved = load_plan(targets[0])
        if batch_size is not None:
            saved = rebatch_plan(saved, batch_size)
        return PlanToApply(saved, saved=True)
    return PlanToApply(plan_paths(targets, settings), saved=False)


def apply_reviewed_plan(
    plan: Plan,
    settings: Settings,
    *,
    fail_fast: bool,
    wait: bool,
    timeout: float,
    resend: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ApplyReport:
    """``reconciler apply``: check the plan is fresh and unused, then send it.

    A plan is not sent again while HubSpot may still be processing an earlier
    apply of it; after that, the stale check decides. The journal's lock keeps
    two applies on this machine from racing.
    """
    client = settings.require_client("apply")
    journal = Journal(settings.journal_path)
    with journal.locked():
        applied_at = None if resend else journal.blocking_apply(plan.fingerprint())
        if applied_at is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(applied_at))
            raise ReconcilerError(
                f"this plan was sent at {when} and HubSpot may still be"
                " processing it, so it was not sent again; `reconciler plan`"
                " shows whether HubSpot holds its values yet. If HubSpot did"
                " apply it and the values were changed back since, apply with"
                " --resend"
            )
        return apply_plan(
            plan,
            client,
            fail_fast=fail_fast,
            wait=wait,
            timeout=timeout,
            journal=journal,
            progress=progress,
        )
