"""The plain functions behind every stage of the nightly run (the Prefect tasks are thin wrappers).

    train(...)              labelled catalog (+ human labels from the queue) -> model directory
    load_resources(...)     model, taxonomy, embedder, cache, LLM arbiter: built once per run
    stage_catalog(...)      catalog file -> canonical shards (Parquet) + quarantine file
    classify_frame(...)     one shard -> prediction rows (candidates, confidence, route, queue)
    PredictionWriter        streams prediction shards into one Parquet file, renamed into place at the end
    finalize_run(...)       enqueue review items, write catalog state and the run summary

Nothing in here imports Prefect: ``shelfwise classify`` runs these directly, ``shelfwise run`` through
the flow in ``flows/nightly.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from shelfwise.errors import ConfigError, ModelError
from shelfwise.settings import Settings

__all__ = [
    "PREDICTION_COLUMNS",
    "PredictionWriter",
    "Resources",
    "RunStats",
    "Written",
    "classify_catalog",
    "classify_frame",
    "finalize_run",
    "iter_shards",
    "load_resources",
    "new_run_id",
    "stage_catalog",
    "train",
    "write_predictions",
]

log = logging.getLogger("shelfwise")

#: The predictions contract (extend, never rename or drop).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "sku_id",
    "category_id",
    "category_path",
    "confidence",
    "route",
    "candidates",
    "current_category_path",
    "taxonomy_version",
    "model_version",
    "run_id",
    # extensions
    "predicted_depth",
    "margin",
    "source",
    "reason",
    "queue",
    "llm_status",
    "content_hash",
    "title",
)

CANDIDATE_TYPE = pl.List(pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64}))

#: Product columns carried from the catalog into the queue (not into predictions.parquet).
PRODUCT_COLUMNS = ("title", "description", "brand", "attributes", "image_path", "review_text", "price")

MODEL_TAXONOMY_DIR = "taxonomy"


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------
# Catalog access
# --------------------------------------------------------------------------------------------------
def _catalog_spec(spec_path: str | Path | None, mapping: Sequence[str] | None) -> Any:
    from shelfwise.catalog import CatalogSpec, parse_mapping

    spec = CatalogSpec.from_file(spec_path) if spec_path else None
    if mapping:
        spec = parse_mapping(list(mapping), base=spec)
    return spec


def iter_shards(
    catalog: str | Path,
    *,
    settings: Settings,
    taxonomy: Any,
    quarantine: Any,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream the catalog as canonical shards; bad rows go to ``quarantine``."""
    from shelfwise.catalog import iter_catalog, load_reviews

    review_frame = load_reviews(reviews, quarantine=quarantine) if reviews else None
    yield from iter_catalog(
        catalog,
        spec=_catalog_spec(spec, mapping),
        taxonomy=taxonomy,
        reviews=review_frame,
        images_root=images_root,
        quarantine=quarantine,
        shard_size=settings.shard_size,
    )


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainSummary:
    model_dir: str
    model_version: str
    taxonomy_version: str
    rows: int
    labelled: int
    human_labels: int
    quarantined: int
    quarantine_path: str
    fit_report: dict[str, Any] = field(default_factory=dict)


def _copy_taxonomy(taxonomy_path: Path, model_dir: Path, taxonomy_format: str | None) -> None:
    dest = model_dir / MODEL_TAXONOMY_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(taxonomy_path, dest / taxonomy_path.name)
    (dest / "source.json").write_text(
        json.dumps({"file": taxonomy_path.name, "format": taxonomy_format, "original": str(taxonomy_path)})
    )


def load_model_taxonomy(model_dir: Path) -> Any:
    from taxonomy import load_taxonomy

    meta_path = model_dir / MODEL_TAXONOMY_DIR / "source.json"
    if not meta_path.exists():
        raise ModelError(
            f"model directory {model_dir} has no taxonomy ({meta_path} missing); "
            f"train a model first: shelfwise train --taxonomy T --catalog LABELLED --model-dir {model_dir}"
        )
    meta = json.loads(meta_path.read_text())
    return load_taxonomy(model_dir / MODEL_TAXONOMY_DIR / meta["file"], format=meta.get("format"))


