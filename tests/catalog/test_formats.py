"""CSV, Parquet and JSON Lines inputs give the same canonical shards; column mapping by CLI strings."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import SHARD_SCHEMA, CatalogSpec, Quarantine, parse_mapping, read_catalog

COLUMNS = ["sku_id", "title", "description", "brand", "category_path", "image_path"]


@pytest.fixture()
def rows(flipkart_tidy: pl.DataFrame) -> pl.DataFrame:
    return (
        flipkart_tidy.head(60)
        .select(COLUMNS + ["discounted_price_inr"])
        .rename({"discounted_price_inr": "price"})
    )


def _load(path: Path, **kw) -> pl.DataFrame:
    q = Quarantine(None)
    frame = read_catalog(path, quarantine=q, **kw)
    assert q.total == 0, q.records
    return frame


def test_csv_parquet_jsonl_agree(tmp_path: Path, rows: pl.DataFrame, real_data: Path) -> None:
    rows.write_csv(tmp_path / "c.csv")
    rows.write_parquet(tmp_path / "c.parquet")
    rows.write_ndjson(tmp_path / "c.jsonl")
    frames = [_load(tmp_path / f"c.{ext}", images_root=real_data) for ext in ("csv", "parquet", "jsonl")]
    for frame in frames:
        assert frame.schema == pl.Schema(SHARD_SCHEMA)
        assert frame["sku_id"].to_list() == rows["sku_id"].to_list()
        assert frame["row_number"].to_list() == list(range(1, 61))
        assert frame["category_path"].to_list() == rows["category_path"].to_list()
        assert frame["price"].to_list() == rows["price"].to_list()
    assert frames[0]["content_hash"].to_list() == frames[1]["content_hash"].to_list()
    assert frames[0]["content_hash"].to_list() == frames[2]["content_hash"].to_list()
    # images are resolved against images_root to real files
    paths = frames[1]["image_path"].drop_nulls().to_list()
    assert len(paths) >= 58 and all(Path(p).is_file() for p in paths)


def test_mapping_strings_rename_columns(tmp_path: Path, rows: pl.DataFrame) -> None:
    rows.rename({"title": "product_name", "sku_id": "uniq_id", "price": "selling_price"}).write_csv(
        tmp_path / "shop.csv"
    )
    spec = parse_mapping(["title=product_name", "sku_id=uniq_id", "price=selling_price"])
    frame = _load(tmp_path / "shop.csv", spec=spec)
    # titles are one-liners: runs of whitespace become one space ("Watch  - For Men" -> "Watch - For Men")
    assert frame["title"].to_list() == [" ".join(t.split()) for t in rows["title"]]
    assert frame["sku_id"].to_list() == rows["sku_id"].to_list()
    assert frame["price"].to_list() == rows["price"].to_list()


def test_mapping_overrides_a_spec_file(specs_dir: Path) -> None:
    base = CatalogSpec.from_file(specs_dir / "flipkart_raw.yaml")
    spec = parse_mapping(["title=name", "price=a,b", "separator=;", "category_format=path"], base=base)
    assert spec.columns["title"] == "name" and spec.columns["sku_id"] == "uniq_id"
    assert spec.price_columns == ["a", "b"]
    assert spec.csv.separator == ";"
    assert spec.category_format == "path" and spec.truncate_category_to_taxonomy is True


def test_jsonl_with_real_lists_and_numbers(tmp_path: Path, rows: pl.DataFrame, flipkart_taxonomy) -> None:
    """JSON Lines may hold the category tree as a real list and the id as a number."""
    lines = []
    for i, rec in enumerate(rows.head(5).iter_rows(named=True)):
        lines.append(
            json.dumps(
                {
                    "sku_id": 1000 + i,
                    "title": rec["title"],
                    "category_path": [rec["category_path"].replace(" > ", " >> ") + " >> Some Product"],
                }
            )
        )
    (tmp_path / "l.jsonl").write_text("\n".join(lines) + "\n\n")
    spec = CatalogSpec(truncate_category_to_taxonomy=True)
    frame = _load(tmp_path / "l.jsonl", spec=spec, taxonomy=flipkart_taxonomy)
    assert frame["sku_id"].to_list() == ["1000", "1001", "1002", "1003", "1004"]
    assert frame["category_path"].to_list() == rows.head(5)["category_path"].to_list()


def test_latin1_semicolon_csv(tmp_path: Path, rows: pl.DataFrame) -> None:
    text = "sku_id;title;price\nA1;Crème brûlée dish;1.299,00\nA2;Café table;12\n"
    (tmp_path / "eu.csv").write_bytes(text.encode("latin-1"))
    spec = CatalogSpec.model_validate({"csv": {"separator": ";", "encoding": "latin-1"}})
    q = Quarantine(None)
    frame = read_catalog(tmp_path / "eu.csv", spec=spec, quarantine=q)
    assert frame["title"].to_list() == ["Crème brûlée dish", "Café table"]
    assert frame["price"][1] == 12.0
    # "1.299,00" is not a number we can read safely: nulled with a warning, the row is kept
    assert frame["price"][0] is None
    assert q.warning_counts == {"bad_price": 1} and q.total == 0
