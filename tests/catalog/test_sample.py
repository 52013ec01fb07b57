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


def test_make_sample_rebuilds_the_bundled_files(sample: Path, shared_data: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_sample", sample / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(shared_data, tmp_path)
    for name in ("catalog.csv", "labelled.parquet", "misfiled.csv", "taxonomy.txt"):
        assert (tmp_path / name).read_bytes() == (sample / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        p.name for p in (sample / "images").iterdir()
    )
