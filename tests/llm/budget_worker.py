"""A worker process for the shared-budget tests: builds its own arbiter from plain data with
`arbiter_for`, waits for the go signal, decides its items under one run id and writes what happened.

    python budget_worker.py SPEC.json     (SPEC: base_url, store, run_id, taxonomy, items, model_dir,
                                           budget_calls, ready, go, out)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import polars as pl


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    from classifiers.llm import arbiter_for, close_arbiters
    from taxonomy import load_taxonomy

    taxonomy = load_taxonomy(spec["taxonomy"])
    items = pl.read_parquet(spec["items"])
    settings = {
        "base_url": spec["base_url"],
        "model": "budget-model",
        "max_concurrency": 2,
        "budget_calls": spec["budget_calls"],
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    }
    if spec["store"].startswith("postgresql"):
        settings["cache_url"] = spec["store"]
    else:
        settings["cache_path"] = spec["store"]
    arbiter = arbiter_for(settings, spec["model_dir"], taxonomy)
    assert arbiter is not None and arbiter_for(settings, spec["model_dir"], taxonomy) is arbiter
    Path(spec["ready"]).write_text("ready")
    deadline = time.monotonic() + 60
    while not Path(spec["go"]).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go signal within 60 s")
        time.sleep(0.01)
    decided, stats = arbiter.decide_counted(items, run_id=spec["run_id"])
    Path(spec["out"]).write_text(
        json.dumps({"statuses": decided["llm_status"].to_list(), "calls": stats.calls})
    )
    close_arbiters()


if __name__ == "__main__":
    main(sys.argv[1])
