"""Shards have the requested size; duplicate ids are caught across shard boundaries; reading is lazy."""

from __future__ import annotations

import types
from pathlib import Path

import polars as pl

from shelfwise.catalog import CatalogSpec, Quarantine, iter_catalog


def test_shard_sizes_and_cross_shard_duplicates(tmp_path: Path, flipkart_tidy: pl.DataFrame) -> None:
    base = flipkart_tidy.select("sku_id", "title", "category_path").head(200)
    # rows 201-205 repeat the ids of rows 3, 50, 120, 199, 200 (all in earlier shards)
    dups = base[[2, 49, 119, 198, 199]].with_columns(pl.col("title") + " (re-listed)")
    frame = pl.concat([base, dups, flipkart_tidy.select("sku_id", "title", "category_path")[200:230]])
    frame.write_parquet(tmp_path / "c.parquet", row_group_size=64)
    q = Quarantine(None)
    shards = iter_catalog(tmp_path / "c.parquet", quarantine=q, shard_size=48)
    assert isinstance(shards, types.GeneratorType)
    heights = [s.height for s in shards]
    assert heights == [48, 48, 48, 48, 38]  # 235 rows - 5 duplicates = 230
    assert [(r["row_number"], r["value"]) for r in q.records] == [
        (201, 3),
        (202, 50),
        (203, 120),
        (204, 199),
        (205, 200),
    ]
    assert q.counts == {"duplicate_sku_id": 5}


def test_streaming_csv_in_shards(
    tmp_path: Path, flipkart_raw_path: Path, specs_dir: Path, flipkart_taxonomy
) -> None:
    spec = CatalogSpec.from_file(specs_dir / "flipkart_raw.yaml")
    shards = iter_catalog(flipkart_raw_path, spec=spec, taxonomy=flipkart_taxonomy, shard_size=100)
    first = next(shards)  # a shard is available before the file is read to the end
    assert first.height == 100 and first["row_number"].to_list() == list(range(1, 101))
    rest = list(shards)
    assert [s.height for s in rest] == [100, 3]  # the excerpt has 203 rows (tests/data/SOURCES.md)
    rows = pl.concat([first, *rest])["row_number"].to_list()
    assert rows == list(range(1, 204))
