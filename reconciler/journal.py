"""The journal: a local record of what apply submitted and what it verified.

HubSpot applies an accepted batch update minutes later. Meanwhile a fresh
plan would offer the same change again and a saved plan could be sent twice;
the journal lets ``plan`` say "submitted, awaiting processing" and ``apply``
refuse to resend a plan HubSpot may still be working on. Once HubSpot showed
a plan's values, or the pending window passed, the plan may be sent again and
the stale check decides whether there is anything left to do.

One JSON object a line, appended and flushed whole, so a crash leaves at worst
a torn last line, which reading skips, as it skips any line not of these
shapes. A submission line is
``{"fingerprint", "at", "changes": [{"deal", "property", "after"}]}``; a
verification line is ``{"fingerprint", "at", "verified": true}``; a line
``{"at", "seen": [{"deal", "property", "after"}]}`` says a later read of
HubSpot showed those submitted values, so they are no longer pending.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reconciler.errors import ReconcilerError
from reconciler.plan import Change
from reconciler.snapshot import canonical_id

try:
    import fcntl
except ImportError:  # Windows has no flock; there, applies are not serialised.
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger("reconciler")

# Submissions older than this are assumed processed; HubSpot documents
# "several minutes" for large batch-async updates.
PENDING_WINDOW_SECONDS = 3600.0
LOCK_POLL_SECONDS = 0.05
# Times past this (the year 3000) are damage, not journal entries.
LATEST_TIME = 32_503_680_000.0

_Key = tuple[str, Any, Any]


@dataclass
class _Index:
    """What the journal file says, arranged for the questions asked of it."""

    first_submitted: dict[str, float] = field(default_factory=dict)
    last_submitted: dict[str, float] = field(default_factory=dict)
    last_verified: dict[str, float] = field(default_factory=dict)
    # (deal, property, after) -> when it was last submitted, and by which plan.
    changes: dict[_Key, tuple[float, str]] = field(default_factory=dict)
    # The keys each plan submitted, and when each key was last seen in HubSpot.
    plan_keys: dict[str, set[_Key]] = field(default_factory=dict)
    seen: dict[_Key, float] = field(default_factory=dict)

    def add(self, entry: dict[str, Any]) -> None:
        at = float(entry["at"])
        if "seen" in entry:
            for change in filter(_is_change, entry["seen"]):
                key = _change_key(change)
                self.seen[key] = max(at, self.seen.get(key, at))
            return
        fingerprint = entry["fingerprint"]
        if entry.get("verified") is True:
            _keep_latest(self.last_verified, fingerprint, at)
            return
        self.first_submitted[fingerprint] = min(
            at, self.first_submitted.get(fingerprint, at)
        )
        _keep_latest(self.last_submitted, fingerprint, at)
        self.plan_keys.setdefault(fingerprint, set())
        for change in filter(_is_change, entry["changes"]):
            key = _change_key(change)
            self.plan_keys.setdefault(fingerprint, set()).add(key)
            if key not in self.changes or self.changes[key][0] <= at:
                self.changes[key] = (at, fingerprint)

    def shown_since(self, key: _Key, at: float) -> bool:
        """Whether a read of HubSpot showed this submitted value at or after ``at``."""
        return self.seen.get(key, float("-inf")) >= at

    def verified_since(self, fingerprint: str, at: float) -> bool:
        """Whether HubSpot showed the plan's values at or after ``at``."""
        return self.last_verified.get(fingerprint, float("-inf")) >= at


