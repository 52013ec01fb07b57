"""File-level problems raise CatalogError / ConfigError with the file, the column, what was found, the fix."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import CatalogSpec, parse_mapping, read_catalog
from shelfwise.errors import CatalogError, ConfigError


def test_missing_text_column_names_the_fix(tmp_path: Path, flipkart_raw_path: Path) -> None:
    """The raw Flipkart export without a spec: no title/description/review_text column under those names."""
    frame = pl.read_csv(flipkart_raw_path, infer_schema=False, n_rows=5).drop("description")
    path = tmp_path / "export.csv"
    frame.rename({"uniq_id": "sku_id"}).write_csv(path)
    with pytest.raises(CatalogError) as info:
        read_catalog(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "title" in msg and "product_name" in msg  # the columns found are listed
    assert "--map title=<your column>" in msg
    assert "candidates: product_name" in msg


def test_missing_sku_id_column(tmp_path: Path, flipkart_raw_path: Path) -> None:
    path = tmp_path / "export.csv"
    pl.read_csv(flipkart_raw_path, infer_schema=False, n_rows=3).write_csv(path)
    with pytest.raises(CatalogError, match=r"required column 'sku_id' not found.*uniq_id.*--map sku_id="):
        read_catalog(path, spec=parse_mapping(["title=product_name"]))


def test_mapped_column_typo_is_loud(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,name\n1,Lamp\n")
    with pytest.raises(
        CatalogError, match=r"mapped \(title=nmae\) column 'nmae' not found; columns found: id, name"
    ):
        read_catalog(tmp_path / "c.csv", spec=parse_mapping(["sku_id=id", "title=nmae"]))


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(CatalogError, match=r"c\.xlsx.*format: csv\|parquet\|jsonl"):
        read_catalog(tmp_path / "c.xlsx")
    with pytest.raises(CatalogError, match="file not found"):
        read_catalog(tmp_path / "nope.csv")


def test_bad_spec_file(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("columns:\n  titel: name\ncategory_format: jsonlist\nshard: 3\n")
    with pytest.raises(ConfigError) as info:
        CatalogSpec.from_file(spec)
    msg = str(info.value)
    assert str(spec) in msg
    assert "unknown canonical column 'titel'" in msg and "allowed: sku_id, title" in msg
    assert "category_format" in msg and "'jsonlist'" in msg
    assert "shard: unknown setting" in msg


def test_bad_mapping_strings() -> None:
    with pytest.raises(ConfigError, match=r"expected canonical=source_column"):
        parse_mapping(["title"])
    with pytest.raises(ConfigError, match=r"unknown key 'titel'; allowed: .*title"):
        parse_mapping(["titel=name"])


def test_ragged_csv(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("sku_id,title\n1,Lamp\n2,Chair,extra,fields\n")
    with pytest.raises(CatalogError, match=r"r\.csv: reading failed"):
        read_catalog(tmp_path / "r.csv")


def test_wrong_encoding_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "l1.csv").write_bytes("sku_id,title\n1,Crème brûlée dish\n".encode("latin-1"))
    with pytest.raises(CatalogError, match=r"l1\.csv.*not UTF-8.*--map encoding=latin-1"):
        read_catalog(tmp_path / "l1.csv")
    assert (
        read_catalog(tmp_path / "l1.csv", spec=parse_mapping(["encoding=latin-1"]))["title"][0]
        == "Crème brûlée dish"
    )
