"""Finishing a night: one predictions file (carried + re-scored rows, streamed), review items enqueued
within the nightly capacities, catalog and carry state updated, and the typed `RunSummary` written once.

Memory stays bounded at catalog scale: predictions are streamed from the parts (polars streaming sink),
only queue candidates' key columns are collected to rank them, and state files are joined lazily.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from shelfwise import _storage as storage
from shelfwise._classify import PREDICTION_COLUMNS, _as_dict, _empty_predictions, llm_note
from shelfwise._incremental import carried_rows, commit_state
from shelfwise._stage import StagedNight, _utcnow, new_run_id, remove_staged, stage_night
from shelfwise._train import _queue_store
from shelfwise._worker import (
    ShardResult,
    ShardTask,
    merge_counts,
    release_resources,
    run_shard,
    score_distinct,
)
from shelfwise.settings import Settings
from shelfwise.summary import QUEUES, EmbeddingCounts, Engine, Incremental, LLMSummary, RunCounts, RunSummary

__all__ = ["PredictionWriter", "classify_catalog", "distinct_tasks", "finalize_run", "shard_tasks"]


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


def shard_tasks(staged: StagedNight, *, model_dir: str | Path, run_id: str) -> list[ShardTask]:
    """The night's shard tasks (plain data); they read their scores from the night's score parts."""
    scores = [staged.score_url(u) for u in staged.distinct_shards]
    return [
        ShardTask(
            shard_url=u,
            out_url=staged.prediction_url(u),
            model_dir=str(Path(model_dir).resolve()),
            run_id=run_id,
            scores=scores,
        )
        for u in staged.shards
    ]


def distinct_tasks(staged: StagedNight, *, model_dir: str | Path, run_id: str) -> list[ShardTask]:
    """The night's score step: one task per shard of distinct contents (see `score_distinct`)."""
    return [
        ShardTask(
            shard_url=u, out_url=staged.score_url(u), model_dir=str(Path(model_dir).resolve()), run_id=run_id
        )
        for u in staged.distinct_shards
    ]


def _part_frame(results: Sequence[ShardResult], tmp: Path) -> pl.LazyFrame | None:
    urls = [r.predictions_url for r in results]
    if not urls:
        return None
    local = [str(storage.local_copy(u, tmp)) for u in urls]
    return pl.scan_parquet(local)


def _write_predictions(
    out: Path, parts: pl.LazyFrame | None, carried: pl.LazyFrame | None, run_id: str
) -> int:
    """Stream carried + re-scored rows into ``out`` (atomically); returns the row count."""
    if parts is not None:  # parts finished by a killed attempt of this night count as scored tonight
        parts = parts.with_columns(pl.lit(run_id).alias("scored_run_id"))
    frames = [f.select(list(PREDICTION_COLUMNS)) for f in (carried, parts) if f is not None]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    if not frames:
        PredictionWriter(out).close()
        return 0
    lf = pl.concat(frames, how="vertical_relaxed").with_columns(pl.lit(run_id).alias("run_id"))
    lf.sink_parquet(tmp, compression="zstd")
    os.replace(tmp, out)
    return int(pl.scan_parquet(out).select(pl.len()).collect().item())


def _enqueue(
    settings: Settings, parts: pl.LazyFrame | None, run_id: str
) -> tuple[dict[str, Any], dict[str, int]]:
    """Put tonight's re-scored review items into the queues (highest priority first, within capacity)
    and close the open items of SKUs tonight auto-accepted. Carried rows were enqueued when scored."""
    from verification.routing import priority, select_for_queues

    result: dict[str, Any] = {}
    queued = dict.fromkeys(QUEUES, 0)
    if parts is None:
        return result, queued
    cand = parts.filter(pl.col("queue").is_not_null())
    head = cand.select(
        "sku_id", "queue", "confidence", *(["price"] if "price" in cand.collect_schema().names() else [])
    ).collect()
    store = None
    try:
        if head.height:
            price = head.get_column("price").to_numpy() if "price" in head.columns else None
            qs = head.get_column("queue").to_list()
            pr = priority(qs, head.get_column("confidence").to_numpy(), price=price)
            capacity = settings.queue_capacity.model_dump()
            keep = select_for_queues(qs, pr, capacity=capacity)
            chosen = (
                head.with_columns(pl.Series("priority", pr))
                .filter(pl.Series(keep))
                .select("sku_id", "priority")
            )
            dropped = head.filter(~pl.Series(keep)).group_by("queue").len()
            to_queue = cand.join(chosen.lazy(), on="sku_id", how="inner").collect()
            store = _queue_store(settings)
            res = _as_dict(store.enqueue(to_queue, run_id=run_id))  # capacity applied once, above
            res["dropped_over_capacity"] = {q: 0 for q in QUEUES} | dict(dropped.iter_rows())
            result = res
            for kind in ("inserted", "updated", "unchanged"):
                for q, n in (res.get(kind) or {}).items():
                    queued[q] = queued.get(q, 0) + int(n)
        auto = parts.filter(pl.col("queue").is_null()).select("sku_id").collect().get_column("sku_id")
        if auto.len():
            store = store or _queue_store(settings)
            result["superseded"] = store.supersede(auto.to_list(), run_id=run_id)
    finally:
        if store is not None:
            store.close()
    return result, queued


