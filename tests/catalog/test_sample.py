"""The bundled demo sample (data/sample) loads as the README promises and is rebuilt exactly by its script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import Quarantine, read_catalog


@pytest.fixture(scope="module")
def sample(sample_data: Path) -> Path:
    return sample_data / "sample"


def test_sample_is_small(sample: Path) -> None:
    size = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert size < 3_000_000, f"data/sample is {size / 1e6:.2f} MB"


def test_sample_catalog_loads(sample: Path) -> None:
    from taxonomy import load_taxonomy

    tax = load_taxonomy(sample / "taxonomy.txt")
    q = Quarantine(None)
    catalog = read_catalog(sample / "catalog.csv", taxonomy=tax, quarantine=q)
    assert catalog.height == 151
    assert q.counts == {"missing_sku_id": 1, "no_text": 1, "duplicate_sku_id": 1}
    assert q.warning_counts == {"bad_price": 1}
    # images sit next to the catalog (default images_root = the catalog's folder), all found
    assert catalog["image_path"].null_count() == 0
    assert all(Path(p).is_file() for p in catalog["image_path"])
    assert all(tax.find_path(p) is not None for p in catalog["category_path"])
    labelled = read_catalog(sample / "labelled.parquet", taxonomy=tax)
    assert labelled.height == 450 and labelled["category_path"].null_count() == 0
    assert not set(labelled["sku_id"]) & set(catalog["sku_id"])
    # the answer key: ~10% misfiled, each filed under a different top-level category than the truth
    misfiled = pl.read_csv(sample / "misfiled.csv")
    assert misfiled.height == 15
    filed = dict(zip(catalog["sku_id"], catalog["category_path"], strict=True))
    for row in misfiled.iter_rows(named=True):
        assert filed[row["sku_id"]] == row["category_path"]
        assert row["category_path"].split(" > ")[0] != row["true_category_path"].split(" > ")[0]
    # every true category of the catalog is learnable from the labelled set
    truth = {**filed, **dict(zip(misfiled["sku_id"], misfiled["true_category_path"], strict=True))}
    assert set(truth.values()) <= set(labelled["category_path"])


def _script(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_sample_rebuilds_the_bundled_files(sample: Path, real_data: Path, tmp_path: Path) -> None:
    """The demo sample is rebuilt from the bundled excerpt too (it holds the whole Flipkart table)."""
    _script(sample / "make_sample.py").build(real_data, tmp_path)
    for name in ("catalog.csv", "labelled.parquet", "misfiled.csv", "taxonomy.txt"):
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        p.name for p in (sample / "images").iterdir()
    )


@pytest.mark.full_data
def test_test_excerpt_rebuilds_from_the_shared_folder(
    real_data: Path, shared_data: Path, tmp_path: Path
) -> None:
    """Full-data test: tests/data is exactly what make_excerpt.py cuts from ../shared/data."""
    _script(real_data / "make_excerpt.py").build(shared_data, tmp_path)
    bundled = sorted(p.relative_to(real_data) for p in real_data.rglob("*") if p.is_file())
    rebuilt = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert rebuilt == [p for p in bundled if p.parts[0] in ("catalogs", "taxonomies", "images")]
    for rel in rebuilt:
        if rel.suffix == ".parquet":  # Parquet metadata names the writer's version: compare the tables
            assert pl.read_parquet(tmp_path / rel).equals(pl.read_parquet(real_data / rel)), rel
        elif rel.parts[0] != "images":  # JPEG bytes depend on the Pillow version; names are checked above
            assert (tmp_path / rel).read_bytes() == (real_data / rel).read_bytes(), rel


def test_test_excerpt_is_small(real_data: Path) -> None:
    size = sum(p.stat().st_size for p in real_data.rglob("*") if p.is_file())
    assert size < 9_000_000, f"tests/data is {size / 1e6:.2f} MB"
