"""Retrying a whole queue-store transaction when the database connection fails for a moment.

A PostgreSQL restart kills every pooled connection; the next statement on each raises
``OperationalError`` (server closed the connection, connection refused, admin shutdown, the database
system is starting up). Pool pre-ping catches most dead connections before a transaction starts; what
dies *inside* a transaction is rolled back by the server, so the store runs the whole transaction
again with backoff: for a few seconds in the review app (a person waits; then 503), for a minute in
nights and commands (``retry_seconds``, :data:`APP_RETRY_SECONDS`, :data:`BATCH_RETRY_SECONDS`).
Only store methods that are safe to run twice are retried (claims renew the reviewer's own lease,
decisions carry a request id, enqueue upserts per SKU, reads read).

Whether an error is transient is decided by its class, never by its message:

- ``sqlalchemy.exc.DBAPIError`` with ``connection_invalidated`` (a disconnect, any backend);
- ``sqlalchemy.exc.OperationalError`` on PostgreSQL (psycopg raises it for connection failures,
  shutdowns and the start-up window; SQL mistakes are ``ProgrammingError`` / ``IntegrityError``);
  on SQLite ``OperationalError`` also means "no such table", and the busy timeout already waits
  for locks, so SQLite retries only disconnects;
- ``sqlalchemy.exc.TimeoutError`` (no pooled connection came free in time).

When the attempts run out the store raises :class:`QueueUnavailableError`, a
:class:`~shelfwise.errors.TransientServiceError`: the review app answers 503 with ``Retry-After``.
Every retry is counted per process (:func:`retry_counts`), and the night reports the count.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

from verification._errors import QueueUnavailableError

__all__ = [
    "APP_RETRY_SECONDS",
    "BATCH_RETRY_SECONDS",
    "RETRY_AFTER_SECONDS",
    "is_transient",
    "note_retry",
    "retry_counts",
    "take_retry_counts",
    "transient_retry",
]

log = logging.getLogger(__name__)

BACKOFF = (0.1, 0.3, 0.6, 1.0, 1.5, 2.0)  # seconds before retry 1, 2, ... (the last repeats; +25% jitter)
APP_RETRY_SECONDS = 3.0  # the review app: a person is waiting; then 503 with Retry-After
BATCH_RETRY_SECONDS = 60.0  # nights and commands: ride out a restart or a fail-over
RETRY_AFTER_SECONDS = 3  # what a client is told to wait when the retries ran out

P = ParamSpec("P")
R = TypeVar("R")

_COUNTS: dict[str, int] = {}
_COUNTS_LOCK = threading.Lock()


def is_transient(exc: BaseException, *, dialect: str) -> bool:
    """True when ``exc`` is a connection failure worth running the transaction again for."""
    if isinstance(exc, sa.exc.TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa.exc.OperationalError) and dialect != "sqlite"
    return False


def note_retry(kind: str) -> None:
    """Count one retry of ``kind`` (``queue_db``, ``storage``) in this process."""
    with _COUNTS_LOCK:
        _COUNTS[kind] = _COUNTS.get(kind, 0) + 1


def retry_counts() -> dict[str, int]:
    """Retries of each kind in this process so far."""
    with _COUNTS_LOCK:
        return dict(_COUNTS)


def take_retry_counts() -> dict[str, int]:
    """Retries of each kind since the last call (the night takes them once, when it writes its summary)."""
    with _COUNTS_LOCK:
        taken = dict(_COUNTS)
        _COUNTS.clear()
        return taken


def _cause(exc: sa.exc.SQLAlchemyError) -> str:
    return type(getattr(exc, "orig", None) or exc).__name__


def transient_retry(method: Callable[P, R]) -> Callable[P, R]:
    """Run a store method again (whole transaction, backoff) while the database connection fails.

    The method's ``self`` must have ``dialect``, ``url`` and ``retry_seconds`` (how long to keep trying;
    the store's setting). Raises :class:`QueueUnavailableError` once that time is spent.
    """

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store: Any = args[0]
        started = time.monotonic()
        for attempt in itertools.count():
            try:
                return method(*args, **kwargs)
            except sa.exc.SQLAlchemyError as exc:
                if not is_transient(exc, dialect=store.dialect):
                    raise
                pause = BACKOFF[min(attempt, len(BACKOFF) - 1)] * (1 + random.random() / 4)
                spent = time.monotonic() - started
                if spent + pause > store.retry_seconds:
                    safe = sa.engine.make_url(store.url).render_as_string(hide_password=True)
                    raise QueueUnavailableError(
                        f"queue database {safe} did not answer {method.__name__} after {attempt + 1} tries "
                        f"in {spent:.1f} s ({_cause(exc)}); retry in {RETRY_AFTER_SECONDS} s"
                    ) from exc
                note_retry("queue_db")
                log.warning(
                    "queue database: %s failed (%s); retry %d in %.1f s",
                    method.__name__,
                    _cause(exc),
                    attempt + 1,
                    pause,
                )
                time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper
