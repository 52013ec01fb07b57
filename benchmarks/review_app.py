"""Latency of the review app under a real uvicorn on 127.0.0.1: search-as-you-type, pages, decisions.

    .venv/bin/python benchmarks/review_app.py                      # SQLite in a temp folder
    .venv/bin/python benchmarks/review_app.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_review

Queues all 739 real Flipkart products (photos, titles, descriptions) with Shopify suggestions from the
search index, starts the app on a free port with the Shopify en + ko taxonomies, then times, over HTTP:
taxonomy search keystroke by keystroke (English and Korean), the queue page, the item page, and the
decide-then-claim-next round trip of a reviewer working through a queue. Bounded request counts;
traffic stays on 127.0.0.1. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import uvicorn

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
TYPED = ["curtains", "bath towel", "wrist watch", "backpack", "커튼", "배낭", "세안 타월", "반려동물 용품"]


def _frame(shared: Path) -> pl.DataFrame:
    from taxonomy import TaxonomyIndex, load_taxonomy

    en = load_taxonomy(shared / "taxonomies" / "shopify_categories_2025-01.en.txt")
    index = TaxonomyIndex(en)
    products = pl.read_parquet(shared / "catalogs" / "flipkart.parquet")
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(products.to_dicts()):
        queries = [*reversed((p["category_path"] or "").split(" > ")), *(p["title"] or "").split()]
        hits = next((h for q in queries if (h := index.search(q, limit=5))), None)
        if not hits:
            continue
        scores = [0.45, 0.25, 0.15, 0.1, 0.05]
        rows.append(
            {
                "sku_id": p["sku_id"],
                "category_id": hits[0].node.id,
                "category_path": hits[0].node.path,
                "confidence": scores[0],
                "candidates": [
                    {"category_id": h.node.id, "category_path": h.node.path, "score": s}
                    for h, s in zip(hits, scores)
                ],
                "current_category_path": p["category_path"],
                "taxonomy_version": en.version,
                "model_version": "bench",
                "run_id": "bench",
                "content_hash": f"h-{p['sku_id']}",
                "queue": ["low_confidence", "suspect", "audit"][i % 3],
                "priority": float(i % 97),
                "reason": "bench",
                "title": p["title"],
                "description": p["description"],
                "brand": p["brand"],
                "image_path": p["image_path"],
                "review_text": None,
            }
        )
    return pl.DataFrame(
        rows,
        schema_overrides={
            "candidates": pl.List(
                pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64})
            )
        },
    )


def _stats(ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"{statistics.median(ms):.1f} | {p95:.1f} | {ms[-1]:.1f} | {len(ms)}"


class Timer:
    """Milliseconds per request, by request name."""

    def __init__(self) -> None:
        self.results: dict[str, list[float]] = {}

    def __call__(self, name: str, fn: Any) -> Any:
        started = time.perf_counter()
        out = fn()
        self.results.setdefault(name, []).append((time.perf_counter() - started) * 1000)
        return out


def _queue(db_url: str) -> int:
    """Queue every Flipkart product with search-index suggestions, add the admin ``bench``; the count."""
    from verification import QueueStore

    with QueueStore(db_url, bcrypt_rounds=10) as store:
        store.upgrade()
        frame = _frame(SHARED)
        store.enqueue(frame, run_id="bench")
        if store.get_user("bench") is None:
            store.add_user("bench", "bench-password", role="admin")
    return len(frame)


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    """The app on a real uvicorn on a free port of 127.0.0.1: (server, its thread, base URL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _login(client: httpx.Client) -> dict[str, str]:
    """Sign in as ``bench`` through the login form; the CSRF header the API wants."""
    page = client.get("/login").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    client.post("/login", data={"username": "bench", "password": "bench-password", "csrf_token": token})
    return {"X-CSRF-Token": client.get("/api/me").json()["csrf_token"]}


def _time_pages(client: httpx.Client, timed: Timer) -> None:
    """Search keystroke by keystroke, the queue page, item pages and photos."""
    for _ in range(3):
        for word in TYPED:
            for end in range(1, len(word) + 1):  # keystroke by keystroke
                resp = timed(
                    "GET /api/taxonomy/search (per keystroke)",
                    lambda q=word[:end]: client.get("/api/taxonomy/search", params={"q": q, "limit": 12}),
                )
                resp.raise_for_status()
    for _ in range(30):
        timed("GET /queues (50 rows)", lambda: client.get("/queues").raise_for_status())
    items = client.get("/api/items", params={"limit": 30}).json()["items"]
    for item in items:
        timed(
            "GET /items/{id} (item page)",
            lambda i=item["id"]: client.get(f"/items/{i}").raise_for_status(),
        )
        timed("GET /items/{id}/image", lambda i=item["id"]: client.get(f"/items/{i}/image"))


def _time_decisions(client: httpx.Client, headers: dict[str, str], timed: Timer, limit: int) -> float:
    """A reviewer working through a queue (decide, then claim the next): decisions per second."""
    current = client.post("/api/queues/low_confidence/claim", headers=headers).json()[0]
    done = 0
    started = time.perf_counter()
    while current is not None and done < limit:
        kind = (
            {"kind": "accept"}
            if done % 3
            else {"kind": "choose", "category_id": current["candidates"][-1]["category_id"]}
        )
        resp = timed(
            "POST decision + claim next (API)",
            lambda c=current, k=kind: client.post(
                f"/api/items/{c['id']}/decision", params={"claim_next": "true"}, json=k, headers=headers
            ),
        )
        resp.raise_for_status()
        current = resp.json()["next_item"]
        done += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None, help="queue DB (default: SQLite in a temp folder)")
    parser.add_argument("--decisions", type=int, default=150, help="decide+claim-next round trips to time")
    args = parser.parse_args()

    from verification.app import ReviewAppConfig, create_app

    tmp = Path(tempfile.mkdtemp(prefix="shelfwise-bench-review-"))
    db_url = args.db_url or f"sqlite:///{tmp / 'queue.db'}"
    queued = _queue(db_url)
    tax = SHARED / "taxonomies"
    t0 = time.perf_counter()
    app = create_app(
        ReviewAppConfig(
            db_url=db_url,
            taxonomy_path=str(tax / "shopify_categories_2025-01.en.txt"),
            extra_taxonomy_paths=[str(tax / "shopify_categories_2025-01.ko.txt")],
            secret_key="bench-secret-key-bench-secret-key",
            image_root=str(SHARED),
        )
    )
    startup = time.perf_counter() - t0
    server, thread, base = _serve(app)
    timed = Timer()
    with httpx.Client(base_url=base, timeout=30) as client:
        headers = _login(client)
        _time_pages(client, timed)
        per_sec = _time_decisions(client, headers, timed, args.decisions)
    server.should_exit = True
    thread.join(timeout=10)
    load = os.getloadavg()[0]
    print(
        f"review app on {db_url.split(':')[0]}, {queued} queued Flipkart items, Shopify en+ko taxonomy, "
        f"load average {load:.2f}, Python {sys.version.split()[0]}"
    )
    print(f"\ncreate_app (taxonomies + index + schema check): {startup:.2f} s; decisions: {per_sec:.1f}/s\n")
    print("| request | median ms | p95 ms | max ms | n |\n|---|---|---|---|---|")
    for name, ms in timed.results.items():
        print(f"| {name} | {_stats(ms)} |")


if __name__ == "__main__":
    main()
