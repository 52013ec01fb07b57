"""Incremental nights: an SKU whose inputs, model and taxonomy are unchanged keeps its last prediction.

State (in ``state_dir``), replaced atomically at the end of every finished run:
    predictions_state.parquet   the last run's predictions, every SKU (the rows that may be carried)
    predictions_state.json      what they were made with: model, taxonomy, routing settings, run id

A row is carried when its ``sku_id``, ``content_hash`` and current category are the ones it was scored
with, the model, taxonomy and routing settings are the same, and no reviewer decided it since (a human
decision is applied by re-scoring the row). Anything else (a new model, a new taxonomy, changed
thresholds, no state yet) makes a full night and the summary says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from classifiers.llm import ASK_AGAIN_STATUSES
from shelfwise.predictions import PREDICTION_COLUMNS
from shelfwise.settings import Settings
from shelfwise.state import PREDICTIONS_META as META_FILE
from shelfwise.state import PREDICTIONS_STATE as STATE_FILE

__all__ = ["CarryPlan", "carried_rows", "commit_state", "plan_carry", "routing_fingerprint"]

_KEY = "_carry_key"

#: Settings that change a prediction or its route without changing the model.
_ROUTING_FIELDS = ("top_k", "auto_threshold", "suspect_threshold", "max_current_support", "audit_rate")


def routing_fingerprint(settings: Settings) -> str:
    data: dict[str, Any] = {k: getattr(settings, k) for k in _ROUTING_FIELDS}
    llm = settings.llm.model_dump(mode="json", exclude={"api_key"})
    data["llm"] = {k: v for k, v in llm.items() if "budget" not in k and k not in ("cache_path", "cache_url")}
    data["llm_on"] = bool(settings.llm.base_url)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def carry_key(frame: pl.DataFrame | pl.LazyFrame) -> Any:
    """The per-row key a carried prediction must match: content hash + the current category."""
    return frame.with_columns(
        pl.concat_str(
            [pl.col("content_hash"), pl.col("current_category_path").fill_null("")], separator="\x1f"
        ).alias(_KEY)
    )


@dataclass
class CarryPlan:
    """Which rows of tonight's shards keep last night's prediction, and why the night is full if it is."""

    mode: str  # "full" | "incremental"
    reason: str
    keys: pl.DataFrame | None  # sku_id + carry key of the rows that may be carried (None: full night)
    previous_run_id: str | None = None

    def split(self, shard: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(rows to score, sku_ids of rows to carry) for one canonical shard."""
        if self.keys is None or shard.is_empty():
            return shard, shard.select("sku_id").clear()
        keyed = carry_key(
            shard.rename({"category_path": "current_category_path"}).select(
                "sku_id", "content_hash", "current_category_path"
            )
        )
        hit = keyed.join(self.keys, on=["sku_id", _KEY], how="semi").select("sku_id")
        if hit.is_empty():
            return shard, hit
        return shard.join(hit, on="sku_id", how="anti"), hit


def plan_carry(
    settings: Settings,
    *,
    model_version: str,
    taxonomy_version: str,
    uses_price: bool,
    locked: dict[str, tuple[str, str, str]],
) -> CarryPlan:
    """Decide full or incremental; for incremental, load the carry keys of the last predictions."""
    state = settings.state_dir / STATE_FILE
    meta_path = settings.state_dir / META_FILE
    if not settings.incremental:
        return CarryPlan("full", "incremental scoring is off (setting incremental = false)", None)
    if uses_price:
        return CarryPlan("full", "the model scores price, which the content hash does not cover", None)
    if not state.exists() or not meta_path.exists():
        return CarryPlan("full", "first night: no earlier predictions to carry", None)
    meta = json.loads(meta_path.read_text())
    prev = meta.get("run_id")
    if meta.get("model_version") != model_version:
        return CarryPlan(
            "full", f"new model {model_version} (last night: {meta.get('model_version')})", None, prev
        )
    if meta.get("taxonomy_version") != taxonomy_version:
        return CarryPlan(
            "full",
            f"new taxonomy {taxonomy_version} (last night: {meta.get('taxonomy_version')})",
            None,
            prev,
        )
    if meta.get("routing") != routing_fingerprint(settings):
        return CarryPlan(
            "full", "routing settings changed (thresholds, top_k, audit rate or LLM step)", None, prev
        )
    missing = [c for c in PREDICTION_COLUMNS if c not in pl.scan_parquet(state).collect_schema().names()]
    if missing:
        return CarryPlan(
            "full", f"last predictions lack the columns {', '.join(missing)} (an older version)", None, prev
        )
    keys = carry_key(
        pl.scan_parquet(state).select("sku_id", "content_hash", "current_category_path", "source")
    )
    frame = keys.select("sku_id", _KEY, "content_hash", "source").collect()
    # an item the LLM could not settle (broken answer, endpoint down, budget) is asked again tonight
    again = pl.scan_parquet(state).filter(pl.col("llm_status").is_in(sorted(ASK_AGAIN_STATUSES)))
    frame = frame.join(again.select("sku_id").collect(), on="sku_id", how="anti")
    if locked:
        # a reviewer's decision on unchanged content replaces the model's: re-score those rows
        lock = pl.DataFrame(
            {"sku_id": list(locked), "_lock_hash": [v[2] for v in locked.values()]},
            schema={"sku_id": pl.String, "_lock_hash": pl.String},
        )
        stale = (
            frame.join(lock, on="sku_id")
            .filter((pl.col("_lock_hash") == pl.col("content_hash")) & (pl.col("source") != "human"))
            .select("sku_id")
        )
        frame = frame.join(stale, on="sku_id", how="anti")
    return CarryPlan(
        "incremental",
        f"same model, taxonomy and routing as run {prev}: unchanged SKUs carried",
        frame.select("sku_id", _KEY),
        prev,
    )


def carried_rows(settings: Settings, carry_files: list[Path]) -> pl.LazyFrame | None:
    """Last night's prediction rows for the carried SKUs (lazy: streamed into the new predictions file)."""
    files = [str(p) for p in carry_files if p.exists()]
    if not files:
        return None
    skus = pl.scan_parquet(files).select("sku_id")
    return pl.scan_parquet(settings.state_dir / STATE_FILE).join(skus, on="sku_id", how="semi")


def commit_state(
    settings: Settings, predictions: Path, *, run_id: str, model_version: str, taxonomy_version: str
) -> None:
    """Make tonight's predictions the carry state (atomically: data first, then the meta that names it)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    state = settings.state_dir / STATE_FILE
    tmp = state.with_suffix(".parquet.tmp")
    shutil.copyfile(predictions, tmp)
    meta = settings.state_dir / META_FILE
    meta.unlink(missing_ok=True)  # a kill between the two replaces leaves no meta: the next night is full
    os.replace(tmp, state)
    meta_tmp = meta.with_suffix(".json.tmp")
    meta_tmp.write_text(
        json.dumps(
            {
                "run_id": run_id,
                "model_version": model_version,
                "taxonomy_version": taxonomy_version,
                "routing": routing_fingerprint(settings),
            }
        )
    )
    os.replace(meta_tmp, meta)
