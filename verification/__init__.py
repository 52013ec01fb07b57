"""Human verification: routing (``verification.routing``), the queue store, the review app and CLI.

The queue store keeps review items, leases, the append-only decision log, human labels and users in
SQLite or PostgreSQL (SQLAlchemy 2 + Alembic). Importing this package loads no web framework.
"""

from __future__ import annotations

from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError, QueueStoreError
from verification._types import DecisionResult, EnqueueResult, ItemFilter, ItemView, User
from verification.models import DecisionKind, ItemStatus, Queue, Role
from verification.store import QueueStore, default_queue_url

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
    "Role",
    "User",
    "default_queue_url",
]
