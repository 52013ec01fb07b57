"""Text embedders and the on-disk embedding cache.

Every embedder follows the `Embedder` protocol: a stable `model_id` (model name + weights fingerprint +
dimension + options that change the vectors; used in cache keys and model versions), `dim`, and
`encode(texts)` returning float32 rows of unit length. Models load in the constructor, never at import.

    >>> from classifiers import EmbeddingCache, make_embedder
    >>> embedder = make_embedder("minilm")                       # all-MiniLM-L6-v2, 1 torch thread
    >>> cache = EmbeddingCache(".shelfwise/cache/embeddings.sqlite")
    >>> vectors = cache.embed(embedder, ["LEGO City Police Station", "Hornby OO gauge track"])
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from classifiers._embedding_cache import CacheStats, EmbeddingCache, ImageBatch, text_key
from classifiers._embedding_e5 import E5Embedder, E5Mode
from classifiers._embedding_st import SentenceTransformerEmbedder
from shelfwise.errors import ConfigError

__all__ = [
    "CacheStats",
    "E5Embedder",
    "E5Mode",
    "Embedder",
    "EmbedderName",
    "EmbeddingCache",
    "ImageBatch",
    "SentenceTransformerEmbedder",
    "embedder_names",
    "make_embedder",
    "text_key",
]


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


class EmbedderName(StrEnum):
    """Names accepted by `make_embedder` (and the `embedder` setting)."""

    MINILM = "minilm"
    E5_MULTILINGUAL = "e5-multilingual"


_REGISTRY: dict[str, Callable[..., Embedder]] = {
    EmbedderName.MINILM.value: SentenceTransformerEmbedder,
    EmbedderName.E5_MULTILINGUAL.value: E5Embedder,
}


def embedder_names() -> list[str]:
    """Valid names for `make_embedder`, default first."""
    return list(_REGISTRY)


def make_embedder(name: str = "minilm", **kwargs: Any) -> Embedder:
    """Build the embedder called `name` ("minilm" = default, "e5-multilingual").

    Keyword arguments go to the embedder's constructor, e.g. ``make_embedder("minilm", threads=2)`` or
    ``make_embedder("e5-multilingual", mode="query")``.
    """
    factory = _REGISTRY.get(str(name).strip().lower())
    if factory is None:
        raise ConfigError(
            f"embedder {name!r} is not known; valid names: {', '.join(_REGISTRY)} "
            "(set the embedder option to one of them)"
        )
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"embedder {name!r} does not accept these options {sorted(kwargs)}: {exc}") from exc