def train(
    *,
    taxonomy_path: str | Path,
    catalog: str | Path,
    model_dir: str | Path,
    settings: Settings,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
    taxonomy_format: str | None = None,
    use_human_labels: bool = True,
    progress: Callable[[int], None] | None = None,
) -> TrainSummary:
    """Train a model on a labelled catalog (plus human decisions from the queue) into ``model_dir``."""
    from classifiers import EmbeddingCache, make_embedder
    from classifiers.model import CategoryModel
    from shelfwise.catalog import Quarantine
    from taxonomy import load_taxonomy

    taxonomy_path = Path(taxonomy_path)
    model_dir = Path(model_dir)
    tax = load_taxonomy(taxonomy_path, format=taxonomy_format)
    model_dir.mkdir(parents=True, exist_ok=True)
    qpath = model_dir / "train_quarantine.jsonl"
    quarantine = Quarantine(qpath)
    frames = []
    for shard in iter_shards(
        catalog, settings=settings, taxonomy=tax, quarantine=quarantine, reviews=reviews,
        images_root=images_root, spec=spec, mapping=mapping,
    ):
        frames.append(shard)
        if progress:
            progress(shard.height)
    quarantine.close()
    if not frames:
        raise ConfigError(f"catalog {catalog}: no usable rows to train on (see {qpath})")
    frame = pl.concat(frames, how="vertical_relaxed")
    human = 0
    if use_human_labels:
        frame, human = _apply_human_labels(frame, settings)
    labelled = frame.filter(pl.col("category_path").is_not_null())
    if labelled.height < 2:
        raise ConfigError(
            f"catalog {catalog}: {labelled.height} rows have a category_path; training needs labelled rows "
            "(map your label column with --map category_path=<column>)"
        )
    embedder = make_embedder(settings.embedder)
    cache = EmbeddingCache(settings.cache_path)
    image_embedder = _image_embedder(settings)
    model = CategoryModel(use_images=settings.use_images, use_price=settings.use_price, random_state=0,
                          target_precision=settings.target_precision)
    model.fit(labelled, tax, embedder=embedder, cache=cache, image_embedder=image_embedder)
    model.save(model_dir)
    _copy_taxonomy(taxonomy_path, model_dir, taxonomy_format)
    return TrainSummary(
        model_dir=str(model_dir),
        model_version=model.version,
        taxonomy_version=tax.version,
        rows=frame.height,
        labelled=labelled.height,
        human_labels=human,
        quarantined=quarantine.total,
        quarantine_path=str(qpath),
        fit_report=dict(getattr(model, "fit_report_", {}) or {}),
    )


def _apply_human_labels(frame: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, int]:
    """Reviewers' final decisions override the catalog's labels (they are the better truth)."""
    store = _queue_store(settings, create=False)
    if store is None:
        return frame, 0
    labels = store.labels()
    if labels.is_empty():
        return frame, 0
    labels = labels.select("sku_id", pl.col("category_path").alias("_human_path"))
    out = frame.join(labels, on="sku_id", how="left")
    n = int(out.select(pl.col("_human_path").is_not_null().sum()).item())
    out = out.with_columns(pl.coalesce("_human_path", "category_path").alias("category_path")).drop("_human_path")
    return out, n


def _image_embedder(settings: Settings) -> Any:
    if not settings.use_images:
        return None
    from classifiers.images import ImageEmbedder

    return ImageEmbedder()


def _queue_store(settings: Settings, *, create: bool = True) -> Any:
    from verification.store import QueueStore

    url = settings.queue_url or ""
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        if not create and not db.exists():
            return None
        db.parent.mkdir(parents=True, exist_ok=True)
    store = QueueStore(url)
    store.upgrade()
    return store


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------
@dataclass
class Resources:
    """Everything expensive a run needs, built once (lazily, never at import)."""

    settings: Settings
    model_dir: Path
    model: Any
    taxonomy: Any
    embedder: Any
    cache: Any
    image_embedder: Any = None
    arbiter: Any = None
    locked: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    llm_note: str = ""


def load_resources(model_dir: str | Path, settings: Settings, *, with_queue: bool = True) -> Resources:
    from classifiers import EmbeddingCache, make_embedder
    from classifiers.model import CategoryModel

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_TAXONOMY_DIR).exists():
        raise ModelError(
            f"no trained model in {model_dir}; run: shelfwise train --taxonomy T --catalog LABELLED "
            f"--model-dir {model_dir}"
        )
    tax = load_model_taxonomy(model_dir)
    model = CategoryModel.load(model_dir)
    embedder = make_embedder(settings.embedder)
    cache = EmbeddingCache(settings.cache_path)
    image_embedder = _image_embedder(settings) if getattr(model, "use_images", False) else None
    arbiter, note = _llm_arbiter(settings, tax)
    locked: dict[str, tuple[str, str, str]] = {}
    if with_queue:
        store = _queue_store(settings, create=False)
        if store is not None:
            locked = store.locked()
    return Resources(settings, model_dir, model, tax, embedder, cache, image_embedder, arbiter, locked, note)


