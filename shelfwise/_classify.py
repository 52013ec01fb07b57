"""Classifying one canonical shard: model scores -> LLM arbitration -> routing -> human locks -> audit."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shelfwise._train import MODEL_TAXONOMY_DIR, _image_embedder, _queue_store, load_model_taxonomy
from shelfwise.errors import ModelError
from shelfwise.settings import Settings

__all__ = [
    "CANDIDATE_TYPE", "PREDICTION_COLUMNS", "PRODUCT_COLUMNS", "Resources", "RunStats", "classify_frame",
    "load_resources",
]

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

