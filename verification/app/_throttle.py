"""Password checks: slow down guessing without letting anyone lock a user out, and remember good basic-auth
logins until the account changes (internal).
"""

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
    """Sliding-window counts of failed sign-ins (login form, password change and HTTP basic auth alike).

    - ``per_pair`` failures for one user name *from one address* in ``window`` seconds block that name
      from that address only: a guesser elsewhere cannot lock the real user out.
    - ``per_client`` failures from one address (any names) block that address.
    - Past ``soft_user`` failures for a name from all addresses together, every sign-in for that name
      waits :meth:`backoff` seconds (growing to ``max_backoff``): a distributed guess is slowed, the
      right password still gets in.

    In-process only: each app process keeps its own counts.
    """

    def __init__(
        self,
        *,
        per_pair: int = 5,
        per_client: int = 30,
        soft_user: int = 10,
        max_backoff: float = 2.0,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_pair = per_pair
        self.per_client = per_client
        self.soft_user = soft_user
        self.max_backoff = max_backoff
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _user(username: str) -> str:
        return username.strip().casefold()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is not None:
            while times and times[0] <= now - self.window:
                times.popleft()
        return times

    def retry_after(self, username: str, client: str | None) -> float:
        """Seconds until a sign-in for ``username`` from ``client`` is allowed again (0: allowed now)."""
        now = self._clock()
        wait = 0.0
        keys = [(f"pair:{client}\0{self._user(username)}", self.per_pair)]
        if client:
            keys.append((f"client:{client}", self.per_client))
        with self._lock:
            for key, limit in keys:
                times = self._recent(key, now)
                if times and len(times) >= limit:
                    wait = max(wait, times[0] + self.window - now)
        return wait

    def backoff(self, username: str) -> float:
        """Seconds every sign-in for ``username`` should wait now (a soft brake on distributed guessing)."""
        with self._lock:
            times = self._recent(f"user:{self._user(username)}", self._clock())
            extra = 0 if times is None else len(times) - self.soft_user
        return 0.0 if extra < 0 else min(self.max_backoff, 0.25 * (extra + 1))

    def failed(self, username: str, client: str | None) -> None:
        now = self._clock()
        user = self._user(username)
        with self._lock:
            if len(self._failures) > 100_000:  # bound memory under a flood of made-up names
                self._failures.clear()
            for key in (f"pair:{client}\0{user}", f"client:{client}", f"user:{user}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, client: str | None) -> None:
        with self._lock:
            self._failures.pop(f"pair:{client}\0{self._user(username)}", None)


class CredentialCache:
    """Remembers basic-auth credentials that bcrypt accepted, for at most ``ttl`` seconds.

    bcrypt costs a quarter of a second or more per check, too slow for a script that sends one request
    per item. Keys are HMAC-SHA256 of user name and password under a random per-process key, so the
    cache never holds a password. Each entry keeps the user's session epoch from the moment it was
    checked: a hit counts only while the user row (read on every request) still has that epoch, so a
    logout, password change, deactivation or role change ends it at once in every process; this process
    also drops the user's entries at once (:meth:`drop_user`).
    """

    def __init__(
        self, *, ttl: float = 60.0, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[str, int, float]] = {}
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str) -> bytes:
        return hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()

    def get(self, username: str, password: str) -> tuple[str, int] | None:
        """``(user name, session epoch)`` if these credentials were accepted less than ``ttl`` s ago."""
        digest = self._digest(username, password)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[2] < self._clock():
                del self._entries[digest]
                return None
            return entry[0], entry[1]

    def put(self, username: str, password: str, epoch: int) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[self._digest(username, password)] = (username, epoch, self._clock() + self.ttl)

    def drop_user(self, username: str) -> None:
        """Forget every remembered credential of ``username`` (after a logout or an account change)."""
        with self._lock:
            for digest in [d for d, e in self._entries.items() if e[0] == username]:
                del self._entries[digest]
