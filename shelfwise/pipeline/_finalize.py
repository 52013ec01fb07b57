"""Finishing a night, step by step (the night's owner, `shelfwise.night`, runs them in order): review
items enqueued within the nightly capacities, the typed `RunSummary`, and the state, committed last.
Tonight's rows and state are written bucket by bucket (`shelfwise.pipeline._finish`).

Memory stays bounded at catalog scale: the review candidates are ranked part by part from their key
columns, and only the rows kept within the queues' capacities are read whole (`enqueue_rescored`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from shelfwise import storage
from shelfwise.model_folder import model_versions
from shelfwise.pipeline._finish import BucketFinished, new_generation, publish_state
from shelfwise.pipeline._resources import llm_note
from shelfwise.pipeline._stage import StagedNight, remove_staged, utcnow
from shelfwise.pipeline._worker import ShardResult, ShardTask, merge_counts
from shelfwise.predictions import PREDICTION_COLUMNS, empty_predictions
from shelfwise.settings import Settings
from shelfwise.state import open_queue
from shelfwise.summary import QUEUES, EmbeddingCounts, Engine, Incremental, LLMSummary, RunCounts, RunSummary
from verification.audit_bar import STATE_FILE as AUDIT_BAR_FILE
from verification.audit_bar import load_bars
from verification.routing import priority, select_for_queues
from verification.store import take_retry_counts

__all__ = [
    "NightOutcome",
    "PredictionWriter",
    "commit_night",
    "distinct_tasks",
    "enqueue_rescored",
    "run_summary",
    "shard_tasks",
    "tonight_parts",
    "write_predictions",
]


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
            empty = empty_predictions().with_columns(pl.col("candidates").cast(pl.String))
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


def tonight_parts(results: Sequence[ShardResult], *, tmp: Path) -> list[Path]:
    """Tonight's re-scored prediction parts with their product columns, one local file per shard, in the
    shards' order; parts on shared storage are copied under ``tmp`` first."""
    return [storage.local_copy(r.predictions_url, tmp) for r in results]


def write_predictions(out: Path, rows: pl.LazyFrame | pl.DataFrame | None) -> int:
    """Write the night's final rows to ``out`` once (atomically: a temp file renamed into place); returns
    the row count. No rows: a valid empty file with the contract's columns."""
    if rows is None:
        PredictionWriter(out).close()
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    if isinstance(rows, pl.DataFrame):
        rows.write_parquet(tmp, compression="zstd")
    else:
        rows.sink_parquet(tmp, compression="zstd")
    os.replace(tmp, out)
    return int(pl.scan_parquet(out).select(pl.len()).collect().item())


Parts = pl.LazyFrame | Sequence[str | Path] | None
"""Tonight's re-scored rows: Parquet part files (`tonight_parts`), or one frame (one part)."""

_BATCH = 100_000  # rows of one part ranked at a time
_ENQUEUE_CHUNK = 50_000  # rows per call of the store's enqueue
_SUPERSEDE_CHUNK = 100_000  # SKUs per call of the store's supersede
_NO_ROWS = pl.DataFrame(schema={"sku_id": pl.String, "queue": pl.String})