def _llm_arbiter(settings: Settings, tax: Any) -> tuple[Any, str]:
    from classifiers.llm import LLMArbiter

    llm = settings.llm
    if not llm.base_url:
        return None, "LLM step off: no endpoint configured (set OPENAI_BASE_URL or --llm-base-url); gated items go to review"
    llm_dir = settings.state_dir / "llm"
    llm_dir.mkdir(parents=True, exist_ok=True)
    arbiter = LLMArbiter(llm, tax, store_path=llm_dir / "llm.sqlite")
    return arbiter, f"LLM step on: {llm.model} at {llm.base_url}"


@dataclass
class RunStats:
    seen: int = 0
    classified: int = 0
    human_locked: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    llm: Counter[str] = field(default_factory=Counter)
    llm_gated: int = 0

    def add(self, other: RunStats) -> None:
        self.seen += other.seen
        self.classified += other.classified
        self.human_locked += other.human_locked
        self.routes.update(other.routes)
        self.llm.update(other.llm)
        self.llm_gated += other.llm_gated


def _candidates(ids: np.ndarray, scores: np.ndarray, tax: Any) -> list[list[dict[str, Any]]]:
    out = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        row = []
        for cid, s in zip(row_ids, row_scores, strict=True):
            if cid is None or cid == "":
                continue
            row.append({"category_id": str(cid), "category_path": tax.get(str(cid)).path, "score": float(s)})
        out.append(row)
    return out


