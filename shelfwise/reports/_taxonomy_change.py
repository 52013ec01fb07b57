"""The "Taxonomy change" section: shown only for the run that migrated to a new taxonomy version."""

from __future__ import annotations

from typing import Any

import polars as pl

from shelfwise.reports._model import Section, Table, num, plural

__all__ = ["taxonomy_change"]

_KINDS = (
    ("added", "nodes added"),
    ("removed", "nodes removed"),
    ("renamed", "renamed (same id)"),
    ("moved", "moved (same id, new parent)"),
    ("mapped_renamed", "removed, renamed by the mapping"),
    ("mapped_moved", "removed, moved by the mapping"),
    ("merged", "removed, merged into another node"),
    ("split", "removed, split (first target used)"),
    ("removed_without_target", "removed without a target"),
)


def _three(counts: dict[str, Any], *keys: str) -> str:
    return " / ".join(num(counts.get(k, 0)) for k in keys)


def taxonomy_change(
    summary: dict[str, Any], figs: dict[str, Any], tables: dict[str, pl.DataFrame]
) -> Section | None:
    """Counts per kind, SKUs moved, labels remapped and labels lost (and why); ``None`` on ordinary nights."""
    block = summary.get("taxonomy_change")
    if not block:
        return None
    counts = block.get("counts", {})
    skus = block.get("skus", {})
    reviewer = block.get("reviewer_labels", {})
    training = block.get("training_labels", {})
    items = block.get("review_items", {})
    lost = block.get("labels_lost", {})
    routed = int(skus.get("routed_to_review", 0))
    moved = int(skus.get("remapped", 0))
    figs.update(
        taxonomy_changed=True,
        taxonomy_skus_moved=moved,
        taxonomy_skus_orphaned=routed,
        taxonomy_labels_lost=sum(int(v) for v in lost.values()),
    )
    sec = Section(
        "taxonomy_change",
        "Taxonomy change",
        f"Tonight the catalog moved from {block['from']['source']} ({block['from']['version']}) to "
        f"{block['to']['source']} ({block['to']['version']}): "
        f"{plural(moved, 'product', 'products')} followed "
        f"a renamed, moved or merged category and {plural(routed, 'product was', 'products were')} sent to "
        "review because their category vanished without a target (reason taxonomy_changed).",
    )
    sec.facts = [(label, num(counts.get(key, 0))) for key, label in _KINDS]
    sec.facts += [
        ("mapping file", str(block.get("mapping") or "none")),
        ("products whose category followed its node", num(moved)),
        ("products routed to review (taxonomy_changed)", num(routed)),
        ("reviewer labels kept / remapped / lost", _three(reviewer, "same", "remapped", "lost")),
        ("training labels kept / remapped / lost", _three(training, "same", "remapped", "lost")),
        ("open review items moved / superseded", _three(items, "remapped", "superseded")),
    ]
    if lost:
        frame = pl.DataFrame({"why": list(lost), "labels": [int(v) for v in lost.values()]})
        tables["taxonomy_labels_lost"] = frame
        sec.tables.append(
            Table("Labels lost, and why (the decision log keeps every reviewer decision)", frame)
        )
    if block.get("diff_path"):
        sec.notes.append(f"Full list of changed nodes: {block['diff_path']}")
    return sec
