"""Human verification: routing (``verification.routing``), the queue store, the review app and CLI.

The queue store keeps review items, leases, the append-only decision log, human labels and users in
SQLite or PostgreSQL (SQLAlchemy 2 + Alembic). The names below load on first use, so importing
``verification.routing`` stays light (no database libraries, no web framework).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from verification._errors import (
        InvalidDecisionError,
        ItemConflictError,
        ItemNotFoundError,
        QueueStoreError,
    )
    from verification._types import DecisionResult, EnqueueResult, ItemFilter, ItemView, User
    from verification.exchange import labelstudio_config
    from verification.models import DecisionKind, ItemStatus, Queue, Role
    from verification.store import QueueStore, RemapResult, default_queue_url

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
    "RemapResult",
    "Role",
    "User",
    "default_queue_url",
    "labelstudio_config",
]

_HOME = {
    "InvalidDecisionError": "verification._errors",
    "ItemConflictError": "verification._errors",
    "ItemNotFoundError": "verification._errors",
    "QueueStoreError": "verification._errors",
    "DecisionResult": "verification._types",
    "EnqueueResult": "verification._types",
    "ItemFilter": "verification._types",
    "ItemView": "verification._types",
    "User": "verification._types",
    "DecisionKind": "verification.models",
    "ItemStatus": "verification.models",
    "Queue": "verification.models",
    "Role": "verification.models",
    "QueueStore": "verification.store",
    "RemapResult": "verification.store",
    "default_queue_url": "verification.store",
    "labelstudio_config": "verification.exchange",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'verification' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
