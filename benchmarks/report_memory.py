"""Peak memory of the governance report on a large night: synthetic predictions of N SKUs, the previous
night's (some SKUs moved, new and gone), a catalog state, and the report built on them.

    python benchmarks/report_memory.py --rows 5000000 [--work /tmp/report_memory] [--keep]

The files are written once per row count under ``--work`` (kept with ``--keep``, reused when there).
The report is then written (``write_report``: every figure, table, chart, report.md and report.html) in a
fresh Python process, which prints its resident memory after the imports, its peak (``VmHWM``), the
difference, and the wall time, so the generator's memory never counts.

The rows look like a night's: every predictions column (candidates too), 10,000 distinct contents filed
on the Amazon UK taxonomy's leaves, 5% of the products currently filed on another branch, 2% without a
current category, routes auto / review / suspect. The previous night has 1% fewer SKUs (gone tonight),
1% other SKUs (new tonight), and 3% of the common SKUs filed elsewhere.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = ROOT / "tests" / "data" / "taxonomies" / "amazon_uk_categories.txt"
PREV, CUR = "20260101T020000Z-prev", "20260102T020000Z-cur"
CONTENTS = 10_000
CHUNK = 500_000


def _leaves() -> list[str]:
    paths = [p.strip() for p in TAXONOMY.read_text(encoding="utf-8").splitlines() if p.strip()]
    return [p for p in paths if not any(q.startswith(p + " > ") for q in paths)]


def _chunk(lo: int, hi: int, leaves: list[str], *, run_id: str, moved_salt: int) -> pl.DataFrame:
    """Rows ``lo .. hi-1`` of a night (SKU ``sku-<i>``); ``moved_salt`` != 0 files 3% of them elsewhere."""
    n_leaf = len(leaves)
    leaf = pl.Series("leaf", leaves)
    i = pl.int_range(lo, hi, dtype=pl.Int64, eager=True).alias("i")
    f = pl.DataFrame(i).with_columns(
        (pl.col("i").hash(7) % CONTENTS).alias("content"),
        (pl.col("i").hash(11) % 1000).alias("r"),
    )
    k = pl.col("content") % n_leaf
    if moved_salt:
        k = pl.when(pl.col("i").hash(moved_salt) % 100 < 3).then((k + 17) % n_leaf).otherwise(k)
    cur_k = (
        pl.when(pl.col("r") < 50)
        .then((pl.col("content") + 101) % n_leaf)
        .otherwise(pl.col("content") % n_leaf)
    )
    conf = 0.35 + (pl.col("content").hash(3) % 650).cast(pl.Float64) / 1000.0
    route = pl.when(pl.col("r") >= 980).then(pl.lit("suspect")).when(conf >= 0.8).then(pl.lit("auto"))
    f = f.with_columns(k.alias("k"), cur_k.alias("ck"), conf.alias("confidence"))
    f = f.with_columns(route.otherwise(pl.lit("review")).alias("route"))
    path = leaf.gather(f["k"])
    cur = leaf.gather(f["ck"])
    cands = pl.struct(
        pl.lit("c").alias("category_id"),
        pl.lit("x").alias("category_path"),
        pl.col("confidence").alias("score"),
    )
    return f.select(
        ("sku-" + pl.col("i").cast(pl.String).str.zfill(9)).alias("sku_id"),
        ("n" + pl.col("k").cast(pl.String)).alias("category_id"),
        pl.lit(path).alias("category_path"),
        "confidence",
        "route",
        pl.concat_list(cands, cands, cands).alias("candidates"),
        pl.when(pl.col("r").is_between(50, 69))
        .then(None)
        .otherwise(pl.lit(cur))
        .alias("current_category_path"),
        pl.lit("sha256:bench").alias("taxonomy_version"),
        pl.lit("model-bench").alias("model_version"),
        pl.lit(run_id).alias("run_id"),
        (pl.lit(path).str.count_matches(" > ") + 1).cast(pl.Int64).alias("predicted_depth"),
        (pl.col("confidence") / 3).alias("margin"),
        pl.lit("model").alias("source"),
        pl.lit("").alias("reason"),
        pl.when(pl.col("route") == "auto").then(None).otherwise(pl.col("route")).alias("queue"),
        pl.lit(None, pl.String).alias("llm_status"),
        ("h" + pl.col("content").cast(pl.String)).alias("content_hash"),
        ("Product title " + pl.col("content").cast(pl.String)).alias("title"),
        pl.lit(run_id).alias("scored_run_id"),
        pl.lit(None, pl.String).alias("confident_category_id"),
        pl.lit(None, pl.String).alias("confident_category_path"),
        pl.lit(None, pl.Float64).alias("confident_confidence"),
    )


def _write_night(path: Path, lo: int, hi: int, *, run_id: str, moved_salt: int) -> None:
    leaves = _leaves()
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    for j, start in enumerate(range(lo, hi, CHUNK)):
        frame = _chunk(start, min(hi, start + CHUNK), leaves, run_id=run_id, moved_salt=moved_salt)
        frame.write_parquet(parts / f"part-{j:05d}.parquet", row_group_size=100_000)
    pl.scan_parquet(parts / "*.parquet").sink_parquet(path, row_group_size=100_000)
    shutil.rmtree(parts)


def _summary(run_id: str, pred: Path, model_dir: Path, previous: str | None, rows: int) -> dict[str, object]:
    auto = pl.scan_parquet(pred).filter(pl.col("route") == "auto").select(pl.len()).collect().item()
    suspect = pl.scan_parquet(pred).filter(pl.col("route") == "suspect").select(pl.len()).collect().item()
    return {
        "run_id": run_id,
        "started_at": "2026-01-02T02:00:00+00:00",
        "finished_at": "2026-01-02T02:10:00+00:00",
        "catalog": "synthetic",
        "taxonomy_version": "sha256:bench",
        "model_version": "model-bench",
        "model_dir": str(model_dir),
        "counts": {"seen": rows, "classified": rows, "auto": auto, "review": rows - auto, "suspect": suspect},
        "predictions_path": str(pred),
        "previous_run_id": previous,
    }


def prepare(work: Path, rows: int) -> Path:
    """The state folder of two synthetic nights of ``rows`` SKUs (written once)."""
    state = work / f"rows-{rows}" / "state"
    if (state / "ready").exists():
        return state
    from shelfwise.settings import Settings
    from shelfwise.state import CURRENT, StateGeneration, state_root

    if state.exists():
        shutil.rmtree(state)
    model_dir = state.parent / "model"
    (model_dir / "taxonomy").mkdir(parents=True, exist_ok=True)
    shutil.copy(TAXONOMY, model_dir / "taxonomy" / TAXONOMY.name)
    (model_dir / "taxonomy" / "source.json").write_text(json.dumps({"file": TAXONOMY.name}))
    gone = new = rows // 100
    for run_id, lo, hi, salt, prev in ((PREV, 0, rows, 0, None), (CUR, gone, rows + new, 5, PREV)):
        run_dir = state / "runs" / run_id
        run_dir.mkdir(parents=True)
        _write_night(run_dir / "predictions.parquet", lo, hi, run_id=run_id, moved_salt=salt)
        summary = _summary(run_id, run_dir / "predictions.parquet", model_dir, prev, hi - lo)
        (run_dir / "summary.json").write_text(json.dumps(summary))
    # the catalog state a night's report reads (the previous night's: the state is committed last)
    settings = Settings(state_dir=state)
    buckets = max(1, rows // 1_000_000)
    gen = StateGeneration(root=state_root(settings), generation="g1", buckets=buckets, run_id=PREV, rows=rows)
    prev_pred = pl.scan_parquet(state / "runs" / PREV / "predictions.parquet")
    for b in range(buckets):
        target = Path(gen.file("catalog", b))
        target.parent.mkdir(parents=True, exist_ok=True)
        prev_pred.filter(pl.int_range(pl.len()) % buckets == b).select(
            "sku_id", "content_hash", pl.lit(PREV).alias("last_seen_run")
        ).sink_parquet(target)
    Path(gen.root, CURRENT).write_text(gen.model_dump_json())
    (state / "ready").write_text("")
    return state


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(state: Path) -> dict[str, float]:
    """Write the report of the synthetic night in this process; its memory and time."""
    from shelfwise.reports import write_report
    from shelfwise.settings import Settings

    settings = Settings(state_dir=state)
    base = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    html = write_report(CUR, settings=settings)
    seconds = time.perf_counter() - t0
    peak = _rss_mib("VmHWM")
    return {
        "rss_before_mib": base,
        "peak_mib": peak,
        "added_mib": peak - base,
        "seconds": seconds,
        "html": str(html),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/report_memory"))
    ap.add_argument("--keep", action="store_true", help="keep the synthetic files for the next run")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    state = prepare(args.work, args.rows)
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", str(state)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"report failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"rows={args.rows:,}: report peak RSS {out['peak_mib']:,.0f} MiB "
        f"(+{out['added_mib']:,.0f} MiB over {out['rss_before_mib']:,.0f} after imports), "
        f"{out['seconds']:.1f} s; {out['html']}"
    )
    if not args.keep:
        shutil.rmtree(args.work / f"rows-{args.rows}")


if __name__ == "__main__":
    main()
