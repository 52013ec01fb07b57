"""Incremental nights on real products (plain functions, no Prefect): only new and changed SKUs are scored,
every SKU is still in predictions.parquet, and identical contents are scored once."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shelfwise import night, pipeline
from shelfwise.settings import Settings
from shelfwise.summary import RunSummary

KEEP = ["sku_id", "category_id", "category_path", "confidence", "route", "candidates", "margin", "reason"]


@pytest.fixture(scope="module")
def flipkart(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model trained on 500 real Flipkart products; tonight's catalog is the other 239 plus 60 copies
    of 30 of them under new SKU ids (same content: a shop listing one product under several SKUs)."""
    work = tmp_path_factory.mktemp("incremental")
    df = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").sample(
        fraction=1.0, shuffle=True, seed=3
    )
    labelled, tonight = df.head(500), df.slice(500)
    labelled.write_parquet(work / "labelled.parquet")
    copies = pl.concat([tonight.head(30).with_columns(pl.col("sku_id") + f"-copy{i}") for i in (1, 2)])
    cols = ["sku_id", "title", "description", "brand", "category_path"]
    pl.concat([tonight, copies]).select(cols).write_parquet(work / "night.parquet")
    settings = Settings(state_dir=work / "train-state")
    pipeline.train(
        taxonomy_path=real_data / "taxonomies" / "flipkart_categories.txt",
        catalog=work / "labelled.parquet",
        model_dir=work / "model",
        settings=settings,
    )
    return {
        "work": work,
        "model": work / "model",
        "night": work / "night.parquet",
        "labelled": work / "labelled.parquet",
        "taxonomy": real_data / "taxonomies" / "flipkart_categories.txt",
    }


def _night(
    fk: dict[str, Path], settings: Settings, catalog: Path, out: Path, model: Path | None = None
) -> tuple[RunSummary, pl.DataFrame]:
    summary = night.classify_catalog(
        model_dir=model or fk["model"], catalog=catalog, out=out, settings=settings
    )
    return summary, pl.read_parquet(out).sort("sku_id")


def test_unchanged_skus_keep_their_prediction_and_only_changes_are_scored(
    flipkart: dict[str, Path], tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path / "state", shard_size=1000)  # one shard: copies meet originals
    catalog = pl.read_parquet(flipkart["night"])
    n = catalog.height

    first, p1 = _night(flipkart, settings, flipkart["night"], tmp_path / "n1.parquet")
    assert first.incremental.mode == "full" and "first night" in first.incremental.reason
    assert first.counts.rescored == first.counts.classified == n and first.counts.carried == 0
    # the 60 copies share their content with 30 originals: 239 distinct contents scored, not 299
    # (identical contents are scored once per shard)
    assert first.counts.distinct_scored == catalog["title"].n_unique() <= n - 60
    copies = p1.filter(pl.col("sku_id").str.contains("-copy"))
    originals = p1.join(copies.select(pl.col("sku_id").str.replace(r"-copy\d$", "")), on="sku_id", how="semi")
    assert copies.height == 60 and originals.height == 30
    by_orig = dict(zip(originals["sku_id"], originals["confidence"], strict=True))
    assert all(
        by_orig[s.rsplit("-copy", 1)[0]] == c
        for s, c in zip(copies["sku_id"], copies["confidence"], strict=True)
    )

    # Same catalog the next night: nothing embedded or scored, every SKU still predicted, same answers.
    second, p2 = _night(flipkart, settings, flipkart["night"], tmp_path / "n2.parquet")
    assert second.incremental.mode == "incremental", second.incremental.reason
    assert second.counts.carried == n and second.counts.rescored == 0 and second.shards == 0
    assert second.embedding.hits + second.embedding.misses == 0
    assert p2.height == n and p2["sku_id"].n_unique() == n
    assert p2.select(KEEP).equals(p1.select(KEEP))
    assert set(p2["run_id"]) == {second.run_id} and set(p2["scored_run_id"]) == {first.run_id}
    assert second.counts.auto + second.counts.review + second.counts.suspect == n
    assert sum(second.counts.queued.values()) == 0, "carried rows were queued the night they were scored"

    # 1 product's text changes and 2 are moved to another category upstream: only those 3 are re-scored.
    changed = catalog["sku_id"][5]
    moved = catalog["sku_id"][6:8].to_list()
    other = catalog.filter(~pl.col("category_path").is_in(catalog["category_path"][6:8].to_list()))[
        "category_path"
    ][0]
    third_cat = catalog.with_columns(
        pl.when(pl.col("sku_id") == changed)
        .then(pl.lit("Stainless steel water bottle, 1 litre"))
        .otherwise(pl.col("title"))
        .alias("title"),
        pl.when(pl.col("sku_id").is_in(moved))
        .then(pl.lit(other))
        .otherwise(pl.col("category_path"))
        .alias("category_path"),
    )
    third_cat.write_parquet(tmp_path / "night3.parquet")
    third, p3 = _night(flipkart, settings, tmp_path / "night3.parquet", tmp_path / "n3.parquet")
    assert third.incremental.mode == "incremental"
    assert third.counts.rescored == 3 and third.counts.carried == n - 3
    assert third.counts.changed == 1 and third.counts.unchanged == n - 1
    rescored = set(p3.filter(pl.col("scored_run_id") == third.run_id)["sku_id"])
    assert rescored == {changed, *moved}
    assert (
        p3.height == n
        and p3.filter(pl.col("sku_id").is_in(moved))["current_category_path"].to_list() == [other] * 2
    )
    assert p3.filter(pl.col("sku_id") == changed)["title"].item() == "Stainless steel water bottle, 1 litre"


def test_a_new_model_rescores_everything_and_says_why(flipkart: dict[str, Path], tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", shard_size=100)
    first, _ = _night(flipkart, settings, flipkart["night"], tmp_path / "n1.parquet")
    pipeline.train(
        taxonomy_path=flipkart["taxonomy"],
        catalog=flipkart["labelled"],
        model_dir=tmp_path / "model2",
        settings=Settings(state_dir=tmp_path / "train2", target_precision=0.9),
    )
    second, p2 = _night(
        flipkart, settings, flipkart["night"], tmp_path / "n2.parquet", model=tmp_path / "model2"
    )
    assert second.model_version != first.model_version
    assert second.incremental.mode == "full" and "new model" in second.incremental.reason
    assert second.counts.carried == 0 and second.counts.rescored == p2.height
    assert set(p2["model_version"]) == {second.model_version}

    # routing settings are part of what a carried prediction was made with
    stricter = Settings(state_dir=tmp_path / "state", shard_size=100, auto_threshold=0.99)
    third, p3 = _night(
        flipkart, stricter, flipkart["night"], tmp_path / "n3.parquet", model=tmp_path / "model2"
    )
    assert third.incremental.mode == "full" and "routing settings changed" in third.incremental.reason
    assert (p3["route"] == "auto").sum() <= (p2["route"] == "auto").sum()
    # the summary on disk is the typed one, and keeps the keys older readers use
    disk = RunSummary.load(settings.runs_dir / third.run_id / "summary.json")
    assert disk.incremental.reason == third.incremental.reason and disk["counts"]["classified"] == p3.height
