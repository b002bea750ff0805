"""The sandbox's deals: current values, their history and pending updates.

HubSpot applies batch updates asynchronously, so an accepted update waits in
a queue until its due time. Nothing runs in the background: every read first
applies the updates that have come due.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reconciler.snapshot import Snapshot

Values = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Version:
    """One value a property held, newest first in a history."""

    value: str
    timestamp: int
    source: str
    source_id: str | None = None


@dataclass(frozen=True)
class Update:
    """The values one accepted batch entry sets on one deal, in order."""

    deal_id: int
    values: Values


@dataclass(frozen=True)
class _Pending:
    due: float
    stamp: int
    update: Update


class DealStore:
    """Deals by ID with the history of every value.

    Not thread-safe on its own: the server holds one lock around every call.
    """

    def __init__(
        self,
        snapshot: Snapshot,
        clock: Callable[[], float],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._history: dict[int, dict[str, list[Version]]] = {}
        self._updated: dict[int, int] = {}
        self._pending: deque[_Pending] = deque()
        self._seed(snapshot)

    def _seed(self, snapshot: Snapshot) -> None:
        stamp = self._now_ms()
        for key, values in snapshot.deals.items():
            if not key.isdigit():
                raise ValueError(f"deal ID {key!r} in the seed is not a number")
            history = self._history.setdefault(int(key), {})
            for name, value in values.items():
                # An absent value and null are the same in a snapshot; HubSpot
                # only lists properties that were ever set.
                if value is not None:
                    history[name] = [Version(value, stamp, "CRM_UI")]
            self._updated[int(key)] = stamp
        self.created = stamp

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    # --- reading -------------------------------------------------------------

    def ids(self) -> list[int]:
        """Every deal ID, ascending."""
        return sorted(self._history)

    def exists(self, deal_id: int) -> bool:
        return deal_id in self._history

    def history(self, deal_id: int) -> dict[str, list[Version]]:
        """Each property's versions, newest first, after applying due updates."""
        self.apply_due()
        return {
            name: list(versions) for name, versions in self._history[deal_id].items()
        }

    def values(self, deal_id: int) -> dict[str, str]:
        """The current value of every property the deal has."""
        self.apply_due()
        return {
            name: versions[0].value for name, versions in self._history[deal_id].items()
        }

    def updated_ms(self, deal_id: int) -> int:
        self.apply_due()
        return self._updated[deal_id]

    def projected(self, deal_id: int) -> dict[str, str]:
        """The values the deal will have once every queued update is applied."""
        values = self.values(deal_id)
        for pending in self._pending:
            if pending.update.deal_id == deal_id:
                values.update(pending.update.values)
        return values

    def all_values(self) -> dict[str, dict[str, str]]:
        """A copy of every deal's current values, keyed by the ID as text."""
        return {str(deal_id): self.values(deal_id) for deal_id in self.ids()}

    # --- writing -------------------------------------------------------------

    def schedule(self, updates: Sequence[Update], delay: float) -> None:
        """Queue ``updates`` to become visible ``delay`` seconds from now."""
        due = self._clock() + delay
        stamp = self._now_ms() + int(delay * 1000)
        self._pending.extend(_Pending(due, stamp, update) for update in updates)
        self.apply_due()

    def apply_due(self) -> None:
        """Apply, in the order accepted, every queued update whose time has come."""
        now = self._clock()
        # A constant delay keeps due times in acceptance order, so the queue's
        # head is always the next to come due.
        while self._pending and self._pending[0].due <= now:
            pending = self._pending.popleft()
            self._apply(pending.update, pending.stamp)

    def _apply(self, update: Update, stamp: int) -> None:
        history = self._history[update.deal_id]
        for name, value in update.values:
            history.setdefault(name, []).insert(0, Version(value, stamp, "API"))
        self._updated[update.deal_id] = max(self._updated[update.deal_id], stamp)
