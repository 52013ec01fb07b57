"""``<state_dir>/history.parquet``: one row of headline figures per run, upserted by run_id."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise.summary import RunSummary

TEXT_COLUMNS = ("run_id", "started_at", "finished_at", "catalog", "model_version", "taxonomy_version")
NUMBER_COLUMNS = (
    "seen",
    "new",
    "changed",
    "unchanged",
    "classified",
    "quarantined",
    "auto",
    "review",
    "suspect",
    "human_locked",
    "queued_total",
    "auto_rate",
    "precision",
    "precision_lo",
    "precision_hi",
    "audit_answers",
    "target_precision",
    "reviewer_answers",
    "model_agreement",
    "calibration_error",
    "suspect_rate",
    "suspect_confident",
    "confirmed_misfile_rate",
    "suspect_answers",
    "uncategorized",
    "unclassified",
    "taxonomy_nodes",
    "empty_nodes",
    "deprecated_items",
    "churn_moved",
    "churn_rate",
    "js_divergence",
    "js_divergence_top",
    "psi_top",
    "new_skus",
    "gone_skus",
    "llm_calls",
    "llm_tokens",
    "llm_cost_usd",
    "decisions",
    "reviewers",
    "median_seconds",
    "kappa",
    "double_checked",
    "open_backlog",
    "oldest_open_days",
)
SCHEMA: dict[str, Any] = {**{c: pl.String for c in TEXT_COLUMNS}, **{c: pl.Float64 for c in NUMBER_COLUMNS}}


def _number(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def history_row(figures: dict[str, Any], summary: RunSummary) -> pl.DataFrame:
    text = {c: getattr(summary, c, None) for c in TEXT_COLUMNS}
    row: dict[str, Any] = {c: (None if v is None else str(v)) for c, v in text.items()}
    row.update({c: _number(figures.get(c)) for c in NUMBER_COLUMNS})
    return pl.DataFrame([row], schema=SCHEMA)


def read_history(path: Path) -> pl.DataFrame:
    if not path.is_file():
        return pl.DataFrame(schema=SCHEMA)
    h = pl.read_parquet(path)
    for c, t in SCHEMA.items():
        if c not in h.columns:
            h = h.with_columns(pl.lit(None, dtype=t).alias(c))
    return h


def upsert_history(path: Path, row: pl.DataFrame) -> pl.DataFrame:
    """Replace the row of ``row``'s run (or add it), keep runs in time order, write atomically."""
    old = read_history(path)
    run_id = row["run_id"][0]
    merged = pl.concat([old.filter(pl.col("run_id") != run_id), row], how="diagonal_relaxed")
    merged = merged.sort(["finished_at", "run_id"], nulls_last=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    merged.write_parquet(tmp)
    os.replace(tmp, path)
    return merged
