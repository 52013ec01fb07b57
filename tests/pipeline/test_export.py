"""Export predictions to another taxonomy: a Shopify-classified sample of real products -> Google."""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl
import pytest

from shelfwise.errors import ConfigError
from shelfwise.pipeline import add_export_columns, check_export_flags
from taxonomy import TaxonomyIndex, load_taxonomy

TAX = "taxonomies"
SHOPIFY = "shopify_categories_2025-01.en.txt"
GOOGLE = "google_product_taxonomy_2021-09-21.en-US.csv"
MAPPING = "shopify_2025-01_to_google_2021-09-21.csv"


def test_google_export_of_a_shopify_classified_sample_agrees_with_the_mapping_file(
    real_data: Path, tmp_path: Path
) -> None:
    shopify = load_taxonomy(real_data / TAX / SHOPIFY)
    # Real Flipkart titles classified into Shopify by the taxonomy search (the first word that finds a node),
    # plus a few categories the mapping file does not list, as predictions files carry them.
    products = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").head(120)
    index = TaxonomyIndex(shopify)
    ids: list[str | None] = []
    for title in products["title"].to_list():
        hit = next((h for word in title.split() if len(word) > 3 for h in index.search(word, limit=1)), None)
        ids.append(hit.node.id if hit else None)
    extra = [shopify.find_path(p) for p in ("Services", "Product Add-Ons > Extended Warranties")]
    ids += [n.id for n in extra if n is not None]
    pred = pl.DataFrame(
        {"sku_id": [f"s{i}" for i in range(len(ids))], "category_id": ids, "confidence": [0.9] * len(ids)}
    )
    path = tmp_path / "pred.parquet"
    pred.write_parquet(path)

    counts = add_export_columns(
        path,
        source=shopify,
        export_taxonomy=real_data / TAX / GOOGLE,
        export_mapping=real_data / TAX / MAPPING,
    )

    out = pl.read_parquet(path)
    assert out.select("sku_id", "category_id", "confidence").equals(pred)  # nothing else changed
    with (real_data / TAX / MAPPING).open(encoding="utf-8") as fh:
        pairs = {r["shopify_full_path"]: r["google_full_path"] for r in csv.DictReader(fh)}
    google = load_taxonomy(real_data / TAX / GOOGLE)
    for row in out.iter_rows(named=True):
        if row["category_id"] is None:
            assert row["export_mapping_status"] == "unmapped" and row["export_category_id"] is None
            continue
        node = shopify.get(row["category_id"])
        listed = [a.path for a in shopify.ancestors(node.id) if a.path in pairs]
        if node.path in pairs:
            assert row["export_mapping_status"] == "mapped"
            assert row["export_category_path"] == pairs[node.path]
        elif listed:
            assert row["export_mapping_status"] == "ancestor"
            assert row["export_category_path"] == pairs[listed[-1]]
        else:
            assert row["export_mapping_status"] == "unmapped" and row["export_category_path"] is None
            continue
        assert google.get(row["export_category_id"]).path == row["export_category_path"]
    assert (
        sum(counts.values()) == out.height and counts.get("mapped", 0) > 0 and counts.get("unmapped", 0) >= 1
    )


def test_export_flags_come_in_pairs_and_name_missing_files(tmp_path: Path) -> None:
    assert check_export_flags(None, None) is False
    with pytest.raises(ConfigError, match="go together"):
        check_export_flags(tmp_path / "google.csv", None)
    with pytest.raises(ConfigError, match="--export-mapping .*no such file"):
        (tmp_path / "google.csv").write_text("google_id,full_path\n1,A\n")
        check_export_flags(tmp_path / "google.csv", tmp_path / "missing.csv")