def _change_counts(state_path: Path, keys: list[Path]) -> dict[str, int]:
    if not keys:
        return {"new": 0, "changed": 0, "unchanged": 0}
    current = pl.scan_parquet([str(k) for k in keys])
    if not state_path.exists():
        return {"new": int(current.select(pl.len()).collect().item()), "changed": 0, "unchanged": 0}
    prev = pl.scan_parquet(state_path).select("sku_id", pl.col("content_hash").alias("_prev"))
    j = (
        current.join(prev, on="sku_id", how="left")
        .select(
            pl.len().alias("n"),
            pl.col("_prev").is_null().sum().alias("new"),
            (pl.col("_prev") == pl.col("content_hash")).sum().alias("unchanged"),
        )
        .collect()
        .row(0, named=True)
    )
    return {
        "new": int(j["new"]),
        "changed": int(j["n"] - j["new"] - j["unchanged"]),
        "unchanged": int(j["unchanged"]),
    }


def _update_state(state_path: Path, keys: list[Path], run_id: str) -> None:
    """catalog_state.parquet: every SKU ever seen with its last content hash and the last run that saw it."""
    if not keys:
        return
    current = pl.scan_parquet([str(k) for k in keys]).with_columns(pl.lit(run_id).alias("last_seen_run"))
    if state_path.exists():
        prev = pl.scan_parquet(state_path).join(current.select("sku_id"), on="sku_id", how="anti")
        current = pl.concat([current, prev], how="vertical_relaxed")
    tmp = state_path.with_suffix(".tmp")
    current.sink_parquet(tmp)
    os.replace(tmp, state_path)


def _previous_run(runs_dir: Path, run_id: str) -> str | None:
    if not runs_dir.exists():
        return None
    done = sorted(p.parent.name for p in runs_dir.glob("*/summary.json") if p.parent.name != run_id)
    return done[-1] if done else None


def _audit_bar(settings: Settings, model_version: str) -> dict[str, Any]:
    """The bars the audit raised for this model, as used by this run (verification/audit_bar.py)."""
    from verification.audit_bar import STATE_FILE, load_bars

    return load_bars(settings.state_dir / STATE_FILE, model_version).to_dict()


def _model_versions(model_dir: Path) -> tuple[str, str]:
    import json

    manifest = json.loads((model_dir / "manifest.json").read_text())
    return str(manifest.get("version", "")), str(manifest.get("taxonomy_version", ""))


