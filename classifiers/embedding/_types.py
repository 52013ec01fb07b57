"""What the embedders, the embedding caches and their callers share (internal; re-exported by
:mod:`classifiers.embedding`). It imports nothing of ours, so every embedding module can import it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "SCHEMA_VERSION",
    "CacheStats",
    "Embedder",
    "ImageBatch",
    "ImageEncoder",
    "ProgressCallback",
    "text_key",
]

#: The embedding cache's table layout (SQLite file and PostgreSQL schema alike).
SCHEMA_VERSION = 1

#: ``progress(done, total)``, called after each encoded batch.
ProgressCallback = Callable[[int, int], None]


def text_key(text: str) -> bytes:
    """The cache key of a text: sha256 of its UTF-8 bytes (exact text, no normalisation)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@runtime_checkable
class Embedder(Protocol):
    """What the cache and the category model need from a text encoder."""

    model_id: str
    dim: int

    def encode(
        self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        """float32 array (len(texts), dim), rows L2-normalised."""
        ...


class ImageEncoder(Protocol):
    """What the cache needs from an image embedder (`classifiers.images.ImageEmbedder`)."""

    model_id: str
    dim: int

    def encode_paths_with_reasons(
        self, paths: Sequence[str | Path | None]
    ) -> tuple[np.ndarray, list[str | None]]: ...


@dataclass(frozen=True)
class CacheStats:
    """Counters of one `EmbeddingCache` object (cumulative since it was opened) and rows per model in the
    file."""

    path: str
    hits: int
    misses: int
    encoded_batches: int
    encode_seconds: float
    rows: int
    models: dict[str, int]

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(frozen=True)
class ImageBatch:
    """Result of `EmbeddingCache.embed_images`: vectors (zero rows where `ok` is False) and failure counts."""

    vectors: np.ndarray
    ok: np.ndarray
    failures: dict[str, int]
