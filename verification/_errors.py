"""Errors of the queue store. All derive from :class:`shelfwise.errors.ShelfwiseError`.

ShelfwiseError
 └── QueueStoreError          the queue store refused an operation (message says why and the fix)
      ├── ItemNotFoundError   no review item has that id
      ├── ItemConflictError   the item is claimed by someone else, already decided, or needs another reviewer
      └── InvalidDecisionError the decision is incomplete (e.g. ``choose`` without a category)
"""

from __future__ import annotations

from shelfwise.errors import ShelfwiseError

__all__ = ["InvalidDecisionError", "ItemConflictError", "ItemNotFoundError", "QueueStoreError"]


class QueueStoreError(ShelfwiseError):
    """The verification queue store refused an operation."""


class ItemNotFoundError(QueueStoreError):
    """No review item has the given id."""


class ItemConflictError(QueueStoreError):
    """The item cannot take this decision now (claimed by another reviewer, decided, same reviewer twice)."""


class InvalidDecisionError(QueueStoreError):
    """The decision lacks something it needs (a category for ``choose``) or names an unknown kind."""