def enqueue_rescored(settings: Settings, parts: Parts, run_id: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Put tonight's re-scored review items into the queues (highest priority first, within capacity)
    and close the open items of SKUs tonight auto-accepted. Carried rows were enqueued when scored.

    A cold night re-scores (and routes to review) every SKU. Memory follows the part size and the
    queues' capacities, not the catalog: the parts are ranked one at a time from their queue, confidence
    and price (`_rank`: the best ``capacity`` positions of each queue so far), only the chosen rows are
    then read whole, part by part, and the auto-accepted SKUs are closed in chunks."""
    result: dict[str, Any] = {}
    queued = dict.fromkeys(QUEUES, 0)
    frames = [parts] if isinstance(parts, pl.LazyFrame) else [pl.scan_parquet(p) for p in parts or ()]
    ranked = _rank(frames, settings.queue_capacity.model_dump())
    if not ranked.sizes and not ranked.auto:
        return result, queued
    with open_queue(settings) as store:
        if ranked.sizes:
            result = _enqueue_chosen(store, frames, ranked, run_id)
            for kind in ("inserted", "updated", "unchanged"):
                for q, n in (result.get(kind) or {}).items():
                    queued[q] = queued.get(q, 0) + int(n)
        if ranked.auto:
            result["superseded"] = _supersede(store, frames, run_id)
    return result, queued


@dataclasses.dataclass
class _Ranked:
    """The candidates kept per queue (``kept[q]``: their positions, part after part, and priorities, in
    order of position), the candidates per queue (``sizes``), the rows no queue takes (``auto``) and the
    first position of each part (``starts``, one more at the end)."""

    kept: dict[str, tuple[np.ndarray, np.ndarray]]
    sizes: dict[str, int]
    auto: int
    starts: list[int]


def _rank(frames: Sequence[pl.LazyFrame], capacity: dict[str, int]) -> _Ranked:
    """Rank the candidates (`verification.routing.priority`) and keep each queue's ``capacity`` best,
    a batch at a time: the best of the kept rows and the batch's rows are the best so far (ties keep the
    earlier position, as one stable sort over every candidate would: `select_for_queues`)."""
    out = _Ranked(kept={}, sizes={}, auto=0, starts=[0])
    for lf in frames:
        numeric = ["confidence", *(["price"] if "price" in lf.collect_schema().names() else [])]
        offset = out.starts[-1]
        for batch in lf.select("queue", *numeric).collect_batches(chunk_size=_BATCH):
            queue = batch.get_column("queue")
            out.auto += queue.null_count()
            conf = batch.get_column("confidence").to_numpy()
            price = batch.get_column("price").to_numpy() if "price" in numeric else None
            for q in queue.drop_nulls().unique(maintain_order=True).to_list():
                idx = np.flatnonzero((queue == q).fill_null(False).to_numpy())
                pr = priority([q] * idx.size, conf[idx], price=None if price is None else price[idx])
                old_pos, old_pr = out.kept.get(q, (np.empty(0, np.int64), np.empty(0, float)))
                pos, pr = np.concatenate([old_pos, offset + idx]), np.concatenate([old_pr, pr])
                cap = {q: capacity[q]} if q in capacity else {}
                keep = select_for_queues([q] * pos.size, pr, capacity=cap)
                out.kept[q] = (pos[keep], pr[keep])
                out.sizes[q] = out.sizes.get(q, 0) + idx.size
            offset += batch.height
        out.starts.append(offset)
    return out


def _enqueue_chosen(
    store: Any, frames: Sequence[pl.LazyFrame], ranked: _Ranked, run_id: str
) -> dict[str, Any]:
    """Read the kept candidates whole, part by part, and enqueue them (capacity was applied by `_rank`).

    More rows than `_ENQUEUE_CHUNK` go to the store in chunks taken in the store's own order (priority,
    then SKU), so the items get the ids, hence the reviewing order, one call would give them."""
    pos = np.concatenate([p for p, _ in ranked.kept.values()])
    pr = np.concatenate([p for _, p in ranked.kept.values()])
    order = np.argsort(pos, kind="stable")
    pos, pr = pos[order], pr[order]
    bounds = np.searchsorted(pos, ranked.starts)
    chosen: list[pl.DataFrame] = []
    for i, lf in enumerate(frames):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        rows = pl.DataFrame({"_row": pos[lo:hi] - ranked.starts[i], "priority": pr[lo:hi]})
        # a batch of the part at a time (a slice reads only its own rows), holding only the chosen rows
        for start in (rows.get_column("_row") // _BATCH).unique(maintain_order=True).to_list():
            start *= _BATCH
            these = rows.filter(pl.col("_row").is_between(start, start + _BATCH - 1))
            batch = lf.slice(start, _BATCH).with_row_index("_row", offset=start)
            got = batch.filter(pl.col("_row").is_in(these.get_column("_row").implode())).collect()
            got = got.join(these, on="_row", how="inner", maintain_order="left").drop("_row")
            chosen.append(_owned(got))
    to_queue = pl.concat(chosen, how="diagonal_relaxed") if chosen else _NO_ROWS
    del chosen
    if to_queue.height > _ENQUEUE_CHUNK:  # the store's order: priority (NaN as 0), then SKU
        key = pl.col("priority").fill_nan(0.0).fill_null(0.0)
        to_queue = to_queue.sort([key, "sku_id"], descending=[True, False], maintain_order=True)
        # a SKU twice: its best row only, as one call keeps (a later chunk would overwrite it)
        to_queue = to_queue.unique("sku_id", keep="first", maintain_order=True)
    res: dict[str, Any] = {}
    for start in range(0, max(to_queue.height, 1), _ENQUEUE_CHUNK):  # no rows: one call, zero counts
        part_res = _as_dict(store.enqueue(to_queue.slice(start, _ENQUEUE_CHUNK), run_id=run_id))
        for kind, counts in part_res.items():
            into = res.setdefault(kind, {})
            for q, n in counts.items():
                into[q] = into.get(q, 0) + int(n)
    dropped = {q: n - ranked.kept[q][0].size for q, n in ranked.sizes.items() if n > ranked.kept[q][0].size}
    res["dropped_over_capacity"] = {q: 0 for q in QUEUES} | dropped
    return res


def _owned(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of ``frame`` holding only its own rows' data. Rows filtered out of a part keep the whole
    part's decoded strings alive (polars string views share their buffers), so a few rows kept from
    each of 250 parts would hold every part's strings (+0.7 GiB at 5M rows)."""
    buf = io.BytesIO()
    frame.write_ipc(buf)
    buf.seek(0)
    return pl.read_ipc(buf)


