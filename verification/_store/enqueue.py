"""Nightly enqueue (an upsert per SKU within queue capacities) and closing stale items (supersede)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import sqlalchemy as sa

from shelfwise.errors import ConfigError
from verification._db import utcnow
from verification._errors import QueueStoreError
from verification._retry import transient_retry
from verification._store.core import ITEMS, LABELS, QUEUES, StoreCore, chunks
from verification._types import EnqueueResult
from verification.models import ItemStatus

__all__ = ["SUPERSEDED", "EnqueueOps"]

REVIEW_EXCERPT_CHARS = 600

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


SUPERSEDED = "superseded"  # final_kind of an item closed by a later run, not by a reviewer


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


class EnqueueOps(StoreCore):
    """Writes the nightly run's review items."""

    @transient_retry
    def enqueue(
        self, frame: pl.DataFrame, *, run_id: str, capacity: Mapping[str, int] | None = None
    ) -> EnqueueResult:
        """Put routed predictions into their queues (an upsert per SKU; re-running a run is idempotent).

        ``frame``: predictions rows (``sku_id, category_id, category_path, confidence, candidates,
        current_category_path, taxonomy_version, model_version, content_hash``...) plus ``queue``,
        ``priority`` (higher first), ``reason`` and the product columns ``title, description, brand,
        image_path, review_text``. Rows whose ``queue`` is null are ignored (auto-accepted).

        - an SKU already open (or claimed) is updated in place, never duplicated;
        - an SKU with a final human decision and an unchanged ``content_hash`` is skipped
          (``skipped_locked``);
        - per queue only the ``capacity[queue]`` highest-priority rows are written
          (``dropped_over_capacity``).
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
            # 0. hold the SKUs' open items first, so a decision committing meanwhile is seen below
            self._lock_open_items(conn, [r["sku_id"] for r in rows])
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
                for chunk in chunks(changed, 1000):
                    conn.execute(stmt, list(chunk))
        return EnqueueResult(**counts)

    @transient_retry
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
            for chunk in chunks(list(dict.fromkeys(str(s) for s in skus))):
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
                all(EnqueueOps._same(a.get(k), b.get(k)) for k in ("category_id", "category_path", "score"))
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
                    "pass the routed predictions with sku_id and queue (see docs/predictions.md)"
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
                f"enqueue frame has {null_sku.height} rows with a null 'sku_id'; "
                "drop or fix them before enqueueing"
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

    def _lock_open_items(self, conn: sa.Connection, skus: Sequence[str]) -> None:
        """PostgreSQL: lock the open items of ``skus`` (in SKU order) before the human labels are read.

        Without it a decision committing between the label read and the upsert leaves its item decided,
        the upsert finds no open item to update and inserts a second item for a SKU a person has just
        decided. With it the decision either commits first (its label is read below) or waits for
        this enqueue. SQLite needs nothing: the BEGIN IMMEDIATE transaction holds the database.
        """
        if self.dialect != "postgresql":
            return
        for chunk in chunks(sorted(set(skus))):
            conn.execute(
                sa.select(ITEMS.c.id)
                .where(ITEMS.c.sku_id.in_(list(chunk)), ITEMS.c.status != ItemStatus.DECIDED.value)
                .order_by(ITEMS.c.sku_id)
                .with_for_update()
            ).all()

    def _decided_hashes(self, conn: sa.Connection, skus: Sequence[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for chunk in chunks(list(skus)):
            for sku, chash in conn.execute(
                sa.select(LABELS.c.sku_id, LABELS.c.content_hash).where(LABELS.c.sku_id.in_(list(chunk)))
            ):
                found[sku] = chash
        return found

    def _open_payloads(self, conn: sa.Connection, skus: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        cols = [ITEMS.c.sku_id, *(ITEMS.c[c] for c in _PAYLOAD_COLUMNS)]
        for chunk in chunks(list(skus)):
            rows = conn.execute(
                sa.select(*cols).where(
                    ITEMS.c.sku_id.in_(list(chunk)), ITEMS.c.status != ItemStatus.DECIDED.value
                )
            ).mappings()
            for r in rows:
                found[str(r["sku_id"])] = dict(r)
        return found
