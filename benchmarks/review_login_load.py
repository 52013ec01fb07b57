"""Static-file latency of the review app while 8 bcrypt logins are in flight (issue 14's probe).

    .venv/bin/python benchmarks/review_login_load.py [--logins 8] [--rounds 12] [--static 40]

Starts the review app under a real uvicorn on a free 127.0.0.1 port (SQLite in a temp folder, the bundled
Shopify taxonomy, one user whose password hash has the production bcrypt cost 12), then keeps
``--logins`` wrong-password sign-ins in flight from as many threads (each through the real login form,
from a different X-Forwarded-For address behind a trusted 127.0.0.1 proxy, so the lockout never cuts them
short) while a separate client fetches ``/static/app.css`` ``--static`` times. Prints the static-file
latency (median, p95, max) with and without the login load, and the login rate. Bounded; traffic stays
on 127.0.0.1.
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

import httpx
import uvicorn

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SHELFWISE_BENCH_DATA", REPO / "tests" / "data"))


def _csrf(html: str) -> str:
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def _static_latencies(base: str, count: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            resp = client.get("/static/app.css")
            out.append((time.perf_counter() - started) * 1000)
            resp.raise_for_status()
            time.sleep(0.02)
    return out


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.1f} | {p95:.1f} | {ordered[-1]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=8, help="wrong-password logins kept in flight")
    parser.add_argument("--rounds", type=int, default=12, help="bcrypt cost of the user's hash")
    parser.add_argument("--static", type=int, default=40, help="static-file requests to time")
    args = parser.parse_args()

    from verification import QueueStore
    from verification.app import ReviewAppConfig, create_app

    tmp = Path(tempfile.mkdtemp(prefix="shelfwise-bench-login-"))
    url = f"sqlite:///{tmp / 'queue.db'}"
    with QueueStore(url, bcrypt_rounds=args.rounds) as store:
        store.upgrade()
        store.add_user("bench", "right password 1")
    app = create_app(
        ReviewAppConfig(
            db_url=url,
            taxonomy_path=str(DATA / "taxonomies" / "shopify_categories_2025-01.en.txt"),
            secret_key="benchmark-secret-key-0123456789abcdef",
            trusted_proxies=["127.0.0.1"],
        )
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    idle = _static_latencies(base, args.static)
    stop = threading.Event()
    logins: list[float] = []

    def guess(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=base, timeout=120) as client:
            while not stop.is_set():
                n += 1
                token = _csrf(client.get("/login").text)
                started = time.perf_counter()
                client.post(
                    "/login",
                    data={"username": "bench", "password": f"wrong {n}", "csrf_token": token},
                    headers={"X-Forwarded-For": f"10.{worker}.{n // 250}.{n % 250}"},
                )
                logins.append((time.perf_counter() - started) * 1000)
                client.cookies.clear()

    workers = [threading.Thread(target=guess, args=(i,)) for i in range(args.logins)]
    for w in workers:
        w.start()
    time.sleep(1.0)  # let every login get into bcrypt
    started = time.perf_counter()
    loaded = _static_latencies(base, args.static)
    elapsed = time.perf_counter() - started
    stop.set()
    for w in workers:
        w.join()
    server.should_exit = True
    thread.join(timeout=30)

    print(f"review app on {os.cpu_count()} cores, bcrypt cost {args.rounds}, {args.logins} logins in flight")
    print("| static /static/app.css | median ms | p95 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| idle | {_summary(idle)} |")
    print(f"| {args.logins} logins in flight | {_summary(loaded)} |")
    print(
        f"\nlogins: {len(logins)} answered, median {statistics.median(logins):.0f} ms each, "
        f"{len(logins) / (elapsed + 1.0):.1f}/s overall"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