def _supersede(store: Any, frames: Sequence[pl.LazyFrame], run_id: str) -> dict[str, int]:
    """Close the open items of tonight's auto-accepted SKUs, a chunk at a time (an item closed by one
    chunk is no longer open for the next, so the counts are those of one call)."""
    closed: dict[str, int] = {}

    def flush(skus: list[str]) -> None:
        for q, n in store.supersede(skus, run_id=run_id).items():
            closed[q] = closed.get(q, 0) + int(n)

    pending: list[str] = []
    for lf in frames:
        for batch in lf.filter(pl.col("queue").is_null()).select("sku_id").collect_batches(chunk_size=_BATCH):
            pending.extend(batch.get_column("sku_id").to_list())
            while len(pending) >= _SUPERSEDE_CHUNK:
                flush(pending[:_SUPERSEDE_CHUNK])
                del pending[:_SUPERSEDE_CHUNK]
    if pending:
        flush(pending)
    return closed


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


def _previous_run(runs_dir: Path, run_id: str) -> str | None:
    if not runs_dir.exists():
        return None
    done = sorted(p.parent.name for p in runs_dir.glob("*/summary.json") if p.parent.name != run_id)
    return done[-1] if done else None


@dataclasses.dataclass
class NightOutcome:
    """What a night did, gathered for its summary: where it ran, what the tasks counted, what was written."""

    run_id: str
    started_at: str
    catalog: str
    model_dir: Path
    staged: StagedNight
    results: Sequence[ShardResult]
    scored: Sequence[ShardResult]
    predictions: Path
    rows: int
    enqueue: dict[str, Any]
    queued: dict[str, int]
    engine: Engine
    seconds: float = 0.0
    score_seconds: float = 0.0
    report: str | None = None


