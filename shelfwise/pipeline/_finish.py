"""Finishing a night bucket by bucket, and publishing its state in one atomic step.

    tasks = finish_tasks(staged, ...)    main: one task per bucket, all writing the same new generation
    finish_bucket(task, settings)        any worker: the bucket's final rows (carried + re-scored, a
                                         migration's orphans routed, export columns) as its carry state,
                                         and its catalog state; the migration's counts and orphans
    concat_predictions(out, finished)    main: predictions.parquet, streamed bucket by bucket
    publish_state(settings, staged, ..)  main, last: ``state/CURRENT`` names the new generation (one
                                         atomic write), then the older generations are removed

A night killed before `publish_state` leaves ``CURRENT`` naming last night's state: a rerun redoes
tonight's finish (its generation is named by its own run id, so a killed attempt's files are never
mixed with a rerun's).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from shelfwise import storage
from shelfwise._memory import trim
from shelfwise.model_folder import load_model_taxonomy, model_versions
from shelfwise.pipeline._buckets import previous_scan
from shelfwise.pipeline._export import ExportRequest
from shelfwise.pipeline._incremental import routing_fingerprint
from shelfwise.pipeline._migrate import load_pending, route_orphans
from shelfwise.pipeline._stage import StagedNight
from shelfwise.pipeline._worker import ShardResult
from shelfwise.predictions import PREDICTION_COLUMNS, empty_predictions
from shelfwise.settings import Settings
from shelfwise.state import (
    CATALOG_STATE,
    CURRENT,
    PREDICTIONS_META,
    PREDICTIONS_STATE,
    StateGeneration,
    state_root,
)

__all__ = [
    "BucketFinished",
    "FinishTask",
    "concat_predictions",
    "finish_bucket",
    "finish_tasks",
    "new_generation",
    "publish_state",
]


class FinishTask(BaseModel):
    """One bucket to finish (plain data: it travels to any worker)."""

    bucket: int
    run_id: str
    work_url: str
    model_dir: str
    target: StateGeneration  # the generation tonight writes
    previous: StateGeneration | None
    keys_url: str
    carry_url: str
    parts: list[str] = Field(default_factory=list)  # tonight's prediction parts of this bucket
    export: ExportRequest | None = None
    migrating: bool = False


class BucketFinished(BaseModel):
    """A finished bucket: its rows in the new state, a migration's counts and orphans."""

    bucket: int
    rows: int = 0
    predictions_url: str | None = None
    orphans_url: str | None = None
    migration_counts: dict[str, int] = Field(default_factory=dict)


def new_generation(
    settings: Settings, staged: StagedNight, *, run_id: str, model_dir: Path
) -> StateGeneration:
    """The state generation tonight writes (named by the run id)."""
    model_version, taxonomy_version = model_versions(model_dir)
    return StateGeneration(
        root=state_root(settings),
        generation=run_id,
        buckets=staged.buckets,
        run_id=run_id,
        model_version=model_version,
        taxonomy_version=taxonomy_version,
        routing=routing_fingerprint(settings),
    )


def finish_tasks(
    settings: Settings,
    staged: StagedNight,
    results: Sequence[ShardResult],
    *,
    run_id: str,
    model_dir: Path,
    export: ExportRequest | None,
) -> list[FinishTask]:
    """One finish task per bucket; each gets the prediction parts of its bucket's shards."""
    target = new_generation(settings, staged, run_id=run_id, model_dir=model_dir)
    by_shard = {r.shard_url: r.predictions_url for r in results}
    migrating = load_pending(model_dir) is not None
    return [
        FinishTask(
            bucket=b,
            run_id=run_id,
            work_url=staged.work_url,
            model_dir=str(model_dir),
            target=target,
            previous=staged.previous,
            keys_url=staged.keys_url(b),
            carry_url=staged.carry_url(b),
            parts=[by_shard[u] for u in staged.shards_of(b) if u in by_shard],
            export=export,
            migrating=migrating,
        )
        for b in range(staged.buckets)
    ]


