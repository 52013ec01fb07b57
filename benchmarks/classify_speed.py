"""Throughput and peak memory of `shelfwise classify` on 5k and 50k SKUs (real Amazon UK titles, resampled).

    .venv/bin/python benchmarks/classify_speed.py [--sizes 5000 50000] [--shared ../shared/data]

Trains once on the labelled Amazon UK rows, then for each size writes a catalog of real titles drawn
with replacement and made unique per SKU (a short suffix, so every row costs a real embedding), and runs
`shelfwise classify` in a fresh process twice: cold (empty embedding cache) and warm (same catalog again,
everything from the cache). Prints SKUs/second and the peak resident memory of the classify process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("shelfwise")


_MEASURE = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run a command under a fresh parent process; return (seconds, peak RSS MiB of the command)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *args], check=True, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    return elapsed, int(out.stdout.strip().splitlines()[-1]) / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="shelfwise-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SHELFWISE_STATE_DIR": str(work / "state"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    amazon = pl.read_parquet(args.shared / "catalogs" / "amazon_uk.parquet")
    labelled = amazon.filter(pl.col("category_path").is_not_null())
    labelled.write_parquet(work / "labelled.parquet")
    taxonomy = args.shared / "taxonomies" / "amazon_uk_categories.txt"
    t0 = time.perf_counter()
    subprocess.run(
        [
            str(BIN),
            "train",
            "--taxonomy",
            str(taxonomy),
            "--catalog",
            str(work / "labelled.parquet"),
            "--model-dir",
            str(work / "model"),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    print(f"train on {labelled.height} labelled SKUs: {time.perf_counter() - t0:.1f} s")

    rows = []
    for n in args.sizes:
        cat = (
            amazon.select("title", "brand")
            .sample(n, with_replacement=True, seed=n)
            .with_columns(
                pl.format("bench-{}", pl.int_range(pl.len())).alias("sku_id"),
            )
            .with_columns(pl.format("{} ({})", "title", pl.col("sku_id").str.slice(6)).alias("title"))
        )
        path = work / f"catalog_{n}.parquet"
        cat.write_parquet(path)
        shutil.rmtree(work / "state" / "cache", ignore_errors=True)
        for label in ("cold cache", "warm cache"):
            secs, rss = _run(
                [
                    str(BIN),
                    "classify",
                    "--model-dir",
                    str(work / "model"),
                    "--catalog",
                    str(path),
                    "--out",
                    str(work / f"pred_{n}.parquet"),
                    "--no-enqueue",
                ],
                env,
            )
            rows.append((n, label, n / secs, secs, rss))
            print(
                f"{n:>7} SKUs {label}: {n / secs:8.1f} SKUs/s  ({secs:.1f} s, peak RSS {rss:.0f} MiB)",
                flush=True,
            )
    print()
    print("| SKUs | embedding cache | SKUs/second | wall time (s) | peak RSS (MiB) |")
    print("|---:|---|---:|---:|---:|")
    for n, label, rate, secs, rss in rows:
        print(f"| {n:,} | {label} | {rate:,.0f} | {secs:,.1f} | {rss:,.0f} |")


if __name__ == "__main__":
    main()
