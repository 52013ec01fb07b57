"""Slow down password guessing: a sliding window of failed sign-ins per user name and per client (internal)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """At most ``per_user`` failed sign-ins per user name and ``per_client`` per client address in
    ``window`` seconds; past that, sign-ins for that name (or from that address) are refused until the
    oldest failure leaves the window. Covers the login form and HTTP basic auth alike. In-process only:
    each app process keeps its own counts.
    """

    def __init__(
        self,
        *,
        per_user: int = 5,
        per_client: int = 30,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_client = per_client
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, username: str, client: str | None) -> list[tuple[str, int]]:
        keys = [(f"user:{username.strip().casefold()}", self.per_user)]
        if client:
            keys.append((f"client:{client}", self.per_client))
        return keys

    def retry_after(self, username: str, client: str | None) -> float:
        """Seconds until a sign-in for ``username`` from ``client`` is allowed again (0: allowed now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key, limit in self._keys(username, client):
                times = self._failures.get(key)
                if not times:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= limit:
                    wait = max(wait, times[0] + self.window - now)
        return wait

    def failed(self, username: str, client: str | None) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 100_000:  # bound memory under a flood of made-up names
                self._failures.clear()
            for key, _ in self._keys(username, client):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username.strip().casefold()}", None)
