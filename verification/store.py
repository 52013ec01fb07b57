"""The verification queue store: review items, leases, decisions (append-only), human labels, users.

One :class:`QueueStore` talks to SQLite (default ``sqlite:///.shelfwise/queue.db``) or PostgreSQL
(``postgresql+psycopg://...``) through SQLAlchemy 2.0; the schema comes from the packaged Alembic
migrations (:meth:`QueueStore.upgrade`).

Life of an item::

    enqueue (nightly, upsert per SKU) -> open -> claim (lease) -> claimed -> decide -> decided
                                          ^                         |
                                          +---- skip / lease expiry-+

Claims never hand one item to two reviewers: on PostgreSQL the candidate rows are picked with
``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite (which has no row locks and where SQLAlchemy drops
``SKIP LOCKED``) every write runs in a ``BEGIN IMMEDIATE`` transaction, so select-then-update is atomic.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self

import bcrypt
import polars as pl
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from shelfwise.errors import ConfigError
from verification import _exchange
from verification._db import (
    current_revision,
    head_revision,
    make_engines,
    run_upgrade,
    sqlite_write_lock,
    utcnow,
)
from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError, QueueStoreError
from verification._types import DecisionResult, EnqueueResult, ItemFilter, ItemView, User
from verification.models import (
    Decision,
    DecisionKind,
    DecisionSource,
    HumanLabel,
    ItemStatus,
    Queue,
    ReviewItem,
    ReviewUser,
    Role,
)

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

RowLike = Mapping[Any, Any]  # a result row mapping (sqlalchemy RowMapping)

ITEMS: sa.Table = ReviewItem.__table__  # type: ignore[assignment]
DECISIONS: sa.Table = Decision.__table__  # type: ignore[assignment]
LABELS: sa.Table = HumanLabel.__table__  # type: ignore[assignment]
USERS: sa.Table = ReviewUser.__table__  # type: ignore[assignment]

QUEUES = tuple(q.value for q in Queue)
STATUSES = tuple(s.value for s in ItemStatus)
LABEL_KINDS = (DecisionKind.ACCEPT.value, DecisionKind.CHOOSE.value)
REVIEW_EXCERPT_CHARS = 600
BCRYPT_MAX_BYTES = 72
_CHUNK = 500

# Columns the nightly enqueue writes (and compares, to tell "updated" from "unchanged").
_PAYLOAD_COLUMNS = (
    "queue",
    "priority",
    "reason",
    "title",
    "description",
    "brand",
    "image_path",
    "review_excerpt",
    "current_category_path",
    "suggested_category_id",
    "suggested_category_path",
    "confidence",
    "candidates",
    "taxonomy_version",
    "model_version",
    "run_id",
    "content_hash",
)

_LABELS_SCHEMA: dict[str, pl.DataType] = {
    "sku_id": pl.String(),
    "category_id": pl.String(),
    "category_path": pl.String(),
    "decided_at": pl.Datetime("us", "UTC"),
    "content_hash": pl.String(),
    "reviewer": pl.String(),
}


SUPERSEDED = "superseded"  # final_kind of an item closed by a later run, not by a reviewer


def default_queue_url() -> str:
    """``$SHELFWISE_QUEUE_URL`` or ``sqlite:///.shelfwise/queue.db``."""
    import os

    return os.environ.get("SHELFWISE_QUEUE_URL") or "sqlite:///.shelfwise/queue.db"


def _aware(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=_dt.UTC) if value.tzinfo is None else value.astimezone(_dt.UTC)


def _naive(value: _dt.datetime) -> _dt.datetime:
    return value.astimezone(_dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _clean_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value)
    return text


def _clean_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _clean_candidates(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    out: list[dict[str, Any]] = []
    for cand in value:
        if cand is None:
            continue
        out.append(
            {
                "category_id": _clean_str(cand.get("category_id")),
                "category_path": _clean_str(cand.get("category_path")),
                "score": _clean_float(cand.get("score")),
            }
        )
    return out


def _excerpt(text: Any) -> str | None:
    value = _clean_str(text)
    if not value:
        return None
    value = " ".join(value.split())
    if len(value) <= REVIEW_EXCERPT_CHARS:
        return value
    return value[: REVIEW_EXCERPT_CHARS - 1].rstrip() + "…"


def _view(row: RowLike) -> ItemView:
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
        lease_expires_at=_aware(row["lease_expires_at"]),
        created_at=_aware(row["created_at"]),  # type: ignore[arg-type]
        updated_at=_aware(row["updated_at"]),  # type: ignore[arg-type]
        reviews_required=row["reviews_required"],
        reviews_done=row["reviews_done"],
        content_hash=row["content_hash"],
        first_reviewer=row["first_reviewer"],
        decided_at=_aware(row["decided_at"]),
        decided_by=row["decided_by"],
        final_kind=row["final_kind"],
        final_category_id=row["final_category_id"],
        final_category_path=row["final_category_path"],
    )


