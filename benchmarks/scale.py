"""Nights at catalog scale: `shelfwise run` on 1M SKUs (real Amazon UK titles, resampled, 10k distinct).

    .venv/bin/python benchmarks/scale.py [--rows 1000000] [--distinct 10000] [--changed 0.01]
        [--engines threads dask] [--shared ../shared/data] [--workdir DIR] [--json OUT.json]

For each engine (threads: `--workers 2`; dask: `--dask-workers 2`, a local cluster of two processes):
  1. full night     a fresh state folder, an empty embedding cache: every SKU scored (each distinct
                    content once), 10k embeddings computed
  2. changed night  the same catalog with `--changed` of the SKUs retitled (see build_catalogs):
                    only those are embedded and scored, the rest keep last night's prediction
Each night runs `shelfwise run` as a user would (a fresh process, its own Prefect server). The peak
resident memory of every process of the run (main, Prefect server, Dask workers) is sampled from /proc.
The model is trained once on --train-rows labelled Amazon UK rows.
The machine may be shared: figures are rough.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("shelfwise")


def _tree(pid: int) -> set[int]:
    """``pid`` and every process below it (none once ``pid`` is gone)."""
    try:
        return {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _label(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(c.decode(errors="replace") for c in cmd if c)
    if "prefect" in text and "server" in text:
        return "prefect server"
    if "shelfwise" in text and " run" in text:
        return "shelfwise run (main)"
    if "multiprocessing" in text or "spawn_main" in text or "forkserver" in text:
        return "dask worker"
    return text[:60]


def _watch(proc: subprocess.Popen[bytes], peaks: dict[int, tuple[str, int]], stop: threading.Event) -> None:
    while not stop.is_set():
        for pid in _tree(proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            if hwm and hwm > peaks.get(pid, ("", 0))[1]:
                peaks[pid] = (peaks[pid][0] if pid in peaks else _label(pid), hwm)
        stop.wait(0.5)


def run_night(args: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen([str(BIN), "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        watcher = threading.Thread(target=_watch, args=(proc, peaks, stop), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)  # CPU of the run and of the children it reaped
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
    secs = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if code != 0:
        raise SystemExit(f"shelfwise run failed ({code}); see {log}")
    by_kind: dict[str, int] = {}
    for label, kib in peaks.values():
        by_kind[label] = max(by_kind.get(label, 0), kib)
    return {
        "seconds": secs,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": {k: round(v / 1024) for k, v in by_kind.items()},
        "max_process_mib": round(max(v for _, v in peaks.values()) / 1024),
    }


def build_catalogs(
    shared: Path, work: Path, rows: int, distinct: int, changed: float
) -> tuple[Path, Path, int]:
    """Night 1: ``rows`` SKUs drawing from ``distinct`` contents; night 2: ``changed`` of them retitled.

    The shared Amazon UK file holds 5,594 distinct real titles; beyond that, contents are made distinct
    by a pack-size suffix on a real title ("<title> (pack of 2)"). A changed SKU gets its title plus
    " (revised)", so the changed night brings that many new contents (a few thousand distinct).
    """
    amazon = pl.read_parquet(shared / "catalogs" / "amazon_uk.parquet").unique("title", keep="first")
    amazon = amazon.select("title", "brand", "category_path").sample(fraction=1.0, shuffle=True, seed=1)
    variants = [amazon] + [amazon.with_columns(pl.col("title") + f" (pack of {k})") for k in range(2, 10)]
    base = pl.concat(variants).head(distinct)
    cat = (
        base.sample(rows, with_replacement=True, seed=2)
        .with_columns(
            pl.format("sku-{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(8)).alias("sku_id")
        )
        .select("sku_id", "title", "brand", "category_path")
    )
    night1 = work / "night1.parquet"
    cat.write_parquet(night1)
    n_changed = int(rows * changed)
    idx = pl.Series("i", range(rows)).sample(n_changed, seed=4)
    night2 = work / "night2.parquet"
    out = (
        cat.with_row_index("i")
        .with_columns(
            pl.when(pl.col("i").is_in(idx.to_list()))
            .then(pl.col("title") + " (revised)")
            .otherwise(pl.col("title"))
            .alias("title")
        )
        .drop("i")
    )
    out.write_parquet(night2)
    new_contents = out.join(cat, on=["sku_id", "title"], how="anti")["title"].n_unique()
    return night1, night2, int(new_contents)


_RAW_RATE = """
import sys, time
import polars as pl
from classifiers import make_embedder
titles = pl.read_parquet(sys.argv[1])["title"].unique(maintain_order=True).head(int(sys.argv[2])).to_list()
emb = make_embedder("minilm")
emb.threads = 2
import torch
torch.set_num_threads(2)
emb.encode(titles[:64])
t0 = time.perf_counter()
emb.encode(titles)
print(len(titles) / (time.perf_counter() - t0))
"""


def raw_encoder_rate(catalog: Path, n: int, env: dict[str, str]) -> float:
    """The encoder alone on this machine: MiniLM (the night's embedder) on ``n`` distinct titles of the
    catalog, one process using both cores (torch threads = 2), one encode call; texts per second."""
    out = subprocess.run(
        [sys.executable, "-c", _RAW_RATE, str(catalog), str(n)],
        env={**env, "OMP_NUM_THREADS": "2"},
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=10_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--engines", nargs="+", default=["threads", "dask"], choices=["threads", "dask"])
    ap.add_argument(
        "--shard-size", type=int, default=None, help="shelfwise run --shard-size (default: the setting)"
    )
    ap.add_argument(
        "--train-rows", type=int, default=4_000, help="labelled Amazon UK rows the model is trained on"
    )
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="shelfwise-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    model = work / "model"
    if not (model / "manifest.json").exists():
        amazon = pl.read_parquet(args.shared / "catalogs" / "amazon_uk.parquet")
        labelled = amazon.filter(pl.col("category_path").is_not_null())
        labelled.sample(min(labelled.height, args.train_rows), seed=0).write_parquet(
            work / "labelled.parquet"
        )
        t0 = time.perf_counter()
        subprocess.run(
            [
                str(BIN),
                "train",
                "--taxonomy",
                str(args.shared / "taxonomies" / "amazon_uk_categories.txt"),
                "--catalog",
                str(work / "labelled.parquet"),
                "--model-dir",
                str(model),
                "--state-dir",
                str(work / "train-state"),
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
    night1, night2, new_titles = build_catalogs(args.shared, work, args.rows, args.distinct, args.changed)
    print(
        f"catalog: {args.rows:,} SKUs, {args.distinct:,} distinct titles; changed night: "
        f"{int(args.rows * args.changed):,} SKUs retitled ({new_titles:,} new distinct titles)",
        flush=True,
    )

    raw_rate = raw_encoder_rate(night1, 2_000, env)
    print(f"raw encoder rate: {raw_rate:,.0f} texts/s (MiniLM, 2,000 distinct titles, torch on 2 cores)")
    results: list[dict[str, Any]] = []
    for engine in args.engines:
        state = work / f"state-{engine}"
        shutil.rmtree(state, ignore_errors=True)
        flags = ["--workers", "2"] if engine == "threads" else ["--dask-workers", "2"]
        for night, catalog in (("full", night1), ("changed", night2)):
            r = run_night(
                [
                    "--catalog",
                    str(catalog),
                    "--model-dir",
                    str(model),
                    "--state-dir",
                    str(state),
                    *(["--shard-size", str(args.shard_size)] if args.shard_size else []),
                    *flags,
                ],
                env,
                work / f"{engine}-{night}.log",
            )
            summary = json.loads(max((state / "runs").glob("*/summary.json")).read_text())
            c = summary["counts"]
            r.update(
                engine=engine,
                night=night,
                rows=args.rows,
                skus_per_s=args.rows / r["seconds"],
                rescored=c.get("rescored"),
                carried=c.get("carried"),
                distinct_scored=c.get("distinct_scored"),
                embedded=summary["embedding"]["misses"],
                score_step_s=summary["embedding"].get("score_step_seconds", 0.0),
                mode=summary.get("incremental", {}).get("mode"),
            )
            # cold embedding inside the night: texts embedded per second of the distinct-content step
            # (embedding + model scoring of those contents, all workers), against the raw encoder
            r["embed_rate"] = r["embedded"] / r["score_step_s"] if r["score_step_s"] else 0.0
            r["embed_vs_raw"] = r["embed_rate"] / raw_rate if raw_rate else 0.0
            results.append(r)
            print(
                f"{engine:7} {night:7} {r['seconds']:7.1f} s ({r['cpu_seconds']:,.0f} CPU s) "
                f"{r['skus_per_s']:9,.0f} SKUs/s  "
                f"scored {r['rescored']:,} ({r['distinct_scored']:,} distinct, {r['embedded']:,} embedded), "
                f"carried {r['carried']:,}; peak RSS MiB {r['peak_rss_mib']}; score step "
                f"{r['score_step_s']:.0f} s = {r['embed_rate']:,.0f} texts/s "
                f"({r['embed_vs_raw']:.0%} of raw)",
                flush=True,
            )
    print()
    print(
        "| engine | night | wall time (s) | CPU s | SKUs/s | scored (distinct) | embedded | carried "
        "| embedding in the night (texts/s, % of raw) | peak RSS per process (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        rss = ", ".join(f"{k} {v:,}" for k, v in sorted(r["peak_rss_mib"].items()))
        print(
            f"| {r['engine']} | {r['night']} | {r['seconds']:,.0f} | {r['cpu_seconds']:,.0f} "
            f"| {r['skus_per_s']:,.0f} | "
            f"{r['rescored']:,} ({r['distinct_scored']:,}) | {r['embedded']:,} | {r['carried']:,} | "
            f"{r['embed_rate']:,.0f} ({r['embed_vs_raw']:.0%}) | {rss} |"
        )
    print(f"\nraw encoder rate on this machine: {raw_rate:,.0f} texts/s")
    if args.json:
        args.json.write_text(json.dumps({"raw_encoder_rate": raw_rate, "nights": results}, indent=2))


if __name__ == "__main__":
    main()
