"""A Dask worker process killed (SIGKILL) while it runs a shard task: the task runs again on a worker
that lives, the night finishes without a rerun, and its predictions equal the thread runner's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shelfwise.summary import RunSummary

pytest.importorskip("prefect_dask", reason="the `dask` extra is not installed (pip install -e '.[dask]')")
DASK = str(Path(sys.executable).with_name("dask"))
REPO = Path(__file__).resolve().parents[2]
COMPARE = ["sku_id", "category_id", "category_path", "confidence", "route", "candidates", "queue", "reason"]
SHARD_TASKS = ("classify_shard", "classify-shard", "score_distinct", "score-distinct")


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO, env=env
        )


@pytest.fixture
def dask_cluster(tmp_path: Path, server_ports: tuple[Any, Any]) -> Iterator[str]:
    """A scheduler and two single-thread worker processes (each under a nanny that restarts it)."""
    from distributed import Client

    free_port, wait_for_port = server_ports
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    procs = [_start(scheduler, tmp_path / "scheduler.log")]
    try:
        wait_for_port(port, tmp_path / "scheduler.log")
        worker = [DASK, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
        procs += [_start([*worker, "--host", "127.0.0.1"], tmp_path / f"worker{i}.log") for i in range(2)]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in procs:  # a nanny may ignore SIGTERM once its scheduler is gone: stop the groups
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(timeout=15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def _executing(dask_worker: Any) -> list[str]:
    """Keys of the tasks this worker is running right now (runs inside the worker, via Client.run)."""
    return [str(ts.key) for ts in dask_worker.state.executing]


def _kill_during_a_shard_task(
    address: str, killed: list[tuple[str, int, str]], stop: threading.Event
) -> None:
    """Poll the workers; SIGKILL the first worker process seen running a shard or score task."""
    from distributed import Client

    with Client(address, timeout="30s") as client:
        while not stop.is_set() and not killed:
            try:
                running = client.run(_executing)
                pids = client.run(os.getpid)
            except Exception:  # noqa: BLE001 - a worker between tasks or restarting: poll again
                time.sleep(0.05)
                continue
            for worker, keys in running.items():
                key = next((k for k in keys if any(name in k for name in SHARD_TASKS)), None)
                if key is not None and worker in pids:
                    os.kill(pids[worker], signal.SIGKILL)
                    killed.append((worker, pids[worker], key))
                    return
            time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_worker_killed_mid_shard_leaves_the_night_as_threads_make_it(
    amazon_night: dict[str, Path],
    threads_night: Path,
    tmp_path: Path,
    dask_cluster: str,
    cli: Any,
    new_state: Any,
) -> None:
    night = str(amazon_night["night"])

    killed: list[tuple[str, int, str]] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_during_a_shard_task, args=(dask_cluster, killed, stop))
    killer.start()
    dask = new_state(tmp_path / "dask")
    try:
        cli(dask, "--catalog", night, "--shard-size", "150", "--dask-address", dask_cluster)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert killed, "no worker was seen running a shard task, so none was killed"

    s_threads = RunSummary.load(threads_night)  # the same night, same shard size, on two threads
    s_dask = RunSummary.load(next((dask / "runs").glob("*/summary.json")))
    a = pl.read_parquet(s_threads.predictions_path).sort("sku_id").select(COMPARE)
    b = pl.read_parquet(s_dask.predictions_path).sort("sku_id").select(COMPARE)
    assert a.height == b.height == 600
    assert a.equals(b), f"the night with a killed worker ({killed[0][2]}) disagrees with threads"
    assert s_dask.counts.model_dump(exclude={"queued"}) == s_threads.counts.model_dump(exclude={"queued"})
