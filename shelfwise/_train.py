"""Training: a labelled catalog (plus reviewers' decisions from the queue) -> a model folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise._stage import iter_shards
from shelfwise.errors import ConfigError, ModelError
from shelfwise.settings import Settings

__all__ = ["MODEL_TAXONOMY_DIR", "TrainSummary", "load_model_taxonomy", "train"]

MODEL_TAXONOMY_DIR = "taxonomy"


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


def _copy_taxonomy(taxonomy_path: Path, model_dir: Path, taxonomy_format: str | None) -> None:
    dest = model_dir / MODEL_TAXONOMY_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(taxonomy_path, dest / taxonomy_path.name)
    (dest / "source.json").write_text(
        json.dumps({"file": taxonomy_path.name, "format": taxonomy_format, "original": str(taxonomy_path)})
    )


def load_model_taxonomy(model_dir: Path) -> Any:
    from taxonomy import load_taxonomy

    meta_path = model_dir / MODEL_TAXONOMY_DIR / "source.json"
    if not meta_path.exists():
        raise ModelError(
            f"model directory {model_dir} has no taxonomy ({meta_path} missing); "
            f"train a model first: shelfwise train --taxonomy T --catalog LABELLED --model-dir {model_dir}"
        )
    meta = json.loads(meta_path.read_text())
    tax = load_taxonomy(model_dir / MODEL_TAXONOMY_DIR / meta["file"], format=meta.get("format"))
    from shelfwise._migrate import with_aliases

    return with_aliases(model_dir / MODEL_TAXONOMY_DIR, tax)  # OLD paths after a taxonomy migration


def train(
    *,
    taxonomy_path: str | Path,
    catalog: str | Path,
    model_dir: str | Path,
    settings: Settings,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
    taxonomy_format: str | None = None,
    use_human_labels: bool = True,
    progress: Callable[[int], None] | None = None,
    relabel: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> TrainSummary:
    """Train a model on a labelled catalog (plus human decisions from the queue) into ``model_dir``.

    ``relabel`` rewrites the catalog's labels first (a taxonomy migration maps OLD paths to NEW ones).
    """
    from classifiers import make_embedder, open_embedding_cache
    from classifiers.model import CategoryModel
    from shelfwise.catalog import Quarantine
    from taxonomy import load_taxonomy

    taxonomy_path = Path(taxonomy_path)
    model_dir = Path(model_dir)
    tax = load_taxonomy(taxonomy_path, format=taxonomy_format)
    model_dir.mkdir(parents=True, exist_ok=True)
    qpath = model_dir / "train_quarantine.jsonl"
    quarantine = Quarantine(qpath)
    frames = []
    for shard in iter_shards(
        catalog,
        settings=settings,
        taxonomy=tax,
        quarantine=quarantine,
        reviews=reviews,
        images_root=images_root,
        spec=spec,
        mapping=mapping,
    ):
        frames.append(shard)
        if progress:
            progress(shard.height)
    quarantine.close()
    if not frames:
        raise ConfigError(f"catalog {catalog}: no usable rows to train on (see {qpath})")
    frame = pl.concat(frames, how="vertical_relaxed")
    if relabel is not None:
        frame = relabel(frame)
    human = 0
    if use_human_labels:
        frame, human = _apply_human_labels(frame, settings)
    labelled = frame.filter(pl.col("category_path").is_not_null())
    if labelled.height < 2:
        raise ConfigError(
            f"catalog {catalog}: {labelled.height} rows have a category_path; training needs labelled rows "
            "(map your label column with --map category_path=<column>)"
        )
    embedder = make_embedder(settings.embedder)
    cache = open_embedding_cache(settings.embedding_cache)
    image_embedder = _image_embedder(settings)
    model = CategoryModel(
        use_images=settings.use_images,
        use_price=settings.use_price,
        random_state=0,
        target_precision=settings.target_precision,
    )
    model.fit(labelled, tax, embedder=embedder, cache=cache, image_embedder=image_embedder)
    model.save(model_dir)
    _copy_taxonomy(taxonomy_path, model_dir, taxonomy_format)
    from verification.audit_bar import STATE_FILE, reset_bars

    reset_bars(settings.state_dir / STATE_FILE)  # a new model: the audit judges it afresh
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
    store = _queue_store(settings, create=False)
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


def _image_embedder(settings: Settings) -> Any:
    if not settings.use_images:
        return None
    from classifiers.images import ImageEmbedder

    return ImageEmbedder()


def _queue_store(settings: Settings, *, create: bool = True) -> Any:
    from verification.store import QueueStore

    url = settings.queue_url or ""
    if url.startswith("sqlite:///"):
        db = Path(url.removeprefix("sqlite:///"))
        if not create and not db.exists():
            return None
        db.parent.mkdir(parents=True, exist_ok=True)
    store = QueueStore(url)  # the store's first write migrates the schema; reads never do
    if not create and store.schema_revision() is None:  # nothing was ever queued: read as empty
        store.close()
        return None
    return store