def finalize_run(
    *,
    settings: Settings,
    model_dir: str | Path,
    staged: StagedNight,
    results: Sequence[ShardResult],
    run_id: str,
    catalog: str | Path,
    started_at: str,
    out: str | Path | None = None,
    engine: Engine | None = None,
    enqueue: bool = True,
    clock_start: float | None = None,
    migration: dict[str, Any] | None = None,
    scored: Sequence[ShardResult] = (),
    score_seconds: float = 0.0,
) -> RunSummary:
    """Write the night's predictions, enqueue, update state and write ``runs/<run_id>/summary.json``.

    ``scored``: the results of the distinct-content step (`score_distinct`), ``score_seconds`` its wall
    time; their embedding and scoring counters join the shards' own."""
    run_dir = settings.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    out = Path(out) if out else run_dir / "predictions.parquet"
    model_dir = Path(model_dir)
    model_version, taxonomy_version = _model_versions(model_dir)
    tmp = run_dir / ".parts"
    parts = _part_frame(results, tmp)
    carried = carried_rows(settings, staged.carry_files)
    rows = _write_predictions(out, parts, carried, run_id)
    enqueue_result, queued = _enqueue(settings, parts, run_id) if enqueue else ({}, dict.fromkeys(QUEUES, 0))
    routes = pl.scan_parquet(out).group_by("route").len().collect()
    route_counts = dict(routes.iter_rows())
    shutil.rmtree(tmp, ignore_errors=True)

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    state_path = settings.state_dir / "catalog_state.parquet"
    changes = _change_counts(state_path, staged.key_files)
    totals = merge_counts([*scored, *results])
    quarantine_path = run_dir / "quarantine.jsonl"
    if Path(staged.quarantine_path).exists():
        shutil.copyfile(staged.quarantine_path, quarantine_path)
    human = int(pl.scan_parquet(out).filter(pl.col("source") == "human").select(pl.len()).collect().item())
    summary = RunSummary(
        run_id=run_id,
        started_at=started_at,
        finished_at=_utcnow(),
        catalog=str(catalog),
        taxonomy_version=taxonomy_version,
        model_version=model_version,
        model_dir=str(model_dir),
        counts=RunCounts(
            seen=rows + staged.quarantined,
            **changes,
            classified=rows,
            quarantined=staged.quarantined,
            quarantine_reasons=staged.quarantine_reasons,
            auto=route_counts.get("auto", 0),
            review=route_counts.get("review", 0),
            suspect=route_counts.get("suspect", 0),
            human_locked=human,
            queued=queued,
            carried=staged.carried,
            rescored=totals["classified"],
            distinct_scored=totals["distinct_scored"],
        ),
        enqueue=enqueue_result,
        llm=LLMSummary(
            enabled=bool(settings.llm.base_url),
            note=llm_note(settings),
            gated=totals["llm_gated"],
            statuses=dict(totals["llm"]),
            **{
                k: v
                for k, v in totals["llm_stats"].items()
                if k not in ("enabled", "note", "gated", "statuses")
            },
        ),
        embedding=EmbeddingCounts(
            hits=totals["embed_hits"],
            misses=totals["embed_misses"],
            seconds=round(totals["embed_seconds"], 3),
            distinct_contents=staged.distinct,
            score_step_seconds=round(score_seconds, 3),
        ),
        thresholds={
            "target_precision": settings.target_precision,
            "auto_threshold": settings.auto_threshold
            if settings.auto_threshold is not None
            else "per-node (model)",
            "audit_rate": settings.audit_rate,
            "auto_accept_level": settings.auto_accept_level,
            "audit_bar": _audit_bar(settings, model_version),
        },
        predictions_path=str(out),
        quarantine_path=str(quarantine_path),
        previous_run_id=_previous_run(settings.runs_dir, run_id),
        incremental=Incremental(
            mode="incremental" if staged.mode == "incremental" else "full",
            reason=staged.reason,
            carried=staged.carried,
            rescored=totals["classified"],
            new=changes["new"],
        ),
        engine=(engine or Engine()).model_copy(
            update={"processes": sorted({r.pid for r in [*scored, *results]})}
        ),
        shards=len(results),
        seconds=round(time.perf_counter() - clock_start, 2) if clock_start else 0.0,
    )
    summary.write(run_dir)
    # State last: a run killed before this point leaves last night's state, so a rerun redoes tonight.
    _update_state(state_path, staged.key_files, run_id)
    commit_state(settings, out, run_id=run_id, model_version=model_version, taxonomy_version=taxonomy_version)
    remove_staged(staged)
    if migration is not None:
        # the flow migrated before this night (flows._steps.prepare_model): finish it as the CLI does,
        # orphans to review and the taxonomy_change block (shelfwise._migrate.after_run)
        from shelfwise._migrate import after_run

        summary.taxonomy_change = after_run(summary, settings) or migration
        summary.write(run_dir)
    return summary


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
) -> RunSummary:
    """The nightly steps in this process, without Prefect: stage, classify shard by shard, finalize."""
    clock = time.perf_counter()
    run_id = run_id or new_run_id()
    started = _utcnow()
    try:
        staged = stage_night(
            catalog,
            settings=settings,
            model_dir=model_dir,
            reviews=reviews,
            images_root=images_root,
            spec=spec,
            mapping=mapping,
        )
        if progress and staged.carried:
            progress(staged.carried)
        step = time.perf_counter()
        contents = distinct_tasks(staged, model_dir=model_dir, run_id=run_id)
        scored = [score_distinct(t, settings) for t in contents]
        score_seconds = time.perf_counter() - step
        results = []
        for task in shard_tasks(staged, model_dir=model_dir, run_id=run_id):
            result = run_shard(task, settings)
            results.append(result)
            if progress:
                progress(result.seen)
        release_resources()  # the model's work is done: finish without it in memory
        return finalize_run(
            settings=settings,
            model_dir=model_dir,
            staged=staged,
            results=results,
            run_id=run_id,
            catalog=catalog,
            started_at=started,
            out=out,
            enqueue=enqueue,
            clock_start=clock,
            scored=scored,
            score_seconds=score_seconds,
        )
    finally:
        release_resources()
