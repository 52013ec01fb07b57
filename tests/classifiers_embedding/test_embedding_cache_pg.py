"""PgEmbeddingCache against the real PostgreSQL (127.0.0.1:5432) and the real MiniLM: the same vectors and
counters as the SQLite cache, many writing processes at once, the same model checks. Each test works in a
fresh schema ``emb_<random>``, dropped at the end."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from classifiers import EmbeddingCache, open_embedding_cache
from classifiers.embedding import PgEmbeddingCache
from shelfwise.errors import ConfigError
from shelfwise.settings import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def titles(amazon: pl.DataFrame) -> list[str]:
    return amazon["title"].drop_nulls().unique(maintain_order=True).head(60).to_list()


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A schema name of this test's own (created by the cache on first open, dropped afterwards)."""
    name = f"emb_{secrets.token_hex(6)}"
    yield name
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def _rows(pg_url: str, schema: str) -> int:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".embeddings')).scalar_one())
    finally:
        engine.dispose()


def test_vectors_and_counters_match_the_sqlite_cache(
    tmp_path, pg_url, schema, minilm, counting, titles
) -> None:
    texts = titles[:40]
    with EmbeddingCache(tmp_path / "embeddings.sqlite") as lite:
        expected = lite.embed(minilm, texts)

    embedder = counting(minilm)
    with PgEmbeddingCache(pg_url, schema=schema) as cache:
        first = cache.embed(embedder, texts + texts[:5])  # repeats inside one call are encoded once
        assert (cache.hits, cache.misses) == (5, 40) and len(embedder.encoded) == 40
        np.testing.assert_array_equal(first[:40], expected)
        np.testing.assert_array_equal(first[40:], expected[:5])

    embedder = counting(minilm)
    with PgEmbeddingCache(pg_url, schema=schema) as reopened:  # another object, same database
        again = reopened.embed(embedder, texts[::-1])
        assert embedder.calls == 0 and (reopened.hits, reopened.misses) == (40, 0)
        np.testing.assert_array_equal(again, expected[::-1])
        stats = reopened.stats()
        assert stats.models == {minilm.model_id: 40} and stats.rows == 40
        assert schema in stats.path and stats.hit_rate == 1.0

        clone = pickle.loads(pickle.dumps(reopened))  # what a Dask worker receives
        np.testing.assert_array_equal(clone.embed(embedder, texts[:3]), expected[:3])
        assert embedder.calls == 0 and clone.hits == 3
        clone.close()


def test_processes_writing_overlapping_texts_at_once_store_each_text_once(
    tmp_path, repo_root, pg_url, schema, minilm, titles
) -> None:
    """Two processes open the cache (creating the schema) and embed at the same moment: 20 of their
    texts are the same, in the same order, so both encode them and both insert them."""
    script = textwrap.dedent(
        """
        import json, pathlib, sys, time
        import numpy as np
        from classifiers import make_embedder
        from classifiers.embedding import PgEmbeddingCache
        url, schema, texts, out, ready, other = sys.argv[1:]
        embedder = make_embedder("minilm")
        pathlib.Path(ready).touch()
        deadline = time.monotonic() + 120
        while not pathlib.Path(other).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        with PgEmbeddingCache(url, schema=schema) as cache:
            np.save(out, cache.embed(embedder, json.loads(texts), batch_size=5))
            print(json.dumps({"hits": cache.hits, "misses": cache.misses}))
        """
    )
    overlap = titles[20:40]
    jobs = {"a": overlap + titles[:20], "b": overlap + titles[40:60]}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                pg_url,
                schema,
                json.dumps(texts),
                str(tmp_path / f"{name}.npy"),
                str(tmp_path / f"{name}.ready"),
                str(tmp_path / f"{'b' if name == 'a' else 'a'}.ready"),
            ],
            cwd=repo_root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, texts in jobs.items()
    }
    counters = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
        counters[name] = json.loads(out.decode().strip().splitlines()[-1])
    assert all(c["hits"] + c["misses"] == 40 for c in counters.values())

    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    # the shared texts: the same vectors in both (each process encoded them in batches of its own, so
    # equal up to float rounding)
    np.testing.assert_allclose(a[:20], b[:20], atol=1e-5)
    assert _rows(pg_url, schema) == 60  # every text once, though both processes stored the overlap
    with PgEmbeddingCache(pg_url, schema=schema) as cache:
        stored = cache.embed(minilm, titles[:60])
        assert cache.misses == 0
    np.testing.assert_allclose(stored[20:40], a[:20], atol=1e-5)  # whichever process stored them
    np.testing.assert_allclose(stored, minilm.encode(titles[:60]), atol=1e-5)


class _WrongDim:
    """An embedder claiming MiniLM's model id with another dimension (a renamed or changed model)."""

    def __init__(self, inner) -> None:
        self.model_id = inner.model_id
        self.dim = inner.dim * 2

    def encode(self, texts, **kwargs) -> np.ndarray:
        raise AssertionError("a model mismatch must be caught before encoding")


