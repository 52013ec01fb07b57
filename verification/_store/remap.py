"""Moving stored categories to a new taxonomy version: human labels and open review items follow their node.

:meth:`RemapOps.remap_categories` takes a ``follow(category_id, category_path)`` function (the taxonomy
diff's answer for one stored category): ``(new_id, new_path)`` where the node lives now (the same values
when nothing changed), or ``None`` when it is gone without a target.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from verification._store.core import ITEMS, LABEL_KINDS, LABELS
from verification._store.enqueue import EnqueueOps
from verification.models import OPEN_STATUSES, ItemStatus

__all__ = ["Follow", "RemapOps", "RemapResult"]

#: ``(category_id, category_path) -> (new_id, new_path)``, or ``None`` when the node is gone.
Follow = Callable[[str | None, str | None], tuple[str, str] | None]


@dataclass(frozen=True)
class RemapResult:
    """What :meth:`RemapOps.remap_categories` did.

    ``labels``: human labels ``same`` / ``remapped`` / ``lost`` (deleted: nothing to learn from a label on a
    node that is gone; the decision log keeps the decision). ``lost_labels``: ``(sku_id, category_id)`` of
    the deleted labels. ``items``: open review items ``unchanged`` / ``remapped`` (suggestion or
    candidates moved; candidates on a vanished node are dropped) / ``superseded`` (suggestion gone,
    nobody had touched the item) /
    ``kept_in_progress`` (suggestion gone, but claimed or half-reviewed: a reviewer chooses).
    """

    labels: dict[str, int] = field(default_factory=dict)
    lost_labels: list[tuple[str, str | None]] = field(default_factory=list)
    items: dict[str, int] = field(default_factory=dict)


class RemapOps(EnqueueOps):
    """Category moves across taxonomy versions (supersedes items whose suggestion vanished)."""

    def remap_categories(self, follow: Follow, *, run_id: str) -> RemapResult:
        """Move human labels and open review items to where ``follow`` says their category lives now.

        One write transaction for labels and items; items whose suggestion is gone and that nobody
        touched are closed like :meth:`supersede` (``run_id`` names the migration that closed them).
        """
        labels: Counter[str] = Counter()
        lost: list[tuple[str, str | None]] = []
        items: Counter[str] = Counter()
        stale: list[str] = []
        with self._writing() as conn:
            rows = conn.execute(
                sa.select(LABELS.c.sku_id, LABELS.c.category_id, LABELS.c.category_path).where(
                    LABELS.c.kind.in_(LABEL_KINDS)
                )
            ).all()
            for sku, cid, cpath in rows:
                target = follow(cid, cpath)
                if target is None:
                    labels["lost"] += 1
                    lost.append((sku, cid))
                    conn.execute(sa.delete(LABELS).where(LABELS.c.sku_id == sku))
                elif target == (cid, cpath):
                    labels["same"] += 1
                else:
                    labels["remapped"] += 1
                    conn.execute(
                        sa.update(LABELS)
                        .where(LABELS.c.sku_id == sku)
                        .values(category_id=target[0], category_path=target[1])
                    )
            open_items = conn.execute(
                sa.select(
                    ITEMS.c.id,
                    ITEMS.c.sku_id,
                    ITEMS.c.status,
                    ITEMS.c.reviews_done,
                    ITEMS.c.suggested_category_id,
                    ITEMS.c.suggested_category_path,
                    ITEMS.c.candidates,
                ).where(ITEMS.c.status.in_(OPEN_STATUSES))
            ).all()
            for item_id, sku, status, done, sid, spath, cands in open_items:
                target = follow(sid, spath)
                if target is None:
                    if status == ItemStatus.OPEN.value and not done:
                        stale.append(sku)
                    else:
                        items["kept_in_progress"] += 1
                    continue
                moved = _moved_candidates(cands, follow)
                if target == (sid, spath) and moved == list(cands or []):
                    items["unchanged"] += 1
                    continue
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id == item_id)
                    .values(
                        suggested_category_id=target[0], suggested_category_path=target[1], candidates=moved
                    )
                )
                items["remapped"] += 1
        if stale:
            items["superseded"] = sum(self.supersede(stale, run_id=run_id).values())
        return RemapResult(dict(labels), lost, dict(items))


def _moved_candidates(candidates: Any, follow: Follow) -> list[dict[str, Any]]:
    """The candidates whose node still exists, at their new place (the others are dropped)."""
    moved = []
    for cand in candidates or []:
        target = follow(cand.get("category_id"), cand.get("category_path"))
        if target is not None:
            moved.append({**cand, "category_id": target[0], "category_path": target[1]})
    return moved