def run_summary(o: NightOutcome, settings: Settings) -> RunSummary:
    """The night's `RunSummary` from its outcome (read before the state is committed: the change counts
    compare tonight's keys with the catalog state of the night before)."""
    run_dir = settings.runs_dir / o.run_id
    model_version, taxonomy_version = model_versions(o.model_dir)
    totals = merge_counts([*o.scored, *o.results])
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    changes = o.staged.changes
    quarantine_path = run_dir / "quarantine.jsonl"
    if Path(o.staged.quarantine_path).exists():
        shutil.copyfile(o.staged.quarantine_path, quarantine_path)
    return RunSummary(
        run_id=o.run_id,
        started_at=o.started_at,
        finished_at=utcnow(),
        catalog=o.catalog,
        taxonomy_version=taxonomy_version,
        model_version=model_version,
        model_dir=str(o.model_dir),
        counts=_run_counts(o, totals, changes),
        enqueue=o.enqueue,
        llm=_llm_summary(settings, totals),
        embedding=EmbeddingCounts(
            hits=totals["embed_hits"],
            misses=totals["embed_misses"],
            seconds=round(totals["embed_seconds"], 3),
            distinct_contents=o.staged.distinct,
            score_step_seconds=round(o.score_seconds, 3),
        ),
        thresholds=_thresholds(settings, model_version),
        predictions_path=str(o.predictions),
        quarantine_path=str(quarantine_path),
        previous_run_id=_previous_run(settings.runs_dir, o.run_id),
        report=o.report,
        incremental=Incremental(
            mode="incremental" if o.staged.mode == "incremental" else "full",
            reason=o.staged.reason,
            carried=o.staged.carried,
            rescored=totals["classified"],
            new=changes["new"],
        ),
        engine=o.engine.model_copy(update={"processes": sorted({r.pid for r in [*o.scored, *o.results]})}),
        shards=len(o.results),
        seconds=o.seconds,
        # transient errors this process rode out since the last night (docs/faults.md)
        retries={"queue_db": take_retry_counts().get("queue_db", 0), "storage": storage.take_retries()},
    )


def _run_counts(o: NightOutcome, totals: dict[str, Any], changes: dict[str, int]) -> RunCounts:
    preds = pl.scan_parquet(o.predictions)
    routes = dict(preds.group_by("route").len().collect().iter_rows())
    human = int(preds.filter(pl.col("source") == "human").select(pl.len()).collect().item())
    return RunCounts(
        seen=o.rows + o.staged.quarantined,
        **changes,
        classified=o.rows,
        quarantined=o.staged.quarantined,
        quarantine_reasons=o.staged.quarantine_reasons,
        auto=routes.get("auto", 0),
        review=routes.get("review", 0),
        suspect=routes.get("suspect", 0),
        human_locked=human,
        queued=o.queued,
        carried=o.staged.carried,
        rescored=totals["classified"],
        distinct_scored=totals["distinct_scored"],
    )


def _llm_summary(settings: Settings, totals: dict[str, Any]) -> LLMSummary:
    return LLMSummary(
        enabled=bool(settings.llm.base_url),
        note=llm_note(settings),
        gated=totals["llm_gated"],
        statuses=dict(totals["llm"]),
        **{k: v for k, v in totals["llm_stats"].items() if k not in ("enabled", "note", "gated", "statuses")},
    )


def _thresholds(settings: Settings, model_version: str) -> dict[str, Any]:
    """The thresholds in force, with the bars the audit raised for this model (verification/audit_bar.py)."""
    return {
        "target_precision": settings.target_precision,
        "auto_threshold": settings.auto_threshold
        if settings.auto_threshold is not None
        else "per-node (model)",
        "audit_rate": settings.audit_rate,
        "auto_accept_level": settings.auto_accept_level,
        "audit_bar": load_bars(settings.state_dir / AUDIT_BAR_FILE, model_version).to_dict(),
    }


def commit_night(
    settings: Settings,
    staged: StagedNight,
    finished: Sequence[BucketFinished],
    *,
    run_id: str,
    model_dir: Path,
) -> None:
    """Make tonight the state the next night starts from (`publish_state`: one atomic write of
    ``state/CURRENT``), then drop the staged shards. A night killed before this keeps last night's state,
    so a rerun redoes tonight."""
    publish_state(settings, new_generation(settings, staged, run_id=run_id, model_dir=model_dir), finished)
    remove_staged(staged)
