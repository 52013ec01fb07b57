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
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from shelfwise.errors import ConfigError, ShelfwiseError

if TYPE_CHECKING:
    from shelfwise.settings import Settings

__all__ = [
    "TAXONOMY_CHANGED",
    "Migration",
    "after_run",
    "load_pending",
    "migrate_if_needed",
    "migrate_store",
    "with_aliases",
    "write_aliases",
]

TAXONOMY_CHANGED = "taxonomy_changed"


class Migration:
    """One OLD -> NEW migration: path translation (cached), counters, and what the store migration did."""

    def __init__(self, diff: Any) -> None:
        self.diff = diff
        self.old = diff.old
        self.new = diff.new
        self.orphan_skus: frozenset[str] = frozenset()
        self.store: dict[str, Any] = {}
        self.training: Counter[str] = Counter()
        self.catalog: Counter[str] = Counter()
        self.lost_reasons: Counter[str] = Counter()
        self._cache: dict[str, tuple[str | None, str]] = {}
        self.catalog_params: dict[str, Any] = {}  # reviews, images_root, spec, mapping of tonight's catalog
        self.dropped: frozenset[str] = frozenset()  # OLD ids the mapping file gives an empty target
        self._old_paths = frozenset(n.path for n in diff.old)
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
    *,
    model_dir: str | Path,
    taxonomy: str | Path | None,
    taxonomy_mapping: str | Path | None,
    labelled: str | Path | None,
    settings: Settings,
    run_label: str = "taxonomy-migration",
    **train_kwargs: Any,
) -> Migration | None:
    """Migrate and retrain when ``taxonomy`` differs from the model's own copy; ``None`` when it does not."""
    from shelfwise._train import MODEL_TAXONOMY_DIR, _queue_store, load_model_taxonomy, train
    from taxonomy import diff_taxonomies, load_mapping, load_taxonomy

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
    migration.catalog_params = {k: train_kwargs.get(k) for k in ("reviews", "images_root", "spec", "mapping")}
    store = _queue_store(settings, create=False)
    if store is not None:
        try:
            migration.store, lost = migrate_store(store, migration, run_label=run_label)
        finally:
            store.close()
        migration.orphan_skus = frozenset(lost)
    train(
        taxonomy_path=taxonomy,
        catalog=labelled,
        model_dir=model_dir,
        settings=settings,
        relabel=migration.relabel,
        **train_kwargs,
    )
    write_aliases(model_dir / MODEL_TAXONOMY_DIR, migration)
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


def _keep_inputs(folder: Path, old: Any, taxonomy_mapping: str | Path | None) -> Path:
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
        "catalog_params": migration.catalog_params,
    }
    (pending / "state.json").write_text(json.dumps(state, default=str))


def load_pending(model_dir: str | Path) -> Migration | None:
    """The migration that ran before tonight's flow, rebuilt from the model folder (plain files, so the
    night's end can run in another process); ``None`` when none is pending."""
    from shelfwise._train import MODEL_TAXONOMY_DIR, load_model_taxonomy
    from taxonomy import diff_taxonomies, load_mapping, load_taxonomy

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
    migration.catalog_params = state["catalog_params"]
    return migration


# --------------------------------------------------------------------------------------------------
# During the run: the model's taxonomy also answers to the OLD paths (catalog categories translate)
# --------------------------------------------------------------------------------------------------
ALIASES_FILE = "aliases.json"


def write_aliases(folder: Path, migration: Migration) -> int:
    """Record, for the model's taxonomy, the OLD paths each NEW node answers to (renamed, moved, merged)."""
    pairs = []
    for node in migration.old:
        target = migration.diff.target(node.id)
        if target is not None and migration.new.get(target).path != node.path:
            pairs.append([target, node.path])
    path = folder / ALIASES_FILE
    tmp = path.with_suffix(".tmp")
    data = {"taxonomy_version": migration.new.version, "aliases": pairs}
    tmp.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(tmp, path)
    return len(pairs)


def with_aliases(folder: Path, tax: Any) -> Any:
    """``tax`` that also finds the OLD paths of its nodes (``find_path``), if ``folder`` has an aliases file
    written for this very taxonomy version; ``tax`` unchanged otherwise."""
    from taxonomy import Node, Taxonomy

    path = folder / ALIASES_FILE
    if not path.exists():
        return tax
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("taxonomy_version") != tax.version:
        return tax
    layers: list[list[Node]] = []
    seen: Counter[str] = Counter()
    for node_id, old_path in data.get("aliases", []):
        if node_id not in tax:
            continue
        k = seen[node_id]
        seen[node_id] += 1
        if k == len(layers):
            layers.append([])
        layers[k].append(Node(node_id, old_path.rpartition(" > ")[2], None, old_path, 1, True))
    for k, nodes in enumerate(layers):
        tax = tax.with_names(Taxonomy(nodes, source=f"{path} (aliases {k + 1})"), lang=f"x-old{k + 1}")
    return tax


