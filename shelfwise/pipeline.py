"""The plain functions behind every stage of the nightly run (the Prefect tasks are thin wrappers).

This module is the public facade; each job lives in its own private module:

    train(...)              labelled catalog (+ human labels) -> model directory          (_train.py)
    stage_catalog(...)      catalog file -> canonical shard files + quarantine file       (_stage.py)
    load_resources(...)     model, taxonomy, embedder, cache, LLM arbiter of one process  (_classify.py)
    classify_frame(...)     one shard -> prediction rows (candidates, confidence, route)  (_classify.py)
    PredictionWriter        streams prediction shards into one Parquet file, atomically   (_finalize.py)
    finalize_run(...)       enqueue review items, write catalog state and the RunSummary  (_finalize.py)

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
from shelfwise._finalize import PredictionWriter, Written, classify_catalog, finalize_run, write_predictions
from shelfwise._stage import iter_shards, new_run_id, stage_catalog
from shelfwise._train import MODEL_TAXONOMY_DIR, TrainSummary, load_model_taxonomy, train

__all__ = [
    "CANDIDATE_TYPE",
    "MODEL_TAXONOMY_DIR",
    "PREDICTION_COLUMNS",
    "PRODUCT_COLUMNS",
    "PredictionWriter",
    "Resources",
    "RunStats",
    "TrainSummary",
    "Written",
    "classify_catalog",
    "classify_frame",
    "finalize_run",
    "iter_shards",
    "load_model_taxonomy",
    "load_resources",
    "new_run_id",
    "stage_catalog",
    "train",
    "write_predictions",
]
