"""Real Flipkart rows and one trained CategoryModel shared by the model tests."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

_SPEC = re.compile(r'"key"=>"(.*?)",\s*"value"=>"(.*?)"')


def _attributes(raw: str | None) -> str:
    return "; ".join(f"{k}: {v}" for k, v in _SPEC.findall(raw or ""))


@pytest.fixture(scope="session")
def flipkart_frame(real_data: Path) -> pl.DataFrame:
    """flipkart.parquet in canonical catalog columns (attributes parsed from the specifications)."""
    df = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet")
    return df.select(
        "sku_id",
        "title",
        "description",
        "brand",
        "category_path",
        "image_path",
        pl.col("retail_price_inr").alias("price"),
        pl.col("product_specifications")
        .map_elements(_attributes, return_dtype=pl.String)
        .alias("attributes"),
    )


@pytest.fixture(scope="session")
def flipkart_taxonomy(real_data: Path):
    from taxonomy import load_taxonomy

    return load_taxonomy(real_data / "taxonomies" / "flipkart_categories.txt")


@pytest.fixture(scope="session")
def flipkart_split(flipkart_frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Classes with >= 10 rows, minus watches (kept apart for the zero-shot test): 70/30 per class."""
    counts = flipkart_frame.group_by("category_path").len()
    big = counts.filter(pl.col("len") >= 10).get_column("category_path").to_list()
    rows = flipkart_frame.filter(pl.col("category_path").is_in(big))
    watches = rows.filter(pl.col("category_path").str.starts_with("Watches"))
    rows = rows.filter(~pl.col("category_path").str.starts_with("Watches"))
    rng = np.random.default_rng(0)
    test_mask = np.zeros(rows.height, dtype=bool)
    labels = np.asarray(rows.get_column("category_path").to_list(), dtype=object)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        test_mask[rng.choice(idx, size=max(2, round(0.3 * len(idx))), replace=False)] = True
    return {
        "train": rows.filter(pl.Series(~test_mask)),
        "test": rows.filter(pl.Series(test_mask)),
        "watches": watches.head(25),
    }


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory: pytest.TempPathFactory):
    from classifiers import EmbeddingCache

    return EmbeddingCache(tmp_path_factory.mktemp("model-cache") / "embeddings.sqlite")


@pytest.fixture(scope="session")
def trained(flipkart_split, flipkart_taxonomy, minilm, embedding_cache):
    """A CategoryModel trained on ~260 real Flipkart rows (title, brand, attributes), 3 folds."""
    from classifiers.model import CategoryModel

    model = CategoryModel(text_fields=("title", "brand", "attributes"), cv=3, random_state=0, use_price=True)
    return model.fit(flipkart_split["train"], flipkart_taxonomy, embedder=minilm, cache=embedding_cache)
