"""Incremental nights: an SKU whose inputs, model and taxonomy are unchanged keeps its last prediction.

State (`shelfwise.state`): the last run's predictions, every SKU, in buckets by a hash of ``sku_id``,
and what they were made with (model, taxonomy, routing settings, run id) in ``state/CURRENT``, replaced
atomically at the end of every finished run. The mode (full or incremental) is decided once a night
(`carry_mode`); the carry keys are loaded per bucket, by that bucket's staging task (`plan_carry`).

A row is carried when its ``sku_id``, ``content_hash`` and current category are the ones it was scored
with, the model, taxonomy and routing settings are the same, and no reviewer decided it since (a human
decision is applied by re-scoring the row). Anything else (a new model, a new taxonomy, changed
thresholds, no state yet) makes a full night and the summary says why.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from classifiers.llm import ASK_AGAIN_STATUSES
from shelfwise import storage
from shelfwise.predictions import PREDICTION_COLUMNS
from shelfwise.settings import Settings
from shelfwise.state import StateGeneration

__all__ = ["CarryMode", "CarryPlan", "carry_mode", "plan_carry", "routing_fingerprint"]

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

    def carries(self, rows: pl.DataFrame) -> pl.Series:
        """Which of ``rows`` (``sku_id``, ``content_hash``, ``category_path``; each ``sku_id`` once) keep
        last night's prediction, as a boolean mask: `split` for many shards at once (a bucket's rows),
        with one join against the carry keys instead of one per shard."""
        if self.keys is None or rows.is_empty():
            return pl.Series("carried", [False] * rows.height, dtype=pl.Boolean)
        keyed = carry_key(
            rows.select(
                "sku_id", "content_hash", pl.col("category_path").alias("current_category_path")
            ).with_row_index("_i")
        )
        hit = keyed.join(self.keys, on=["sku_id", _KEY], how="semi").get_column("_i")
        return pl.int_range(rows.height, eager=True, dtype=hit.dtype).is_in(hit.implode()).alias("carried")


@dataclass
class CarryMode:
    """Full or incremental tonight, and why (decided once, in the main process, from `CURRENT`)."""

    mode: str  # "full" | "incremental"
    reason: str
    previous_run_id: str | None = None


def carry_mode(
    settings: Settings,
    previous: StateGeneration | None,
    *,
    model_version: str,
    taxonomy_version: str,
    uses_price: bool,
) -> CarryMode:
    """Decide full or incremental from the settings, the model and the last night's state."""
    if not settings.incremental:
        return CarryMode("full", "incremental scoring is off (setting incremental = false)")
    if uses_price:
        return CarryMode("full", "the model scores price, which the content hash does not cover")
    files = previous.files("predictions") if previous is not None and previous.routing else []
    if previous is None or not files:
        return CarryMode("full", "first night: no earlier predictions to carry")
    prev = previous.run_id
    if previous.model_version != model_version:
        return CarryMode("full", f"new model {model_version} (last night: {previous.model_version})", prev)
    if previous.taxonomy_version != taxonomy_version:
        return CarryMode(
            "full", f"new taxonomy {taxonomy_version} (last night: {previous.taxonomy_version})", prev
        )
    if previous.routing != routing_fingerprint(settings):
        return CarryMode("full", "routing settings changed (thresholds, top_k, audit rate or LLM step)", prev)
    names = _columns_of(files[0])
    missing = [c for c in PREDICTION_COLUMNS if c not in names]
    if missing:
        return CarryMode(
            "full", f"last predictions lack the columns {', '.join(missing)} (an older version)", prev
        )
    return CarryMode(
        "incremental", f"same model, taxonomy and routing as run {prev}: unchanged SKUs carried", prev
    )


def _columns_of(url: str) -> list[str]:
    if not storage.is_remote(url):
        return pl.scan_parquet(url).collect_schema().names()
    with tempfile.TemporaryDirectory(prefix="shelfwise-state-") as tmp:
        return pl.scan_parquet(storage.local_copy(url, Path(tmp))).collect_schema().names()


def plan_carry(
    mode: CarryMode, previous: pl.LazyFrame | None, locked: dict[str, tuple[str, str, str]]
) -> CarryPlan:
    """One bucket's carry plan: for an incremental night, the carry keys of the bucket's last predictions
    (``previous``: that bucket's rows of the carry state)."""
    if mode.mode != "incremental" or previous is None:
        return CarryPlan(mode.mode, mode.reason, None, mode.previous_run_id)
    keys = carry_key(
        previous.select("sku_id", "content_hash", "current_category_path", "source", "llm_status")
    )
    # an item the LLM could not settle (broken answer, endpoint down, budget) is asked again tonight
    frame = (
        keys.filter(~pl.col("llm_status").is_in(sorted(ASK_AGAIN_STATUSES)).fill_null(False))
        .select("sku_id", _KEY, "content_hash", "source")
        .collect()
    )
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
    return CarryPlan(mode.mode, mode.reason, frame.select("sku_id", _KEY), mode.previous_run_id)
