"""The embedding cache in PostgreSQL, for workers on several hosts (Dask) sharing one cache.

`PgEmbeddingCache` is an `EmbeddingCache` whose storage is three tables in one schema (default
``shelfwise_embeddings``; the queue and the LLM store may share the database):

  meta        schema_version
  models      id, model_id (unique), dim, dtype: a model's vectors are only read back at its dim/dtype
  embeddings  (model, key) primary key -> vec (raw float32/float16 bytes), key = sha256(text or file)

Writes are ``INSERT ... ON CONFLICT DO NOTHING``, so any number of writers on any number of hosts may
store the same text at once: the first row wins and every vector of a text is the same model's output.
Tables are created on first open under a transaction-level advisory lock (two workers starting at once
do not race on ``CREATE TABLE``). `open_embedding_cache` picks the backend from a path or a URL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from classifiers.embedding._cache import EmbeddingCache
from classifiers.embedding._types import SCHEMA_VERSION
from shelfwise.dburl import database_url
from shelfwise.errors import ConfigError

__all__ = ["PG_SCHEMA", "PgEmbeddingCache", "embedding_cache_url", "open_embedding_cache"]

PG_SCHEMA = "shelfwise_embeddings"
_LOOKUP_CHUNK = 2000
_STORE_CHUNK = 1000


def embedding_cache_url(url: str | sa.URL) -> sa.URL:
    """A validated PostgreSQL URL (``postgresql://`` gets the psycopg 3 driver shelfwise ships with)."""
    parsed = database_url(
        url,
        setting="embedding_cache_url",
        example="postgresql+psycopg://user@host:5432/dbname, or leave it unset for the SQLite file",
    )
    if parsed.get_backend_name() != "postgresql":
        raise ConfigError(
            f"embedding_cache_url uses backend {parsed.get_backend_name()!r}; the embedding cache supports "
            "postgresql+psycopg://user@host:5432/dbname (or leave it unset for the SQLite file in state_dir)"
        )
    return parsed


def _tables(schema: str) -> tuple[sa.MetaData, sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    meta = sa.Table(
        "meta",
        md,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    models = sa.Table(
        "models",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Text, nullable=False, unique=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("dtype", sa.Text, nullable=False),
    )
    embeddings = sa.Table(
        "embeddings",
        md,
        sa.Column("model", sa.Integer, primary_key=True),
        sa.Column("key", sa.LargeBinary, primary_key=True),
        sa.Column("vec", sa.LargeBinary, nullable=False),
    )
    return md, meta, models, embeddings


class PgEmbeddingCache(EmbeddingCache):
    """`EmbeddingCache` in a PostgreSQL schema: same `embed`, `embed_images`, counters and `stats`.

    One SQLAlchemy engine (a connection pool, thread-safe) per object; `close` disposes of it. Pickles
    as its URL, precision and schema, so a Dask worker reconnects on its own host.
    """

    def __init__(self, url: str | sa.URL, *, precision: str = "float32", schema: str = PG_SCHEMA) -> None:
        self._init_counters(precision)
        self.url = embedding_cache_url(url)
        self.schema = schema
        self.location = f"{self.url.render_as_string(hide_password=True)} (schema {schema})"
        self._md, self._meta, self._models, self._embeddings = _tables(schema)
        self._engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=2, max_overflow=8)
        self._create_schema()  # reach the server and create the tables now, so a bad URL fails early

    def _create_schema(self) -> None:
        lock_id = int.from_bytes(hashlib.sha256(f"shelfwise:{self.schema}".encode()).digest()[:8], "big")
        try:
            with self._engine.begin() as conn:
                # signed 64-bit: pg_advisory_xact_lock takes a bigint
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_id - (1 << 63))))
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
                self._md.create_all(conn)
                conn.execute(
                    pg_insert(self._meta)
                    .values(key="schema_version", value=str(SCHEMA_VERSION))
                    .on_conflict_do_nothing(index_elements=["key"])
                )
                version = conn.execute(
                    sa.select(self._meta.c.value).where(self._meta.c.key == "schema_version")
                ).scalar_one()
        except sa.exc.OperationalError as exc:
            self._engine.dispose()
            reason = " ".join(str(exc.orig).split())
            raise ConfigError(
                f"embedding cache {self.location} cannot be reached ({reason}); check "
                "embedding_cache_url (SHELFWISE_EMBEDDING_CACHE_URL), or leave it unset for the SQLite file"
            ) from exc
        if int(version) != SCHEMA_VERSION:
            raise ConfigError(
                f"embedding cache {self.location} has schema version {version}, this shelfwise writes "
                f"version {SCHEMA_VERSION}; drop the schema {self.schema!r} (it is rebuilt on demand)"
            )

    def _connect(self) -> Any:
        raise TypeError("PgEmbeddingCache has no SQLite connection")  # every caller is overridden here

    def close(self) -> None:
        """Close the pooled connections (a later call reconnects)."""
        self._engine.dispose()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url.render_as_string(hide_password=False),
            "precision": self.precision,
            "schema": self.schema,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], precision=state["precision"], schema=state["schema"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"PgEmbeddingCache({self.location!r}, hits={self.hits}, misses={self.misses})"

    # -- storage ------------------------------------------------------------------------------------
    def _model_rowid(self, model_id: str, dim: int) -> int:
        cached = self._model_rowids.get(model_id)
        if cached is not None:
            return cached
        models = self._models
        with self._engine.begin() as conn:
            conn.execute(
                pg_insert(models)
                .values(model_id=model_id, dim=dim, dtype=self.precision)
                .on_conflict_do_nothing(index_elements=["model_id"])
            )
            rowid, stored_dim, stored_dtype = conn.execute(
                sa.select(models.c.id, models.c.dim, models.c.dtype).where(models.c.model_id == model_id)
            ).one()
        self._check_model(model_id, dim, int(stored_dim), str(stored_dtype))
        self._model_rowids[model_id] = int(rowid)
        return int(rowid)

    def _lookup(self, model: int, keys: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        table = self._embeddings
        found: dict[bytes, np.ndarray] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = list(keys[start : start + _LOOKUP_CHUNK])
                query = sa.select(table.c.key, table.c.vec).where(
                    table.c.model == model, table.c.key.in_(chunk)
                )
                for key, blob in conn.execute(query):
                    vec = np.frombuffer(blob, dtype=self._dtype)
                    if vec.shape[0] == dim:
                        found[bytes(key)] = vec
        return found

    def _store(self, model: int, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if not keys:
            return
        stored = np.ascontiguousarray(vectors, dtype=self._dtype)
        insert = pg_insert(self._embeddings).on_conflict_do_nothing(index_elements=["model", "key"])
        rows = [{"model": model, "key": key, "vec": stored[i].tobytes()} for i, key in enumerate(keys)]
        with self._engine.begin() as conn:  # one transaction per encoded batch, as on SQLite
            for start in range(0, len(rows), _STORE_CHUNK):
                conn.execute(insert, rows[start : start + _STORE_CHUNK])

    def _model_counts(self) -> dict[str, int]:
        m, e = self._models, self._embeddings
        query = (
            sa.select(m.c.model_id, sa.func.count(e.c.key))
            .select_from(m.outerjoin(e, e.c.model == m.c.id))
            .group_by(m.c.model_id)
            .order_by(m.c.model_id)
        )
        with self._engine.connect() as conn:
            return {str(model_id): int(count) for model_id, count in conn.execute(query)}


def open_embedding_cache(location: str | Path, *, precision: str = "float32") -> EmbeddingCache:
    """The embedding cache at a file path (SQLite) or a ``postgresql://`` URL (`PgEmbeddingCache`)."""
    if isinstance(location, str) and "://" in location:
        return PgEmbeddingCache(location, precision=precision)  # a URL of another backend is refused
    return EmbeddingCache(location, precision=precision)
