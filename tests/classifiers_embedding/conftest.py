"""Fixtures for the embedder and embedding-cache tests (real models, real shared data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest


@pytest.fixture(scope="session")
def shared_data(real_data: Path) -> Path:
    """Tests here read the bundled excerpt (tests/data, see SOURCES.md): it holds every file they use.

    Kept under the old name so the test bodies need no change; new code should ask for `real_data`.
    """
    return real_data


class CountingEmbedder:
    """Wraps a real embedder and counts what reaches it (the cache must skip hits)."""

    def __init__(self, inner, *, model_id: str | None = None) -> None:
        self.inner = inner
        self.model_id = model_id or inner.model_id
        self.dim = inner.dim
        self.calls = 0
        self.encoded: list[str] = []

    def encode(self, texts, **kwargs) -> np.ndarray:
        self.calls += 1
        self.encoded.extend(texts)
        return self.inner.encode(texts, **kwargs)


class CountingImageEmbedder:
    """Wraps the real image embedder and counts the files it decodes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.decoded: list[str] = []

    def encode_paths_with_reasons(self, paths):
        self.decoded.extend(str(p) for p in paths)
        return self.inner.encode_paths_with_reasons(paths)


@pytest.fixture()
def counting():
    return CountingEmbedder


@pytest.fixture()
def counting_images():
    return CountingImageEmbedder


@pytest.fixture(scope="session")
def amazon(real_data: Path) -> pl.DataFrame:
    return pl.read_parquet(real_data / "catalogs" / "amazon_uk.parquet")


@pytest.fixture(scope="session")
def flipkart(real_data: Path) -> pl.DataFrame:
    return pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").with_columns(
        pl.when(pl.col("image_path").is_not_null())
        .then(pl.lit(str(real_data) + "/") + pl.col("image_path"))
        .alias("image_file")
    )


@pytest.fixture(scope="session")
def e5():
    from classifiers import make_embedder

    return make_embedder("e5-multilingual")


@pytest.fixture(scope="session")
def image_embedder():
    from classifiers.images import ImageEmbedder

    return ImageEmbedder()
