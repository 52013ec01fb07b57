"""The real messy Flipkart export loads through data/specs/flipkart_raw.yaml alone."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import CatalogSpec, Quarantine, read_catalog


@pytest.fixture(scope="module")
def loaded(flipkart_raw_path: Path, specs_dir: Path, flipkart_taxonomy) -> tuple[pl.DataFrame, Quarantine]:
    q = Quarantine(None)
    spec = CatalogSpec.from_file(specs_dir / "flipkart_raw.yaml")
    frame = read_catalog(
        flipkart_raw_path, spec=spec, taxonomy=flipkart_taxonomy, quarantine=q, shard_size=250
    )
    return frame, q


def test_every_row_loads(loaded, flipkart_raw_path: Path) -> None:
    frame, q = loaded
    source_rows = pl.scan_csv(flipkart_raw_path, infer_schema=False).select(pl.len()).collect().item()
    assert (
        source_rows == 203
    )  # the excerpt: 200 first records + the 3 without a photo (tests/data/SOURCES.md)
    assert frame.height == source_rows - q.total
    assert q.total == 0, q.records[:3]
    assert frame["sku_id"].n_unique() == frame.height


def test_categories_match_the_tidy_table(loaded, flipkart_tidy: pl.DataFrame) -> None:
    """Product-name levels are cut back to the taxonomy: same paths as the curated flipkart.parquet."""
    frame, _ = loaded
    joined = frame.join(flipkart_tidy.select("sku_id", pl.col("category_path").alias("want")), on="sku_id")
    assert joined.height == frame.height
    same = (joined["category_path"] == joined["want"]).sum()
    assert same >= 0.99 * joined.height, joined.filter(pl.col("category_path") != pl.col("want")).head(5)
    assert not frame["category_path"].str.contains(">>").any()


def test_attributes_prices_images(loaded, flipkart_tidy: pl.DataFrame, flipkart_raw_path: Path) -> None:
    frame, q = loaded
    row = frame.filter(pl.col("sku_id") == "55b85ea15a1536d46b7190ad6fff8ce7").row(0, named=True)
    assert row["attributes"].startswith("Brand: Elegance; Designed For: Door; Type: Eyelet;")
    assert row["price"] == 899.0  # discounted_price wins over retail_price (1899)
    assert row["title"] == "Elegance Polyester Multicolor Abstract Eyelet Door Curtain"
    assert "=>" not in "".join(frame["attributes"].drop_nulls().to_list())
    # prices: discounted, else retail, exactly as the tidy table has them
    want = flipkart_tidy.select("sku_id", pl.coalesce("discounted_price_inr", "retail_price_inr").alias("p"))
    j = frame.join(want, on="sku_id")
    assert ((j["price"] == j["p"]) | (j["price"].is_null() & j["p"].is_null())).all()
    # images: resolved through images_root in the spec to the photos next to the catalogs; 3 do not exist
    images = frame["image_path"].drop_nulls()
    assert images.len() == frame.height - 3 and all(Path(p).is_file() for p in images.to_list()[:50])
    assert q.warning_counts["image_not_found"] == 3
    # "No rating available" is a null value, real ratings are numbers
    raw = pl.read_csv(flipkart_raw_path, infer_schema=False)
    rated = raw.filter(pl.col("product_rating") != "No rating available")
    assert frame["rating_mean"].drop_nulls().len() == rated.height > 0
    assert sorted(frame["rating_mean"].drop_nulls().to_list()) == sorted(rated["product_rating"].cast(float))
    assert q.warning_counts.get("bad_rating", 0) == 0


def test_same_products_as_the_tidy_table_hash_the_same(loaded, real_data: Path, specs_dir: Path) -> None:
    """The content hash ignores where the export came from: raw CSV and tidy Parquet agree."""
    frame, _ = loaded
    tidy = read_catalog(
        real_data / "catalogs" / "flipkart.parquet", spec=CatalogSpec.from_file(specs_dir / "flipkart.yaml")
    )
    j = frame.join(
        tidy.select("sku_id", pl.col("content_hash").alias("h2"), pl.col("image_path").alias("i2")),
        on="sku_id",
    )
    both_have_image = j.filter(pl.col("i2").is_not_null())
    assert both_have_image.height == frame.height - 3
    assert (both_have_image["content_hash"] == both_have_image["h2"]).all()
    assert (both_have_image["image_path"] == both_have_image["i2"]).all()
    # the 3 products whose photo is missing: the raw export still names a file, the tidy table does not
    assert (j.filter(pl.col("i2").is_null())["content_hash"] != j.filter(pl.col("i2").is_null())["h2"]).all()
