"""Finishing a run: stream prediction shards into one file, enqueue review items, write state and summary."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from shelfwise._classify import PREDICTION_COLUMNS, Resources, RunStats, _empty_predictions, classify_frame, load_resources
from shelfwise._stage import _staging, _utcnow, iter_shards, new_run_id
from shelfwise._train import _queue_store
from shelfwise.settings import Settings

__all__ = ["PredictionWriter", "Written", "classify_catalog", "finalize_run", "write_predictions"]


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
