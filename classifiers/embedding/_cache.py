"""Content-addressed embedding cache in one SQLite file (WAL mode, safe across threads and processes)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from classifiers.embedding._images import file_digest
from classifiers.embedding._types import (
    SCHEMA_VERSION,
    CacheStats,
    Embedder,
    ImageBatch,
    ImageEncoder,
    ProgressCallback,
    text_key,
)
from shelfwise.errors import ConfigError, ModelError

__all__ = ["EmbeddingCache"]

_LOOKUP_CHUNK = 500  # well under SQLite's bound-variable limit
_BUSY_TIMEOUT_MS = 60_000
_PRECISIONS = {"float32": np.float32, "float16": np.float16}


class EmbeddingCache:
    """Embeddings on disk keyed by ``(model_id, sha256(text))``; only misses reach the embedder.

    One SQLite file (WAL journal, 60 s busy timeout) that several threads and processes may open at
    once. Vectors are stored as raw float32 (default) or float16 bytes; `embed` always returns what the
    cache stores, so a result never depends on whether it was a hit or a miss.
    """

    def __init__(self, path: str | Path, *, precision: str = "float32") -> None:
        self._init_counters(precision)
        self.path = Path(path)
        self.location = str(self.path)  # what messages and `stats` name (a URL for PgEmbeddingCache)
        self._connect()  # create the file and schema now, so a bad path fails early

    def _init_counters(self, precision: str) -> None:
        if precision not in _PRECISIONS:
            raise ConfigError(
                f"embedding cache precision {precision!r} is not valid; use one of {', '.join(_PRECISIONS)}"
            )
        self.precision = precision
        self._dtype = np.dtype(_PRECISIONS[precision])
        self.hits = 0
        self.misses = 0
        self._encoded_batches = 0
        self._encode_seconds = 0.0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._model_rowids: dict[str, int] = {}

    # -- connection handling ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS models (id INTEGER PRIMARY KEY, model_id TEXT NOT NULL "
                    "UNIQUE,"
                    " dim INTEGER NOT NULL, dtype TEXT NOT NULL)"
                )
                conn.execute(
                    # a rowid table (not WITHOUT ROWID): 1.5 KB blobs pack twice as densely this way
                    "CREATE TABLE IF NOT EXISTS embeddings (id INTEGER PRIMARY KEY, model INTEGER NOT NULL,"
                    " key BLOB NOT NULL, vec BLOB NOT NULL, UNIQUE (model, key))"
                )
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"embedding cache {self.path} cannot be opened as SQLite ({exc}); "
                "delete the file or point the cache at another path (it is rebuilt on demand)"
            ) from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise ConfigError(
                f"embedding cache {self.path} has schema version {row[0] if row else None}, this shelfwise "
                f"writes version {SCHEMA_VERSION}; delete the file (it is rebuilt on demand)"
            )
        self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (other threads' connections close when they are collected)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "precision": self.precision}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], precision=state["precision"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"

    # -- storage ------------------------------------------------------------------------------------
    def _model_rowid(self, model_id: str, dim: int) -> int:
        cached = self._model_rowids.get(model_id)
        if cached is not None:
            return cached
        conn = self._connect()
        conn.execute(
            "INSERT OR IGNORE INTO models (model_id, dim, dtype) VALUES (?, ?, ?)",
            (model_id, dim, self.precision),
        )
        rowid, stored_dim, stored_dtype = conn.execute(
            "SELECT id, dim, dtype FROM models WHERE model_id = ?", (model_id,)
        ).fetchone()
        self._check_model(model_id, dim, int(stored_dim), str(stored_dtype))
        self._model_rowids[model_id] = int(rowid)
        return int(rowid)

    def _check_model(self, model_id: str, dim: int, stored_dim: int, stored_dtype: str) -> None:
        if stored_dim != dim or stored_dtype != self.precision:
            raise ConfigError(
                f"embedding cache {self.location} stores model {model_id!r} as {stored_dim}-d "
                f"{stored_dtype}, but it was opened with {dim}-d {self.precision}; open it with "
                f"precision={stored_dtype!r} or use another cache"
            )

    def _lookup(self, model: int, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        conn = self._connect()
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, blob in conn.execute(
                f"SELECT key, vec FROM embeddings WHERE model = ? AND key IN ({marks})", (model, *chunk)
            ):
                vec = np.frombuffer(blob, dtype=self._dtype)
                if vec.shape[0] == dim:
                    found[key] = vec
        return found

    def _store(self, model: int, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        stored = np.ascontiguousarray(vectors, dtype=self._dtype)
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO embeddings (model, key, vec) VALUES (?, ?, ?)",
                [(model, key, stored[i].tobytes()) for i, key in enumerate(keys)],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _get_or_encode(
        self,
        model_id: str,
        dim: int,
        keys: list[bytes],
        encode: Callable[[list[int]], tuple[np.ndarray, np.ndarray | None]],
        *,
        batch_size: int,
        progress: ProgressCallback | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shared core: rows for `keys` in order, and a mask of rows that have a vector.

        `encode(positions)` embeds the first occurrence of each missing key and returns the vectors plus
        an optional boolean mask of rows worth keeping (rows outside it are neither stored nor returned).
        """
        out = np.zeros((len(keys), dim), dtype=np.float32)
        have = np.zeros(len(keys), dtype=bool)
        if not keys:
            return out, have
        model = self._model_rowid(model_id, dim)
        first_pos: dict[bytes, int] = {}
        for pos, key in enumerate(keys):
            first_pos.setdefault(key, pos)
        unique = list(first_pos)
        found = self._lookup(model, unique, dim)
        missing = [key for key in unique if key not in found]
        with self._lock:
            self.hits += len(keys) - len(missing)
            self.misses += len(missing)
        done = 0
        if progress is not None:
            progress(0, len(missing))
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            began = time.perf_counter()
            vectors, keep = encode([first_pos[key] for key in chunk])
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape != (len(chunk), dim) or not np.isfinite(vectors).all():
                raise ModelError(
                    f"embedder {model_id!r} returned an array of shape {vectors.shape} "
                    f"(finite: {bool(np.isfinite(vectors).all())}) for {len(chunk)} inputs; "
                    f"expected ({len(chunk)}, {dim}) finite values"
                )
            rows = list(range(len(chunk))) if keep is None else [int(i) for i in np.flatnonzero(keep)]
            stored = vectors.astype(self._dtype)
            self._store(model, [chunk[i] for i in rows], stored[rows])
            for i in rows:
                found[chunk[i]] = stored[i]
            with self._lock:
                self._encoded_batches += 1
                self._encode_seconds += time.perf_counter() - began
            done += len(chunk)
            if progress is not None:
                progress(done, len(missing))
        for pos, key in enumerate(keys):
            vec = found.get(key)
            if vec is not None:
                out[pos] = vec
                have[pos] = True
        return out, have

    # -- public API ---------------------------------------------------------------------------------
    def embed(
        self,
        embedder: Embedder,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Embeddings of `texts` in input order, shape (len(texts), embedder.dim), float32.

        Only texts not yet cached for ``embedder.model_id`` are encoded (each distinct text once), in
        batches of `batch_size`; each batch is written in one transaction, so an interrupted run keeps
        its finished batches. `progress(done, total)` is called after each encoded batch.
        """
        if batch_size < 1:
            raise ConfigError(f"embedding batch_size must be >= 1, got {batch_size}")
        items = list(texts)
        for pos, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(
                    f"EmbeddingCache.embed: item {pos} is {type(text).__name__} ({text!r}), not str; "
                    "fill missing text (e.g. with '') before embedding"
                )
        parts = getattr(embedder, "parts", None)
        if parts is not None:  # a ConcatEmbedder: each part cached under its own model_id
            blocks = [self.embed(part, items, batch_size=batch_size, progress=progress) for part in parts]
            combined: np.ndarray = embedder.combine(blocks)  # type: ignore[attr-defined]
            return combined
        # encode in order of length: each batch then holds texts of about the same length, so little of
        # the encoder's work goes into padding; rows come back in input order
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        ordered = [items[i] for i in order]
        keys = [text_key(text) for text in ordered]
        vectors, _ = self._get_or_encode(
            embedder.model_id,
            int(embedder.dim),
            keys,
            lambda positions: (embedder.encode([ordered[p] for p in positions]), None),
            batch_size=batch_size,
            progress=progress,
        )
        out = np.empty_like(vectors)
        out[np.asarray(order, dtype=np.int64)] = vectors
        return out

    def embed_images(
        self,
        embedder: ImageEncoder,
        paths: Sequence[str | Path | None],
        *,
        batch_size: int = 64,
        progress: ProgressCallback | None = None,
    ) -> ImageBatch:
        """Image embeddings keyed by ``(embedder.model_id, sha256(file bytes))``.

        Missing, unreadable, corrupt or over-large images get a zero row, ``ok=False`` and a count in
        `failures` (reason -> count); failures are not cached, so a fixed file is retried next run.
        """
        n = len(paths)
        failures: dict[str, int] = {}
        keyed: list[int] = []
        keys: list[bytes] = []
        for pos, raw in enumerate(paths):
            digest, reason = file_digest(raw)
            if digest is None:
                failures[reason] = failures.get(reason, 0) + 1
                continue
            keyed.append(pos)
            keys.append(digest)
        decode_failures: dict[bytes, str] = {}

        def encode(positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
            vectors, reasons = embedder.encode_paths_with_reasons([paths[keyed[p]] for p in positions])
            for p, reason in zip(positions, reasons, strict=True):
                if reason is not None:
                    decode_failures[keys[p]] = reason
            return vectors, np.array([reason is None for reason in reasons], dtype=bool)

        vectors = np.zeros((n, int(embedder.dim)), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        if keys:
            rows, have = self._get_or_encode(
                embedder.model_id, int(embedder.dim), keys, encode, batch_size=batch_size, progress=progress
            )
            vectors[keyed] = rows
            ok[keyed] = have
            for i in np.flatnonzero(~have):
                reason = decode_failures.get(keys[i], "corrupt")
                failures[reason] = failures.get(reason, 0) + 1
        return ImageBatch(vectors=vectors, ok=ok, failures=failures)

    @property
    def encode_seconds(self) -> float:
        """Seconds spent inside the embedder (misses only) since this object was opened."""
        return self._encode_seconds

    def _model_counts(self) -> dict[str, int]:
        return {
            model_id: int(count)
            for model_id, count in self._connect().execute(
                "SELECT m.model_id, COUNT(e.key) FROM models m LEFT JOIN embeddings e ON e.model = m.id"
                " GROUP BY m.model_id ORDER BY m.model_id"
            )
        }

    def stats(self) -> CacheStats:
        """Counters since this object was opened, and rows per model in the file."""
        models = self._model_counts()
        with self._lock:
            return CacheStats(
                path=self.location,
                hits=self.hits,
                misses=self.misses,
                encoded_batches=self._encoded_batches,
                encode_seconds=round(self._encode_seconds, 3),
                rows=sum(models.values()),
                models=models,
            )
