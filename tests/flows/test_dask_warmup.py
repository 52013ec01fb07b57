"""`shelfwise run --dask-workers 2` (a local Dask cluster the run starts): every worker has loaded the
night's model before its first task runs (the warm-up plugin, flows/_warmup.py), so the score step on
Dask is not charged for the load, and the tasks ran in those warmed-up workers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shelfwise.summary import RunSummary

pytest.importorskip("prefect_dask", reason="the `dask` extra is not installed (pip install -e '.[dask]')")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_dask_workers_load_the_model_before_their_first_task(
    amazon_night: dict[str, Path], tmp_path: Path, cli: Any, new_state: Any
) -> None:
    catalog = tmp_path / "night.parquet"
    pl.read_parquet(amazon_night["night"]).head(200).write_parquet(catalog)
    state = new_state(tmp_path)
    proc = cli(state, "--catalog", str(catalog), "--shard-size", "100", "--dask-workers", "2")

    lines = [line for line in proc.stdout.splitlines() if line.startswith("Dask warm-up:")]
    assert len(lines) == 2, proc.stdout[-3000:]
    assert all("loaded the model in" in line for line in lines), lines
    assert not any("waited" in line for line in lines), lines
    assert any("before its first task" in line for line in lines), lines
    warmed = {int(m[1]) for line in lines if (m := re.search(r"\(pid (\d+)\)", line))}

    summary = RunSummary.load(next((state / "runs").glob("*/summary.json")))
    assert summary.engine.runner == "dask" and summary.engine.workers == 2
    assert summary.counts.seen == 200 and summary.counts.distinct_scored > 0
    # the tasks ran in the worker processes that had loaded the model, not in the flow's process
    assert summary.engine.processes and set(summary.engine.processes) <= warmed, (
        summary.engine.processes,
        warmed,
    )