def _scan(urls: Sequence[str], folder: Path) -> pl.LazyFrame | None:
    """The files at ``urls`` as one lazy frame: one multi-file scan when their schemas agree (polars
    streams it), else a relaxed concatenation (a column all null in one file, typed in another)."""
    found = _local_files(urls, folder)
    if not found:
        return None
    if _one_schema(found):
        return pl.scan_parquet(found)
    return pl.concat([pl.scan_parquet(f) for f in found], how="diagonal_relaxed")


def _local_files(urls: Sequence[str], folder: Path) -> list[str]:
    """The files at ``urls`` that exist, as local paths (shared storage's copied under ``folder``)."""
    return [str(storage.local_copy(u, folder)) for u in urls if storage.exists(u)]


def _one_schema(files: Sequence[str]) -> bool:
    return len({pq.read_schema(f).remove_metadata().to_string() for f in files}) == 1


def _copy_row_groups(files: Sequence[str], out: Path) -> None:
    """``files`` (one schema) into ``out`` one row group at a time: memory holds one row group, whatever
    the catalog's size (a polars sink of the same scan grew with the rows: 1.0 GiB at 1M, 1.5 at 3M)."""
    with pq.ParquetWriter(out, pq.read_schema(files[0]), compression="zstd") as writer:
        for f in files:
            part = pq.ParquetFile(f)
            for i in range(part.num_row_groups):
                writer.write_table(part.read_row_group(i))


def _bucket_rows(task: FinishTask, tmp: Path) -> pl.LazyFrame | None:
    """The bucket's prediction rows tonight: last night's rows of its carried SKUs, then its re-scored
    rows (a part a killed attempt of this night finished counts as scored tonight), stamped ``run_id``."""
    buckets = task.target.buckets
    frames = []
    previous = previous_scan(task.previous, "predictions", task.bucket, buckets, tmp)
    carried = _scan([task.carry_url], tmp / "carry")
    if previous is not None and carried is not None:
        frames.append(previous.join(carried.select("sku_id"), on="sku_id", how="semi"))
    scored = _scan(task.parts, tmp / "parts")
    if scored is not None:
        frames.append(scored.with_columns(pl.lit(task.run_id).alias("scored_run_id")))
    if not frames:
        return None
    rows = pl.concat([f.select(list(PREDICTION_COLUMNS)) for f in frames], how="vertical_relaxed")
    return rows.with_columns(pl.lit(task.run_id).alias("run_id"))


def _write(frame: pl.LazyFrame | pl.DataFrame, url: str, tmp: Path) -> None:
    """``frame`` to ``url`` atomically (a lazy frame streamed to a local file first)."""
    if isinstance(frame, pl.DataFrame):
        storage.write_parquet(frame, url)
        return
    if storage.is_remote(url):
        local = tmp / f"out-{uuid.uuid4().hex[:8]}.parquet"
        frame.sink_parquet(local, compression="zstd")
        storage.write_bytes(url, local.read_bytes())
        local.unlink()
        return
    dest = Path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
    frame.sink_parquet(part, compression="zstd")
    os.replace(part, dest)


def finish_bucket(task: FinishTask, settings: Settings) -> BucketFinished:
    """Write one bucket of tonight's state generation: its final prediction rows (the carry state the
    next night reads, and this night's predictions) and its catalog state. Idempotent within a run."""
    done = storage.join(task.work_url, "finished", task.run_id, f"bucket-{task.bucket:05d}.json")
    if storage.exists(done):
        return BucketFinished.model_validate_json(storage.read_bytes(done))
    out = BucketFinished(bucket=task.bucket)
    with tempfile.TemporaryDirectory(prefix="shelfwise-finish-") as name:
        tmp = Path(name)
        rows = _bucket_rows(task, tmp)
        if rows is not None:
            final = _final_rows(task, rows, out)
            out.predictions_url = task.target.file("predictions", task.bucket)
            _write(final, out.predictions_url, tmp)
            out.rows = int(
                pl.scan_parquet(storage.local_copy(out.predictions_url, tmp / "check"))
                .select(pl.len())
                .collect()
                .item()
            )
        _write_catalog_state(task, tmp)
    storage.write_bytes(done, out.model_dump_json().encode())
    trim()
    return out


