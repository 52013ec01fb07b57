"""The plain functions behind every stage of the nightly run (the Prefect tasks are thin wrappers).

This module is the public facade; each job lives in its own private module:

    train(...)              labelled catalog (+ human labels) -> model directory          (_train.py)
    stage_night(...)        catalog -> shards to score + carried SKUs (incremental)       (_stage,
                                                                                          _incremental)
    run_shard(task, s)      one shard task, anywhere: memoised model, plain counters out  (_worker.py)
    classify_frame(...)     one shard -> prediction rows (candidates, confidence, route)  (_classify.py)
    finalize_run(...)       predictions file, review queues, state, the RunSummary        (_finalize.py)
    classify_catalog(...)   all of the above in this process, without Prefect             (_finalize.py)

Nothing in here imports Prefect: ``shelfwise classify`` runs these directly, ``shelfwise run`` through
the flow in ``flows/nightly.py``.
"""

from __future__ import annotations

from shelfwise._classify import (
    CANDIDATE_TYPE,
    PREDICTION_COLUMNS,
    PRODUCT_COLUMNS,
    Resources,
    RunStats,
    classify_frame,
    load_resources,
)
from shelfwise._finalize import PredictionWriter, classify_catalog, distinct_tasks, finalize_run, shard_tasks
from shelfwise._stage import StagedNight, iter_shards, new_run_id, stage_night, utcnow
from shelfwise._train import MODEL_TAXONOMY_DIR, TrainSummary, load_model_taxonomy, train
from shelfwise._worker import ShardResult, ShardTask, run_shard, score_distinct
from shelfwise.summary import RunSummary

__all__ = [
    "CANDIDATE_TYPE",
    "MODEL_TAXONOMY_DIR",
    "PREDICTION_COLUMNS",
    "PRODUCT_COLUMNS",
    "PredictionWriter",
    "Resources",
    "RunStats",
    "RunSummary",
    "ShardResult",
    "ShardTask",
    "StagedNight",
    "TrainSummary",
    "classify_catalog",
    "classify_frame",
    "distinct_tasks",
    "finalize_run",
    "iter_shards",
    "load_model_taxonomy",
    "load_resources",
    "new_run_id",
    "run_shard",
    "score_distinct",
    "shard_tasks",
    "stage_night",
    "train",
    "utcnow",
]