class Journal:
    """The journal file next to the desired state, and the questions it answers.

    The file is read once, at the first question; later answers come from
    memory, kept current by this object's own records. ``locked`` reads it
    afresh, so what is asked under the lock is what every process wrote.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._index: _Index | None = None

    @property
    def lock_path(self) -> Path:
        """The lock file beside the journal that ``locked`` holds."""
        return self.path.with_name(self.path.name + ".lock")

    # --- writing -------------------------------------------------------------

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
        self._append(entry)

    def record_seen(
        self, values: Iterable[tuple[str, str, str]], at: float | None = None
    ) -> None:
        """Note that HubSpot now shows these (deal, property, after) values.

        Only values still pending are written, so a plan that finds nothing
        pending leaves the journal as it was.
        """
        pending = [v for v in values if self.pending(*v) is not None]
        if not pending:
            return
        entry = {
            "at": self._clock() if at is None else at,
            "seen": [{"deal": d, "property": p, "after": a} for d, p, a in pending],
        }
        self._append(entry)

    def record_verified(self, fingerprint: str, at: float | None = None) -> None:
        """Append that HubSpot showed every value the plan had accepted."""
        entry = {
            "fingerprint": fingerprint,
            "at": self._clock() if at is None else at,
            "verified": True,
        }
        self._append(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as handle:
                # A torn last line must not swallow this one.
                if _ends_torn(handle):
                    line = b"\n" + line
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise ReconcilerError(
                f"{self.path}: cannot write the apply journal:"
                f" {error.strerror or error}"
            ) from None
        if self._index is not None:
            self._index.add(entry)

    # --- reading -------------------------------------------------------------

    def was_applied(self, fingerprint: str) -> float | None:
        """When the plan ``fingerprint`` first had a change accepted, if ever."""
        return self._load().first_submitted.get(fingerprint)

    def blocking_apply(
        self, fingerprint: str, now: float | None = None
    ) -> float | None:
        """When the plan was last submitted, if HubSpot may still be processing it.

        That is: submitted less than ``PENDING_WINDOW_SECONDS`` before ``now``
        and not verified since. ``None`` means the plan may be sent again; the
        stale check then finds whether HubSpot already shows its values.
        """
        index = self._load()
        last = index.last_submitted.get(fingerprint)
        if last is None or index.verified_since(fingerprint, last):
            return None
        keys = index.plan_keys.get(fingerprint, set())
        if keys and all(index.shown_since(key, last) for key in keys):
            return None
        now = self._clock() if now is None else now
        return last if now - last < PENDING_WINDOW_SECONDS else None

    def pending(self, deal: str, property: str, after: str) -> float | None:
        """When ``after`` was last submitted for the deal's property, unless
        HubSpot was seen showing it since; ``None`` if never."""
        index = self._load()
        found = index.changes.get((canonical_id(deal), property, after))
        if found is None:
            return None
        at, fingerprint = found
        key = (canonical_id(deal), property, after)
        if index.verified_since(fingerprint, at) or index.shown_since(key, at):
            return None
        return at

    def _load(self) -> _Index:
        if self._index is None:
            self._index = _Index()
            for entry in self._entries():
                self._index.add(entry)
        return self._index

    def _entries(self) -> Iterator[dict[str, Any]]:
        try:
            # A damaged byte spoils only its own line, which is then skipped.
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as error:
            raise ReconcilerError(
                f"{self.path}: cannot read the apply journal: {error.strerror or error}"
            ) from None
        lines = text.splitlines()
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if _is_entry(entry):
                yield entry

    # --- one apply at a time -------------------------------------------------

    @contextlib.contextmanager
    def locked(self, timeout: float = 0.0) -> Iterator[None]:
        """Hold the journal's lock file for the block: one apply at a time.

        Raises ``ReconcilerError`` when another process, or another
        ``Journal`` in this one, holds it for longer than ``timeout`` seconds.
        Where the platform has no ``flock``, the block runs unlocked.
        """
        if fcntl is None:
            yield
            return
        folder = self.lock_path.parent
        if folder.exists() and not folder.is_dir():
            raise ReconcilerError(
                f"{folder} is not a folder; the apply journal is kept in it"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = self.lock_path.open("a")
        except OSError as error:
            raise ReconcilerError(
                f"{self.lock_path}: cannot open the journal's lock file:"
                f" {error.strerror or error}"
            ) from None
        with handle:
            held = self._acquire(handle, timeout)
            self._index = None
            try:
                yield
            finally:
                if held:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _acquire(self, handle: IO[str], timeout: float) -> bool:
        """Take the lock, waiting up to ``timeout``; False where locks fail."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ReconcilerError(
                        f"{self.path}: another apply is running with this"
                        " journal; try again when it has finished"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
            except OSError as error:
                # Some network file systems refuse flock; a lock that cannot
                # be had must not stop every apply.
                LOG.warning(
                    "%s: cannot lock (%s); not guarding against a second apply",
                    self.lock_path,
                    error.strerror or error,
                )
                return False


def _keep_latest(times: dict[str, float], fingerprint: str, at: float) -> None:
    times[fingerprint] = max(at, times.get(fingerprint, at))


def _ends_torn(handle: IO[bytes]) -> bool:
    """Whether the file so far ends inside a line (a write cut short)."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return False
    handle.seek(size - 1)
    return handle.read(1) != b"\n"


def _change_key(change: dict[str, str]) -> _Key:
    return (canonical_id(change["deal"]), change["property"], change["after"])


def _is_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    at = entry.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        return False
    if not 0 <= at <= LATEST_TIME:
        return False
    if isinstance(entry.get("seen"), list):
        return True
    if not isinstance(entry.get("fingerprint"), str):
        return False
    return entry.get("verified") is True or isinstance(entry.get("changes"), list)


def _is_change(change: Any) -> bool:
    """Whether a journal item names a deal, a property and a value, as text."""
    return isinstance(change, dict) and all(
        isinstance(change.get(name), str) for name in ("deal", "property", "after")
    )
