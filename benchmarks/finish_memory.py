"""Finish-night's enqueue over a night's many shard parts: the main process's extra memory (issue 19).

    python benchmarks/finish_memory.py --rows 5000000 --parts 250 [--url postgresql+psycopg://...]
                                       [--auto 0.0] [--data /tmp/finish_memory] [--items out.parquet]

Writes ``--rows`` synthetic prediction rows (the columns a night's classify-shard writes: the predictions
contract plus the product columns, drawn from 10,000 distinct contents as `benchmarks/scale.py` draws
them) as ``--parts`` Parquet files (kept under ``--data`` for the next run), then runs
`shelfwise.pipeline.enqueue_rescored` over them in a fresh process against a fresh queue (a temporary
SQLite file, or a throw-away schema of the PostgreSQL at ``--url``). A cold night routes every SKU to
review; ``--auto`` sends that share to no queue (auto-accepted) instead.

Prints the process's RSS before the call, its peak during the call (``VmHWM`` after resetting it through
``/proc/self/clear_refs``; a sampling thread as well) and the difference, the call's seconds and the
counts it returned. ``--items`` writes the queue's items (sku, queue, priority, order) to compare two
versions of the code on the same input.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import sqlalchemy as sa

_QUEUES = ("low_confidence", "suspect", "audit")
_SHARE = (0.9, 0.09, 0.01)  # the queues' shares of a cold night's review rows
_DISTINCT = 10_000


def _contents(rng: np.random.Generator) -> pl.DataFrame:
    """10,000 distinct contents: title, description, brand, categories, candidates, content hash."""
    k = np.arange(_DISTINCT)
    paths = [f"Home & Kitchen > Storage > Kind {i % 300} > Leaf {i % 1200}" for i in k]
    cands = [
        [
            {
                "category_id": f"n{(i + j * 7) % 1200}",
                "category_path": paths[(i + j * 7) % _DISTINCT],
                "score": s,
            }
            for j, s in enumerate((0.41, 0.22, 0.09))
        ]
        for i in k
    ]
    return pl.DataFrame(
        {
            "content": k,
            "title": [f"Acme storage box {i} litre pack of {1 + i % 12}, stackable, clear lid" for i in k],
            "description": [f"Sturdy box number {i} for kitchen and garage. " * 3 for i in k],
            "brand": [f"Brand{i % 500}" for i in k],
            "category_id": [f"n{i % 1200}" for i in k],
            "category_path": paths,
            "current_category_path": [paths[(i * 31) % _DISTINCT] for i in k],
            "candidates": cands,
            "content_hash": [f"{i:064x}" for i in k],
            "confidence": rng.uniform(0.05, 0.95, _DISTINCT).round(4),
        }
    )


def write_parts(folder: Path, rows: int, parts: int, auto: float) -> list[Path]:
    """``rows`` prediction rows as ``parts`` Parquet files under ``folder`` (reused when already there)."""
    tag = folder / f"r{rows}_p{parts}_a{auto}"
    files = [tag / f"part-{i:05d}.parquet" for i in range(parts)]
    if all(f.exists() for f in files):
        return files
    tag.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(19)
    contents = _contents(rng)
    bounds = np.linspace(0, rows, parts + 1).astype(np.int64)
    for i, f in enumerate(files):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        n = hi - lo
        idx = pl.Series("content", rng.integers(0, _DISTINCT, n))
        q = rng.choice(len(_QUEUES), n, p=_SHARE)
        is_auto = rng.random(n) < auto
        part = (
            pl.DataFrame(idx)
            .join(contents, on="content", how="left", maintain_order="left")
            .drop("content")
            .with_columns(
                sku_id=pl.format("sku-{}", pl.int_range(lo, hi, dtype=pl.Int64).cast(pl.String).str.zfill(9)),
                queue=pl.when(pl.Series(is_auto)).then(None).otherwise(pl.Series(np.array(_QUEUES)[q])),
                price=pl.Series(rng.uniform(1, 200, n).round(2)),
                image_path=pl.lit(None, pl.String),
                review_text=pl.lit("Good box. " * 20),
                taxonomy_version=pl.lit("sha256:" + "ab" * 32),
                model_version=pl.lit("bench-model-1"),
                run_id=pl.lit("run-bench"),
                scored_run_id=pl.lit("run-bench"),
                predicted_depth=pl.lit(4, pl.Int32),
                margin=pl.lit(0.19),
                source=pl.lit("model"),
                llm_status=pl.lit("disabled"),
                confident_category_id=pl.lit(None, pl.String),
                confident_category_path=pl.lit(None, pl.String),
                confident_confidence=pl.lit(None, pl.Float64),
            )
            .with_columns(
                route=pl.when(pl.col("queue").is_null()).then(pl.lit("auto")).otherwise(pl.lit("review")),
                reason=pl.when(pl.col("queue").is_null())
                .then(pl.lit("confident"))
                .otherwise(pl.lit("low_confidence")),
            )
        )
        part.write_parquet(f, compression="zstd")
    return files


def _vm(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(files: list[str], url: str, items: str | None, *, lazy: bool) -> dict[str, Any]:
    """Run the enqueue once in this (fresh) process; its memory figures and counts."""
    from shelfwise.pipeline import enqueue_rescored
    from shelfwise.settings import Settings
    from verification.store import QueueStore

    state = Path(tempfile.mkdtemp(prefix="finish-memory-"))
    settings = Settings(state_dir=state, queue_url=url or None)
    # the night passes its part files (`tonight_parts`); before session 7 it passed one scan over them
    parts: Any = pl.scan_parquet(files) if lazy else [Path(f) for f in files]
    before = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _vm("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result, queued = enqueue_rescored(settings, parts, "run-bench")
    seconds = time.perf_counter() - t0
    done.set()
    sampler.join()
    hwm = _vm("VmHWM")
    if items:
        with QueueStore(settings.queue_url or "") as store:
            frame = store.items_frame()
        stamps = ["created_at", "updated_at", "decided_at", "lease_expires_at"]
        frame.drop([c for c in stamps if c in frame.columns]).write_parquet(items)  # ids: the review order
    return {
        "rss_before_mib": before // 1024,
        "peak_mib": max(hwm, peak[0]) // 1024,
        "extra_mib": (max(hwm, peak[0]) - before) // 1024,
        "seconds": round(seconds, 1),
        "queued": queued,
        "result": {k: v for k, v in result.items() if isinstance(v, dict)},
    }


def _pg_schema(url: str) -> tuple[str, str]:
    """A throw-away schema on the PostgreSQL at ``url``: (url using it, schema name)."""
    name = "finish_memory_" + secrets.token_hex(4)
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {name}"))
    with_path = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
    return with_path.render_as_string(hide_password=False), name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=50)
    ap.add_argument("--auto", type=float, default=0.0, help="share of rows auto-accepted (no queue)")
    ap.add_argument("--url", default="", help="PostgreSQL URL (default: a temporary SQLite queue)")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "finish_memory")
    ap.add_argument("--items", default=None, help="write the queue's items to this Parquet file")
    ap.add_argument("--lazy", action="store_true", help="pass one scan over the parts, not the part files")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(sys.stdin.read())
        print(json.dumps(_child(spec["files"], spec["url"], spec["items"], lazy=spec["lazy"])))
        return
    t0 = time.perf_counter()
    files = write_parts(args.data, args.rows, args.parts, args.auto)
    print(
        f"data: {len(files)} parts, {args.rows:,} rows under {files[0].parent} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    url, schema = args.url, None
    if url:
        url, schema = _pg_schema(url)
    spec = json.dumps({"files": [str(f) for f in files], "url": url, "items": args.items, "lazy": args.lazy})
    try:  # the spec on stdin: a fresh process, nothing but the call in its peak
        run = subprocess.run(
            [sys.executable, __file__, "--child", "-"],
            input=spec,
            check=False,
            capture_output=True,
            text=True,
            env=os.environ,
        )
    finally:
        if schema:
            with sa.create_engine(args.url).begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    if run.returncode:
        sys.exit(f"the enqueue failed:\n{run.stderr[-4000:]}")
    out = run.stdout
    fig = json.loads(out.strip().splitlines()[-1])
    print(
        f"enqueue_rescored over {len(files)} parts{' (one scan)' if args.lazy else ''}, {args.rows:,} rows "
        f"({'postgresql' if args.url else 'sqlite'}): "
        f"RSS before {fig['rss_before_mib']:,} MiB, peak {fig['peak_mib']:,} MiB, "
        f"extra {fig['extra_mib']:+,} MiB, {fig['seconds']} s"
    )
    print(f"queued: {fig['queued']}")
    for kind, counts in fig["result"].items():
        print(f"{kind}: {counts}")


if __name__ == "__main__":
    main()
