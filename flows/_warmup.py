"""Dask worker plugins of a night: the model loaded before a worker's first task, and the run's environment.

`ModelWarmup` loads the night's model into the worker's per-process memo (`shelfwise.night.preload_model`,
the one the score and shard tasks use) when the plugin is set up: on a worker of the run's local cluster
that is while the worker starts, before it registers with the scheduler, so no task reaches a cold
worker, and the load runs while the run's Prefect server starts and the catalog is staged. A worker that
a nanny restarts (after a crash) loads it again before it takes a task. `warmup_status` says, per worker,
how long the load took and whether it was done when the worker's first task began.

`WorkerEnv` sets the run's Prefect API URL (and offline flags) in a worker, including workers that join or
are restarted after it was registered.

No Prefect import here: the workers unpickle these plugins before the Prefect URL is set in them.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from shelfwise import night as nights
from shelfwise.settings import Settings

__all__ = ["WARMUP_PLUGIN", "ModelWarmup", "WorkerEnv", "warmup_status"]

WARMUP_PLUGIN = "shelfwise-model-warmup"
ENV_PLUGIN = "shelfwise-env"

#: this process's warm-up record (a Dask worker's): see `warmup_status`
_STATUS: dict[str, Any] = {}


class ModelWarmup(WorkerPlugin):
    """Load the night's model into the worker's memo before the worker runs a task."""

    name = WARMUP_PLUGIN

    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.settings = settings
        self.model_dir = model_dir

    async def setup(self, worker: Any) -> None:
        # in a thread: the worker's event loop keeps answering (heartbeats) while the model loads
        await asyncio.get_running_loop().run_in_executor(None, self.load)

    def load(self) -> None:
        _STATUS.clear()
        _STATUS.update(pid=os.getpid(), started_at=time.time())
        t0 = time.perf_counter()
        try:
            nights.preload_model(self.settings, self.model_dir)
        except Exception as exc:  # noqa: BLE001 - the first task loads it again and reports the error
            _STATUS["error"] = f"{type(exc).__name__}: {exc}"
        _STATUS.update(seconds=time.perf_counter() - t0, done_at=time.time(), loaded="error" not in _STATUS)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and "first_task_at" not in _STATUS:
            _STATUS["first_task_at"] = time.time()
            _STATUS["loaded_before_first_task"] = bool(_STATUS.get("loaded"))


class WorkerEnv(WorkerPlugin):
    """Set environment variables in every worker (those of the run's Prefect server)."""

    name = ENV_PLUGIN

    def __init__(self, env: dict[str, str]) -> None:
        self.env = dict(env)

    def setup(self, worker: Any) -> None:
        os.environ.update(self.env)


def warmup_status() -> dict[str, Any]:
    """This worker's warm-up: ``pid``, ``seconds`` (the load), ``loaded``, ``error``, ``done_at``,
    ``first_task_at`` and ``loaded_before_first_task`` (empty where no warm-up ran). Run on the
    workers with ``client.run(warmup_status)``."""
    return dict(_STATUS)


def describe(statuses: dict[str, dict[str, Any]]) -> list[str]:
    """One line per worker for the run's output."""
    lines = []
    for address, s in sorted(statuses.items()):
        if not s:
            lines.append(f"Dask warm-up: worker {address}: no warm-up (the model loads in its first task)")
            continue
        where = f"worker {address} (pid {s.get('pid')})"
        if not s.get("loaded"):
            lines.append(f"Dask warm-up: {where} could not load the model: {s.get('error')}")
            continue
        first = (
            "before its first task"
            if s.get("loaded_before_first_task")
            else ("its first task waited for it" if "first_task_at" in s else "no task ran on it")
        )
        lines.append(f"Dask warm-up: {where} loaded the model in {s['seconds']:.1f} s, {first}")
    return lines
