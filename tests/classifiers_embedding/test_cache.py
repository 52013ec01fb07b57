"""EmbeddingCache with the real MiniLM/E5 models: only misses are encoded, order kept, safe to share."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading

import numpy as np
import polars as pl
import pytest

from classifiers import EmbeddingCache
from shelfwise.errors import ConfigError, ModelError


@pytest.fixture(scope="module")
def titles(amazon: pl.DataFrame) -> list[str]:
    return amazon["title"].unique(maintain_order=True).head(120).to_list()


def test_second_run_over_unchanged_titles_encodes_nothing(tmp_path, minilm, counting, titles) -> None:
    embedder = counting(minilm)
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")

    first = cache.embed(embedder, titles, batch_size=50)
    assert embedder.calls == 3 and len(embedder.encoded) == 120  # 50 + 50 + 20
    assert (cache.hits, cache.misses) == (0, 120)

    second = cache.embed(embedder, titles)
    assert embedder.calls == 3  # nothing new reached the model
    assert (cache.hits, cache.misses) == (120, 120)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, minilm.encode(titles), atol=1e-5)  # cache returns the real vectors
    stats = cache.stats()
    assert stats.rows == 120 and stats.models == {minilm.model_id: 120} and stats.hit_rate == 0.5


def test_order_is_kept_and_duplicates_are_encoded_once(tmp_path, minilm, counting, titles) -> None:
    embedder = counting(minilm)
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    cache.embed(embedder, titles[:3])
    batch = [titles[5], titles[0], titles[5], titles[6], titles[0], titles[5]]

    vectors = cache.embed(embedder, batch)

    # each new title encoded once (the cache encodes in order of length, not input order)
    assert sorted(embedder.encoded) == sorted(titles[:3] + [titles[5], titles[6]])
    expected = minilm.encode(batch)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert (cache.hits, cache.misses) == (4, 5)  # 2 copies of titles[0] + 2 repeats of titles[5] are hits


def test_vectors_survive_closing_and_reopening(tmp_path, minilm, counting, titles) -> None:
    path = tmp_path / "state" / "cache" / "embeddings.sqlite"  # folders are created
    with EmbeddingCache(path) as cache:
        before = cache.embed(minilm, titles[:20])

    embedder = counting(minilm)
    reopened = EmbeddingCache(path)
    after = reopened.embed(embedder, titles[:20])
    assert embedder.calls == 0 and reopened.hits == 20 and reopened.misses == 0
    np.testing.assert_array_equal(before, after)


def test_models_do_not_share_entries(tmp_path, minilm, e5, counting, titles) -> None:
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    from_minilm = cache.embed(minilm, titles[:10])
    e5_counter = counting(e5)

    from_e5 = cache.embed(e5_counter, titles[:10])

    assert len(e5_counter.encoded) == 10  # same texts, other model: all misses
    assert not np.allclose(from_minilm, from_e5, atol=0.1)
    np.testing.assert_allclose(from_e5, e5.encode(titles[:10]), atol=1e-5)
    assert cache.stats().models == {minilm.model_id: 10, e5.model_id: 10}


def test_progress_reports_encoded_misses(tmp_path, minilm, titles) -> None:
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    cache.embed(minilm, titles[:10])
    seen: list[tuple[int, int]] = []
    cache.embed(minilm, titles[:35], batch_size=10, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 25), (10, 25), (20, 25), (25, 25)]


def test_float16_cache_returns_the_same_vectors_on_hit_and_miss(tmp_path, minilm, titles) -> None:
    cache = EmbeddingCache(tmp_path / "half.sqlite", precision="float16")
    miss = cache.embed(minilm, titles[:8])
    hit = cache.embed(minilm, titles[:8])
    np.testing.assert_array_equal(miss, hit)
    assert miss.dtype == np.float32
    np.testing.assert_allclose(miss, minilm.encode(titles[:8]), atol=2e-3)
    with pytest.raises(ConfigError, match="float16"):
        EmbeddingCache(tmp_path / "half.sqlite").embed(minilm, titles[:1])  # opened as float32


def test_threads_share_one_cache_object(tmp_path, minilm, counting, titles) -> None:
    embedder = counting(minilm)
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    results: dict[int, np.ndarray] = {}
    errors: list[Exception] = []

    def work(i: int) -> None:
        try:
            results[i] = cache.embed(embedder, titles[i * 10 : i * 10 + 30])
        except Exception as exc:  # noqa: BLE001 - any error in a thread fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = minilm.encode(titles[:60])
    for i, vectors in results.items():
        np.testing.assert_allclose(vectors, expected[i * 10 : i * 10 + 30], atol=1e-5)
    assert cache.stats().rows == 60


@pytest.mark.slow
def test_processes_share_one_cache_file(tmp_path, repo_root, e5, titles) -> None:
    """Two processes fill the same file at once (WAL + busy timeout): no lock errors, nothing lost."""
    path = tmp_path / "shared.sqlite"
    script = textwrap.dedent(
        """
        import json, sys
        from classifiers import EmbeddingCache, make_embedder
        texts = json.loads(sys.argv[2])
        cache = EmbeddingCache(sys.argv[1])
        cache.embed(make_embedder("e5-multilingual"), texts, batch_size=5)
        """
    )
    import json

    halves = [titles[:40], titles[20:60]]  # overlapping on purpose
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), json.dumps(half)], cwd=repo_root, stderr=subprocess.PIPE
        )
        for half in halves
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()

    cache = EmbeddingCache(path)
    assert cache.stats().models == {e5.model_id: 60}
    np.testing.assert_allclose(cache.embed(e5, titles[:60]), e5.encode(titles[:60]), atol=1e-5)
    assert cache.misses == 0


def test_cache_pickles_for_worker_processes(tmp_path, minilm, counting, titles) -> None:
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    cache.embed(minilm, titles[:5])
    clone = pickle.loads(pickle.dumps(cache))
    embedder = counting(minilm)
    clone.embed(embedder, titles[:5])
    assert embedder.calls == 0 and clone.hits == 5


def test_unusable_cache_file_names_the_file_and_the_fix(tmp_path) -> None:
    broken = tmp_path / "embeddings.sqlite"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError) as err:
        EmbeddingCache(broken)
    assert str(broken) in str(err.value) and "delete the file" in str(err.value)


def test_non_text_items_are_rejected_with_their_position(tmp_path, minilm) -> None:
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    with pytest.raises(TypeError, match="item 1 is NoneType"):
        cache.embed(minilm, ["ok", None])  # type: ignore[list-item]


def test_broken_embedder_output_is_a_model_error(tmp_path, minilm) -> None:
    class Truncating:
        model_id = "truncating-test"
        dim = minilm.dim

        def encode(self, texts, **kwargs):
            return minilm.encode(texts)[:-1]

    with pytest.raises(ModelError, match="truncating-test.*shape"):
        EmbeddingCache(tmp_path / "embeddings.sqlite").embed(Truncating(), ["a", "b"])


def test_concatenated_embedder_reuses_each_parts_cached_vectors(
    tmp_path, minilm, e5, counting, titles
) -> None:
    from classifiers.embedding import ConcatEmbedder

    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    alone = cache.embed(minilm, titles[:12])  # a shop that ran on MiniLM before switching
    mini_counter, e5_counter = counting(minilm), counting(e5)
    both = ConcatEmbedder([mini_counter, e5_counter])

    vectors = cache.embed(both, titles[:12])

    assert mini_counter.encoded == [] and len(e5_counter.encoded) == 12  # only E5 is new
    assert vectors.shape == (12, minilm.dim + e5.dim) and both.dim == vectors.shape[1]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the cosine of the concatenation is the mean of the parts' cosines
    e5_vecs = e5.encode(titles[:12])
    want = ((alone @ alone.T) + (e5_vecs @ e5_vecs.T)) / 2
    np.testing.assert_allclose(vectors @ vectors.T, want, atol=1e-4)
    assert set(cache.stats().models) == {minilm.model_id, e5.model_id}


def test_concatenated_embedder_is_built_by_name(e5) -> None:
    from classifiers import make_embedder
    from shelfwise.settings import Settings

    both = make_embedder("minilm+e5-multilingual")
    assert both.dim == 768 and "all-MiniLM" in both.model_id and e5.model_id in both.model_id
    assert Settings(embedder="minilm+e5-multilingual").embedder == "minilm+e5-multilingual"
    with pytest.raises(ConfigError, match="not known"):
        make_embedder("minilm+nope")


def test_an_interrupted_embed_keeps_its_finished_batches(tmp_path, minilm, counting, titles) -> None:
    """Each encoded batch is committed when it is encoded, not when `embed` returns: a failure (or a
    kill) in the third batch leaves the first two in the file for the next run."""

    class DiesOnThirdBatch:
        model_id, dim = minilm.model_id, minilm.dim

        def __init__(self) -> None:
            self.calls = 0

        def encode(self, texts, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("killed mid-embedding")
            return minilm.encode(texts, **kwargs)

    with pytest.raises(RuntimeError, match="killed"):
        EmbeddingCache(tmp_path / "embeddings.sqlite").embed(DiesOnThirdBatch(), titles, batch_size=40)
    rerun = counting(minilm)
    reopened = EmbeddingCache(tmp_path / "embeddings.sqlite")
    vectors = reopened.embed(rerun, titles, batch_size=40)
    assert reopened.stats().rows == 120 and (reopened.hits, reopened.misses) == (80, 40)
    assert len(rerun.encoded) == 40, "only the batch in flight is encoded again"
    np.testing.assert_allclose(vectors, minilm.encode(titles), atol=1e-5)