def classify_frame(shard: pl.DataFrame, res: Resources, *, run_id: str) -> tuple[pl.DataFrame, RunStats]:
    """Classify one canonical shard: returns prediction rows (contract columns + product columns)."""
    from verification.routing import QueueName, audit_sample, paths_agree, route

    s = res.settings
    tax = res.taxonomy
    stats = RunStats(seen=shard.height)
    if shard.is_empty():
        return _empty_predictions(), stats
    pred = res.model.predict(
        shard, embedder=res.embedder, cache=res.cache, image_embedder=res.image_embedder, top_k=s.top_k
    )
    n = shard.height
    cat_ids = [str(x) for x in pred.predicted_ids]
    cat_paths = [tax.get(c).path for c in cat_ids]
    confidence = np.asarray(pred.confidence, dtype=float)
    margin = np.asarray(pred.margin, dtype=float)
    depth = np.asarray(pred.predicted_depth, dtype=int)
    source = ["model"] * n
    llm_status: list[str | None] = [None] * n
    thresholds = (
        np.full(n, s.auto_threshold) if s.auto_threshold is not None else res.model.thresholds_.for_nodes(cat_ids)
    )
    sus_t = np.full(n, s.suspect_threshold) if s.suspect_threshold is not None else np.maximum(thresholds, 0.5)
    current = shard.get_column("category_path").to_list()
    current_known = [c is None or tax.find_path(c) is not None for c in current]
    candidates = _candidates(pred.category_ids, pred.scores, tax)

    # LLM arbitration of the uncertain items.
    from classifiers.llm import gate

    gated = gate(confidence, margin, settings=s.llm)
    stats.llm_gated = int(gated.sum())
    llm_failed = np.zeros(n, dtype=bool)
    if gated.any():
        if res.arbiter is None:
            for i in np.flatnonzero(gated):
                llm_status[i] = "skipped_no_endpoint"
            stats.llm["skipped_no_endpoint"] += int(gated.sum())
        else:
            idx = np.flatnonzero(gated)
            items = shard[idx].with_columns(
                pl.Series("candidates", [candidates[i] for i in idx], dtype=CANDIDATE_TYPE),
                pl.Series("confidence", confidence[idx]),
            )
            decided = res.arbiter.decide(items, run_id=run_id)
            by_sku = {r["sku_id"]: r for r in decided.iter_rows(named=True)}
            skus = shard.get_column("sku_id").to_list()
            for i in idx:
                r = by_sku.get(skus[i])
                status = r["llm_status"] if r else "failed_transient"
                llm_status[i] = status
                stats.llm[status] += 1
                if r and r.get("llm_category_id") and status in ("accepted", "none_of_these_walked"):
                    cat_ids[i] = r["llm_category_id"]
                    cat_paths[i] = tax.get(cat_ids[i]).path
                    depth[i] = tax.get(cat_ids[i]).depth
                    confidence[i] = float(r["llm_confidence"])
                    source[i] = "llm"
                elif status not in ("skipped_no_endpoint", "skipped_budget"):
                    llm_failed[i] = True

    support = np.array([
        max((c["score"] for c in cands if cur and paths_agree(c["category_path"], cur)), default=0.0)
        for cands, cur in zip(candidates, current, strict=True)
    ])
    routing = route(confidence, thresholds, cat_paths, current, suspect_thresholds=sus_t,
                    current_known=current_known, current_support=support,
                    max_current_support=s.max_current_support)
    routes = [str(r) for r in routing.route]
    queues = [str(q) if q else None for q in routing.queue]
    reasons = list(routing.reason)
    for i in np.flatnonzero(llm_failed):
        if routes[i] == "review":
            queues[i] = QueueName.LLM_FAILED
            reasons[i] = f"llm_{llm_status[i]}"
    for i, st in enumerate(llm_status):
        if st == "skipped_no_endpoint" and routes[i] == "review":
            reasons[i] = reasons[i] + "; llm_off"

    # Human decisions are kept until the product's content changes.
    skus = shard.get_column("sku_id").to_list()
    hashes = shard.get_column("content_hash").to_list()
    for i, sku in enumerate(skus):
        lock = res.locked.get(sku)
        if lock and lock[2] == hashes[i]:
            cat_ids[i], cat_paths[i] = lock[0], lock[1]
            node = tax.find_path(lock[1])
            depth[i] = node.depth if node is not None else len(lock[1].split(" > "))
            confidence[i] = 1.0
            source[i] = "human"
            routes[i], queues[i], reasons[i] = "auto", None, "human_decision"
            stats.human_locked += 1

    # The audit sample is drawn per night (the run id starts with the UTC date), so re-running the same
    # night picks the same items and the queue is not inflated.
    audit = audit_sample(skus, run_id[:8], rate=s.audit_rate)
    for i in np.flatnonzero(audit):
        if routes[i] == "auto" and source[i] != "human":
            queues[i] = QueueName.AUDIT
    stats.classified = n
    stats.routes.update(routes)

    out = pl.DataFrame(
        {
            "sku_id": skus,
            "category_id": cat_ids,
            "category_path": cat_paths,
            "confidence": np.clip(confidence, 0.0, 1.0),
            "route": routes,
            "candidates": pl.Series(candidates, dtype=CANDIDATE_TYPE),
            "current_category_path": pl.Series(current, dtype=pl.String),
            "taxonomy_version": [tax.version] * n,
            "model_version": [res.model.version] * n,
            "run_id": [run_id] * n,
            "predicted_depth": depth.astype(np.int32),
            "margin": margin,
            "source": source,
            "reason": reasons,
            "queue": pl.Series([str(q) if q else None for q in queues], dtype=pl.String),
            "llm_status": pl.Series(llm_status, dtype=pl.String),
            "content_hash": hashes,
        }
    )
    products = shard.select([c for c in PRODUCT_COLUMNS if c in shard.columns])
    return pl.concat([out, products], how="horizontal"), stats


def _empty_predictions() -> pl.DataFrame:
    return pl.DataFrame(schema={c: pl.String for c in PREDICTION_COLUMNS})


class PredictionWriter:
    """Streams prediction shards into a temp Parquet file and renames it into place on ``close``.

    Readers never see a half-written file: until ``close`` the destination keeps its previous content.
    """

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, predictions: pl.DataFrame) -> None:
        table = predictions.select(list(PREDICTION_COLUMNS)).to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema, compression="zstd")
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += predictions.height

    def close(self) -> Path:
        if self._writer is None:
            # no rows: still write a valid empty file with the contract schema
            empty = _empty_predictions().with_columns(pl.col("candidates").cast(pl.String))
            empty.write_parquet(self._tmp)
        else:
            self._writer.close()
        os.replace(self._tmp, self.out)
        return self.out

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._tmp.unlink(missing_ok=True)


def queue_frame(predictions: pl.DataFrame) -> pl.DataFrame:
    """The rows of a prediction shard headed for a human queue (with their product columns)."""
    return predictions.filter(pl.col("queue").is_not_null())


@dataclass
class Written:
    """What a run keeps in memory from its prediction shards: counts, queue candidates, content hashes."""

    stats: RunStats
    queue_rows: pl.DataFrame
    hashes: pl.DataFrame


