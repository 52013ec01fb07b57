"""Errors of the queue store. All derive from :class:`shelfwise.errors.ShelfwiseError`.

ShelfwiseError
 └── QueueStoreError          the queue store refused an operation (message says why and the fix)
      ├── ItemNotFoundError   no review item has that id
      ├── ItemConflictError   the item is claimed by someone else, already decided, or needs another reviewer
      └── InvalidDecisionError the decision is incomplete (e.g. ``choose`` without a category)

TransientServiceError (shelfwise.errors)
 └── QueueUnavailableError    the queue database did not answer after every retry (the app answers 503)
"""

from __future__ import annotations

from shelfwise.errors import ShelfwiseError, TransientServiceError

__all__ = [
    "InvalidDecisionError",
    "ItemConflictError",
    "ItemNotFoundError",
    "QueueStoreError",
    "QueueUnavailableError",
]


class QueueStoreError(ShelfwiseError):
    """The verification queue store refused an operation."""


class ItemNotFoundError(QueueStoreError):
    """No review item has the given id."""


class ItemConflictError(QueueStoreError):
    """The item cannot take this decision now (claimed by another reviewer, decided, same reviewer twice)."""


class InvalidDecisionError(QueueStoreError):
    """The decision lacks something it needs (a category for ``choose``) or names an unknown kind."""


class QueueUnavailableError(TransientServiceError):
    """The queue database did not answer (connection refused or lost) after every retry.

    Not a :class:`QueueStoreError`: the store did not refuse anything, and nothing of the failed
    transaction was kept. Try again after a few seconds.
    """