def test_model_mismatch_raises_the_same_error_as_sqlite(tmp_path, pg_url, schema, minilm, titles) -> None:
    def open_lite() -> EmbeddingCache:
        return EmbeddingCache(tmp_path / "embeddings.sqlite")

    def open_pg() -> EmbeddingCache:
        return PgEmbeddingCache(pg_url, schema=schema)

    errors = []
    for open_cache in (open_lite, open_pg):
        with open_cache() as first:  # a night with MiniLM fills the cache
            first.embed(minilm, titles[:2])
        with open_cache() as later, pytest.raises(ConfigError) as err:  # a later night, model changed
            later.embed(_WrongDim(minilm), titles[:2])
        assert later.location in str(err.value)
        errors.append(str(err.value).replace(later.location, "<cache>"))
    assert errors[0] == errors[1]
    assert f"as {minilm.dim}-d float32, but it was opened with {2 * minilm.dim}-d" in errors[0]
    with (
        PgEmbeddingCache(pg_url, schema=schema, precision="float16") as half,
        pytest.raises(ConfigError, match="precision='float32'"),  # a float16 reader of float32 vectors
    ):
        half.embed(minilm, titles[:1])


def test_setting_selects_the_backend_and_refuses_other_urls(tmp_path, monkeypatch, pg_url) -> None:
    monkeypatch.setenv("SHELFWISE_STATE_DIR", str(tmp_path))
    assert Settings().embedding_cache == tmp_path / "cache" / "embeddings.sqlite"
    monkeypatch.setenv("SHELFWISE_EMBEDDING_CACHE_URL", pg_url)
    assert Settings().embedding_cache == pg_url
    monkeypatch.setenv("SHELFWISE_EMBEDDING_CACHE_URL", "mysql://db/x")
    with pytest.raises(ValueError, match="embedding_cache_url 'mysql://db/x' is not a PostgreSQL URL"):
        Settings()

    lite = open_embedding_cache(tmp_path / "cache" / "embeddings.sqlite")
    assert type(lite) is EmbeddingCache
    lite.close()
    with pytest.raises(ConfigError, match="cannot be reached.*SHELFWISE_EMBEDDING_CACHE_URL"):
        open_embedding_cache("postgresql://postgres@127.0.0.1:1/test")  # nothing listens on port 1


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """URL of a database of this test's own (the cache's default schema inside it), dropped afterwards."""
    name = f"emb_{secrets.token_hex(6)}"
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
def test_train_and_classify_with_the_setting_predict_as_with_the_sqlite_file(
    tmp_path, real_data, pg_database, amazon
) -> None:
    """`shelfwise train` and `classify` with SHELFWISE_EMBEDDING_CACHE_URL keep their vectors in
    PostgreSQL (no SQLite file appears) and give the same predictions as a classify on the SQLite file."""
    shelfwise = str(Path(sys.executable).with_name("shelfwise"))
    labelled = amazon.filter(pl.col("category_path").is_not_null()).sample(fraction=1.0, shuffle=True, seed=3)
    labelled.head(700).write_parquet(tmp_path / "labelled.parquet")
    labelled.slice(700, 150).drop("category_path").write_parquet(tmp_path / "tonight.parquet")
    pg_env = {**os.environ, "SHELFWISE_EMBEDDING_CACHE_URL": pg_database}

    def cli(state: str, env: dict[str, str], *args: str) -> None:
        proc = subprocess.run(
            [shelfwise, *args, "--state-dir", str(tmp_path / state)],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, f"shelfwise {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"

    taxonomy = str(real_data / "taxonomies" / "amazon_uk_categories.txt")
    model = str(tmp_path / "model")
    cli("pg", pg_env, "train", "--taxonomy", taxonomy, "--catalog", str(tmp_path / "labelled.parquet"),
        "--model-dir", model)  # fmt: skip
    predictions = {}
    for state, env in (("pg", pg_env), ("lite", dict(os.environ))):
        out = tmp_path / f"{state}.parquet"
        cli(state, env, "classify", "--model-dir", model, "--catalog", str(tmp_path / "tonight.parquet"),
            "--out", str(out), "--no-enqueue")  # fmt: skip
        predictions[state] = pl.read_parquet(out).sort("sku_id")
    assert not (tmp_path / "pg" / "cache" / "embeddings.sqlite").exists()
    assert (tmp_path / "lite" / "cache" / "embeddings.sqlite").exists()
    pg, lite = predictions["pg"], predictions["lite"]
    assert pg.height == 150
    assert pg["category_path"].to_list() == lite["category_path"].to_list()
    assert pg["route"].to_list() == lite["route"].to_list()
    np.testing.assert_allclose(pg["confidence"].to_numpy(), lite["confidence"].to_numpy(), atol=1e-6)
    with PgEmbeddingCache(pg_database) as cache:
        assert sum(cache.stats().models.values()) >= 850  # training's and tonight's titles
