"""SQLAlchemy 2.0 typed ORM models of the verification queue store, and its string enums.

Tables (created by the Alembic migrations in ``verification/migrations``, never by ``create_all``):

- ``review_items``: one row per SKU per review round. At most one *open* row (status ``open`` or
  ``claimed``) per ``sku_id`` (a partial unique index); a new nightly run updates that row in place.
- ``decisions``: the append-only audit log (triggers refuse UPDATE and DELETE on both SQLite and
  PostgreSQL): who decided what, when, and what they were shown.
- ``human_labels``: the latest final human decision per SKU (feeds ``labels()`` and ``locked()``).
- ``review_users``: reviewers and admins with bcrypt password hashes.

All timestamps are stored as naive UTC (``timestamp without time zone``) so SQLite and PostgreSQL
compare them the same way; the store hands out timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Decision",
    "DecisionKind",
    "DecisionSource",
    "HumanLabel",
    "ItemStatus",
    "JSONType",
    "Queue",
    "ReviewItem",
    "ReviewUser",
    "Role",
]


class Queue(StrEnum):
    """The four human review queues."""

    LOW_CONFIDENCE = "low_confidence"
    SUSPECT = "suspect"
    LLM_FAILED = "llm_failed"
    AUDIT = "audit"


class DecisionKind(StrEnum):
    """What a reviewer can decide about an item."""

    ACCEPT = "accept"  # the suggested category is right
    CHOOSE = "choose"  # another taxonomy node is right (category_id + category_path)
    NOT_PRODUCT = "not_product"  # not a sellable product (junk row, bundle, service...)
    NEEDS_DATA = "needs_data"  # cannot be decided from the data shown
    SKIP = "skip"  # give the item back to the pool for someone else


class Role(StrEnum):
    """What a user may do in the review app."""

    REVIEWER = "reviewer"
    ADMIN = "admin"


class ItemStatus(StrEnum):
    """Life cycle of a review item: open -> claimed -> decided (or back to open on skip/expiry)."""

    OPEN = "open"
    CLAIMED = "claimed"
    DECIDED = "decided"


class DecisionSource(StrEnum):
    """Where a decision came from (recorded in the audit log)."""

    REVIEW = "review"
    BULK = "bulk"
    IMPORT = "import"


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

OPEN_STATUSES = (ItemStatus.OPEN.value, ItemStatus.CLAIMED.value)


class Base(DeclarativeBase):
    pass


class ReviewItem(Base):
    """One SKU waiting for (or having had) a human review."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    sku_id: Mapped[str] = mapped_column(sa.String(255))
    queue: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(16), default=ItemStatus.OPEN.value)
    priority: Mapped[float] = mapped_column(sa.Float, default=0.0)
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    title: Mapped[str | None] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    brand: Mapped[str | None] = mapped_column(sa.Text)
    image_path: Mapped[str | None] = mapped_column(sa.Text)
    review_excerpt: Mapped[str | None] = mapped_column(sa.Text)
    current_category_path: Mapped[str | None] = mapped_column(sa.Text)
    suggested_category_id: Mapped[str | None] = mapped_column(sa.String(255))
    suggested_category_path: Mapped[str | None] = mapped_column(sa.Text)
    confidence: Mapped[float | None] = mapped_column(sa.Float)
    candidates: Mapped[Any] = mapped_column(JSONType, default=list)
    taxonomy_version: Mapped[str | None] = mapped_column(sa.String(128))
    model_version: Mapped[str | None] = mapped_column(sa.String(128))
    run_id: Mapped[str | None] = mapped_column(sa.String(128))
    content_hash: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_by: Mapped[str | None] = mapped_column(sa.String(150))
    claimed_at: Mapped[datetime | None] = mapped_column(sa.DateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(sa.DateTime)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime)
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime)
    reviews_required: Mapped[int] = mapped_column(sa.Integer, default=1)
    reviews_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    first_reviewer: Mapped[str | None] = mapped_column(sa.String(150))
    decided_at: Mapped[datetime | None] = mapped_column(sa.DateTime)
    decided_by: Mapped[str | None] = mapped_column(sa.String(150))
    final_kind: Mapped[str | None] = mapped_column(sa.String(16))
    final_category_id: Mapped[str | None] = mapped_column(sa.String(255))
    final_category_path: Mapped[str | None] = mapped_column(sa.Text)

    __table_args__ = (
        sa.Index(
            "uq_review_items_open_sku",
            "sku_id",
            unique=True,
            sqlite_where=sa.text("status <> 'decided'"),
            postgresql_where=sa.text("status <> 'decided'"),
        ),
        sa.Index("ix_review_items_claim", "queue", "status", "priority"),
        sa.Index("ix_review_items_sku", "sku_id"),
    )


