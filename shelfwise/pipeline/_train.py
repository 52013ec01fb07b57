"""Training: a labelled catalog (plus reviewers' decisions from the queue) -> a model folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from classifiers import make_embedder, open_embedding_cache
from classifiers.model import CategoryModel
from shelfwise.catalog import Quarantine
from shelfwise.errors import ConfigError
from shelfwise.model_folder import copy_taxonomy
from shelfwise.pipeline._resources import image_embedder
from shelfwise.pipeline._stage import CatalogSource, iter_shards
from shelfwise.settings import Settings
from shelfwise.state import read_queue
from taxonomy import load_taxonomy
from verification.audit_bar import STATE_FILE as AUDIT_BAR_FILE
from verification.audit_bar import reset_bars

__all__ = ["TrainSummary", "train"]


@dataclass
class TrainSummary:
    model_dir: str
    model_version: str
    taxonomy_version: str
    rows: int
    labelled: int
    human_labels: int
    quarantined: int
    quarantine_path: str
    fit_report: dict[str, Any] = field(default_factory=dict)


def train(
    *,
    taxonomy_path: str | Path,
    catalog: CatalogSource | str | Path,
    model_dir: str | Path,
    settings: Settings,
    taxonomy_format: str | None = None,
    use_human_labels: bool = True,
    progress: Callable[[int], None] | None = None,
    relabel: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> TrainSummary:
    """Train a model on a labelled catalog (plus human decisions from the queue) into ``model_dir``.

    ``relabel`` rewrites the catalog's labels first (a taxonomy migration maps OLD paths to NEW ones).
    """
    source = CatalogSource.of(catalog)
    taxonomy_path, model_dir = Path(taxonomy_path), Path(model_dir)
    tax = load_taxonomy(taxonomy_path, format=taxonomy_format)
    model_dir.mkdir(parents=True, exist_ok=True)
    qpath = model_dir / "train_quarantine.jsonl"
    quarantine = Quarantine(qpath)
    frames = []
    for shard in iter_shards(source, settings=settings, taxonomy=tax, quarantine=quarantine):
        frames.append(shard)
        if progress:
            progress(shard.height)
    quarantine.close()
    if not frames:
        raise ConfigError(f"catalog {source.catalog}: no usable rows to train on (see {qpath})")
    frame = pl.concat(frames, how="vertical_relaxed")
    if relabel is not None:
        frame = relabel(frame)
    human = 0
    if use_human_labels:
        frame, human = _apply_human_labels(frame, settings)
    labelled = frame.filter(pl.col("category_path").is_not_null())
    if labelled.height < 2:
        raise ConfigError(
            f"catalog {source.catalog}: {labelled.height} rows have a category_path; training needs "
            "labelled rows (map your label column with --map category_path=<column>)"
        )
    model = CategoryModel(
        use_images=settings.use_images,
        use_price=settings.use_price,
        random_state=0,
        target_precision=settings.target_precision,
        rankings=tuple(settings.rankings),
    )
    model.fit(
        labelled,
        tax,
        embedder=make_embedder(settings.embedder),
        cache=open_embedding_cache(settings.embedding_cache),
        image_embedder=image_embedder(settings),
    )
    model.save(model_dir)
    copy_taxonomy(taxonomy_path, model_dir, taxonomy_format)
    reset_bars(settings.state_dir / AUDIT_BAR_FILE)  # a new model: the audit judges it afresh
    return TrainSummary(
        model_dir=str(model_dir),
        model_version=model.version,
        taxonomy_version=tax.version,
        rows=frame.height,
        labelled=labelled.height,
        human_labels=human,
        quarantined=quarantine.total,
        quarantine_path=str(qpath),
        fit_report=dict(getattr(model, "fit_report_", {}) or {}),
    )


def _apply_human_labels(frame: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, int]:
    """Reviewers' final decisions override the catalog's labels (they are the better truth)."""
    store = read_queue(settings)
    if store is None:
        return frame, 0
    with store:
        labels = store.labels()
    if labels.is_empty():
        return frame, 0
    labels = labels.select("sku_id", pl.col("category_path").alias("_human_path"))
    out = frame.join(labels, on="sku_id", how="left")
    n = int(out.select(pl.col("_human_path").is_not_null().sum()).item())
    out = out.with_columns(pl.coalesce("_human_path", "category_path").alias("category_path")).drop(
        "_human_path"
    )
    return out, n
