"""EfficientNet-Lite0 photo embeddings on real Flipkart images; bad files are tolerated and counted."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from classifiers import EmbeddingCache
from classifiers.images import ImageEmbedder, ImageFailure
from shelfwise.errors import ModelError


def _photos(flipkart: pl.DataFrame, pattern: str, n: int) -> list[str]:
    rows = flipkart.filter(pl.col("title").str.contains(pattern) & pl.col("image_file").is_not_null())
    return rows["image_file"].head(n).to_list()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, flipkart: pl.DataFrame) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("bad_images")
    garbage = folder / "garbage.jpg"
    garbage.write_bytes(b"\x00\x13 definitely not a JPEG " * 200)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(Path(_photos(flipkart, "(?i)watch", 1)[0]).read_bytes()[:600])
    huge = folder / "huge.png"
    Image.new("L", (12000, 9000), 200).save(huge)  # 108 Mpixel, > max_pixels
    return {
        "missing": str(folder / "no_such_photo.jpg"),
        "garbage": str(garbage),
        "truncated": str(truncated),
        "huge": str(huge),
    }


def test_photos_give_unit_1280_vectors_and_like_products_are_closer(image_embedder, flipkart) -> None:
    watches = _photos(flipkart, "(?i)analog watch", 4)
    towels = _photos(flipkart, "(?i)towel", 4)
    vectors, ok, failures = image_embedder.encode_paths(watches + towels)

    assert vectors.shape == (8, 1280) and vectors.dtype == np.float32
    assert ok.all() and failures == {}
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    within = (sims[:4, :4].sum() - 4) / 12 + (sims[4:, 4:].sum() - 4) / 12
    across = sims[:4, 4:].mean()
    assert within / 2 > across + 0.1  # watch photos look like watches, towels like towels


def test_bad_files_are_tolerated_and_counted_by_reason(image_embedder, flipkart, bad_files) -> None:
    good = _photos(flipkart, "(?i)watch", 2)
    paths = [
        good[0],
        bad_files["missing"],
        None,
        bad_files["garbage"],
        bad_files["huge"],
        bad_files["truncated"],
        good[1],
        "",
    ]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's decompression-bomb warning must not leak
        vectors, ok, failures = image_embedder.encode_paths(paths)

    assert ok.tolist() == [True, False, False, False, False, False, True, False]
    assert failures == {
        ImageFailure.MISSING: 1,
        ImageFailure.NO_PATH: 2,
        ImageFailure.CORRUPT: 2,
        ImageFailure.TOO_LARGE: 1,
    }
    assert not vectors[~ok].any()
    assert np.allclose(np.linalg.norm(vectors[ok], axis=1), 1.0, atol=1e-5)


def test_large_jpeg_is_decoded_at_reduced_scale_and_matches_the_original(image_embedder, flipkart, tmp_path):
    original = _photos(flipkart, "(?i)analog watch", 1)[0]
    big = tmp_path / "big.jpg"
    with Image.open(original) as im:
        im.convert("RGB").resize((im.width * 24, im.height * 24), Image.Resampling.BICUBIC).save(
            big, quality=90
        )
    with Image.open(big) as im:
        assert im.width * im.height > 20_000_000

    vectors, ok, _ = image_embedder.encode_paths([original, str(big)])
    assert ok.all()
    assert float(vectors[0] @ vectors[1]) > 0.9

    strict = ImageEmbedder(max_pixels=10_000_000)
    _, ok, failures = strict.encode_paths([str(big)])
    assert not ok[0] and failures == {ImageFailure.TOO_LARGE: 1}


def test_image_cache_keys_by_file_content(tmp_path, image_embedder, counting_images, flipkart, bad_files):
    photos = _photos(flipkart, "(?i)watch", 3)
    copy = tmp_path / "renamed_copy.jpg"
    shutil.copy(photos[0], copy)
    paths = [
        photos[0],
        bad_files["garbage"],
        photos[1],
        str(copy),
        photos[2],
        bad_files["missing"],
        photos[1],
    ]
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    embedder = counting_images(image_embedder)

    first = cache.embed_images(embedder, paths)

    assert first.ok.tolist() == [True, False, True, True, True, False, True]
    assert first.failures == {"corrupt": 1, "missing": 1}
    assert sorted(embedder.decoded) == sorted([photos[0], bad_files["garbage"], photos[1], photos[2]])
    np.testing.assert_array_equal(first.vectors[0], first.vectors[3])  # same bytes, other name: one entry
    direct, _, _ = image_embedder.encode_paths(photos)
    np.testing.assert_allclose(first.vectors[[0, 2, 4]], direct, atol=1e-5)

    embedder.decoded.clear()
    second = cache.embed_images(embedder, paths)
    assert embedder.decoded == [bad_files["garbage"]]  # failures are not cached, good photos are
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert second.failures == first.failures
    assert cache.stats().models == {image_embedder.model_id: 3}


def test_missing_weights_file_is_a_model_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="weights file .*nope.pth"):
        ImageEmbedder(weights_path=tmp_path / "nope.pth")