class Decision(Base):
    """One row of the append-only audit log."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int | None] = mapped_column(sa.ForeignKey("review_items.id"))
    sku_id: Mapped[str] = mapped_column(sa.String(255))
    queue: Mapped[str | None] = mapped_column(sa.String(32))
    reviewer: Mapped[str] = mapped_column(sa.String(150))
    decided_at: Mapped[datetime] = mapped_column(sa.DateTime)
    kind: Mapped[str] = mapped_column(sa.String(16))
    category_id: Mapped[str | None] = mapped_column(sa.String(255))
    category_path: Mapped[str | None] = mapped_column(sa.Text)
    note: Mapped[str] = mapped_column(sa.Text, default="")
    duration_ms: Mapped[int | None] = mapped_column(sa.Integer)
    review_round: Mapped[int] = mapped_column(sa.Integer, default=1)
    final: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    source: Mapped[str] = mapped_column(sa.String(16), default=DecisionSource.REVIEW.value)
    title: Mapped[str | None] = mapped_column(sa.Text)
    shown_category_id: Mapped[str | None] = mapped_column(sa.String(255))
    shown_category_path: Mapped[str | None] = mapped_column(sa.Text)
    shown_confidence: Mapped[float | None] = mapped_column(sa.Float)
    shown_candidates: Mapped[Any] = mapped_column(JSONType, nullable=True)
    current_category_path: Mapped[str | None] = mapped_column(sa.Text)
    model_version: Mapped[str | None] = mapped_column(sa.String(128))
    taxonomy_version: Mapped[str | None] = mapped_column(sa.String(128))
    run_id: Mapped[str | None] = mapped_column(sa.String(128))
    content_hash: Mapped[str | None] = mapped_column(sa.String(128))
    # the request that made the decision (unique): a request sent again is reported, not applied again
    request_id: Mapped[str | None] = mapped_column(sa.String(64))

    __table_args__ = (
        sa.Index("uq_decisions_request_id", "request_id", unique=True),
        sa.Index("ix_decisions_item", "item_id"),
        sa.Index("ix_decisions_sku", "sku_id"),
        sa.Index("ix_decisions_reviewer", "reviewer", "decided_at"),
    )


class HumanLabel(Base):
    """The latest final human decision per SKU."""

    __tablename__ = "human_labels"

    sku_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    category_id: Mapped[str | None] = mapped_column(sa.String(255))
    category_path: Mapped[str | None] = mapped_column(sa.Text)
    content_hash: Mapped[str | None] = mapped_column(sa.String(128))
    decided_at: Mapped[datetime] = mapped_column(sa.DateTime)
    reviewer: Mapped[str] = mapped_column(sa.String(150))
    item_id: Mapped[int | None] = mapped_column(sa.Integer)
    decision_id: Mapped[int | None] = mapped_column(sa.Integer)


class ReviewUser(Base):
    """A person allowed into the review app."""

    __tablename__ = "review_users"

    username: Mapped[str] = mapped_column(sa.String(150), primary_key=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16), default=Role.REVIEWER.value)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime)
    # Bumped on logout, password, role and activation changes; a session cookie holds the value it saw.
    session_epoch: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