# --------------------------------------------------------------------------------------------------
# After the run: orphans to review, the taxonomy_change block, the report again
# --------------------------------------------------------------------------------------------------
def _get(summary: Any, key: str) -> Any:
    return summary[key] if isinstance(summary, dict) else getattr(summary, key)


def _with_products(
    rows: pl.DataFrame, summary: Any, settings: Settings, migration: Migration
) -> pl.DataFrame:
    """The orphans' product columns (description, brand, image, reviews) read again from tonight's catalog,
    so their review items show the product; only the title when the catalog cannot be read this way."""
    import tempfile

    from shelfwise.catalog import Quarantine
    from shelfwise.pipeline import PRODUCT_COLUMNS, iter_shards

    wanted = set(rows.get_column("sku_id").to_list())
    found: list[pl.DataFrame] = []
    try:
        params = migration.catalog_params
        with tempfile.TemporaryDirectory() as tmp:
            quarantine = Quarantine(Path(tmp) / "q.jsonl")
            for shard in iter_shards(
                str(_get(summary, "catalog")),
                settings=settings,
                taxonomy=migration.new,
                quarantine=quarantine,
                **params,
            ):
                hit = shard.filter(pl.col("sku_id").is_in(list(wanted)))
                if hit.height:
                    found.append(
                        hit.select(
                            "sku_id",
                            *[c for c in PRODUCT_COLUMNS if c in hit.columns and c not in rows.columns],
                        )
                    )
            quarantine.close()
    except (ShelfwiseError, OSError, pl.exceptions.PolarsError):  # the item still has title and suggestion
        return rows
    if not found:
        return rows
    return rows.join(pl.concat(found, how="diagonal_relaxed"), on="sku_id", how="left")


def after_run(summary: Any, settings: Settings, migration: Migration | None = None) -> dict[str, Any] | None:
    """Route SKUs whose category vanished to review (``taxonomy_changed``), count what moved, and add the
    ``taxonomy_change`` block to the run's summary.json (and its report). ``migration`` defaults to the one
    pending in the run's model folder (:func:`load_pending`), which this consumes. ``None`` without one."""
    from shelfwise._train import MODEL_TAXONOMY_DIR

    model_dir = Path(str(_get(summary, "model_dir")))
    migration = migration or load_pending(model_dir)
    if migration is None:
        return None
    from shelfwise._train import _queue_store

    run_id = str(_get(summary, "run_id"))
    run_dir = settings.runs_dir / run_id
    pred_path = Path(str(_get(summary, "predictions_path")))
    preds = pl.read_parquet(pred_path)
    current = preds.get_column("current_category_path").to_list()
    skus = preds.get_column("sku_id").to_list()
    sources = preds.get_column("source").to_list() if "source" in preds.columns else [None] * preds.height
    routes, queues, reasons = (preds.get_column(c).to_list() for c in ("route", "queue", "reason"))
    counts: Counter[str] = Counter()
    orphan_rows: list[int] = []
    for i, path in enumerate(current):
        new_path, status = migration.translate(path)
        if status == "same" and path not in migration._old_paths and path in migration.moved_paths:
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
    tmp = pred_path.with_name(f".{pred_path.name}.migrate.tmp")
    preds.write_parquet(tmp)
    os.replace(tmp, pred_path)
    if orphan_rows:
        rows = _with_products(preds[orphan_rows], summary, settings, migration)
        store = _queue_store(settings)
        try:
            store.enqueue(rows.with_columns(pl.lit(1.0).alias("priority")), run_id=run_id)
        finally:
            store.close()
    block = migration.summary()
    run_dir.mkdir(parents=True, exist_ok=True)
    diff_path = run_dir / "taxonomy_diff.json"
    diff_path.write_text(migration.diff.to_json(), encoding="utf-8")
    block["diff_path"] = str(diff_path)
    pending = model_dir / MODEL_TAXONOMY_DIR / PENDING_DIR
    if pending.exists():  # consumed: the next night is an ordinary one
        shutil.rmtree(pending)
    path = run_dir / "summary.json"
    if path.exists():
        data = json.loads(path.read_text())
        data["taxonomy_change"] = block
        tmp_s = path.with_suffix(".json.tmp")
        tmp_s.write_text(json.dumps(data, indent=2, default=str))
        os.replace(tmp_s, path)
        try:
            from shelfwise.reports import write_report

            write_report(run_id, settings=settings)
        except (ShelfwiseError, OSError, pl.exceptions.PolarsError) as exc:  # keep the night's work
            block["report_error"] = str(exc)
    return block
