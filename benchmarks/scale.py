"""Nights at catalog scale: four `shelfwise run` nights that measure the per-row and per-content costs apart.

    .venv/bin/python benchmarks/scale.py [--rows 1000000] [--distinct 10000] [--changed 0.01] [--scale 5]
        [--engines threads dask] [--parts 1] [--shared ../shared/data] [--workdir DIR] [--json OUT.json]

The catalog: ``--rows`` SKUs drawn with replacement from ``--distinct`` contents (real Amazon UK titles,
plus pack-size variants of them beyond the 5,594 distinct real ones), each with a price. For each engine
(threads: `--workers 2`; dask: `--dask-workers 2`, a local cluster of two processes), four nights:

  1. cold        a fresh state folder, an empty embedding cache: every SKU scored (each content once)
  2. price       ``--changed`` of the SKUs get a new price only (outside the content hash): an unchanged
                 night, every SKU carried; its in-flow time per SKU is the per-row overhead
  3. titles      another ``--changed`` of the SKUs get a new title: new contents to embed and score; its
                 extra time over night 2, per new content, is the new-content rate
  4. cold x N    night 1 at ``--scale`` times the rows (same contents), fresh state, empty cache: peak
                 memory and time per SKU against night 1

Each night is `shelfwise run` as a user runs it: a fresh process with its own Prefect server. Start-up
(imports, the run's Prefect server, the report after the summary) is the process's wall time minus the
summary's ``seconds`` (the flow body: model load, staging, scoring, deciding, writing); per-row figures
use the latter. Peak RSS is each process's high-water mark (``VmHWM``), for every process of the run.
The raw encoder rate is MiniLM alone on 2,000 distinct titles, one process on both cores, one call.
``--parts N`` writes each night's catalog as N Parquet part files in a folder (a multi-file catalog).
The machine may be shared: figures are rough.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("shelfwise")


# ------------------------------------------------------------------------------------------ processes
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
        return "main"
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
    """One `shelfwise run`: wall and CPU seconds, and the peak RSS of each kind of process (MiB)."""
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


# ------------------------------------------------------------------------------------------ catalogs
@dataclass(frozen=True)
class Sizes:
    rows: int
    distinct: int
    changed: float
    scale: int
    parts: int


def _contents(shared: Path, distinct: int) -> pl.DataFrame:
    """``distinct`` contents: real distinct titles, then pack-size variants of them."""
    amazon = pl.read_parquet(shared / "catalogs" / "amazon_uk.parquet").unique("title", keep="first")
    amazon = amazon.select("title", "brand", "category_path").sample(fraction=1.0, shuffle=True, seed=1)
    variants = [amazon] + [amazon.with_columns(pl.col("title") + f" (pack of {k})") for k in range(2, 10)]
    return pl.concat(variants).head(distinct)


def _draw(contents: pl.DataFrame, rows: int) -> pl.DataFrame:
    return (
        contents.sample(rows, with_replacement=True, seed=2)
        .with_columns(
            pl.format("sku-{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias("sku_id"),
            (pl.int_range(pl.len()).hash(seed=3) % 100_000 / 100 + 1).alias("price"),
        )
        .select("sku_id", "title", "brand", "category_path", "price")
    )


def _changed(frame: pl.DataFrame, share: float, seed: int, column: str, expr: pl.Expr) -> pl.DataFrame:
    """``frame`` with ``column`` replaced by ``expr`` on a random ``share`` of its rows."""
    picked = pl.Series("i", range(frame.height)).sample(int(frame.height * share), seed=seed)
    hit = pl.col("i").is_in(picked.implode())
    return (
        frame.with_row_index("i")
        .with_columns(pl.when(hit).then(expr).otherwise(pl.col(column)).alias(column))
        .drop("i")
    )


def _write(frame: pl.DataFrame, path: Path, parts: int) -> Path:
    """One Parquet file, or a folder of ``parts`` part files (a multi-file catalog)."""
    if parts <= 1:
        frame.write_parquet(path.with_suffix(".parquet"))
        return path.with_suffix(".parquet")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    step = -(-frame.height // parts)
    for i in range(parts):
        frame.slice(i * step, step).write_parquet(path / f"part-{i:05d}.parquet")
    return path


def build_catalogs(shared: Path, work: Path, sizes: Sizes, *, big: bool = True) -> dict[str, Any]:
    """The four nights' catalogs (``big``: with night 4's), and how many new contents the titles night
    brings."""
    contents = _contents(shared, sizes.distinct)
    cold = _draw(contents, sizes.rows)
    price = _changed(cold, sizes.changed, 4, "price", pl.col("price") * 1.1)
    titles = _changed(price, sizes.changed, 5, "title", pl.col("title") + " (revised)")
    new_contents = titles.join(price, on=["sku_id", "title"], how="anti")["title"].n_unique()
    out: dict[str, Any] = {
        "cold": _write(cold, work / "night-cold", sizes.parts),
        "price": _write(price, work / "night-price", sizes.parts),
        "titles": _write(titles, work / "night-titles", sizes.parts),
        "new_contents": int(new_contents),
    }
    if big:
        out["cold-x"] = _write(_draw(contents, sizes.rows * sizes.scale), work / "night-cold-x", sizes.parts)
    return out


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


# ------------------------------------------------------------------------------------------ nights
def _train(args: argparse.Namespace, work: Path, env: dict[str, str]) -> Path:
    model = work / "model"
    if (model / "manifest.json").exists():
        return model
    amazon = pl.read_parquet(args.shared / "catalogs" / "amazon_uk.parquet")
    labelled = amazon.filter(pl.col("category_path").is_not_null())
    labelled.sample(min(labelled.height, args.train_rows), seed=0).write_parquet(work / "labelled.parquet")
    t0 = time.perf_counter()
    taxonomy = args.shared / "taxonomies" / "amazon_uk_categories.txt"
    done = subprocess.run(
        [str(BIN), "train", "--taxonomy", str(taxonomy), "--catalog", str(work / "labelled.parquet")]
        + ["--model-dir", str(model), "--state-dir", str(work / "train-state")],
        check=False,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"shelfwise train failed ({done.returncode}):\n{done.stderr[-4000:]}")
    print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return model


def _night(
    engine: str, night: str, catalog: Path, state: Path, model: Path, ctx: dict[str, Any]
) -> dict[str, Any]:
    flags = ["--workers", "2"] if engine == "threads" else ["--dask-workers", "2"]
    shard = ["--shard-size", str(ctx["shard_size"])] if ctx["shard_size"] else []
    args = ["--catalog", str(catalog), "--model-dir", str(model), "--state-dir", str(state), *shard, *flags]
    r = run_night(args, ctx["env"], ctx["work"] / f"{engine}-{night}.log")
    summary = json.loads(max((state / "runs").glob("*/summary.json")).read_text())
    log = (ctx["work"] / f"{engine}-{night}.log").read_text(errors="replace")
    warm = [float(m) for m in re.findall(r"Dask warm-up: .* loaded the model in ([0-9.]+) s", log)]
    c, e = summary["counts"], summary["embedding"]
    rows = c.get("seen", 0)
    r.update(
        engine=engine,
        night=night,
        rows=rows,
        flow_seconds=summary.get("seconds", 0.0),
        rescored=c.get("rescored", 0),
        carried=c.get("carried", 0),
        distinct_scored=c.get("distinct_scored", 0),
        embedded=e["misses"],
        score_step_s=e.get("score_step_seconds", 0.0),
        mode=summary.get("incremental", {}).get("mode"),
        warmup_s=warm,  # Dask: each worker's model load, before its first task (flows/_warmup.py)
    )
    r["startup_s"] = r["seconds"] - r["flow_seconds"]
    r["us_per_sku"] = 1e6 * r["flow_seconds"] / rows if rows else 0.0
    print(
        f"{engine:7} {night:7} {r['seconds']:7.1f} s (flow {r['flow_seconds']:.1f} s, start-up "
        f"{r['startup_s']:.1f} s, {r['cpu_seconds']:,.0f} CPU s) {rows:,} SKUs, "
        f"{r['us_per_sku']:.1f} us/SKU; "
        f"scored {r['rescored']:,} ({r['distinct_scored']:,} distinct, {r['embedded']:,} embedded), "
        f"carried {r['carried']:,}; peak RSS MiB {r['peak_rss_mib']}",
        flush=True,
    )
    return r


#: The four nights, in the order they run (``--nights`` picks some: each needs those before it on its state).
NIGHTS = ("cold", "price", "titles", "cold-x")


def run_engine(
    engine: str, catalogs: dict[str, Any], model: Path, ctx: dict[str, Any]
) -> list[dict[str, Any]]:
    """The four nights on one engine: three on one state folder, the big cold night on a fresh one.
    Each night's record is appended to ``ctx["done"]`` (and ``--json`` rewritten) as soon as it ends, so
    a long run that is stopped still leaves the nights it finished."""
    work = ctx["work"]
    out: list[dict[str, Any]] = []
    for night, state_name in (("cold", "a"), ("price", "a"), ("titles", "a"), ("cold-x", "b")):
        if night not in ctx.get("nights", NIGHTS):
            continue
        state = work / f"state-{engine}-{state_name}"
        if night in ("cold", "cold-x"):
            shutil.rmtree(state, ignore_errors=True)
        out.append(_night(engine, night, catalogs[night], state, model, ctx))
        ctx["done"].append(out[-1])
        if ctx.get("json"):
            ctx["json"].write_text(json.dumps({"nights": ctx["done"]}, indent=2, default=str))
        if night == "cold-x":  # the big night's folders are large: keep only its summary
            shutil.rmtree(state / "work", ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------ figures
def figures(nights: list[dict[str, Any]], raw_rate: float, scale: int) -> dict[str, Any]:
    """The issue's figures for one engine's four nights."""
    by = {r["night"]: r for r in nights}
    cold, price, titles, big = by["cold"], by["price"], by["titles"], by["cold-x"]
    extra = titles["flow_seconds"] - price["flow_seconds"]
    new = titles["distinct_scored"]
    rate = new / extra if extra > 0 else 0.0
    return {
        "engine": cold["engine"],
        "unchanged_us_per_sku": price["us_per_sku"],
        "price_vs_cold": price["seconds"] / cold["seconds"],
        "new_contents": new,
        "new_content_extra_s": extra,
        "new_content_rate": rate,
        "new_content_vs_raw": rate / raw_rate if raw_rate else 0.0,
        "score_step_rate": titles["embedded"] / titles["score_step_s"] if titles["score_step_s"] else 0.0,
        "peak_1x_mib": cold["peak_rss_mib"],
        "peak_nx_mib": big["peak_rss_mib"],
        "peak_growth": big["max_process_mib"] / cold["max_process_mib"] - 1,
        "per_sku_nx_vs_1x": (big["flow_seconds"] / big["rows"]) / (cold["flow_seconds"] / cold["rows"]),
        "scale": scale,
    }


def targets(f: dict[str, Any], by: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool]]:
    """Issue 19's "done when" for one engine: (target, measured, met)."""
    cold = by["cold"]
    peak_1x, peak_nx = max(f["peak_1x_mib"].values()), max(f["peak_nx_mib"].values())
    return [
        ("full night within 5 minutes", f"{cold['seconds']:,.0f} s", cold["seconds"] <= 300),
        (
            "price-only night at most 1/4 of the full night (aim 1/10)",
            f"{f['price_vs_cold']:.2f}",
            f["price_vs_cold"] <= 0.25,
        ),
        (
            "new-content rate at least 60% of the raw encoder rate",
            f"{f['new_content_rate']:,.0f}/s = {f['new_content_vs_raw']:.0%}",
            f["new_content_vs_raw"] >= 0.6,
        ),
        (f"every process under 2 GiB at {f['scale']}x", f"{peak_nx:,} MiB", peak_nx < 2048),
        (
            f"peak at {f['scale']}x at most 15% above 1x",
            f"{peak_1x:,} -> {peak_nx:,} MiB ({f['peak_growth']:+.0%})",
            f["peak_growth"] <= 0.15,
        ),
        (
            f"time per SKU at {f['scale']}x at most 1.25x the 1x night's",
            f"{f['per_sku_nx_vs_1x']:.2f}",
            f["per_sku_nx_vs_1x"] <= 1.25,
        ),
    ]


