"""The night the taxonomy changes: carry labels, decisions and review items from OLD to NEW.

``shelfwise run --taxonomy NEW [--taxonomy-mapping MAP.csv]`` with a model trained on another taxonomy
version (the fingerprints differ) runs :func:`migrate_if_needed` before anything is classified:

1. diff OLD (the model's copy) and NEW by id, with the mapping file for removed nodes (``taxonomy``);
2. reviewers' labels follow their node (same id, or the mapping's target); a label whose node vanished
   without a target is taken out of ``human_labels`` (the append-only decision log keeps it) and its SKU
   goes to review with reason ``taxonomy_changed``;
3. open review items suggested in OLD: an untouched item whose suggestion vanished is superseded, the
   others get their suggestion (and candidates) moved to NEW;
4. the model is retrained on NEW with the labelled catalog's categories translated the same way;
5. tonight's catalog categories are translated before routing (a renamed node is not "suspect"); SKUs
   whose current category vanished without a target go to review (``taxonomy_changed``);
6. the run summary gets a ``taxonomy_change`` block, the governance report a "Taxonomy change" section.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise.errors import ConfigError
from shelfwise.model_folder import MODEL_TAXONOMY_DIR, load_model_taxonomy, write_aliases
from shelfwise.pipeline._stage import CatalogSource
from shelfwise.pipeline._train import train
from shelfwise.settings import Settings
from shelfwise.state import open_queue, read_queue
from taxonomy import Taxonomy, TaxonomyDiff, diff_taxonomies, load_mapping, load_taxonomy

__all__ = [
    "TAXONOMY_CHANGED",
    "Migration",
    "enqueue_orphans",
    "finish_migration",
    "load_pending",
    "migrate_if_needed",
    "migrate_store",
    "route_orphans",
]

TAXONOMY_CHANGED = "taxonomy_changed"


class Migration:
    """One OLD -> NEW migration: path translation (cached), counters, and what the store migration did."""

    def __init__(self, diff: TaxonomyDiff) -> None:
        self.diff = diff
        self.old = diff.old
        self.new = diff.new
        self.orphan_skus: frozenset[str] = frozenset()
        self.store: dict[str, Any] = {}
        self.training: Counter[str] = Counter()
        self.catalog: Counter[str] = Counter()
        self.lost_reasons: Counter[str] = Counter()
        self._cache: dict[str, tuple[str | None, str]] = {}
        self.dropped: frozenset[str] = frozenset()  # OLD ids the mapping file gives an empty target
        self.old_paths = frozenset(n.path for n in diff.old)
        self.moved_paths = frozenset(
            diff.new.get(t).path
            for n in diff.old
            if (t := diff.target(n.id)) is not None and diff.new.get(t).path != n.path
        )

    def why_lost(self, old_id: str) -> str:
        """Why a label on ``old_id`` has no node in NEW (the report's "labels lost, and why")."""
        if self.diff.mapping_file is None:
            return "node removed, no --taxonomy-mapping given"
        if old_id in self.dropped:
            return "node removed, the mapping file gives it an empty target"
        return "node removed, not in the mapping file"

    def translate(self, path: str | None) -> tuple[str | None, str]:
        """An OLD (or already NEW) category path -> ``(NEW path, status)``; status is ``same``, ``remapped``,
        ``lost`` (its node vanished without a target: the path is ``None``) or ``unknown`` (in neither)."""
        if path is None:
            return None, "none"
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        node = self.old.find_path(path)
        if node is not None:
            target = self.diff.target(node.id)
            if target is None:
                hit = (None, "lost")
            else:
                new_path = self.new.get(target).path
                hit = (new_path, "same" if new_path == node.path else "remapped")
        else:
            known = self.new.find_path(path)
            hit = (known.path, "same") if known is not None else (path, "unknown")
        self._cache[path] = hit
        return hit

    def relabel(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Training rows: OLD categories -> NEW; a category that vanished without a target becomes null."""
        out = []
        for p in frame.get_column("category_path").to_list():
            new_path, status = self.translate(p)
            if p is not None:
                self.training[status] += 1
                if status == "lost":
                    node = self.old.find_path(p)
                    self.lost_reasons["training label: " + self.why_lost(node.id if node else "")] += 1
            out.append(new_path)
        return frame.with_columns(pl.Series("category_path", out, dtype=pl.String))

    def aliases(self) -> list[tuple[str, str]]:
        """``(NEW node id, OLD path)`` for each node whose path changed (renamed, moved, merged)."""
        pairs = []
        for node in self.old:
            target = self.diff.target(node.id)
            if target is not None and self.new.get(target).path != node.path:
                pairs.append((target, node.path))
        return pairs

    def summary(self) -> dict[str, Any]:
        d = self.diff
        return {
            "from": {"source": self.old.source, "version": self.old.version, "nodes": len(self.old)},
            "to": {"source": self.new.source, "version": self.new.version, "nodes": len(self.new)},
            "mapping": d.mapping_file,
            "counts": d.counts(),
            "skus": dict(self.catalog),
            "training_labels": dict(self.training),
            "reviewer_labels": self.store.get("labels", {}),
            "review_items": self.store.get("items", {}),
            "labels_lost": dict(self.lost_reasons),
        }


# --------------------------------------------------------------------------------------------------
# Before the run: detect, migrate the store, retrain
# --------------------------------------------------------------------------------------------------
def migrate_if_needed(
    settings: Settings,
    model_dir: str | Path,
    *,
    taxonomy: str | Path | None,
    taxonomy_mapping: str | Path | None,
    labelled: str | Path | None,
    source: CatalogSource,
    run_label: str = "taxonomy-migration",
) -> Migration | None:
    """Migrate and retrain when ``taxonomy`` differs from the model's own copy; ``None`` when it does not.

    ``labelled`` is read the way tonight's catalog ``source`` is (reviews, images, spec, mapping)."""
    model_dir = Path(model_dir)
    if taxonomy is None or not (model_dir / MODEL_TAXONOMY_DIR).exists():
        if taxonomy_mapping is not None and taxonomy is None:
            raise ConfigError("--taxonomy-mapping needs --taxonomy NEW (the taxonomy the mapping leads to)")
        return None
    old = load_model_taxonomy(model_dir)
    new = load_taxonomy(taxonomy)
    if old.version == new.version:
        return None
    if labelled is None:
        raise ConfigError(
            f"taxonomy {taxonomy} ({new.version}) differs from the one model {model_dir} was trained on "
            f"({old.version}); the migration retrains on it: pass --labelled LABELLED (and "
            "--taxonomy-mapping "
            "MAP.csv for renamed, merged or split nodes)"
        )
    mapping = load_mapping(taxonomy_mapping, old, new) if taxonomy_mapping is not None else None
    migration = Migration(diff_taxonomies(old, new, mapping=mapping))
    pending = _keep_inputs(model_dir / MODEL_TAXONOMY_DIR, old, taxonomy_mapping)  # before NEW replaces OLD
    migration.dropped = mapping.dropped if mapping is not None else frozenset()
    store = read_queue(settings)
    if store is not None:
        try:
            migration.store, lost = migrate_store(store, migration, run_label=run_label)
        finally:
            store.close()
        migration.orphan_skus = frozenset(lost)
    train(
        taxonomy_path=taxonomy,
        catalog=source.model_copy(update={"catalog": str(labelled)}),
        model_dir=model_dir,
        settings=settings,
        relabel=migration.relabel,
    )
    write_aliases(model_dir / MODEL_TAXONOMY_DIR, migration.new.version, migration.aliases())
    _save_pending(pending, migration)
    return migration


def migrate_store(store: Any, migration: Migration, *, run_label: str) -> tuple[dict[str, Any], list[str]]:
    """Move reviewers' labels and open review items to NEW (``QueueStore.remap_categories``).

    Returns the counts and the SKUs whose label was lost (their node vanished without a target)."""

    def follow(category_id: str | None, category_path: str | None) -> tuple[str, str] | None:
        new_id, status = _follow(migration, category_id, category_path)
        if status == "lost":
            return None
        if new_id is None:  # in neither taxonomy: not ours to judge, left as it is
            return category_id or "", category_path or ""
        return new_id, migration.new.get(new_id).path

    result = store.remap_categories(follow, run_id=run_label)
    for _sku, category_id in result.lost_labels:
        migration.lost_reasons["reviewer label: " + migration.why_lost(category_id or "")] += 1
    lost = [sku for sku, _ in result.lost_labels]
    return {"labels": dict(result.labels), "items": dict(result.items)}, lost


def _follow(migration: Migration, node_id: str | None, path: str | None) -> tuple[str | None, str]:
    """Where a stored (id, path) goes: ``(new id, same|remapped|lost|unknown)``."""
    d = migration.diff
    if node_id and node_id in d.old:
        target = d.target(node_id)
        if target is None:
            return None, "lost"
        same = target == node_id and d.new.get(target).path == d.old.get(node_id).path
        return target, "same" if same else "remapped"
    if node_id and node_id in d.new:
        return node_id, "same"
    if path:
        node = d.old.find_path(path)
        if node is not None:
            return _follow(migration, node.id, None)
        known = d.new.find_path(path)
        if known is not None:
            return known.id, "remapped"
    return None, "unknown"


PENDING_DIR = "migration-pending"


def _keep_inputs(folder: Path, old: Taxonomy, taxonomy_mapping: str | Path | None) -> Path:
    """Copy OLD (and the mapping file) aside, so the night's end can rebuild the migration from files."""
    pending = folder / PENDING_DIR
    if pending.exists():
        shutil.rmtree(pending)
    pending.mkdir(parents=True)
    meta = json.loads((folder / "source.json").read_text()) if (folder / "source.json").exists() else {}
    name = "old-" + Path(old.source).name
    shutil.copy2(old.source, pending / name)
    if taxonomy_mapping is not None:
        shutil.copy2(taxonomy_mapping, pending / "mapping.csv")
    (pending / "old.json").write_text(json.dumps({"file": name, "format": meta.get("format")}))
    return pending


def _save_pending(pending: Path, migration: Migration) -> None:
    state = {
        "orphan_skus": sorted(migration.orphan_skus),
        "store": migration.store,
        "training": dict(migration.training),
        "lost_reasons": dict(migration.lost_reasons),
    }
    (pending / "state.json").write_text(json.dumps(state, default=str))


def load_pending(model_dir: str | Path) -> Migration | None:
    """The migration that ran before tonight's flow, rebuilt from the model folder (plain files, so the
    night's end can run in another process); ``None`` when none is pending."""
    pending = Path(model_dir) / MODEL_TAXONOMY_DIR / PENDING_DIR
    if not (pending / "state.json").exists():
        return None
    meta = json.loads((pending / "old.json").read_text())
    old = load_taxonomy(pending / meta["file"], format=meta.get("format"))
    new = load_model_taxonomy(Path(model_dir))
    mapping = load_mapping(pending / "mapping.csv", old, new) if (pending / "mapping.csv").exists() else None
    migration = Migration(diff_taxonomies(old, new, mapping=mapping))
    migration.dropped = mapping.dropped if mapping is not None else frozenset()
    state = json.loads((pending / "state.json").read_text())
    migration.orphan_skus = frozenset(state["orphan_skus"])
    migration.store = state["store"]
    migration.training.update(state["training"])
    migration.lost_reasons.update(state["lost_reasons"])
    return migration


# --------------------------------------------------------------------------------------------------
# The night's end: orphans to review before anything is written, then the taxonomy_change block
# --------------------------------------------------------------------------------------------------
def route_orphans(preds: pl.DataFrame, migration: Migration) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tonight's final prediction rows under the migration: current categories translated to NEW, and
    SKUs whose category vanished (or whose reviewer label was lost) routed to review with reason
    ``taxonomy_changed`` (a reviewer's own decision stays). Returns ``(rows, the orphan rows)``; counts
    what happened to the catalog's categories in ``migration.catalog``."""
    current = preds.get_column("current_category_path").to_list()
    skus = preds.get_column("sku_id").to_list()
    sources = preds.get_column("source").to_list() if "source" in preds.columns else [None] * preds.height
    routes, queues, reasons = (preds.get_column(c).to_list() for c in ("route", "queue", "reason"))
    counts: Counter[str] = Counter()
    orphan_rows: list[int] = []
    for i, path in enumerate(current):
        new_path, status = migration.translate(path)
        if status == "same" and path not in migration.old_paths and path in migration.moved_paths:
            status = "remapped"  # the model's aliases already read the OLD category as its NEW node
        if path is not None:
            counts[status] += 1
        if status == "remapped":
            current[i] = new_path
        if (status == "lost" or skus[i] in migration.orphan_skus) and sources[i] != "human":
            routes[i], queues[i], reasons[i] = "review", "low_confidence", TAXONOMY_CHANGED
            orphan_rows.append(i)
    counts["routed_to_review"] = len(orphan_rows)
    migration.catalog.update(counts)
    preds = preds.with_columns(
        pl.Series("route", routes, dtype=pl.String),
        pl.Series("queue", queues, dtype=pl.String),
        pl.Series("reason", reasons, dtype=pl.String),
        pl.Series("current_category_path", current, dtype=pl.String),
    )
    return preds, preds[orphan_rows]


def enqueue_orphans(orphans: pl.DataFrame, settings: Settings, *, run_id: str) -> None:
    """Put the orphans into the review queue (first in line: priority 1)."""
    if orphans.is_empty():
        return
    with open_queue(settings) as store:
        store.enqueue(orphans.with_columns(pl.lit(1.0).alias("priority")), run_id=run_id)


def finish_migration(migration: Migration, *, run_dir: Path, model_dir: Path) -> dict[str, Any]:
    """The summary's ``taxonomy_change`` block (with the diff written next to it, ``taxonomy_diff.json``);
    the pending migration in the model folder is consumed: the next night is an ordinary one."""
    block = migration.summary()
    run_dir.mkdir(parents=True, exist_ok=True)
    diff_path = run_dir / "taxonomy_diff.json"
    diff_path.write_text(migration.diff.to_json(), encoding="utf-8")
    block["diff_path"] = str(diff_path)
    pending = model_dir / MODEL_TAXONOMY_DIR / PENDING_DIR
    if pending.exists():
        shutil.rmtree(pending)
    return block
