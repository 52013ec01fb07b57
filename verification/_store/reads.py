"""Reads: single items, filtered pages, queue counts, human labels and the decision log as tables."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import sqlalchemy as sa

from verification._db import utcnow
from verification._retry import transient_retry
from verification._store.core import (
    DECISIONS,
    ITEMS,
    LABEL_KINDS,
    LABELS,
    QUEUES,
    STATUSES,
    StoreCore,
    aware,
    view,
)
from verification._types import ItemFilter, ItemView
from verification.models import ItemStatus

__all__ = ["ReadOps"]

_LABELS_SCHEMA: dict[str, pl.DataType] = {
    "sku_id": pl.String(),
    "category_id": pl.String(),
    "category_path": pl.String(),
    "decided_at": pl.Datetime("us", "UTC"),
    "content_hash": pl.String(),
    "reviewer": pl.String(),
}


class ReadOps(StoreCore):
    """Read-only queries (they never migrate or write)."""

    @transient_retry
    def get_item(self, item_id: int) -> ItemView | None:
        with self._reading() as conn:
            views = self._views(conn, [item_id])
        return views[0] if views else None

    @transient_retry
    def list_items(
        self, filters: ItemFilter, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[ItemView], int]:
        """A page of items matching ``filters`` (highest priority first) and the total that match."""
        now = utcnow()
        conds = self._filter_conditions(filters, now)
        with self._reading() as conn:
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
            return [view(r) for r in rows], total

    @transient_retry
    def decisions_for_item(self, item_id: int) -> list[dict[str, Any]]:
        """The audit-log rows of one item, oldest first (for the item page's history)."""
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(DECISIONS).where(DECISIONS.c.item_id == item_id).order_by(DECISIONS.c.id)
            ).mappings()
            return [{**r, "decided_at": aware(r["decided_at"])} for r in rows]

    @transient_retry
    def queue_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {"open": n, "claimed": n, "decided": n}}``; expired claims count as open."""
        now = utcnow()
        status = sa.case((self._expired(now), ItemStatus.OPEN.value), else_=ITEMS.c.status)
        out = {q: {s: 0 for s in STATUSES} for q in QUEUES}
        with self._reading() as conn:
            for queue, st, n in conn.execute(
                sa.select(ITEMS.c.queue, status, sa.func.count()).group_by(ITEMS.c.queue, status)
            ):
                out.setdefault(queue, {s: 0 for s in STATUSES})[st] = int(n)
        return out

    @transient_retry
    def labels(self) -> pl.DataFrame:
        """Final human categories for training.

        Columns: sku_id, category_id, category_path, decided_at, content_hash, reviewer.
        """
        with self._reading() as conn:
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
            (r.sku_id, r.category_id, r.category_path, aware(r.decided_at), r.content_hash, r.reviewer)
            for r in rows
        ]
        return pl.DataFrame(data, schema=_LABELS_SCHEMA, orient="row")

    @transient_retry
    def locked(self) -> dict[str, tuple[str, str, str]]:
        """``sku_id -> (category_id, category_path, content_hash)`` of SKUs a human categorised.

        The pipeline keeps that category until the product's ``content_hash`` changes.
        """
        with self._reading() as conn:
            rows = conn.execute(
                sa.select(
                    LABELS.c.sku_id, LABELS.c.category_id, LABELS.c.category_path, LABELS.c.content_hash
                ).where(LABELS.c.kind.in_(LABEL_KINDS))
            ).all()
        return {r[0]: (r[1] or "", r[2] or "", r[3] or "") for r in rows}

    @transient_retry
    def decisions_frame(self) -> pl.DataFrame:
        """The audit log as a table, oldest first (``shown_candidates`` as a JSON string)."""
        return self._table_frame(DECISIONS)

    @transient_retry
    def items_frame(self) -> pl.DataFrame:
        """Every review item (any status) as a table, oldest first (``candidates`` as a JSON string)."""
        return self._table_frame(ITEMS)

    def _table_frame(self, table: sa.Table) -> pl.DataFrame:
        """All rows of ``table`` by id: timestamps as aware UTC, JSON columns last, as JSON strings."""
        plain = [c for c in table.c if not isinstance(c.type, sa.JSON)]
        as_json = [c for c in table.c if isinstance(c.type, sa.JSON)]
        with self._reading() as conn:
            rows = conn.execute(sa.select(*plain, *as_json).order_by(table.c.id)).mappings().all()
        schema: dict[str, pl.DataType] = {c.name: _polars_type(c.type) for c in plain}
        schema.update({c.name: pl.String() for c in as_json})
        stamps = {c.name for c in plain if isinstance(c.type, sa.DateTime)}
        data = [
            {
                **{c.name: aware(r[c.name]) if c.name in stamps else r[c.name] for c in plain},
                **{c.name: None if r[c.name] is None else json.dumps(r[c.name]) for c in as_json},
            }
            for r in rows
        ]
        return pl.DataFrame(data, schema=schema)


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
