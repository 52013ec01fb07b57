"""Text embedders and the on-disk embedding cache: the public face of the ``classifiers.embedding`` package.

Private modules, one per job: ``_types`` (the `Embedder` protocol, cache keys), ``_st`` (MiniLM through
sentence-transformers), ``_onnx`` (MiniLM int8 through ONNX Runtime), ``_e5`` (multilingual E5),
``_cache`` (the SQLite cache), ``_cache_pg`` (the PostgreSQL cache), ``_images`` (reading product
photos for the image embedder in ``classifiers.images``).

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
from typing import Any

import numpy as np

from classifiers.embedding._cache import EmbeddingCache
from classifiers.embedding._cache_pg import PgEmbeddingCache, open_embedding_cache
from classifiers.embedding._e5 import E5Embedder, E5Mode
from classifiers.embedding._images import ImageFailure, load_square_rgb
from classifiers.embedding._onnx import OnnxMiniLMEmbedder
from classifiers.embedding._st import SentenceTransformerEmbedder
from classifiers.embedding._types import CacheStats, Embedder, ImageBatch, text_key
from shelfwise.errors import ConfigError

__all__ = [
    "CacheStats",
    "ConcatEmbedder",
    "E5Embedder",
    "E5Mode",
    "Embedder",
    "EmbedderName",
    "EmbeddingCache",
    "ImageBatch",
    "ImageFailure",
    "OnnxMiniLMEmbedder",
    "PgEmbeddingCache",
    "SentenceTransformerEmbedder",
    "embedder_names",
    "load_square_rgb",
    "make_embedder",
    "open_embedding_cache",
    "text_key",
]


class EmbedderName(StrEnum):
    """Names accepted by `make_embedder` (and the `embedder` setting)."""

    MINILM = "minilm"
    MINILM_INT8 = "minilm-int8"
    E5_MULTILINGUAL = "e5-multilingual"
    MINILM_E5 = "minilm+e5-multilingual"


class ConcatEmbedder:
    """Several embedders side by side: each part's unit vector, concatenated and scaled by 1/sqrt(parts),
    so the result is a unit vector whose cosine is the mean of the parts' cosines.

    `EmbeddingCache.embed` caches each part under its own ``model_id`` (switching from ``minilm`` to
    ``minilm+e5-multilingual`` re-uses every MiniLM vector already cached).
    """

    def __init__(self, parts: list[Embedder]) -> None:
        if len(parts) < 2:
            raise ConfigError("ConcatEmbedder needs at least two embedders")
        self.parts = list(parts)
        self.dim: int = sum(int(p.dim) for p in self.parts)
        self.model_id: str = "concat(" + ",".join(p.model_id for p in self.parts) + ")"

    def combine(self, blocks: list[np.ndarray]) -> np.ndarray:
        return np.ascontiguousarray(np.hstack(blocks) / np.sqrt(len(blocks)), dtype=np.float32)

    def encode(
        self, texts: list[str], *, batch_size: int | None = None, show_progress: bool = False
    ) -> np.ndarray:
        return self.combine([p.encode(texts, batch_size=batch_size) for p in self.parts])

    def __repr__(self) -> str:
        return f"ConcatEmbedder(model_id={self.model_id!r})"


_REGISTRY: dict[str, Callable[..., Embedder]] = {
    EmbedderName.MINILM.value: SentenceTransformerEmbedder,
    EmbedderName.MINILM_INT8.value: OnnxMiniLMEmbedder,
    EmbedderName.E5_MULTILINGUAL.value: E5Embedder,
}


def embedder_names() -> list[str]:
    """Valid names for `make_embedder`, default first."""
    return [*_REGISTRY, EmbedderName.MINILM_E5.value]


def make_embedder(name: str = "minilm", **kwargs: Any) -> Embedder:
    """Build the embedder called `name` ("minilm" = default, "minilm-int8", "e5-multilingual", ...).

    Keyword arguments go to the embedder's constructor, e.g. ``make_embedder("minilm", threads=2)`` or
    ``make_embedder("e5-multilingual", mode="query")``. ``"minilm+e5-multilingual"`` (any names joined
    with ``+``) gives a `ConcatEmbedder` of those embedders (options are not passed to the parts).
    """
    if "+" in str(name):
        return ConcatEmbedder([make_embedder(part) for part in str(name).split("+")])
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
