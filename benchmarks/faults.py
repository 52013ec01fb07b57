"""Soak: PostgreSQL restarted again and again under 8 reviewers and nightly runs; what did users see?

    .venv/bin/python benchmarks/faults.py                 # 150 s, restart every 10 s, 8 reviewers
    .venv/bin/python benchmarks/faults.py --seconds 300 --every 8 --reviewers 8

Starts a PostgreSQL 15 cluster of its own (initdb + pg_ctl on a free port, as the `postgres` user when
run as root; the shared server is never touched), queues every real Amazon UK product,
serves the review app on a real uvicorn (127.0.0.1), and then, for ``--seconds``:

- ``--reviewers`` reviewers claim and decide through the REST API (HTTP basic auth), about
  ``--think`` seconds per item; a decision answered 503 is sent again after ``Retry-After`` with the
  same ``request_id``, as the docs tell API clients (and as app.js does for the pages);
- nights run one after another: ``shelfwise run --sample --full`` (the Prefect flow; its queue is the
  cluster) and, between them, the night's own queue calls (human-lock read, audit read, enqueue of all
  products with 5% changed) in a loop;
- every ``--every`` seconds the cluster is stopped (fast or immediate, in turn) and started again
  after 0.2 s, 1 s, 2 s or 6 s (in turn; 6 s outlasts the store's ~3.5 s of retries, so 503s are due).

Prints a markdown table of what the reviewers and the nights saw and what the database holds after:
500s, dropped connections, 503s (with Retry-After), decisions saved, lost, applied twice, and whether
the next night kept every human decision. Exit code 1 when any promise of docs/faults.md broke.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "faults"))  # the drill and the cluster helper the tests use

from drill import Night, Tally, prepare, reviewer, serve, verify
from pg_cluster import PgCluster, pg_available

SHARED = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
CATALOGS = ("amazon_uk",)  # the nights' sample is Flipkart: reviewers work on other SKUs
SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _cli_night(state: Path, url: str, log: Path) -> tuple[int, float]:
    """One ``shelfwise run --sample --full`` with the cluster as its queue: (exit code, seconds)."""
    env = {**os.environ, "SHELFWISE_QUEUE_URL": url, "PREFECT_HOME": str(state / "prefect")}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    with log.open("ab") as out:
        code = subprocess.run(
            [SHELFWISE, "run", "--sample", "--full", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            check=False,
        ).returncode
    return code, time.perf_counter() - started


def _restarts(cluster: PgCluster, stop: threading.Event, every: float, log: list[dict[str, Any]]) -> None:
    downs = itertools.cycle([0.2, 1.0, 2.0, 6.0])
    modes = itertools.cycle(["fast", "immediate"])
    while not stop.wait(every):
        down, mode = next(downs), next(modes)
        started = time.monotonic()
        cluster.restart(down_seconds=down, mode=mode)
        log.append({"mode": mode, "down_s": down, "restart_s": round(time.monotonic() - started, 2)})


@dataclass
class Soak:
    """What one soak saw: the tally of reviewers and nights, the restarts, the CLI nights, the database."""

    tally: Tally
    restarts: list[dict[str, Any]]
    cli_nights: list[tuple[int, float]]
    first_night_s: float
    elapsed_s: float
    figures: dict[str, Any]


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the soak")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between restarts")
    parser.add_argument("--reviewers", type=int, default=8)
    parser.add_argument("--think", type=float, default=0.3, help="seconds a reviewer looks at an item")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--night-state",
        type=Path,
        default=None,
        help="a state folder of an earlier soak (its trained sample model is copied, not trained again)",
    )
    return parser.parse_args()


def _under_load(args: argparse.Namespace, cluster: PgCluster, base: str, state: Path, log: Path) -> Soak:
    """Reviewers, nights and restarts at once for ``--seconds``; the figures are filled in by the caller."""
    tally, stop = Tally(), threading.Event()
    restarts: list[dict[str, Any]] = []
    cli_nights: list[tuple[int, float]] = []

    def nights() -> None:
        while not stop.is_set():
            cli_nights.append(_cli_night(state, cluster.url, log))

    store_night = Night(cluster.url, SHARED, tally, pause=2.0, catalogs=CATALOGS)
    threads = [
        threading.Thread(
            target=reviewer, args=(base, f"reviewer{i}", tally, stop), kwargs={"think": args.think}
        )
        for i in range(args.reviewers)
    ]
    threads += [
        threading.Thread(target=nights),
        threading.Thread(target=store_night.run, args=(stop,)),
        threading.Thread(target=_restarts, args=(cluster, stop, args.every, restarts)),
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join(timeout=600)
    return Soak(tally, restarts, cli_nights, 0.0, time.monotonic() - started, {})


def _soak(args: argparse.Namespace, work: Path) -> Soak:
    """Start the cluster, queue the products, train the sample model, serve the app, soak, verify."""
    from verification.app import ReviewAppConfig, create_app

    cluster = PgCluster()
    cluster.start()
    try:
        prepare(cluster.url, SHARED, [f"reviewer{i}" for i in range(args.reviewers)], catalogs=CATALOGS)
        state = work / "night-state"
        if args.night_state is not None:
            shutil.copytree(args.night_state / "models", state / "models")
        code, first = _cli_night(state, cluster.url, work / "nights.log")  # trains the sample model
        assert code == 0, (work / "nights.log").read_text()[-4000:]
        tax = SHARED / "taxonomies" / "shopify_categories_2025-01.en.txt"
        config = ReviewAppConfig(
            db_url=cluster.url, taxonomy_path=str(tax), secret_key="faults-soak-secret-0123456789"
        )
        server, base = serve(create_app(config))
        soak = _under_load(args, cluster, base, state, work / "nights.log")
        if not cluster.running():
            cluster.start()
        server.should_exit = True
        soak.first_night_s = first
        soak.figures = verify(cluster.url, SHARED, soak.tally, work / "export.csv", catalogs=CATALOGS)
    finally:
        cluster.close()
    return soak


def _table(args: argparse.Namespace, soak: Soak) -> dict[str, Any]:
    tally = soak.tally
    return {
        "seconds": round(soak.elapsed_s, 1),
        "restarts": len(soak.restarts),
        "restart_pattern": soak.restarts,
        "reviewers": args.reviewers,
        "responses": dict(sorted(tally.statuses.items())),
        "responses_500": tally.statuses[500],
        "dropped_connections": tally.dropped,
        "responses_503": tally.statuses[503],
        "503_without_retry_after": tally.unavailable_without_retry_after,
        "decisions_replayed_on_resend": tally.replayed,
        "decisions_given_up_after_resends": tally.lost_after_retries,
        "store_nights_finished": tally.nights,
        "store_night_failures": tally.night_failures,
        "cli_nights": [{"exit": c, "seconds": round(s, 1)} for c, s in soak.cli_nights],
        "first_cli_night_seconds": round(soak.first_night_s, 1),
        **soak.figures,
    }


def _broken(out: dict[str, Any], soak: Soak) -> bool:
    """Whether any promise of docs/faults.md broke."""
    figures = soak.figures
    return bool(
        out["responses_500"]
        or out["dropped_connections"]
        or out["503_without_retry_after"]
        or figures["saved_missing_from_log"]
        or figures["saved_missing_from_export"]
        or figures["applied_twice"]
        or figures["next_night_kept"] != figures["next_night_should_keep"]
        or soak.tally.night_failures
        or any(c != 0 for c, _ in soak.cli_nights)
    )


def main() -> int:
    args = _parse_args()
    problem = pg_available()
    if problem is not None:
        sys.exit(f"faults benchmark: {problem}")
    work = Path(tempfile.mkdtemp(prefix="shelfwise-faults-"))
    soak = _soak(args, work)
    out = _table(args, soak)
    print("| figure | value |\n|---|---|")
    for key, value in out.items():
        if key != "restart_pattern":
            print(f"| {key} | {value} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    print(f"work folder (logs): {work}")
    return 1 if _broken(out, soak) else 0


if __name__ == "__main__":
    sys.exit(main())
