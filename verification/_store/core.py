"""The queue store's core: engines, the write transaction, shared SQL conditions and row views.

:class:`StoreCore` is the base of every part of :class:`verification.store.QueueStore`; the parts
(``enqueue``, ``remap``, ``decisions``, ``reads``, ``exchange``, ``users`` of this subpackage) add one
job each. The schema comes from the packaged Alembic migrations: it is brought to the newest
revision by :meth:`StoreCore.upgrade` or by the store's first write, never by a read.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from shelfwise.errors import ConfigError
from verification._db import current_revision, head_revision, make_engines, run_upgrade, sqlite_write_lock
from verification._errors import InvalidDecisionError, QueueStoreError
from verification._retry import BATCH_RETRY_SECONDS, transient_retry
from verification._types import ItemFilter, ItemView
from verification.models import Decision, DecisionKind, HumanLabel, ItemStatus, Queue, ReviewItem, ReviewUser

__all__ = ["StoreCore"]

RowLike = Mapping[Any, Any]  # a result row mapping (sqlalchemy RowMapping)

ITEMS: sa.Table = ReviewItem.__table__  # type: ignore[assignment]
DECISIONS: sa.Table = Decision.__table__  # type: ignore[assignment]
LABELS: sa.Table = HumanLabel.__table__  # type: ignore[assignment]
USERS: sa.Table = ReviewUser.__table__  # type: ignore[assignment]

QUEUES = tuple(q.value for q in Queue)
STATUSES = tuple(s.value for s in ItemStatus)
LABEL_KINDS = (DecisionKind.ACCEPT.value, DecisionKind.CHOOSE.value)
_CHUNK = 500


def aware(value: _dt.datetime | None) -> _dt.datetime | None:
    """A stored (naive UTC) timestamp as an aware UTC datetime."""
    if value is None:
        return None
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


def chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def to_kind(kind: DecisionKind | str) -> DecisionKind:
    """``kind`` as a :class:`DecisionKind` (raises :class:`InvalidDecisionError` naming the valid kinds)."""
    try:
        return DecisionKind(kind)
    except ValueError:
        raise InvalidDecisionError(
            f"decision kind {kind!r} is not known; use one of {', '.join(k.value for k in DecisionKind)}"
        ) from None


def view(row: RowLike) -> ItemView:
    return ItemView(
        id=row["id"],
        sku_id=row["sku_id"],
        queue=row["queue"],
        status=row["status"],
        priority=row["priority"],
        reason=row["reason"] or "",
        title=row["title"],
        description=row["description"],
        brand=row["brand"],
        image_path=row["image_path"],
        review_excerpt=row["review_excerpt"],
        current_category_path=row["current_category_path"],
        suggested_category_id=row["suggested_category_id"],
        suggested_category_path=row["suggested_category_path"],
        confidence=row["confidence"],
        candidates=[
            {
                "category_id": c.get("category_id"),
                "category_path": c.get("category_path"),
                "score": c.get("score"),
            }
            for c in row["candidates"] or []
        ],
        taxonomy_version=row["taxonomy_version"],
        model_version=row["model_version"],
        run_id=row["run_id"],
        claimed_by=row["claimed_by"],
        lease_expires_at=aware(row["lease_expires_at"]),
        created_at=aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=aware(row["updated_at"]),  # type: ignore[arg-type]
        reviews_required=row["reviews_required"],
        reviews_done=row["reviews_done"],
        content_hash=row["content_hash"],
        first_reviewer=row["first_reviewer"],
        decided_at=aware(row["decided_at"]),
        decided_by=row["decided_by"],
        final_kind=row["final_kind"],
        final_category_id=row["final_category_id"],
        final_category_path=row["final_category_path"],
    )


_HEAD: list[str | None] = []  # the newest shipped revision, read once per process


def _head() -> str | None:
    if not _HEAD:
        _HEAD.append(head_revision())
    return _HEAD[0]


class StoreCore:
    """Engines, settings and the helpers every part of the store shares (see ``verification.store``)."""

    def __init__(
        self,
        url: str,
        *,
        consensus_suspect: bool = False,
        lease_seconds: int = 600,
        skip_cooldown_seconds: int = 3600,
        bcrypt_rounds: int = 12,
        retry_seconds: float = BATCH_RETRY_SECONDS,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigError(
                f"lease_seconds={lease_seconds} must be > 0 (seconds a claim lasts; default 600)"
            )
        self.url = url
        self.consensus_suspect = consensus_suspect
        self.lease_seconds = lease_seconds
        self.skip_cooldown_seconds = skip_cooldown_seconds
        self.bcrypt_rounds = bcrypt_rounds
        self.retry_seconds = retry_seconds  # how long a transaction is run again while the database is away
        self._engine, self._write = make_engines(url)
        self.dialect = self._engine.dialect.name
        self._write_lock = sqlite_write_lock(url)
        self._schema_ready = False  # True once this store has seen (or made) the newest schema
        self._schema_seen = False  # True once a read found the queue tables

    def __repr__(self) -> str:
        safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        return (
            f"{type(self).__name__}({safe!r}, consensus_suspect={self.consensus_suspect}, "
            f"lease_seconds={self.lease_seconds})"
        )

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def close(self) -> None:
        """Close pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ schema
    @transient_retry
    def upgrade(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``); a no-op when current.

        The store's first write does this on its own; reads never migrate.
        """
        with self._write_lock or contextlib.nullcontext():
            run_upgrade(self._write)
        self._schema_ready = True

    @transient_retry
    def schema_revision(self) -> str | None:
        """The database's Alembic revision (``None`` before :meth:`upgrade`)."""
        return current_revision(self._engine)

    def is_current(self) -> bool:
        return self.schema_revision() == head_revision()

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE behind the per-file in-process lock).

        The store's first write brings the schema to the newest migration.
        """
        self._ensure_schema()
        with self._write_lock or contextlib.nullcontext(), self._write.begin() as conn:
            yield conn

    def _ensure_schema(self) -> None:
        """Migrate to the newest schema unless this store already saw it (before the first write)."""
        if not self._schema_ready:
            if self.schema_revision() != _head():
                self.upgrade()
            self._schema_ready = True

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sa.Connection]:
        """A read transaction; never migrates.

        A database without the queue tables gets a clear error naming the fix, not SQL noise. A database
        an older shelfwise created is read as it is (the next write or ``upgrade`` migrates it).
        """
        if not self._schema_ready and not self._schema_seen:
            if self.schema_revision() is None:
                safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
                raise QueueStoreError(
                    f"queue database {safe} has no queue tables yet; run `shelfwise review upgrade` "
                    "(or any command that writes to the queue) first"
                )
            self._schema_seen = True
        with self._engine.begin() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    def _lock(self, stmt: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        if self.dialect == "postgresql":
            return stmt.with_for_update(skip_locked=skip_locked)
        return stmt  # SQLite: the BEGIN IMMEDIATE transaction already holds the write lock

    def _expired(self, now: _dt.datetime) -> sa.ColumnElement[bool]:
        return sa.and_(ITEMS.c.status == ItemStatus.CLAIMED.value, ITEMS.c.lease_expires_at < now)

    def _available(self, now: _dt.datetime) -> sa.ColumnElement[bool]:
        """Open, or claimed with an expired lease."""
        return sa.or_(ITEMS.c.status == ItemStatus.OPEN.value, self._expired(now))

    def _not_own_second_review(self, reviewer: str) -> sa.ColumnElement[bool]:
        return sa.or_(
            ITEMS.c.reviews_done == 0,
            ITEMS.c.first_reviewer.is_(None),
            ITEMS.c.first_reviewer != reviewer,
        )

    def _filter_conditions(self, f: ItemFilter | None, now: _dt.datetime) -> list[sa.ColumnElement[bool]]:
        if f is None:
            return []
        conds: list[sa.ColumnElement[bool]] = []
        if f.queue is not None:
            conds.append(ITEMS.c.queue == self._queue_name(f.queue))
        if f.status is not None:
            if f.status not in STATUSES:
                raise ConfigError(
                    f"item filter status {f.status!r} is not known; use one of {', '.join(STATUSES)}"
                )
            if f.status == ItemStatus.OPEN.value:
                conds.append(self._available(now))
            elif f.status == ItemStatus.CLAIMED.value:
                conds.append(sa.and_(ITEMS.c.status == "claimed", ITEMS.c.lease_expires_at >= now))
            else:
                conds.append(ITEMS.c.status == f.status)
        for column, prefix in (
            (ITEMS.c.suggested_category_path, f.category),
            (ITEMS.c.current_category_path, f.current_category),
        ):
            if prefix:
                prefix = prefix.strip()
                conds.append(sa.or_(column == prefix, column.startswith(prefix + " > ", autoescape=True)))
        if f.reason is not None:
            conds.append(ITEMS.c.reason == f.reason)
        if f.min_confidence is not None:
            conds.append(ITEMS.c.confidence >= f.min_confidence)
        if f.max_confidence is not None:
            conds.append(ITEMS.c.confidence <= f.max_confidence)
        if f.search:
            needle = f.search.strip()
            conds.append(
                sa.or_(
                    ITEMS.c.sku_id.icontains(needle, autoescape=True),
                    ITEMS.c.title.icontains(needle, autoescape=True),
                    ITEMS.c.brand.icontains(needle, autoescape=True),
                    ITEMS.c.description.icontains(needle, autoescape=True),
                )
            )
        if f.sku_id is not None:
            conds.append(ITEMS.c.sku_id == f.sku_id)
        if f.claimed_by is not None:
            conds.append(ITEMS.c.claimed_by == f.claimed_by)
        return conds

    @staticmethod
    def _queue_name(queue: str) -> str:
        if queue not in QUEUES:
            raise ConfigError(f"queue {queue!r} is not known; use one of {', '.join(QUEUES)}")
        return str(queue)

    def _views(self, conn: sa.Connection, ids: Sequence[int]) -> list[ItemView]:
        if not ids:
            return []
        rows = conn.execute(
            sa.select(ITEMS).where(ITEMS.c.id.in_(list(ids))).order_by(ITEMS.c.priority.desc(), ITEMS.c.id)
        ).mappings()
        return [view(r) for r in rows]
