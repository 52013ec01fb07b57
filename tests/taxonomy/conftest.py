"""Real taxonomies from the bundled excerpt (tests/data), loaded once per session (Shopify takes ~0.5 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taxonomy import Taxonomy, TaxonomyIndex, load_taxonomy

SHOPIFY_EN = "shopify_categories_2025-01.en.txt"
SHOPIFY_KO = "shopify_categories_2025-01.ko.txt"


@pytest.fixture(scope="session")
def tax_dir(real_data: Path) -> Path:
    return real_data / "taxonomies"


@pytest.fixture(scope="session")
def shopify_en(tax_dir: Path) -> Taxonomy:
    return load_taxonomy(tax_dir / SHOPIFY_EN)


@pytest.fixture(scope="session")
def shopify_ko(tax_dir: Path) -> Taxonomy:
    return load_taxonomy(tax_dir / SHOPIFY_KO)


@pytest.fixture(scope="session")
def shopify_en_ko(shopify_en: Taxonomy, shopify_ko: Taxonomy) -> Taxonomy:
    return shopify_en.with_names(shopify_ko)


@pytest.fixture(scope="session")
def shopify_index(shopify_en_ko: Taxonomy) -> TaxonomyIndex:
    return TaxonomyIndex(shopify_en_ko)
