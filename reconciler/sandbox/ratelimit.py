"""HubSpot's rolling ten-second request limit and its response headers."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 10.0
# The sandbox never runs out of its daily allowance; the headers still carry
# a figure so clients can exercise the code that reads them.
DAILY_LIMIT = 1_000_000


class RollingWindow:
    """At most ``limit`` requests in any ``WINDOW_SECONDS``; refusals don't count.

    Not thread-safe on its own: the server holds one lock around every call.
    """

    def __init__(self, limit: int, clock: Callable[[], float]) -> None:
        if limit < 1:
            raise ValueError(f"the rate limit must be at least 1 request, not {limit}")
        self.limit = limit
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._total = 0

    def admit(self) -> bool:
        """Count this request if the window has room, and say whether it had."""
        now = self._clock()
        self._forget_before(now - WINDOW_SECONDS)
        if len(self._admitted) >= self.limit:
            return False
        self._admitted.append(now)
        self._total += 1
        return True

    def _forget_before(self, start: float) -> None:
        while self._admitted and self._admitted[0] <= start:
            self._admitted.popleft()

    def retry_after(self) -> int:
        """Whole seconds until the oldest counted request leaves the window."""
        if not self._admitted:
            return 0
        wait = self._admitted[0] + WINDOW_SECONDS - self._clock()
        return max(1, math.ceil(wait))

    def headers(self) -> dict[str, str]:
        """The ``X-HubSpot-RateLimit-*`` headers HubSpot puts on every answer."""
        return {
            "X-HubSpot-RateLimit-Daily": str(DAILY_LIMIT),
            "X-HubSpot-RateLimit-Daily-Remaining": str(
                max(0, DAILY_LIMIT - self._total)
            ),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(
                int(WINDOW_SECONDS * 1000)
            ),
            "X-HubSpot-RateLimit-Max": str(self.limit),
            "X-HubSpot-RateLimit-Remaining": str(self.limit - len(self._admitted)),
        }
