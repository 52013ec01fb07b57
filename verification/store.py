"""The verification queue store: review items, leases, decisions (append-only), human labels, users.

One :class:`QueueStore` talks to SQLite (default ``sqlite:///.shelfwise/queue.db``) or PostgreSQL
(``postgresql+psycopg://...``) through SQLAlchemy 2.0; the schema comes from the packaged Alembic
migrations, applied by :meth:`QueueStore.upgrade` or by the store's first write (reads never migrate).
A store is a context manager: whoever opens one closes it (``with QueueStore(url) as store: ...``).

Life of an item::

    enqueue (nightly, upsert per SKU) -> open -> claim (lease) -> claimed -> decide -> decided
                                          ^                         |
                                          +---- skip / lease expiry-+

Claims never hand one item to two reviewers: on PostgreSQL the candidate rows are picked with
``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite (which has no row locks and where SQLAlchemy drops
``SKIP LOCKED``) every write runs in a ``BEGIN IMMEDIATE`` transaction, so select-then-update is atomic.

The class is assembled from one private module per job, in the ``verification._store`` subpackage:

- ``core``: engines, schema (migrations), the write transaction, shared filters and row views;
- ``enqueue``: nightly enqueue within capacities, closing stale items (``supersede``);
- ``remap``: labels and open items follow their node to a new taxonomy version;
- ``decisions``: leases (claim, renew, release) and the decision state machine;
- ``reads``: items, counts, labels and the decision log as tables (what the reports read);
- ``exchange``: CSV / Label Studio export and import of final decisions (formats: ``verification.exchange``);
- ``users``: review-app users with bcrypt-hashed passwords.

A transaction that loses its database connection (a PostgreSQL restart) runs again a few times with
backoff (``_retry``); then :class:`QueueUnavailableError` (a ``TransientServiceError``). Retries are
counted per process: :func:`retry_counts`, :func:`take_retry_counts` (``docs/faults.md``).
"""

from __future__ import annotations

import os

from verification._errors import (
    InvalidDecisionError,
    ItemConflictError,
    ItemNotFoundError,
    QueueStoreError,
    QueueUnavailableError,
)
from verification._retry import retry_counts, take_retry_counts
from verification._store.decisions import DecisionOps
from verification._store.enqueue import EnqueueOps
from verification._store.exchange import ExchangeOps
from verification._store.reads import ReadOps
from verification._store.remap import RemapOps, RemapResult
from verification._store.users import UserOps
from verification._types import DecisionResult, EnqueueResult, ItemFilter, ItemView, User
from verification.models import DecisionKind, ItemStatus, Queue, Role

__all__ = [
    "DecisionKind",
    "DecisionResult",
    "EnqueueResult",
    "InvalidDecisionError",
    "ItemConflictError",
    "ItemFilter",
    "ItemNotFoundError",
    "ItemStatus",
    "ItemView",
    "Queue",
    "QueueStore",
    "QueueStoreError",
    "QueueUnavailableError",
    "RemapResult",
    "Role",
    "User",
    "default_queue_url",
    "retry_counts",
    "take_retry_counts",
]


def default_queue_url() -> str:
    """``$SHELFWISE_QUEUE_URL`` or ``sqlite:///.shelfwise/queue.db``."""
    return os.environ.get("SHELFWISE_QUEUE_URL") or "sqlite:///.shelfwise/queue.db"


class QueueStore(RemapOps, EnqueueOps, ExchangeOps, DecisionOps, ReadOps, UserOps):
    """Human verification queues on SQLite or PostgreSQL.

    ``consensus_suspect``: a ``suspect`` item whose first decision disagrees with the suggestion waits
    for a second, different reviewer before it is final. ``lease_seconds``: how long a claim lasts.
    ``skip_cooldown_seconds``: how long an item a reviewer skipped is kept away from that reviewer.
    ``bcrypt_rounds``: the cost of password hashes. ``retry_seconds``: how long a transaction that lost
    its database connection is run again (default 60 s for nights and commands; the review app uses
    3 s, then answers 503) before :class:`QueueUnavailableError`.
    """
