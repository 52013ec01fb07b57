"""Password checks: slow down guessing (sliding window of failures) and remember good basic-auth logins (internal)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["CredentialCache", "LoginThrottle"]


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


class CredentialCache:
    """Remembers basic-auth credentials that bcrypt accepted, for ``ttl`` seconds.

    bcrypt costs a quarter of a second or more per check, too slow for a script that sends one request
    per item. Keys are HMAC-SHA256 of user name and password under a random per-process key, so the
    cache never holds a password. A password change takes effect after at most ``ttl`` seconds;
    deactivation and role changes take effect at once (the user row is read on every request).
    """

    def __init__(
        self, *, ttl: float = 60.0, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def get(self, username: str, password: str) -> str | None:
        """The user name if these credentials were accepted less than ``ttl`` seconds ago."""
        digest = self._digest(username, password)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[1] < self._clock():
                del self._entries[digest]
                return None
            return entry[0]

    def put(self, username: str, password: str) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[self._digest(username, password)] = (username, self._clock() + self.ttl)
