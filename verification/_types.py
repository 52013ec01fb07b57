"""Plain (non-ORM) value objects the queue store hands out: safe to use after the session closed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from verification.models import Role

__all__ = ["DecisionResult", "EnqueueResult", "ItemFilter", "ItemView", "User"]


@dataclass(frozen=True)
class ItemFilter:
    """Which items to list, claim or bulk-accept. ``None`` fields do not filter.

    - ``queue``: one of the queue names; ``status``: ``open`` | ``claimed`` | ``decided``
      (``open`` also matches claims whose lease has expired).
    - ``category``: a path prefix of the *suggested* category (``"Toys > Games"`` matches that node and
      everything below it); ``current_category``: the same for the SKU's current category.
    - ``reason``: exact routing reason; ``min_confidence`` / ``max_confidence``: inclusive bounds.
    - ``search``: case-insensitive substring of sku_id, title, brand or description.
    """

    queue: str | None = None
    status: str | None = None
    category: str | None = None
    current_category: str | None = None
    reason: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    search: str | None = None
    sku_id: str | None = None
    claimed_by: str | None = None


@dataclass(frozen=True)
class ItemView:
    """Everything the review page needs about one item (a snapshot, not a live ORM object)."""

    id: int
    sku_id: str
    queue: str
    status: str
    priority: float
    reason: str
    title: str | None
    description: str | None
    brand: str | None
    image_path: str | None
    review_excerpt: str | None
    current_category_path: str | None
    suggested_category_id: str | None
    suggested_category_path: str | None
    confidence: float | None
    candidates: list[dict[str, Any]]
    taxonomy_version: str | None
    model_version: str | None
    run_id: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    reviews_required: int
    reviews_done: int
    content_hash: str | None = None
    first_reviewer: str | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    final_kind: str | None = None
    final_category_id: str | None = None
    final_category_path: str | None = None

    @property
    def awaiting_second_review(self) -> bool:
        """True when a first reviewer disagreed and a second, different reviewer must decide."""
        return (
            self.status != "decided" and self.reviews_done > 0 and self.reviews_done < self.reviews_required
        )


@dataclass(frozen=True)
class EnqueueResult:
    """Counts of one ``enqueue`` call, each per queue name."""

    inserted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    dropped_over_capacity: dict[str, int] = field(default_factory=dict)
    skipped_locked: dict[str, int] = field(default_factory=dict)

    def total(self, what: str) -> int:
        """Sum over queues of one count, e.g. ``result.total("inserted")``."""
        counts: dict[str, int] = getattr(self, what)
        return sum(counts.values())

    @property
    def queued(self) -> dict[str, int]:
        """Items now open per queue from this run (inserted + updated + unchanged)."""
        keys = set(self.inserted) | set(self.updated) | set(self.unchanged)
        return {
            q: self.inserted.get(q, 0) + self.updated.get(q, 0) + self.unchanged.get(q, 0)
            for q in sorted(keys)
        }

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "inserted": dict(self.inserted),
            "updated": dict(self.updated),
            "unchanged": dict(self.unchanged),
            "dropped_over_capacity": dict(self.dropped_over_capacity),
            "skipped_locked": dict(self.skipped_locked),
        }


@dataclass(frozen=True)
class DecisionResult:
    """Outcome of ``decide``: whether the item is now final, or waits for a second reviewer."""

    item_id: int
    decision_id: int
    kind: str
    final: bool
    status: str
    reviews_done: int
    reviews_required: int
    category_id: str | None = None
    category_path: str | None = None
    replayed: bool = False  # True: this request was already applied; nothing was applied again

    @property
    def awaiting_second_review(self) -> bool:
        return not self.final and self.kind != "skip" and self.reviews_done < self.reviews_required


@dataclass(frozen=True)
class User:
    """A review-app user (never carries the password hash)."""

    username: str
    role: Role
    is_active: bool
    created_at: datetime
    session_epoch: int = 0  # sessions carrying another value are over (logout, password or role change)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