def write_predictions(shards: Iterable[tuple[pl.DataFrame, RunStats]], out: str | Path) -> Written:
    """Stream prediction shards into ``out`` (atomically) and collect what ``finalize_run`` needs."""
    writer = PredictionWriter(out)
    stats = RunStats()
    queue_parts: list[pl.DataFrame] = []
    hash_parts: list[pl.DataFrame] = []
    try:
        for preds, shard_stats in shards:
            writer.write(preds)
            queue_parts.append(queue_frame(preds))
            hash_parts.append(preds.select("sku_id", "content_hash"))
            stats.add(shard_stats)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return Written(stats, _concat(queue_parts), _concat(hash_parts))


# --------------------------------------------------------------------------------------------------
# Staging (for the flow: one task per shard)
# --------------------------------------------------------------------------------------------------
def stage_catalog(
    catalog: str | Path,
    *,
    run_dir: Path,
    settings: Settings,
    taxonomy: Any,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
) -> tuple[list[Path], dict[str, Any]]:
    """Write the catalog as canonical shard files under ``run_dir/shards`` (quarantine alongside)."""
    from shelfwise.catalog import Quarantine

    shard_dir = run_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    quarantine = Quarantine(run_dir / "quarantine.jsonl")
    paths = []
    for i, shard in enumerate(
        iter_shards(catalog, settings=settings, taxonomy=taxonomy, quarantine=quarantine, reviews=reviews,
                    images_root=images_root, spec=spec, mapping=mapping)
    ):
        p = shard_dir / f"shard-{i:05d}.parquet"
        shard.write_parquet(p)
        paths.append(p)
    quarantine.close()
    return paths, _staging(quarantine)


def _staging(quarantine: Any) -> dict[str, Any]:
    """The quarantine figures a run summary reports."""
    return {"quarantined": quarantine.total, "quarantine_reasons": dict(quarantine.counts),
            "quarantine_path": str(quarantine.path)}


# --------------------------------------------------------------------------------------------------
# Finishing a run
# --------------------------------------------------------------------------------------------------
def _change_counts(state_path: Path, current: pl.DataFrame) -> dict[str, int]:
    if not state_path.exists():
        return {"new": current.height, "changed": 0, "unchanged": 0}
    prev = pl.read_parquet(state_path, columns=["sku_id", "content_hash"]).rename({"content_hash": "_prev"})
    j = current.join(prev, on="sku_id", how="left")
    new = int(j.select(pl.col("_prev").is_null().sum()).item())
    unchanged = int(j.select((pl.col("_prev") == pl.col("content_hash")).sum()).item())
    return {"new": new, "changed": j.height - new - unchanged, "unchanged": unchanged}


def _update_state(state_path: Path, current: pl.DataFrame, run_id: str) -> None:
    current = current.with_columns(pl.lit(run_id).alias("last_seen_run"))
    if state_path.exists():
        prev = pl.read_parquet(state_path)
        current = pl.concat([current, prev.join(current.select("sku_id"), on="sku_id", how="anti")], how="vertical_relaxed")
    tmp = state_path.with_suffix(".tmp")
    current.write_parquet(tmp)
    os.replace(tmp, state_path)


def _previous_run(runs_dir: Path, run_id: str) -> str | None:
    if not runs_dir.exists():
        return None
    done = sorted(p.parent.name for p in runs_dir.glob("*/summary.json") if p.parent.name != run_id)
    return done[-1] if done else None