class QueueStore:
    """Human verification queues on SQLite or PostgreSQL.

    ``consensus_suspect``: a ``suspect`` item whose first decision disagrees with the suggestion waits
    for a second, different reviewer before it is final. ``lease_seconds``: how long a claim lasts.
    ``skip_cooldown_seconds``: how long an item a reviewer skipped is kept away from that reviewer.
    """

    def __init__(
        self,
        url: str,
        *,
        consensus_suspect: bool = False,
        lease_seconds: int = 600,
        skip_cooldown_seconds: int = 3600,
        bcrypt_rounds: int = 12,
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
        self._engine, self._write = make_engines(url)
        self.dialect = self._engine.dialect.name
        self._dummy: bytes | None = None
        self._write_lock = sqlite_write_lock(url)

    def __repr__(self) -> str:
        safe = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        return f"QueueStore({safe!r}, consensus_suspect={self.consensus_suspect}, lease_seconds={self.lease_seconds})"

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
    def upgrade(self) -> None:
        """Bring the schema to the newest migration (``alembic upgrade head``); a no-op when current."""
        with self._write_lock or contextlib.nullcontext():
            run_upgrade(self._write)

    def schema_revision(self) -> str | None:
        """The database's Alembic revision (``None`` before :meth:`upgrade`)."""
        return current_revision(self._engine)

    def is_current(self) -> bool:
        return self.schema_revision() == head_revision()

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE behind the per-file in-process lock)."""
        with self._write_lock or contextlib.nullcontext(), self._write.begin() as conn:
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
        return [_view(r) for r in rows]

    # ------------------------------------------------------------------ enqueue
    def enqueue(
        self, frame: pl.DataFrame, *, run_id: str, capacity: Mapping[str, int] | None = None
    ) -> EnqueueResult:
        """Put routed predictions into their queues (an upsert per SKU; re-running a run is idempotent).

        ``frame``: predictions rows (``sku_id, category_id, category_path, confidence, candidates,
        current_category_path, taxonomy_version, model_version, content_hash``...) plus ``queue``,
        ``priority`` (higher first), ``reason`` and the product columns ``title, description, brand,
        image_path, review_text``. Rows whose ``queue`` is null are ignored (auto-accepted).

        - an SKU already open (or claimed) is updated in place, never duplicated;
        - an SKU with a final human decision and an unchanged ``content_hash`` is skipped (``skipped_locked``);
        - per queue only the ``capacity[queue]`` highest-priority rows are written (``dropped_over_capacity``).
        """
        rows = self._prepare_rows(frame, run_id=run_id)
        caps = self._check_capacity(capacity)
        counts: dict[str, dict[str, int]] = {
            k: {q: 0 for q in QUEUES}
            for k in ("inserted", "updated", "unchanged", "dropped_over_capacity", "skipped_locked")
        }
        if not rows:
            return EnqueueResult(**counts)

        with self._writing() as conn:
            # 1. decided SKUs whose content is unchanged keep their human category
            decided = self._decided_hashes(conn, [r["sku_id"] for r in rows])
            kept: list[dict[str, Any]] = []
            for r in rows:
                if r["sku_id"] in decided and decided[r["sku_id"]] == r["content_hash"]:
                    counts["skipped_locked"][r["queue"]] += 1
                else:
                    kept.append(r)
            # 2. nightly capacity: the top-priority N per queue
            kept.sort(key=lambda r: (-r["priority"], r["sku_id"]))
            taken: dict[str, int] = {q: 0 for q in QUEUES}
            writable: list[dict[str, Any]] = []
            for r in kept:
                q = r["queue"]
                if q in caps and taken[q] >= caps[q]:
                    counts["dropped_over_capacity"][q] += 1
                    continue
                taken[q] += 1
                writable.append(r)
            # 3. upsert against the one open item per SKU
            existing = self._open_payloads(conn, [r["sku_id"] for r in writable])
            now = utcnow()
            changed: list[dict[str, Any]] = []
            for r in writable:
                old = existing.get(r["sku_id"])
                if old is None:
                    counts["inserted"][r["queue"]] += 1
                elif all(self._same(old[c], r[c]) for c in _PAYLOAD_COLUMNS):
                    counts["unchanged"][r["queue"]] += 1
                    continue
                else:
                    counts["updated"][r["queue"]] += 1
                changed.append({**r, "created_at": now, "updated_at": now, "status": ItemStatus.OPEN.value})
            if changed:
                stmt = self._insert(ITEMS)
                update_cols = {c: stmt.excluded[c] for c in (*_PAYLOAD_COLUMNS, "updated_at")}
                stmt = stmt.on_conflict_do_update(
                    index_elements=[ITEMS.c.sku_id],
                    index_where=sa.text("status <> 'decided'"),
                    set_=update_cols,
                )
                for chunk in _chunks(changed, 1000):
                    conn.execute(stmt, list(chunk))
        return EnqueueResult(**counts)

    def supersede(self, skus: Sequence[str], *, run_id: str) -> dict[str, int]:
        """Close the open items of SKUs that a later run no longer sends to review (it auto-accepted them).

        Typical case: a suspect SKU whose current category was fixed upstream, or whose text changed,
        is now auto-accepted: its old item would only waste a reviewer's time. Only items nobody has
        touched are closed: status ``open`` (not claimed) and no review yet (a first consensus review
        is kept). A closed item gets status ``decided`` with ``final_kind = "superseded"``, no
        ``decided_by`` and no decision or human label (nothing is learned from it); its ``run_id`` says
        which run closed it. Returns the number closed per queue.
        """
        closed: dict[str, int] = {}
        if not skus:
            return closed
        now = utcnow()
        with self._writing() as conn:
            for chunk in _chunks(list(dict.fromkeys(str(s) for s in skus))):
                where = sa.and_(
                    ITEMS.c.sku_id.in_(list(chunk)),
                    ITEMS.c.status == ItemStatus.OPEN.value,
                    ITEMS.c.reviews_done == 0,
                )
                rows = conn.execute(sa.select(ITEMS.c.id, ITEMS.c.queue).where(where)).all()
                if not rows:
                    continue
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id.in_([r.id for r in rows]), where)
                    .values(
                        status=ItemStatus.DECIDED.value,
                        final_kind=SUPERSEDED,
                        decided_at=now,
                        updated_at=now,
                        run_id=run_id,
                    )
                )
                for r in rows:
                    closed[r.queue] = closed.get(r.queue, 0) + 1
        return closed

    @staticmethod
    def _same(old: Any, new: Any) -> bool:
        if isinstance(old, float) or isinstance(new, float):
            if old is None or new is None:
                return old is new
            return math.isclose(float(old), float(new), rel_tol=1e-12, abs_tol=1e-15)
        if isinstance(old, list) and isinstance(new, list):
            return len(old) == len(new) and all(
                all(QueueStore._same(a.get(k), b.get(k)) for k in ("category_id", "category_path", "score"))
                for a, b in zip(old, new, strict=True)
            )
        return bool(old == new)

    @staticmethod
    def _check_capacity(capacity: Mapping[str, int] | None) -> dict[str, int]:
        if capacity is None:
            return {}
        caps: dict[str, int] = {}
        for key, value in capacity.items():
            if key not in QUEUES:
                raise ConfigError(
                    f"queue capacity names unknown queue {key!r}; use one of {', '.join(QUEUES)} "
                    "(setting queue_capacity)"
                )
            if value is None:
                continue
            if int(value) < 0:
                raise ConfigError(
                    f"queue capacity for {key!r} is {value}; it must be >= 0 (setting queue_capacity)"
                )
            caps[str(key)] = int(value)
        return caps

    def _prepare_rows(self, frame: pl.DataFrame, *, run_id: str) -> list[dict[str, Any]]:
        for required in ("sku_id", "queue"):
            if required not in frame.columns:
                raise QueueStoreError(
                    f"enqueue frame has no column {required!r} (columns: {', '.join(frame.columns)}); "
                    "pass the routed predictions with sku_id and queue (see docs/ARCHITECTURE.md)"
                )
        frame = frame.filter(pl.col("queue").is_not_null())
        if frame.is_empty():
            return []
        bad = frame.filter(~pl.col("queue").cast(pl.String).is_in(list(QUEUES)))
        if not bad.is_empty():
            first = bad.row(0, named=True)
            raise QueueStoreError(
                f"enqueue frame row for sku_id {first['sku_id']!r}: column 'queue' has unknown value "
                f"{first['queue']!r} ({bad.height} such rows); use one of {', '.join(QUEUES)}"
            )
        null_sku = frame.filter(pl.col("sku_id").is_null())
        if not null_sku.is_empty():
            raise QueueStoreError(
                f"enqueue frame has {null_sku.height} rows with a null 'sku_id'; drop or fix them before enqueueing"
            )
        out: dict[str, dict[str, Any]] = {}
        cols = set(frame.columns)

        def get(rec: Mapping[str, Any], *names: str) -> Any:
            for name in names:
                if name in cols and rec.get(name) is not None:
                    return rec[name]
            return None

        for rec in frame.iter_rows(named=True):
            priority = _clean_float(get(rec, "priority"))
            row: dict[str, Any] = {
                "sku_id": str(rec["sku_id"]),
                "queue": str(rec["queue"]),
                "priority": 0.0 if priority is None else priority,
                "reason": _clean_str(get(rec, "reason")) or "",
                "title": _clean_str(get(rec, "title")),
                "description": _clean_str(get(rec, "description")),
                "brand": _clean_str(get(rec, "brand")),
                "image_path": _clean_str(get(rec, "image_path")),
                "review_excerpt": _excerpt(get(rec, "review_excerpt", "review_text")),
                "current_category_path": _clean_str(get(rec, "current_category_path")),
                "suggested_category_id": _clean_str(get(rec, "suggested_category_id", "category_id")),
                "suggested_category_path": _clean_str(get(rec, "suggested_category_path", "category_path")),
                "confidence": _clean_float(get(rec, "confidence")),
                "candidates": _clean_candidates(get(rec, "candidates")),
                "taxonomy_version": _clean_str(get(rec, "taxonomy_version")),
                "model_version": _clean_str(get(rec, "model_version")),
                "run_id": run_id,
                "content_hash": _clean_str(get(rec, "content_hash")),
            }
            sku = str(row["sku_id"])
            prev = out.get(sku)
            if prev is None or row["priority"] > prev["priority"]:
                out[sku] = row
        return list(out.values())

    def _decided_hashes(self, conn: sa.Connection, skus: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for chunk in _chunks(list(skus)):
            for sku, chash in conn.execute(
                sa.select(LABELS.c.sku_id, LABELS.c.content_hash).where(LABELS.c.sku_id.in_(list(chunk)))
            ):
                found[sku] = chash
        return found

    def _open_payloads(self, conn: sa.Connection, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        cols = [ITEMS.c.sku_id, *(ITEMS.c[c] for c in _PAYLOAD_COLUMNS)]
        for chunk in _chunks(list(skus)):
            rows = conn.execute(
                sa.select(*cols).where(
                    ITEMS.c.sku_id.in_(list(chunk)), ITEMS.c.status != ItemStatus.DECIDED.value
                )
            ).mappings()
            for r in rows:
                found[str(r["sku_id"])] = dict(r)
        return found

    # ------------------------------------------------------------------ claims
    def claim(
        self, queue: str, reviewer: str, *, limit: int = 1, filters: ItemFilter | None = None
    ) -> list[ItemView]:
        """Lease up to ``limit`` items of ``queue`` to ``reviewer``, highest priority first.

        Items the reviewer already holds (unexpired) come back first with a renewed lease, so reloading
        the review page does not strand claims. Never hands one item to two reviewers; expired claims of
        others are claimable; items the reviewer skipped recently, and suspect items awaiting a second
        opinion on the reviewer's own first decision, are not offered to them.
        """
        queue = self._queue_name(queue)
        if limit < 1:
            return []
        now = utcnow()
        expires = now + _dt.timedelta(seconds=self.lease_seconds)
        extra = self._filter_conditions(
            None if filters is None else ItemFilter(**{**filters.__dict__, "queue": None, "status": None}),
            now,
        )
        mine = sa.and_(
            ITEMS.c.status == ItemStatus.CLAIMED.value,
            ITEMS.c.claimed_by == reviewer,
            ITEMS.c.lease_expires_at >= now,
        )
        cooldown = now - _dt.timedelta(seconds=self.skip_cooldown_seconds)
        skipped_recently = sa.exists().where(
            DECISIONS.c.item_id == ITEMS.c.id,
            DECISIONS.c.reviewer == reviewer,
            DECISIONS.c.kind == DecisionKind.SKIP.value,
            DECISIONS.c.decided_at > cooldown,
        )
        fresh = sa.and_(self._available(now), self._not_own_second_review(reviewer), ~skipped_recently)
        pick = self._lock(
            sa.select(ITEMS.c.id)
            .where(ITEMS.c.queue == queue, sa.or_(mine, fresh), *extra)
            .order_by(sa.case((mine, 0), else_=1), ITEMS.c.priority.desc(), ITEMS.c.id)
            .limit(limit),
            skip_locked=True,
        )
        with self._writing() as conn:
            if self.dialect == "postgresql":
                # a lost lease is harmless (the item returns to the pool): skip the WAL flush wait
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            # Pick first (PostgreSQL locks the rows and skips rows other claims hold; SQLite holds the
            # database write lock since BEGIN IMMEDIATE), then lease exactly those rows. Not one
            # UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED): PostgreSQL may rescan
            # that subquery per row and lease far more than n items.
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return []
            rows = (
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id.in_(ids), sa.or_(mine, self._available(now)))
                    .values(
                        status=ItemStatus.CLAIMED.value,
                        claimed_by=reviewer,
                        claimed_at=sa.case((mine, ITEMS.c.claimed_at), else_=now),
                        lease_expires_at=expires,
                    )
                    .returning(*ITEMS.c)
                )
                .mappings()
                .all()
            )
            if len(rows) != len(ids):  # pragma: no cover - the locks above make this impossible
                raise ItemConflictError(
                    f"claim of {len(ids)} items in queue {queue!r} leased {len(rows)}; another reviewer "
                    "took some in between; retry the claim"
                )
        return sorted((_view(r) for r in rows), key=lambda v: (-v.priority, v.id))

    def renew(self, item_id: int, reviewer: str) -> ItemView:
        """Extend the lease of an item the reviewer holds (raises if someone else took it)."""
        now = utcnow()
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(
                    ITEMS.c.id == item_id,
                    sa.or_(
                        sa.and_(ITEMS.c.status == ItemStatus.CLAIMED.value, ITEMS.c.claimed_by == reviewer),
                        self._available(now),
                    ),
                    self._not_own_second_review(reviewer),
                )
                .values(
                    status=ItemStatus.CLAIMED.value,
                    claimed_by=reviewer,
                    claimed_at=sa.func.coalesce(ITEMS.c.claimed_at, now),
                    lease_expires_at=now + _dt.timedelta(seconds=self.lease_seconds),
                )
            )
            if res.rowcount != 1:
                self._raise_unavailable(conn, item_id, reviewer)
            return self._views(conn, [item_id])[0]

    def release(self, item_id: int, reviewer: str) -> bool:
        """Give a claimed item back to the pool without a decision. False if the reviewer did not hold it."""
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(
                    ITEMS.c.id == item_id,
                    ITEMS.c.status == ItemStatus.CLAIMED.value,
                    ITEMS.c.claimed_by == reviewer,
                )
                .values(status=ItemStatus.OPEN.value, claimed_by=None, claimed_at=None, lease_expires_at=None)
            )
            return res.rowcount == 1

    def release_expired(self) -> int:
        """Return every claim whose lease has expired to the pool; the number released."""
        now = utcnow()
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(self._expired(now))
                .values(status=ItemStatus.OPEN.value, claimed_by=None, claimed_at=None, lease_expires_at=None)
            )
            return int(res.rowcount)

    def _raise_unavailable(self, conn: sa.Connection, item_id: int, reviewer: str) -> None:
        row = conn.execute(sa.select(ITEMS).where(ITEMS.c.id == item_id)).mappings().first()
        if row is None:
            raise ItemNotFoundError(f"review item {item_id} does not exist; list items with list_items()")
        self._check_decidable(row, reviewer, utcnow(), DecisionKind.ACCEPT)
        raise ItemConflictError(f"review item {item_id} is not available to {reviewer!r}")

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        item_id: int,
        reviewer: str,
        kind: DecisionKind | str,
        *,
        category_id: str | None = None,
        category_path: str | None = None,
        note: str = "",
        duration_ms: int | None = None,
    ) -> DecisionResult:
        """Record a reviewer's decision on an item (claimed by them, or open) in the audit log.

        - ``accept``: the suggested category is final; ``choose``: ``category_id`` + ``category_path``
          (validated against the taxonomy by the caller) is final; ``not_product`` / ``needs_data``:
          final without a category; ``skip``: the item returns to the pool and is kept away from this
          reviewer for ``skip_cooldown_seconds``.
        - with ``consensus_suspect``, a first decision on a ``suspect`` item that disagrees with the
          suggestion is recorded but not final: a second, different reviewer decides.

        Raises :class:`ItemNotFoundError`, :class:`ItemConflictError` (claimed by someone else, already
        decided, own first decision) or :class:`InvalidDecisionError`.
        """
        kind = self._kind(kind)
        if kind == DecisionKind.CHOOSE and (not category_id or not category_path):
            raise InvalidDecisionError(
                f"decision 'choose' on item {item_id} needs both category_id and category_path "
                f"(got {category_id!r}, {category_path!r}); pick a taxonomy node or use 'accept'"
            )
        now = utcnow()
        with self._writing() as conn:
            row = conn.execute(self._lock(sa.select(ITEMS).where(ITEMS.c.id == item_id))).mappings().first()
            if row is None:
                raise ItemNotFoundError(f"review item {item_id} does not exist; list items with list_items()")
            self._check_decidable(row, reviewer, now, kind)
            return self._apply(
                conn,
                row,
                reviewer,
                kind,
                now=now,
                category_id=category_id,
                category_path=category_path,
                note=note,
                duration_ms=duration_ms,
                source=DecisionSource.REVIEW,
            )

    @staticmethod
    def _kind(kind: DecisionKind | str) -> DecisionKind:
        try:
            return DecisionKind(kind)
        except ValueError:
            raise InvalidDecisionError(
                f"decision kind {kind!r} is not known; use one of {', '.join(k.value for k in DecisionKind)}"
            ) from None

    def _check_decidable(self, row: RowLike, reviewer: str, now: _dt.datetime, kind: DecisionKind) -> None:
        item_id = row["id"]
        if row["status"] == ItemStatus.DECIDED.value:
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) was already decided by {row['decided_by']} at "
                f"{row['decided_at']:%Y-%m-%d %H:%M} UTC ({row['final_kind']}); claim the next item instead"
            )
        if (
            row["status"] == ItemStatus.CLAIMED.value
            and row["claimed_by"] != reviewer
            and row["lease_expires_at"] is not None
            and row["lease_expires_at"] >= now
        ):
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) is claimed by {row['claimed_by']} until "
                f"{row['lease_expires_at']:%H:%M:%S} UTC; claim another item"
            )
        if kind != DecisionKind.SKIP and row["reviews_done"] > 0 and row["first_reviewer"] == reviewer:
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) needs a second opinion from a different "
                f"reviewer; {reviewer} already gave the first decision"
            )

    def _apply(
        self,
        conn: sa.Connection,
        row: RowLike,
        reviewer: str,
        kind: DecisionKind,
        *,
        now: _dt.datetime,
        category_id: str | None,
        category_path: str | None,
        note: str,
        duration_ms: int | None,
        source: DecisionSource,
        force_final: bool = False,
        content_hash: str | None = None,
    ) -> DecisionResult:
        item_id = row["id"]
        suggested_id, suggested_path = row["suggested_category_id"], row["suggested_category_path"]
        if kind == DecisionKind.ACCEPT:
            if not suggested_id and not suggested_path:
                raise InvalidDecisionError(
                    f"review item {item_id} (sku {row['sku_id']}) has no suggested category to accept; "
                    "use 'choose' with a taxonomy node, 'not_product' or 'needs_data'"
                )
            category_id, category_path = suggested_id, suggested_path
        elif kind != DecisionKind.CHOOSE:
            category_id = category_path = None
        agrees = kind == DecisionKind.ACCEPT or (
            kind == DecisionKind.CHOOSE and suggested_id is not None and category_id == suggested_id
        )
        review_round = row["reviews_done"] + 1
        base = {
            "item_id": item_id,
            "sku_id": row["sku_id"],
            "queue": row["queue"],
            "reviewer": reviewer,
            "decided_at": now,
            "kind": kind.value,
            "category_id": category_id,
            "category_path": category_path,
            "note": note or "",
            "duration_ms": duration_ms,
            "review_round": review_round,
            "source": source.value,
            "title": row["title"],
            "shown_category_id": suggested_id,
            "shown_category_path": suggested_path,
            "shown_confidence": row["confidence"],
            "shown_candidates": row["candidates"],
            "current_category_path": row["current_category_path"],
            "model_version": row["model_version"],
            "taxonomy_version": row["taxonomy_version"],
            "run_id": row["run_id"],
            "content_hash": content_hash if content_hash is not None else row["content_hash"],
        }
        release = {"claimed_by": None, "claimed_at": None, "lease_expires_at": None, "updated_at": now}
        if kind == DecisionKind.SKIP:
            decision_id = self._log(conn, {**base, "final": False, "review_round": row["reviews_done"]})
            conn.execute(
                sa.update(ITEMS).where(ITEMS.c.id == item_id).values(status=ItemStatus.OPEN.value, **release)
            )
            return DecisionResult(
                item_id,
                decision_id,
                kind.value,
                False,
                ItemStatus.OPEN.value,
                row["reviews_done"],
                row["reviews_required"],
            )
        needs_second = (
            not force_final
            and self.consensus_suspect
            and row["queue"] == Queue.SUSPECT.value
            and row["reviews_done"] == 0
            and not agrees
        )
        if needs_second:
            decision_id = self._log(conn, {**base, "final": False})
            conn.execute(
                sa.update(ITEMS)
                .where(ITEMS.c.id == item_id)
                .values(
                    status=ItemStatus.OPEN.value,
                    reviews_done=1,
                    reviews_required=2,
                    first_reviewer=reviewer,
                    **release,
                )
            )
            return DecisionResult(
                item_id,
                decision_id,
                kind.value,
                False,
                ItemStatus.OPEN.value,
                1,
                2,
                category_id,
                category_path,
            )
        decision_id = self._log(conn, {**base, "final": True})
        conn.execute(
            sa.update(ITEMS)
            .where(ITEMS.c.id == item_id)
            .values(
                status=ItemStatus.DECIDED.value,
                reviews_done=review_round,
                decided_at=now,
                decided_by=reviewer,
                final_kind=kind.value,
                final_category_id=category_id,
                final_category_path=category_path,
                **release,
            )
        )
        self._upsert_label(
            conn,
            {
                "sku_id": row["sku_id"],
                "kind": kind.value,
                "category_id": category_id,
                "category_path": category_path,
                "content_hash": base["content_hash"],
                "decided_at": now,
                "reviewer": reviewer,
                "item_id": item_id,
                "decision_id": decision_id,
            },
        )
        return DecisionResult(
            item_id,
            decision_id,
            kind.value,
            True,
            ItemStatus.DECIDED.value,
            review_round,
            max(row["reviews_required"], review_round),
            category_id,
            category_path,
        )

    def _log(self, conn: sa.Connection, values: Mapping[str, Any]) -> int:
        return int(conn.execute(sa.insert(DECISIONS).values(**values).returning(DECISIONS.c.id)).scalar_one())

    def _upsert_label(self, conn: sa.Connection, values: Mapping[str, Any]) -> None:
        stmt = self._insert(LABELS).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LABELS.c.sku_id], set_={k: stmt.excluded[k] for k in values if k != "sku_id"}
        )
        conn.execute(stmt)

    def bulk_accept(self, filters: ItemFilter, reviewer: str) -> int:
        """Accept the suggestion of every available item matching ``filters``; the number accepted.

        Only open (or lease-expired) items with a suggestion are touched; items claimed by others,
        and second opinions the reviewer may not give, are left alone. Each acceptance is logged.
        """
        now = utcnow()
        f = ItemFilter(**{**filters.__dict__, "status": None})
        conds = self._filter_conditions(f, now)
        done = 0
        with self._writing() as conn:
            stmt = (
                sa.select(ITEMS)
                .where(
                    self._available(now),
                    self._not_own_second_review(reviewer),
                    sa.or_(
                        ITEMS.c.suggested_category_id.is_not(None),
                        ITEMS.c.suggested_category_path.is_not(None),
                    ),
                    *conds,
                )
                .order_by(ITEMS.c.priority.desc(), ITEMS.c.id)
            )
            for row in conn.execute(self._lock(stmt, skip_locked=True)).mappings().all():
                self._apply(
                    conn,
                    row,
                    reviewer,
                    DecisionKind.ACCEPT,
                    now=now,
                    category_id=None,
                    category_path=None,
                    note="bulk accept",
                    duration_ms=None,
                    source=DecisionSource.BULK,
                )
                done += 1
        return done

    # ------------------------------------------------------------------ reading
    def get_item(self, item_id: int) -> ItemView | None:
        with self._engine.begin() as conn:
            views = self._views(conn, [item_id])
        return views[0] if views else None

    def list_items(
        self, filters: ItemFilter, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[ItemView], int]:
        """A page of items matching ``filters`` (highest priority first) and the total that match."""
        now = utcnow()
        conds = self._filter_conditions(filters, now)
        with self._engine.begin() as conn:
            total = int(
                conn.execute(sa.select(sa.func.count()).select_from(ITEMS).where(*conds)).scalar_one()
            )
            rows = conn.execute(
                sa.select(ITEMS)
                .where(*conds)
                .order_by(ITEMS.c.priority.desc(), ITEMS.c.id)
                .offset(max(offset, 0))
                .limit(max(limit, 0))
            ).mappings()
            return [_view(r) for r in rows], total

    def decisions_for_item(self, item_id: int) -> list[dict[str, Any]]:
        """The audit-log rows of one item, oldest first (for the item page's history)."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(DECISIONS).where(DECISIONS.c.item_id == item_id).order_by(DECISIONS.c.id)
            ).mappings()
            return [{**r, "decided_at": _aware(r["decided_at"])} for r in rows]

    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {"open": n, "claimed": n, "decided": n}}``; expired claims count as open."""
        now = utcnow()
        status = sa.case((self._expired(now), ItemStatus.OPEN.value), else_=ITEMS.c.status)
        out = {q: {s: 0 for s in STATUSES} for q in QUEUES}
        with self._engine.begin() as conn:
            for queue, st, n in conn.execute(
                sa.select(ITEMS.c.queue, status, sa.func.count()).group_by(ITEMS.c.queue, status)
            ):
                out.setdefault(queue, {s: 0 for s in STATUSES})[st] = int(n)
        return out

    def labels(self) -> pl.DataFrame:
        """Final human categories for training: sku_id, category_id, category_path, decided_at, content_hash, reviewer."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(
                    LABELS.c.sku_id,
                    LABELS.c.category_id,
                    LABELS.c.category_path,
                    LABELS.c.decided_at,
                    LABELS.c.content_hash,
                    LABELS.c.reviewer,
                )
                .where(LABELS.c.kind.in_(LABEL_KINDS))
                .order_by(LABELS.c.sku_id)
            ).all()
        data = [
            (r.sku_id, r.category_id, r.category_path, _aware(r.decided_at), r.content_hash, r.reviewer)
            for r in rows
        ]
        return pl.DataFrame(data, schema=_LABELS_SCHEMA, orient="row")

    def locked(self) -> dict[str, tuple[str, str, str]]:
        """``sku_id -> (category_id, category_path, content_hash)`` of SKUs a human categorised.

        The pipeline keeps that category until the product's ``content_hash`` changes.
        """
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(
                    LABELS.c.sku_id, LABELS.c.category_id, LABELS.c.category_path, LABELS.c.content_hash
                ).where(LABELS.c.kind.in_(LABEL_KINDS))
            ).all()
        return {r[0]: (r[1] or "", r[2] or "", r[3] or "") for r in rows}

    def decisions_frame(self) -> pl.DataFrame:
        """The audit log as a table, oldest first (``shown_candidates`` as a JSON string)."""
        cols = [c for c in DECISIONS.c if c.name != "shown_candidates"]
        with self._engine.begin() as conn:
            rows = (
                conn.execute(sa.select(*cols, DECISIONS.c.shown_candidates).order_by(DECISIONS.c.id))
                .mappings()
                .all()
            )
        schema: dict[str, pl.DataType] = {}
        for c in cols:
            schema[c.name] = _polars_type(c.type)
        schema["shown_candidates"] = pl.String()
        data = [
            {
                **{c.name: (_aware(r[c.name]) if c.name == "decided_at" else r[c.name]) for c in cols},
                "shown_candidates": None
                if r["shown_candidates"] is None
                else json.dumps(r["shown_candidates"]),
            }
            for r in rows
        ]
        return pl.DataFrame(data, schema=schema)

    # ------------------------------------------------------------------ exchange
    def export_decisions(self, path: str | Path, *, fmt: Literal["csv", "labelstudio"]) -> int:
        """Write the final decisions to ``path`` as CSV or Label Studio JSON; the number written."""
        with self._engine.begin() as conn:
            rows = (
                conn.execute(
                    sa.select(DECISIONS, ITEMS.c.description, ITEMS.c.brand, ITEMS.c.image_path)
                    .select_from(DECISIONS.outerjoin(ITEMS, ITEMS.c.id == DECISIONS.c.item_id))
                    .where(DECISIONS.c.final.is_(True))
                    .order_by(DECISIONS.c.id)
                )
                .mappings()
                .all()
            )
        records = [{**r, "decided_at": _aware(r["decided_at"])} for r in rows]
        return _exchange.write(records, Path(path), fmt=fmt)

    def import_decisions(
        self,
        path: str | Path,
        *,
        fmt: Literal["csv", "labelstudio"] | str,
        reviewer: str,
        taxonomy: Any | None = None,
    ) -> int:
        """Read decisions from a CSV or Label Studio JSON file and record them as final; the number applied.

        ``reviewer`` is who imports (logged as the decision's reviewer, the original reviewer goes into
        the note). An open item of the SKU is decided; a SKU without one gets its label directly.
        Rows that repeat an SKU's current label are skipped, so importing a file twice applies it once.
        ``taxonomy`` (optional, anything with ``find_path(path)``) resolves ids for rows that only carry
        a category path.
        """
        records = _exchange.read(Path(path), fmt=fmt, taxonomy=taxonomy)
        applied = 0
        now = utcnow()
        with self._writing() as conn:
            for rec in records:
                kind = self._kind(rec["kind"])
                if kind == DecisionKind.SKIP:
                    continue
                sku = rec["sku_id"]
                current = conn.execute(sa.select(LABELS).where(LABELS.c.sku_id == sku)).mappings().first()
                if (
                    current is not None
                    and current["kind"] == kind.value
                    and (current["category_id"] or None) == (rec.get("category_id") or None)
                    and (current["category_path"] or None) == (rec.get("category_path") or None)
                ):
                    continue
                note = f"imported from {Path(path).name} ({rec['where']})"
                if rec.get("reviewer"):
                    note += f"; original reviewer {rec['reviewer']}"
                if rec.get("decided_at"):
                    note += f" at {rec['decided_at']}"
                if rec.get("note"):
                    note += f"; {rec['note']}"
                row = (
                    conn.execute(
                        self._lock(
                            sa.select(ITEMS).where(
                                ITEMS.c.sku_id == sku, ITEMS.c.status != ItemStatus.DECIDED.value
                            )
                        )
                    )
                    .mappings()
                    .first()
                )
                cat_id, cat_path = rec.get("category_id"), rec.get("category_path")
                if kind in (DecisionKind.ACCEPT, DecisionKind.CHOOSE):
                    accepts_item = (
                        row is not None
                        and kind == DecisionKind.ACCEPT
                        and (cat_id is None or cat_id == row["suggested_category_id"])
                        and (cat_path is None or cat_path == row["suggested_category_path"])
                    )
                    if not accepts_item and not (cat_id and cat_path):
                        raise InvalidDecisionError(
                            f"{path} {rec['where']}: decision {rec['kind']!r} for sku {sku!r} has no category "
                            f"id and path (id {cat_id!r}, path {cat_path!r}); add both, or pass a taxonomy "
                            "to resolve paths to ids"
                        )
                    if row is not None and not accepts_item:
                        kind = DecisionKind.CHOOSE
                if row is not None:
                    self._apply(
                        conn,
                        row,
                        reviewer,
                        kind,
                        now=now,
                        category_id=cat_id,
                        category_path=cat_path,
                        note=note,
                        duration_ms=rec.get("duration_ms"),
                        source=DecisionSource.IMPORT,
                        force_final=True,
                    )
                else:
                    decision_id = self._log(
                        conn,
                        {
                            "item_id": None,
                            "sku_id": sku,
                            "queue": rec.get("queue") if rec.get("queue") in QUEUES else None,
                            "reviewer": reviewer,
                            "decided_at": now,
                            "kind": kind.value,
                            "category_id": rec.get("category_id"),
                            "category_path": rec.get("category_path"),
                            "note": note,
                            "duration_ms": rec.get("duration_ms"),
                            "review_round": 1,
                            "final": True,
                            "source": DecisionSource.IMPORT.value,
                            "title": rec.get("title"),
                            "shown_category_id": rec.get("suggested_category_id"),
                            "shown_category_path": rec.get("suggested_category_path"),
                            "shown_confidence": rec.get("confidence"),
                            "shown_candidates": None,
                            "current_category_path": rec.get("previous_category_path"),
                            "model_version": rec.get("model_version"),
                            "taxonomy_version": rec.get("taxonomy_version"),
                            "run_id": None,
                            "content_hash": rec.get("content_hash"),
                        },
                    )
                    self._upsert_label(
                        conn,
                        {
                            "sku_id": sku,
                            "kind": kind.value,
                            "category_id": rec.get("category_id"),
                            "category_path": rec.get("category_path"),
                            "content_hash": rec.get("content_hash"),
                            "decided_at": now,
                            "reviewer": reviewer,
                            "item_id": None,
                            "decision_id": decision_id,
                        },
                    )
                applied += 1
        return applied

    # ------------------------------------------------------------------ users
    def add_user(self, username: str, password: str, *, role: Role | str = Role.REVIEWER) -> None:
        """Create a user with a bcrypt-hashed password (raises if the name is taken)."""
        username = username.strip()
        if not username:
            raise ConfigError("username is empty; give a name such as 'alice'")
        role = self._role(role)
        taken = QueueStoreError(
            f"user {username!r} already exists; use set_password() (CLI: add-user --reset) to change it"
        )
        if self.get_user(username) is not None:  # before the (deliberately slow) bcrypt hash
            raise taken
        hashed = self._hash(password, username)
        try:
            with self._writing() as conn:
                conn.execute(
                    sa.insert(USERS).values(
                        username=username,
                        password_hash=hashed,
                        role=role.value,
                        is_active=True,
                        created_at=utcnow(),
                    )
                )
        except sa.exc.IntegrityError:  # created in between by someone else
            raise taken from None

    def set_password(self, username: str, password: str, *, role: Role | str | None = None) -> None:
        """Change a user's password (and optionally role)."""
        values: dict[str, Any] = {"password_hash": self._hash(password, username)}
        if role is not None:
            values["role"] = self._role(role).value
        with self._writing() as conn:
            res = conn.execute(sa.update(USERS).where(USERS.c.username == username).values(**values))
            if res.rowcount != 1:
                raise QueueStoreError(f"user {username!r} does not exist; create it with add_user()")

    def set_active(self, username: str, active: bool) -> None:
        with self._writing() as conn:
            res = conn.execute(sa.update(USERS).where(USERS.c.username == username).values(is_active=active))
            if res.rowcount != 1:
                raise QueueStoreError(f"user {username!r} does not exist; create it with add_user()")

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches (bcrypt), else ``None``; inactive users never authenticate."""
        with self._engine.begin() as conn:
            row = (
                conn.execute(sa.select(USERS).where(USERS.c.username == username.strip())).mappings().first()
            )
        secret = password.encode("utf-8")
        if row is None or len(secret) > BCRYPT_MAX_BYTES:
            bcrypt.checkpw(b"x", self._dummy_hash())  # same cost whether or not the user exists
            return None
        if not bcrypt.checkpw(secret, row["password_hash"].encode("ascii")) or not row["is_active"]:
            return None
        return self._user(row)

    def get_user(self, username: str) -> User | None:
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(USERS).where(USERS.c.username == username)).mappings().first()
        return None if row is None else self._user(row)

    def list_users(self) -> list[User]:
        with self._engine.begin() as conn:
            rows = conn.execute(sa.select(USERS).order_by(USERS.c.username)).mappings().all()
        return [self._user(r) for r in rows]

    def _dummy_hash(self) -> bytes:
        if self._dummy is None:
            self._dummy = bcrypt.hashpw(b"shelfwise-dummy", bcrypt.gensalt(rounds=self.bcrypt_rounds))
        return self._dummy

    @staticmethod
    def _user(row: RowLike) -> User:
        return User(
            username=row["username"],
            role=Role(row["role"]),
            is_active=bool(row["is_active"]),
            created_at=_aware(row["created_at"]),  # type: ignore[arg-type]
        )

    @staticmethod
    def _role(role: Role | str) -> Role:
        try:
            return Role(role)
        except ValueError:
            raise ConfigError(
                f"role {role!r} is not known; use one of {', '.join(r.value for r in Role)}"
            ) from None

    def _hash(self, password: str, username: str) -> str:
        secret = password.encode("utf-8")
        if len(password) < 8:
            raise ConfigError(f"password for {username!r} is shorter than 8 characters; choose a longer one")
        if len(secret) > BCRYPT_MAX_BYTES:
            raise ConfigError(
                f"password for {username!r} is {len(secret)} bytes; bcrypt uses at most {BCRYPT_MAX_BYTES}, "
                "choose a shorter one"
            )
        return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=self.bcrypt_rounds)).decode("ascii")


def _polars_type(type_: sa.types.TypeEngine[Any]) -> pl.DataType:
    if isinstance(type_, sa.Boolean):
        return pl.Boolean()
    if isinstance(type_, sa.Integer):
        return pl.Int64()
    if isinstance(type_, sa.Float):
        return pl.Float64()
    if isinstance(type_, sa.DateTime):
        return pl.Datetime("us", "UTC")
    return pl.String()
