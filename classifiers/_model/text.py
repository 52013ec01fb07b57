"""How `CategoryModel` turns catalog rows into model inputs (lexical text, brand key, embedding chunks)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["TEXT_FIELDS", "ModelInputs", "build_inputs", "embed_chunks"]

TEXT_FIELDS = ("title", "brand", "description", "attributes", "review_text")
_LIMITS = {"title": 400, "brand": 100, "description": 4000, "attributes": 3000, "review_text": 20000}
_CHUNK_WORDS = 80
_WS = re.compile(r"\s+")


@dataclass
class ModelInputs:
    """Per-row inputs: lexical text (TF-IDF), brand key, and text chunks to embed (row -> chunks)."""

    lexical: list[str]
    brand: list[str]
    chunks: list[list[str]]


def _col(frame: pl.DataFrame, name: str) -> list[str]:
    if name not in frame.columns:
        return [""] * frame.height
    return [_WS.sub(" ", str(v)).strip() if v is not None else "" for v in frame.get_column(name).to_list()]


def _split_words(text: str, size: int) -> list[str]:
    words = text.split(" ")
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size) if words[i : i + size] != [""]]


def build_inputs(frame: pl.DataFrame, text_fields: Sequence[str], *, max_chunks: int = 6) -> ModelInputs:
    """Lexical text = the fields with short prefixes; chunks = title (+ brand) first, then pieces of the
    long fields (description, attributes, reviews) of ~80 words, at most ``max_chunks`` per row."""
    fields = [f for f in text_fields if f in TEXT_FIELDS]
    cols = {f: _col(frame, f) for f in TEXT_FIELDS}
    lexical: list[str] = []
    chunks: list[list[str]] = []
    brands: list[str] = []
    for i in range(frame.height):
        vals = {f: cols[f][i][: _LIMITS[f]] for f in fields}
        title = vals.get("title", "")
        brand = vals.get("brand", "")
        brands.append(brand.lower())
        parts = []
        if title:
            parts.append(title)
        if brand:
            parts.append(f"brand {brand} brand_{brand.lower().replace(' ', '_')}")
        for f in ("attributes", "description", "review_text"):
            if vals.get(f):
                parts.append(vals[f])
        lexical.append(" | ".join(parts))
        head = title
        if brand and brand.lower() not in title.lower():
            head = f"{title} ({brand})" if title else brand
        row_chunks = [head] if head else []
        for f in ("attributes", "description", "review_text"):
            if vals.get(f) and len(row_chunks) < max_chunks:
                row_chunks.extend(_split_words(vals[f], _CHUNK_WORDS)[: max_chunks - len(row_chunks)])
        chunks.append(row_chunks or [""])
    return ModelInputs(lexical=lexical, brand=brands, chunks=chunks)


def embed_chunks(chunks: list[list[str]], embedder: object, cache: object) -> np.ndarray:
    """One unit vector per row: the mean of its chunk embeddings, the first chunk (title) counted twice."""
    flat: list[str] = []
    owner: list[int] = []
    weight: list[float] = []
    for i, row in enumerate(chunks):
        for j, text in enumerate(row):
            flat.append(text)
            owner.append(i)
            weight.append(2.0 if j == 0 and len(row) > 1 else 1.0)
    vectors = cache.embed(embedder, flat) if cache is not None else embedder.encode(flat)  # type: ignore[attr-defined]
    vectors = np.asarray(vectors, dtype=np.float32)
    out = np.zeros((len(chunks), vectors.shape[1]), dtype=np.float64)
    np.add.at(out, np.asarray(owner), vectors * np.asarray(weight)[:, None])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)