def finalize_run(
    *,
    res: Resources,
    run_id: str,
    run_dir: Path,
    predictions_path: Path,
    queue_rows: pl.DataFrame,
    stats: RunStats,
    catalog: str | Path,
    staging: dict[str, Any],
    started_at: str,
    hashes: pl.DataFrame,
    enqueue: bool = True,
) -> dict[str, Any]:
    """Enqueue the review items (within nightly capacities), update catalog state, write summary.json."""
    from verification.routing import priority, select_for_queues

    s = res.settings
    queued: dict[str, int] = {}
    enqueue_result: dict[str, Any] = {}
    store = None
    if enqueue and not queue_rows.is_empty():
        qs = queue_rows.get_column("queue").to_list()
        price = queue_rows.get_column("price").to_numpy() if "price" in queue_rows.columns else None
        pr = priority(qs, queue_rows.get_column("confidence").to_numpy(), price=price)
        keep = select_for_queues(qs, pr, capacity=s.queue_capacity.model_dump())
        to_queue = queue_rows.with_columns(pl.Series("priority", pr)).filter(pl.Series(keep))
        store = _queue_store(s)
        result = store.enqueue(to_queue, run_id=run_id, capacity=s.queue_capacity.model_dump())
        enqueue_result = _as_dict(result)
        queued = dict(Counter(to_queue.get_column("queue").to_list()))
    if enqueue:
        # open items of SKUs this run auto-accepted are stale (fixed upstream, changed text, better model)
        auto_skus = (
            pl.scan_parquet(predictions_path)
            .filter(pl.col("queue").is_null())
            .select("sku_id")
            .collect()
            .get_column("sku_id")
            .to_list()
        )
        if auto_skus:
            store = store or _queue_store(s)
            enqueue_result["superseded"] = store.supersede(auto_skus, run_id=run_id)
    if store is not None:
        store.close()
    s.state_dir.mkdir(parents=True, exist_ok=True)
    state_path = s.state_dir / "catalog_state.parquet"
    changes = _change_counts(state_path, hashes)
    _update_state(state_path, hashes, run_id)
    llm_stats = _as_dict(getattr(res.arbiter, "stats", None)) if res.arbiter is not None else {}
    summary = {
        "run_id": run_id,
        "started_at": started_at,
        "finished_at": _utcnow(),
        "catalog": str(catalog),
        "taxonomy_version": res.taxonomy.version,
        "model_version": res.model.version,
        "model_dir": str(res.model_dir),
        "counts": {
            "seen": stats.seen + int(staging.get("quarantined", 0)),
            **changes,
            "classified": stats.classified,
            "quarantined": int(staging.get("quarantined", 0)),
            "quarantine_reasons": staging.get("quarantine_reasons", {}),
            "auto": stats.routes.get("auto", 0),
            "review": stats.routes.get("review", 0),
            "suspect": stats.routes.get("suspect", 0),
            "human_locked": stats.human_locked,
            "queued": {q: queued.get(q, 0) for q in ("low_confidence", "suspect", "llm_failed", "audit")},
        },
        "enqueue": enqueue_result,
        "llm": {
            "enabled": res.arbiter is not None,
            "note": res.llm_note,
            "gated": stats.llm_gated,
            "statuses": dict(stats.llm),
            **llm_stats,
        },
        "embedding": {"hits": int(getattr(res.cache, "hits", 0)), "misses": int(getattr(res.cache, "misses", 0))},
        "thresholds": {
            "target_precision": s.target_precision,
            "auto_threshold": s.auto_threshold if s.auto_threshold is not None else "per-node (model)",
            "audit_rate": s.audit_rate,
        },
        "predictions_path": str(predictions_path),
        "quarantine_path": staging.get("quarantine_path"),
        "previous_run_id": _previous_run(s.runs_dir, run_id),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, run_dir / "summary.json")
    return summary


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return dict(vars(obj))


# --------------------------------------------------------------------------------------------------
# The whole classify step without Prefect (used by `shelfwise classify`)
# --------------------------------------------------------------------------------------------------
def classify_catalog(
    *,
    model_dir: str | Path,
    catalog: str | Path,
    out: str | Path,
    settings: Settings,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
    run_id: str | None = None,
    enqueue: bool = True,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Classify a catalog shard by shard, write predictions atomically, enqueue and summarise."""
    from shelfwise.catalog import Quarantine

    run_id = run_id or new_run_id()
    started = _utcnow()
    res = load_resources(model_dir, settings)
    run_dir = settings.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    quarantine = Quarantine(run_dir / "quarantine.jsonl")

    def classified() -> Iterator[tuple[pl.DataFrame, RunStats]]:
        for shard in iter_shards(catalog, settings=settings, taxonomy=res.taxonomy, quarantine=quarantine,
                                 reviews=reviews, images_root=images_root, spec=spec, mapping=mapping):
            yield classify_frame(shard, res, run_id=run_id)
            if progress:
                progress(shard.height)

    try:
        written = write_predictions(classified(), out)
    finally:
        quarantine.close()
    return finalize_run(
        res=res, run_id=run_id, run_dir=run_dir, predictions_path=Path(out),
        queue_rows=written.queue_rows, stats=written.stats, catalog=catalog, staging=_staging(quarantine),
        started_at=started, hashes=written.hashes, enqueue=enqueue,
    )


def _concat(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    parts = [p for p in parts if p.height]
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(
        schema={"sku_id": pl.String, "content_hash": pl.String, "queue": pl.String, "confidence": pl.Float64}
    )