def print_nights(results: list[dict[str, Any]]) -> None:
    """One row per night; with a cold and a price night of an engine, their wall-time ratio."""
    print()
    print(
        "| engine | night | SKUs | wall (s) | start-up (s) | flow (s) | µs/SKU (flow) | CPU s "
        "| scored (distinct) "
        "| embedded | carried | peak RSS per process (MiB) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        rss = ", ".join(f"{k} {v:,}" for k, v in sorted(r["peak_rss_mib"].items()))
        print(
            f"| {r['engine']} | {r['night']} | {r['rows']:,} | {r['seconds']:,.0f} | {r['startup_s']:,.0f} "
            f"| {r['flow_seconds']:,.0f} | {r['us_per_sku']:,.1f} | {r['cpu_seconds']:,.0f} "
            f"| {r['rescored']:,} ({r['distinct_scored']:,}) | {r['embedded']:,} | {r['carried']:,} | {rss} |"
        )
    for engine in dict.fromkeys(r["engine"] for r in results):
        by = {r["night"]: r for r in results if r["engine"] == engine}
        if "cold" in by and "price" in by:
            ratio = by["price"]["seconds"] / by["cold"]["seconds"]
            print(f"\n{engine}: price night / cold night (wall) = {ratio:.3f}")


def print_tables(results: list[dict[str, Any]], figs: list[dict[str, Any]], raw_rate: float) -> None:
    print_nights(results)
    print()
    print(
        "| engine | unchanged night (µs/SKU) | price night / cold night (wall) | new contents | extra s "
        "| new-content rate (/s, % of raw) | max process 1x → Nx (MiB) | time per SKU Nx / 1x |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for f in figs:
        print(
            f"| {f['engine']} | {f['unchanged_us_per_sku']:,.1f} | {f['price_vs_cold']:.2f} "
            f"| {f['new_contents']:,} | {f['new_content_extra_s']:,.1f} "
            f"| {f['new_content_rate']:,.0f} ({f['new_content_vs_raw']:.0%}) "
            f"| {max(f['peak_1x_mib'].values()):,} → {max(f['peak_nx_mib'].values()):,} "
            f"({f['peak_growth']:+.0%}, x{f['scale']}) | {f['per_sku_nx_vs_1x']:.2f} |"
        )
    for f in figs:
        by = {r["night"]: r for r in results if r["engine"] == f["engine"]}
        print(f"\n| {f['engine']}: issue 19 target | measured | met |\n|---|---|---|")
        for target, measured, met in targets(f, by):
            print(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    print(f"\nraw encoder rate in this run: {raw_rate:,.0f} texts/s")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--distinct", type=int, default=10_000)
    ap.add_argument("--changed", type=float, default=0.01)
    ap.add_argument("--scale", type=int, default=5, help="night 4 has this many times the rows")
    ap.add_argument("--parts", type=int, default=1, help="write each catalog as this many part files")
    ap.add_argument("--engines", nargs="+", default=["threads"], choices=["threads", "dask"])
    ap.add_argument(
        "--shard-size", type=int, default=None, help="shelfwise run --shard-size (default: setting)"
    )
    ap.add_argument("--train-rows", type=int, default=4_000, help="labelled Amazon UK rows to train on")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--nights",
        nargs="+",
        default=list(NIGHTS),
        choices=NIGHTS,
        help="run only these nights (price needs cold; titles needs price); figures need all four",
    )
    return ap


def main() -> None:
    args = _parser().parse_args()
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
    model = _train(args, work, env)
    sizes = Sizes(args.rows, args.distinct, args.changed, args.scale, args.parts)
    catalogs = build_catalogs(args.shared, work, sizes, big="cold-x" in args.nights)
    print(
        f"catalog: {sizes.rows:,} SKUs ({sizes.rows * sizes.scale:,} in night 4), "
        f"{sizes.distinct:,} distinct "
        f"contents, {sizes.parts} part file(s); price night: {int(sizes.rows * sizes.changed):,} new prices; "
        f"titles night: {int(sizes.rows * sizes.changed):,} SKUs retitled ({catalogs['new_contents']:,} new "
        "contents)",
        flush=True,
    )
    first = catalogs["cold"] if sizes.parts <= 1 else catalogs["cold"] / "part-00000.parquet"
    rated = "titles" in args.nights  # the raw encoder rate is for the titles night's figure
    raw_before = raw_encoder_rate(first, 2_000, env) if rated else 0.0
    print(f"raw encoder rate: {raw_before:,.0f} texts/s (MiniLM, 2,000 distinct titles, torch on 2 cores)")
    ctx: dict[str, Any] = {
        "env": env,
        "work": work,
        "shard_size": args.shard_size,
        "done": [],
        "json": args.json,
        "nights": tuple(args.nights),
    }
    results: list[dict[str, Any]] = []
    for engine in args.engines:
        results += run_engine(engine, catalogs, model, ctx)
    # measured again after the nights: on a shared machine the rate moves; the figures use the mean
    raw_after = raw_encoder_rate(first, 2_000, env) if rated else 0.0
    raw_rate = (raw_before + raw_after) / 2
    print(f"raw encoder rate after the nights: {raw_after:,.0f} texts/s (mean {raw_rate:,.0f})")
    if set(args.nights) != set(NIGHTS):  # some nights only: the per-night table and the price/cold ratio
        print_nights(results)
        return
    figs = [figures([r for r in results if r["engine"] == e], raw_rate, sizes.scale) for e in args.engines]
    print_tables(results, figs, raw_rate)
    if args.json:
        payload = {
            "raw_encoder_rate": raw_rate,
            "raw_encoder_rate_before_after": [raw_before, raw_after],
            "sizes": sizes.__dict__,
            "nights": results,
            "figures": figs,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
