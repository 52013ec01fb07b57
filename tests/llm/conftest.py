"""Fixtures of the LLM arbiter tests: the real Amazon UK taxonomy + products, and a fake OpenAI server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_openai import FakeOpenAI


@pytest.fixture(scope="session")
def amazon_tax_path(real_data: Path) -> Path:
    return real_data / "taxonomies" / "amazon_uk_categories.txt"


@pytest.fixture(scope="session")
def amazon_tax(amazon_tax_path: Path) -> Any:
    from taxonomy import load_taxonomy

    return load_taxonomy(amazon_tax_path)


@pytest.fixture(scope="session")
def amazon_items(real_data: Path, amazon_tax: Any) -> pl.DataFrame:
    """24 real labelled Amazon UK products with hand-built candidates: [true leaf, 2 other leaves].

    Columns as `LLMArbiter.decide` expects, plus `true_id` (the labelled category's id).
    """
    cat = pl.read_parquet(real_data / "catalogs" / "amazon_uk.parquet")
    cat = cat.filter(pl.col("category_path").is_not_null()).unique(
        "category_path", keep="first", maintain_order=True
    )
    leaves = [n for n in amazon_tax.leaves()]
    rows = []
    for r in cat.iter_rows(named=True):
        node = amazon_tax.find_path(r["category_path"])
        if node is None or not node.is_leaf:
            continue
        others = [
            n for n in leaves if n.id != node.id and n.path.split(" > ")[0] != node.path.split(" > ")[0]
        ][len(rows) % 7 :: 37][:2]
        cands = [{"category_id": node.id, "category_path": node.path, "score": 0.45}] + [
            {"category_id": o.id, "category_path": o.path, "score": 0.3 - 0.1 * i}
            for i, o in enumerate(others)
        ]
        rows.append(
            {
                "sku_id": r["sku_id"],
                "title": r["title"],
                "description": None,
                "brand": r["brand"],
                "attributes": f"price: {r['price_gbp']} GBP" if r["price_gbp"] is not None else None,
                "review_text": None,
                "candidates": cands,
                "confidence": 0.45,
                "true_id": node.id,
            }
        )
        if len(rows) == 24:
            break
    return pl.DataFrame(rows)


@pytest.fixture()
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    return tmp_path / "llm.sqlite"
