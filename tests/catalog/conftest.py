"""Fixtures of the catalog tests: the real Flipkart taxonomy and tables from the excerpt (tests/data)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest


@pytest.fixture(scope="session")
def flipkart_taxonomy(real_data: Path):
    from taxonomy import load_taxonomy

    return load_taxonomy(real_data / "taxonomies" / "flipkart_categories.txt")


@pytest.fixture(scope="session")
def flipkart_tidy(real_data: Path) -> pl.DataFrame:
    return pl.read_parquet(real_data / "catalogs" / "flipkart.parquet")


@pytest.fixture(scope="session")
def flipkart_raw_path(real_data: Path) -> Path:
    return real_data / "catalogs" / "flipkart_raw.csv"


@pytest.fixture(scope="session")
def specs_dir(repo_root: Path) -> Path:
    return repo_root / "data" / "specs"
