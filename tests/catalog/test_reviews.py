"""Reviews aggregate per SKU; a catalog of only ids and categories gets its text from the reviews."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import REVIEWS_SCHEMA, Quarantine, load_reviews, read_catalog


@pytest.fixture(scope="module")
def reviews_path(real_data: Path) -> Path:
    return real_data / "catalogs" / "womens_clothing_reviews.parquet"


def test_aggregation(reviews_path: Path) -> None:
    raw = pl.read_parquet(reviews_path)
    q = Quarantine(None)
    agg = load_reviews(reviews_path, quarantine=q, max_reviews=5, max_chars=800)
    assert agg.schema == pl.Schema(REVIEWS_SCHEMA)
    usable = raw.filter(pl.col("review_text").is_not_null() | pl.col("review_title").is_not_null())
    # rows with neither title nor text are quarantined, one record each
    assert q.counts == {"no_text": raw.height - usable.height}
    assert agg.height == usable["sku_id"].n_unique()
    assert agg["review_count"].sum() == usable.height
    want = usable.group_by("sku_id").agg(pl.col("rating").mean().alias("want"), pl.len().alias("n"))
    j = agg.join(want, on="sku_id")
    assert (j["rating_mean"] - j["want"]).abs().max() < 1e-9
    assert (j["review_count"] == j["n"]).all()
    assert agg["review_text"].str.len_chars().max() <= 800
    # at most 5 reviews each, "Title. Text" per line, in file order
    assert agg["review_text"].str.count_matches("\n").max() <= 4
    sku_858 = agg.filter(pl.col("sku_id") == "858")["review_text"].item()  # 21 reviews
    assert sku_858.startswith("Cagrcoal shimmer fun. I aded this in my basket at hte last mintue")


def test_catalog_of_ids_and_categories_loads_with_reviews(tmp_path: Path, reviews_path: Path) -> None:
    raw = pl.read_parquet(reviews_path)
    catalog = raw.group_by("sku_id", maintain_order=True).agg(pl.col("category_path").first())
    catalog.write_csv(tmp_path / "products.csv")
    q = Quarantine(tmp_path / "q.jsonl")
    frame = read_catalog(tmp_path / "products.csv", reviews=reviews_path, quarantine=q)
    q.close()
    # every SKU with at least one usable review loads, with text from its reviews
    with_text = raw.filter(pl.col("review_text").is_not_null() | pl.col("review_title").is_not_null())
    assert frame.height == with_text["sku_id"].n_unique() > 0
    assert frame["review_text"].null_count() == 0 and frame["title"].null_count() == frame.height
    assert frame["review_count"].min() >= 1
    # the others are quarantined as no_text; the review rows without text are quarantined too
    no_text = [r for r in Quarantine.read(tmp_path / "q.jsonl") if r["reason"] == "no_text"]
    catalog_rows = [r for r in no_text if r["file"].endswith("products.csv")]
    assert len(catalog_rows) == catalog.height - frame.height > 0
    assert all(r["raw"]["category_path"] for r in catalog_rows)
