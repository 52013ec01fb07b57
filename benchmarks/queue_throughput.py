"""Queue store throughput: claim + decide per second with N parallel reviewers (threads).

    python benchmarks/queue_throughput.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                          [--items 2000] [--workers 8] [--batch 1]

Runs in a throw-away schema (PostgreSQL) or a temporary file (SQLite), which it removes afterwards.
Each worker has its own QueueStore (own connections) and loops: claim ``--batch`` items, decide each.
Prints the enqueue rate and the claim+decide rate, and checks that every item was decided exactly once.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from verification.store import QueueStore


def _frame(n: int) -> pl.DataFrame:
    cands = [
        {"category_id": f"c{k}", "category_path": f"Toys > Games > Kind {k}", "score": 0.5 / (k + 1)}
        for k in range(5)
    ]
    return pl.DataFrame(
        {
            "sku_id": [f"sku-{i:07d}" for i in range(n)],
            "category_id": "c0",
            "category_path": "Toys > Games > Kind 0",
            "confidence": [0.3 + (i % 50) / 100 for i in range(n)],
            "candidates": [cands] * n,
            "current_category_path": "Toys > Puzzles",
            "taxonomy_version": "sha256:bench",
            "model_version": "bench",
            "content_hash": [f"h{i}" for i in range(n)],
            "queue": "low_confidence",
            "priority": [((i * 7919) % n) / n for i in range(n)],
            "reason": "low_confidence",
            "title": [f"Benchmark product {i}" for i in range(n)],
        }
    )


def run(url: str, *, items: int, workers: int, batch: int) -> dict[str, float]:
    setup = QueueStore(url)
    setup.upgrade()
    t0 = time.perf_counter()
    setup.enqueue(_frame(items), run_id="bench")
    enqueue_s = time.perf_counter() - t0

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(workers + 1)

    def worker(index: int) -> None:
        store = QueueStore(url)
        me = f"bench-{index}"
        mine: list[float] = []
        try:
            barrier.wait()
            while True:
                t = time.perf_counter()
                got = store.claim("low_confidence", me, limit=batch)
                if not got:
                    break
                for item in got:
                    store.decide(item.id, me, "accept", duration_ms=1)
                mine.append((time.perf_counter() - t) / len(got))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.close()
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for th in threads:
        th.start()
    barrier.wait()
    t1 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t1
    if errors:
        raise errors[0]
    log = setup.decisions_frame()
    assert log.height == items and log["item_id"].n_unique() == items, (
        "an item was decided twice or not at all"
    )
    setup.close()
    return {
        "enqueue_rows_per_s": items / enqueue_s,
        "decisions_per_s": items / elapsed,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": statistics.quantiles(latencies, n=20)[-1] * 1000,
        "seconds": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="items per claim")
    args = parser.parse_args()

    base = sa.engine.make_url(args.url)
    cleanup = None
    if base.get_backend_name() == "postgresql":
        schema = f"bench_{secrets.token_hex(4)}"
        admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )

        def cleanup() -> None:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(tmp.name) / 'queue.db'}"
        cleanup = tmp.cleanup
    try:
        r = run(url, items=args.items, workers=args.workers, batch=args.batch)
    finally:
        cleanup()
    print(
        f"{base.get_backend_name()}: {args.items} items, {args.workers} workers, batch {args.batch}: "
        f"enqueue {r['enqueue_rows_per_s']:.0f} rows/s; claim+decide {r['decisions_per_s']:.0f}/s "
        f"(median {r['median_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms per item, {r['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
