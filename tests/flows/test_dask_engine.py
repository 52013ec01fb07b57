"""`shelfwise run --dask-address` on a real Dask cluster (a scheduler and two single-thread worker
processes started here) gives the same predictions as the thread runner, and the scheduler ran the
shard tasks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    with log.open("wb") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO, env=env
        )


@pytest.fixture
def dask_cluster(tmp_path: Path, server_ports: tuple[Any, Any]) -> Iterator[str]:
    from distributed import Client

    free_port, wait_for_port = server_ports
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        _start(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        wait_for_port(port, tmp_path / "scheduler.log")
        for i in range(2):
            procs.append(
                _start(
                    [
                        DASK,
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        "--host",
                        "127.0.0.1",
                    ],
                    tmp_path / f"worker{i}.log",
                )
            )
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in procs:  # a worker's nanny may ignore SIGTERM once its scheduler is gone: stop the groups
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                    p.wait(timeout=15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue


def _scheduler_prefixes(address: str) -> dict[str, int]:
    from distributed import Client

    def prefixes(dask_scheduler):  # type: ignore[no-untyped-def]
        return {name: sum(p.state_counts.values()) for name, p in dask_scheduler.task_prefixes.items()}

    with Client(address, timeout="30s") as client:
        return dict(client.run_on_scheduler(prefixes))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_dask_night_equals_the_thread_night(
    amazon_night: dict[str, Path],
    threads_night: Path,
    tmp_path: Path,
    dask_cluster: str,
    cli: Any,
    new_state: Any,
) -> None:
    night = str(amazon_night["night"])
    dask = new_state(tmp_path / "dask")
    proc = cli(dask, "--catalog", night, "--shard-size", "150", "--dask-address", dask_cluster)

    s_threads = RunSummary.load(threads_night)  # the same night, same shard size, on two threads
    s_dask = RunSummary.load(next((dask / "runs").glob("*/summary.json")))
    assert s_threads.engine.runner == "threads" and s_threads.engine.workers == 2
    assert s_dask.engine.runner == "dask" and s_dask.engine.address == dask_cluster
    assert s_dask.shards == s_threads.shards == 4
    # the shard tasks ran in the two worker processes, not in the flow's process
    assert len(s_dask.engine.processes) == 2 and proc.args and os.getpid() not in s_dask.engine.processes
    ran = _scheduler_prefixes(dask_cluster)
    assert ran.get("classify_shard", 0) >= 4, ran

    a = pl.read_parquet(s_threads.predictions_path).sort("sku_id").select(COMPARE)
    b = pl.read_parquet(s_dask.predictions_path).sort("sku_id").select(COMPARE)
    assert a.height == b.height == 600
    assert a.equals(b), "Dask and threads disagree on some rows"
    assert s_dask.counts.model_dump(exclude={"queued"}) == s_threads.counts.model_dump(exclude={"queued"})
    assert not list((dask / "work").glob("*/shards/*.parquet")), (
        "staged shards are removed when the flow ends"
    )
