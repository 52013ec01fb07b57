"""The OOM killer's case: `shelfwise run` SIGKILLed mid-run, twice, then run again. Nothing is lost or
duplicated, finished shards and embeddings are kept, and no process of the killed runs is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import pytest
import sqlalchemy as sa

from shelfwise.summary import RunSummary


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_when(state: Path, night: str, ready: Any, timeout: float = 600) -> tuple[int, set[int]]:
    """Start `shelfwise run`, SIGKILL its main process once ``ready()`` holds; returns its pid and the
    pids it had started (children and grandchildren) at that moment."""
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect")}
    env.pop("PREFECT_API_URL", None)
    shelfwise = str(Path(sys.executable).with_name("shelfwise"))
    proc = subprocess.Popen(
        [
            shelfwise,
            "run",
            "--state-dir",
            str(state),
            "--catalog",
            night,
            "--shard-size",
            "100",
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.2)
    children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.pid, children


def _done_shards(state: Path) -> int:
    return len(list((state / "work").glob("*/predictions/*.parquet.json")))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_sigkills_then_a_clean_run(
    amazon_night: dict[str, Path], tmp_path: Path, cli: Any, new_state: Any
) -> None:
    state = new_state(tmp_path)
    night = str(amazon_night["night"])
    # 1st kill: while staging or right after the first shards finished; 2nd kill: a few shards later
    first, left = _kill_when(state, night, lambda: _done_shards(state) >= 1)
    second, more = _kill_when(state, night, lambda: _done_shards(state) >= 3)
    left |= more
    killed = {first, second}
    kept = _done_shards(state)
    assert kept >= 3, "finished shards of the killed runs are kept for the rerun"
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in left if _alive(p)], (
        "a process of a killed run outlived it (orphan Prefect server?)"
    )
    assert not list((state / "runs").glob("*/summary.json")), "a killed run has no summary"

    cli(state, "--catalog", night, "--shard-size", "100", "--workers", "1")
    summary = RunSummary.load(next((state / "runs").glob("*/summary.json")))
    pred = pl.read_parquet(summary.predictions_path)
    assert pred.height == 600 and pred["sku_id"].n_unique() == 600, "every SKU predicted exactly once"
    assert summary.counts.rescored == 600 and summary.shards == 6
    # shards finished by the killed runs were reused: their results name the killed runs' processes (the
    # threads engine runs shards in the run's own process). How many each killed run finished depends on
    # the machine's speed (a fast one may finish every shard before the first kill lands), so the check is
    # that some did and that no other process ran one.
    ran = set(summary.engine.processes)
    assert ran & killed, (ran, killed)
    assert len(ran - killed) <= 1, (ran, killed)
    engine = sa.create_engine(f"sqlite:///{state / 'queue.db'}")
    with engine.connect() as conn:
        twice = conn.exec_driver_sql(
            "SELECT sku_id, COUNT(*) FROM review_items WHERE status IN ('open', 'claimed') "
            "GROUP BY sku_id HAVING COUNT(*) > 1"
        ).all()
        open_items = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM review_items WHERE status IN ('open', 'claimed')"
        ).scalar()
    engine.dispose()
    assert twice == [] and open_items == sum(summary.counts.queued.values())
    assert not list((state / "work").glob("*/staged.json")), "the finished run removed the staged night"
    assert not (state / "prefect" / "server.pid").exists()
