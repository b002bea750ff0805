"""Exit codes, findings and the exceptions that end a command."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class ExitCode(enum.IntEnum):
    """Process exit codes; the README documents each one."""

    OK = 0
    ERROR = 1
    CHANGES_PENDING = 2
    PARTIAL_APPLY = 3
    STALE_PLAN = 4
    WAIT_TIMEOUT = 5
    DAILY_LIMIT = 6
    USAGE = 64
    INTERRUPTED = 130


class Location(NamedTuple):
    """Where something was written: file, 1-based line and column.

    A named tuple because loading makes one per YAML node; it is cheap.
    """

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Finding:
    """One problem found in the input; validation collects these as values."""

    location: Location | None
    message: str
    rule: str
    deal: str | None = None
    property: str | None = None

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        subject = []
        if self.deal is not None:
            subject.append(f"deal {self.deal}")
        if self.property is not None:
            subject.append(f"property {self.property}")
        prefix = f"{', '.join(subject)}: " if subject else ""
        return f"{where}{prefix}{self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        if self.location is None:
            return ("", 0, 0, self.message)
        loc = self.location
        return (loc.file, loc.line, loc.column, self.message)


class ReconcilerError(Exception):
    """Base of every expected failure; the CLI turns it into a message and code."""

    exit_code: ExitCode = ExitCode.ERROR


class InvalidInputError(ReconcilerError):
    """The desired state, a snapshot or a plan file has problems; all are listed."""

    def __init__(self, findings: list[Finding], summary: str | None = None) -> None:
        self.findings = sorted(findings, key=Finding.sort_key)
        count = len(self.findings)
        noun = "problem" if count == 1 else "problems"
        self.summary = summary or f"{count} {noun} found"
        super().__init__(self.summary)


class UsageError(ReconcilerError):
    """The command line itself is wrong."""

    exit_code = ExitCode.USAGE


class HubSpotError(ReconcilerError):
    """HubSpot refused a request or could not be reached."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.status = status
        self.correlation_id = correlation_id
        detail = message
        if status is not None:
            detail = f"HubSpot answered {status}: {message}"
        if correlation_id:
            detail = f"{detail} (correlationId {correlation_id})"
        super().__init__(detail)


class DailyLimitError(HubSpotError):
    """HubSpot's daily API allowance for the account is spent."""

    exit_code = ExitCode.DAILY_LIMIT


class StalePlanError(ReconcilerError):
    """A deal changed since the plan was made; nothing was sent."""

    exit_code = ExitCode.STALE_PLAN

    def __init__(self, drifts: list[str]) -> None:
        self.drifts = drifts
        super().__init__(
            f"the plan is stale: {len(drifts)} value(s) changed since it was made;"
            " nothing was sent"
        )
