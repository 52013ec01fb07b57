"""The night's work, as plain functions (no Prefect): the night's owner, `shelfwise.night`, runs them in
order, and `flows/` only wraps them as tasks through it.

    train(...)                labelled catalog (+ human labels) -> model folder              (_train)
    migrate_if_needed(...)    a new taxonomy version: labels and review items follow, retrain (_migrate)
    stage_night(...)          catalog -> shards to score + carried SKUs (incremental)        (_stage,
                                                                                             _incremental)
    score_distinct(task, s)   one shard of distinct contents: embedded and scored once      (_worker)
    run_shard(task, s)        one shard task, anywhere: memoised model, plain counters out  (_worker)
    classify_frame(...)       one shard -> prediction rows (candidates, confidence, route)  (_classify)
    tonight_rows ... commit_night   the finish: rows, predictions file, queues, summary, state (_finalize)

Heavy objects (model, encoders, cache) are loaded once per process by `worker_resources` (_resources)
and dropped by `release_resources` when the process's scoring is over.
"""

from __future__ import annotations

from shelfwise.pipeline._classify import RunStats, classify_frame
from shelfwise.pipeline._export import (
    EXPORT_COLUMNS,
    ExportRequest,
    add_export_columns,
    check_export_flags,
    export_request,
)
from shelfwise.pipeline._finalize import (
    NightOutcome,
    PredictionWriter,
    commit_night,
    distinct_tasks,
    enqueue_rescored,
    run_summary,
    shard_tasks,
    tonight_rows,
    write_predictions,
)
from shelfwise.pipeline._incremental import commit_state, plan_carry
from shelfwise.pipeline._migrate import (
    TAXONOMY_CHANGED,
    Migration,
    enqueue_orphans,
    finish_migration,
    load_pending,
    migrate_if_needed,
    route_orphans,
)
from shelfwise.pipeline._resources import (
    Resources,
    llm_arbiter,
    load_resources,
    release_resources,
    worker_resources,
)
from shelfwise.pipeline._stage import CatalogSource, StagedNight, iter_shards, new_run_id, stage_night, utcnow
from shelfwise.pipeline._train import TrainSummary, train
from shelfwise.pipeline._worker import ShardResult, ShardTask, run_shard, score_distinct

__all__ = [
    "EXPORT_COLUMNS",
    "TAXONOMY_CHANGED",
    "CatalogSource",
    "ExportRequest",
    "Migration",
    "NightOutcome",
    "PredictionWriter",
    "Resources",
    "RunStats",
    "ShardResult",
    "ShardTask",
    "StagedNight",
    "TrainSummary",
    "add_export_columns",
    "check_export_flags",
    "classify_frame",
    "commit_night",
    "commit_state",
    "distinct_tasks",
    "enqueue_orphans",
    "enqueue_rescored",
    "export_request",
    "finish_migration",
    "iter_shards",
    "llm_arbiter",
    "load_pending",
    "load_resources",
    "migrate_if_needed",
    "new_run_id",
    "plan_carry",
    "release_resources",
    "route_orphans",
    "run_shard",
    "run_summary",
    "score_distinct",
    "shard_tasks",
    "stage_night",
    "tonight_rows",
    "train",
    "utcnow",
    "worker_resources",
    "write_predictions",
]
