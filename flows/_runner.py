"""The task runner a night's shard tasks run on: threads (default), or Dask (an existing cluster, or a
local cluster of worker processes). Only the shard tasks go to the runner; staging and finishing run
in the flow's own process."""

from __future__ import annotations

import os
from typing import Any

from shelfwise.errors import ConfigError
from shelfwise.settings import Settings
from shelfwise.summary import Engine

__all__ = ["engine_of", "make_task_runner", "prepare_dask_workers"]

#: Environment a Dask worker needs to run our tasks like the flow process does.
_WORKER_ENV = (
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "DO_NOT_TRACK",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


def engine_of(settings: Settings) -> Engine:
    if settings.dask_address:
        return Engine(runner="dask", workers=0, address=settings.dask_address)
    if settings.dask_workers:
        return Engine(runner="dask", workers=settings.dask_workers)
    return Engine(runner="threads", workers=settings.workers)


def _dask_runner() -> Any:
    try:
        from prefect_dask import DaskTaskRunner  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ConfigError(
            "dask_address / --dask-workers need the `dask` extra: pip install 'shelfwise[dask]' "
            f"(prefect-dask and dask[distributed]); import failed: {exc}"
        ) from exc
    return DaskTaskRunner


def _set_env(values: dict[str, str]) -> None:  # runs inside each Dask worker
    os.environ.update(values)


def prepare_dask_workers(address: str) -> int:
    """Give every worker of the cluster at ``address`` this run's Prefect API URL (and offline flags), so
    their task runs report to our server instead of each starting a temporary one.
    Returns the worker count."""
    from distributed import Client

    env = {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}
    try:
        with Client(address, timeout="30s") as client:  # type: ignore[no-untyped-call]
            client.run(_set_env, env)
            return len(client.scheduler_info().get("workers", {}))
    except OSError as exc:
        raise ConfigError(
            f"dask_address {address}: no Dask scheduler answered ({exc}); start one with "
            "`dask scheduler` or fix the address"
        ) from exc


def make_task_runner(settings: Settings) -> Any:
    """ThreadPoolTaskRunner(max_workers=settings.workers), or a DaskTaskRunner for the Dask settings."""
    if settings.dask_address:
        runner = _dask_runner()
        prepare_dask_workers(settings.dask_address)
        return runner(address=settings.dask_address)
    if settings.dask_workers:
        runner = _dask_runner()
        # one thread per process: the encoder and the model use their own threads inside a task
        return runner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.workers)
