"""Export and import of final decisions (CSV, Label Studio JSON) against the store.

The file formats live in :mod:`verification.exchange`; this module reads and records the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from verification import exchange as formats
from verification._db import utcnow
from verification._errors import InvalidDecisionError
from verification._retry import transient_retry
from verification._store.core import DECISIONS, ITEMS, LABELS, QUEUES, RowLike, aware, to_kind
from verification._store.decisions import DecisionOps, Verdict, decision_row
from verification.models import DecisionKind, DecisionSource, ItemStatus

__all__ = ["ExchangeOps"]


class ExchangeOps(DecisionOps):
    """Moves final decisions between the store and files."""

    @transient_retry
    def export_decisions(self, path: str | Path, *, fmt: Literal["csv", "labelstudio"]) -> int:
        """Write the final decisions to ``path`` as CSV or Label Studio JSON; the number written."""
        with self._reading() as conn:
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
        records = [{**r, "decided_at": aware(r["decided_at"])} for r in rows]
        return formats.write(records, Path(path), fmt=fmt)

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
        records = formats.read(Path(path), fmt=fmt, taxonomy=taxonomy)
        applied = 0
        now = utcnow()
        with self._writing() as conn:
            for rec in records:
                kind = to_kind(rec["kind"])
                if kind == DecisionKind.SKIP or self._is_current_label(conn, rec, kind):
                    continue
                row = self._open_item(conn, rec["sku_id"])
                kind = _import_kind(path, rec, kind, row)
                cat_id, cat_path = rec.get("category_id"), rec.get("category_path")
                note = _import_note(path, rec)
                verdict = Verdict(
                    reviewer, kind, DecisionSource.IMPORT, now, cat_id, cat_path, note, rec.get("duration_ms")
                )
                if row is not None:
                    self._apply(conn, row, verdict, force_final=True)
                else:
                    shown = _shown_without_item(rec)
                    self._record_final(conn, decision_row(shown, verdict, review_round=1, final=True))
                applied += 1
        return applied

    def _is_current_label(self, conn: sa.Connection, rec: dict[str, Any], kind: DecisionKind) -> bool:
        """Whether ``rec`` repeats its SKU's current label (kind and category)."""
        current = conn.execute(sa.select(LABELS).where(LABELS.c.sku_id == rec["sku_id"])).mappings().first()
        return (
            current is not None
            and current["kind"] == kind.value
            and (current["category_id"] or None) == (rec.get("category_id") or None)
            and (current["category_path"] or None) == (rec.get("category_path") or None)
        )

    def _open_item(self, conn: sa.Connection, sku: Any) -> RowLike | None:
        """The SKU's undecided review item, locked; ``None`` when it has none."""
        return (
            conn.execute(
                self._lock(
                    sa.select(ITEMS).where(ITEMS.c.sku_id == sku, ITEMS.c.status != ItemStatus.DECIDED.value)
                )
            )
            .mappings()
            .first()
        )


def _import_note(path: str | Path, rec: dict[str, Any]) -> str:
    """The logged note: the file and row, the original reviewer and time, and the row's own note."""
    note = f"imported from {Path(path).name} ({rec['where']})"
    if rec.get("reviewer"):
        note += f"; original reviewer {rec['reviewer']}"
    if rec.get("decided_at"):
        note += f" at {rec['decided_at']}"
    if rec.get("note"):
        note += f"; {rec['note']}"
    return note


def _import_kind(
    path: str | Path, rec: dict[str, Any], kind: DecisionKind, row: RowLike | None
) -> DecisionKind:
    """The kind to apply: an accept that does not match the open item's suggestion becomes a choose.

    An accept or choose must carry a category id and path unless it accepts the open item's suggestion.
    """
    if kind not in (DecisionKind.ACCEPT, DecisionKind.CHOOSE):
        return kind
    cat_id, cat_path = rec.get("category_id"), rec.get("category_path")
    accepts_item = (
        row is not None
        and kind == DecisionKind.ACCEPT
        and (cat_id is None or cat_id == row["suggested_category_id"])
        and (cat_path is None or cat_path == row["suggested_category_path"])
    )
    if not accepts_item and not (cat_id and cat_path):
        raise InvalidDecisionError(
            f"{path} {rec['where']}: decision {rec['kind']!r} for sku {rec['sku_id']!r} has no "
            f"category id and path (id {cat_id!r}, path {cat_path!r}); add both, or pass a "
            "taxonomy to resolve paths to ids"
        )
    if row is not None and not accepts_item:
        return DecisionKind.CHOOSE
    return kind


def _shown_without_item(rec: dict[str, Any]) -> dict[str, Any]:
    """What the decision log records as shown for an imported SKU that has no open review item."""
    return {
        "id": None,
        "sku_id": rec["sku_id"],
        "queue": rec.get("queue") if rec.get("queue") in QUEUES else None,
        "title": rec.get("title"),
        "suggested_category_id": rec.get("suggested_category_id"),
        "suggested_category_path": rec.get("suggested_category_path"),
        "confidence": rec.get("confidence"),
        "candidates": None,
        "current_category_path": rec.get("previous_category_path"),
        "model_version": rec.get("model_version"),
        "taxonomy_version": rec.get("taxonomy_version"),
        "run_id": None,
        "content_hash": rec.get("content_hash"),
    }