def _final_rows(task: FinishTask, rows: pl.LazyFrame, out: BucketFinished) -> pl.LazyFrame | pl.DataFrame:
    """The bucket's rows as they will be written: a migration's orphans routed to review (their rows
    written for the queue), the export columns added; without either, the rows stay lazy."""
    migration = load_pending(task.model_dir) if task.migrating else None
    if migration is None and task.export is None:
        return rows
    frame = rows.collect()
    if migration is not None:
        before = Counter(migration.catalog)
        frame, orphans = route_orphans(frame, migration)
        out.migration_counts = dict(Counter(migration.catalog) - before)
        if orphans.height:
            out.orphans_url = storage.join(task.work_url, "orphans", f"bucket-{task.bucket:05d}.parquet")
            storage.write_parquet(orphans, out.orphans_url)
    if task.export is not None:
        frame = task.export.apply(frame, load_model_taxonomy(Path(task.model_dir)))
    return frame


def _write_catalog_state(task: FinishTask, tmp: Path) -> None:
    """The bucket's catalog state: every SKU ever seen, tonight's with tonight's content hash."""
    keys = _scan([task.keys_url], tmp / "keys")
    previous = previous_scan(task.previous, "catalog", task.bucket, task.target.buckets, tmp)
    if keys is None and previous is None:
        return
    frames = []
    if keys is not None:
        frames.append(
            keys.select("sku_id", "content_hash").with_columns(pl.lit(task.run_id).alias("last_seen_run"))
        )
    if previous is not None:
        gone = previous.select("sku_id", "content_hash", "last_seen_run")
        frames.append(gone.join(keys.select("sku_id"), on="sku_id", how="anti") if keys is not None else gone)
    _write(pl.concat(frames, how="vertical_relaxed"), task.target.file("catalog", task.bucket), tmp)


def concat_predictions(out: Path, finished: Sequence[BucketFinished]) -> int:
    """predictions.parquet: every bucket's rows in one file (row group by row group; atomically renamed
    into place).
    Returns the row count; no rows: a valid empty file with the contract's columns."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    urls = [f.predictions_url for f in sorted(finished, key=lambda f: f.bucket) if f.predictions_url]
    with tempfile.TemporaryDirectory(prefix="shelfwise-predictions-") as name:
        found = _local_files(urls, Path(name))
        if not found:
            empty_predictions().with_columns(pl.col("candidates").cast(pl.String)).write_parquet(tmp_out)
        elif _one_schema(found):
            _copy_row_groups(found, tmp_out)
        else:
            relaxed = pl.concat([pl.scan_parquet(f) for f in found], how="diagonal_relaxed")
            relaxed.sink_parquet(tmp_out, compression="zstd")
    os.replace(tmp_out, out)
    return int(pl.scan_parquet(out).select(pl.len()).collect().item())


def publish_state(settings: Settings, target: StateGeneration, finished: Sequence[BucketFinished]) -> None:
    """Make tonight's generation the state the next night starts from: ``CURRENT`` replaced in one atomic
    write (the commit), then last night's generation, a killed attempt's and an older version's single
    files removed."""
    target = target.model_copy(update={"rows": sum(f.rows for f in finished)})
    storage.write_bytes(storage.join(target.root, CURRENT), target.model_dump_json().encode())
    _sweep(target)
    for name in (PREDICTIONS_STATE, PREDICTIONS_META, CATALOG_STATE):
        (settings.state_dir / name).unlink(missing_ok=True)


def _sweep(target: StateGeneration) -> None:
    """Remove every generation under the state root but ``target``'s."""
    if storage.is_remote(target.root):
        import fsspec

        fs, path = fsspec.core.url_to_fs(target.root)
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    else:
        names = [p.name for p in Path(target.root).iterdir()] if Path(target.root).is_dir() else []
    for name in names:
        if name not in (CURRENT, target.generation) and not name.startswith("."):
            storage.remove_tree(storage.join(target.root, name))
