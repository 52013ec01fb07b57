"""The night's work, as plain functions (no Prefect): the night's owner, `shelfwise.night`, runs them in
order, and `flows/` only wraps them as tasks through it.

    train(...)                labelled catalog (+ human labels) -> model folder              (_train)
    migrate_if_needed(...)    a new taxonomy version: labels and review items follow, retrain (_migrate)
    plan_stage(...)           main: night key, carry mode (full/incremental), bucket count  (_buckets,
    read_part(task, s)        one catalog part -> rows in their buckets' staging folders      _stage,
    stage_bucket(task, s)     one bucket: duplicate ids, carry split, shards, distinct        _incremental)
    gather_staged(...)        main: distinct contents across buckets, quarantine -> StagedNight
    stage_night(...)          all of staging in this process
    score_distinct(task, s)   one shard of distinct contents: embedded and scored once      (_worker)
    run_shard(task, s)        one shard task, anywhere: memoised model, plain counters out  (_worker)
    classify_frame(...)       one shard -> prediction rows (candidates, confidence, route)  (_classify)
    finish_bucket(task, s)    one bucket's final rows and state, in tonight's generation  (_finish)
    concat_predictions ... commit_night   predictions file, queues, summary, state (_finalize, _finish)

Heavy objects (model, encoders, cache) are loaded once per process by `worker_resources` (_resources)
and dropped by `release_resources` when the process's scoring is over.
"""

from __future__ import annotations

from shelfwise.pipeline._buckets import (
    BucketStaged,
    BucketTask,
    PartStaged,
    ReadPartTask,
    StagePlan,
    gather_staged,
    plan_stage,
    read_part,
    stage_bucket,
    stage_night,
)
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
    tonight_parts,
    write_predictions,
)
from shelfwise.pipeline._finish import (
    BucketFinished,
    FinishTask,
    concat_predictions,
    finish_bucket,
    finish_tasks,
)
from shelfwise.pipeline._incremental import CarryMode, carry_mode, plan_carry
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
from shelfwise.pipeline._stage import CatalogSource, StagedNight, iter_shards, new_run_id, utcnow
from shelfwise.pipeline._train import TrainSummary, train
from shelfwise.pipeline._worker import ShardResult, ShardTask, run_shard, score_distinct

__all__ = [
    "EXPORT_COLUMNS",
    "TAXONOMY_CHANGED",
    "BucketFinished",
    "BucketStaged",
    "BucketTask",
    "CarryMode",
    "CatalogSource",
    "ExportRequest",
    "FinishTask",
    "Migration",
    "NightOutcome",
    "PartStaged",
    "PredictionWriter",
    "ReadPartTask",
    "Resources",
    "RunStats",
    "ShardResult",
    "ShardTask",
    "StagePlan",
    "StagedNight",
    "TrainSummary",
    "add_export_columns",
    "carry_mode",
    "check_export_flags",
    "classify_frame",
    "commit_night",
    "concat_predictions",
    "distinct_tasks",
    "enqueue_orphans",
    "enqueue_rescored",
    "export_request",
    "finish_bucket",
    "finish_migration",
    "finish_tasks",
    "gather_staged",
    "iter_shards",
    "llm_arbiter",
    "load_pending",
    "load_resources",
    "migrate_if_needed",
    "new_run_id",
    "plan_carry",
    "plan_stage",
    "read_part",
    "release_resources",
    "route_orphans",
    "run_shard",
    "run_summary",
    "score_distinct",
    "shard_tasks",
    "stage_bucket",
    "stage_night",
    "tonight_parts",
    "train",
    "utcnow",
    "worker_resources",
    "write_predictions",
]
