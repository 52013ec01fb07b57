"""The task runner a night's tasks run on (read-part, stage-bucket, score-distinct, classify-shard,
finish-bucket): threads (default), or Dask (an existing cluster, or a local cluster of worker processes
that `shelfwise run` starts). Dask workers get the run's Prefect URL and load the night's model before
their first task (flows/_warmup.py)."""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import TYPE_CHECKING, Any

from shelfwise.errors import ConfigError
from shelfwise.settings import Settings
from shelfwise.summary import Engine

if TYPE_CHECKING:
    from flows._warmup import ModelWarmup

__all__ = [
    "dask_warmup_report",
    "engine_of",
    "forget_warmup",
    "make_task_runner",
    "prepare_dask_workers",
    "start_local_cluster",
]

_LOG = logging.getLogger(__name__)

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


def _no_dask_extra(exc: ImportError) -> ConfigError:
    return ConfigError(
        "dask_address / --dask-workers need the `dask` extra: pip install 'shelfwise[dask]' "
        f"(prefect-dask and dask[distributed]); import failed: {exc}"
    )


def _dask_runner() -> Any:
    try:
        from prefect_dask import DaskTaskRunner  # type: ignore[attr-defined]
    except ImportError as exc:
        raise _no_dask_extra(exc) from exc
    return DaskTaskRunner


def _worker_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}


def prepare_dask_workers(address: str, warmup: ModelWarmup | None = None) -> int:
    """Give every worker of the cluster at ``address`` this run's Prefect API URL (and offline flags), so
    their task runs report to our server instead of each starting a temporary one, also to workers that
    join or are restarted later (a worker plugin); with ``warmup``, every worker loads the night's model
    before this returns. Returns the worker count."""
    from distributed import Client

    from flows._warmup import WorkerEnv

    env = _worker_env()
    try:
        with Client(address, timeout="30s") as client:  # type: ignore[no-untyped-call]
            client.register_plugin(WorkerEnv(env))
            if warmup is not None:
                client.register_plugin(warmup)
            return len(client.scheduler_info().get("workers", {}))
    except OSError as exc:
        raise ConfigError(
            f"dask_address {address}: no Dask scheduler answered ({exc}); start one with "
            "`dask scheduler` or fix the address"
        ) from exc


def start_local_cluster(settings: Settings, warmup: ModelWarmup | None) -> Any:
    """A local Dask cluster of ``settings.dask_workers`` single-thread worker processes, returned at once:
    the workers start (and, with ``warmup``, load the model) in the background, and each registers with
    the scheduler only once its model is loaded, so the night's first task never meets a cold worker.
    Started before the run's Prefect server, whose URL `prepare_dask_workers` hands them once it is up."""
    # not prefect_dask yet: Prefect reads its API URL when first imported, and our server is not up
    if importlib.util.find_spec("prefect_dask") is None:
        raise _no_dask_extra(ImportError("No module named 'prefect_dask'"))
    try:
        from distributed import LocalCluster
        from distributed.worker_memory import parse_memory_limit
    except ImportError as exc:
        raise _no_dask_extra(exc) from exc

    n = settings.dask_workers or 1
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=0,
        threads_per_worker=1,  # one thread per process: the encoder and the model use their own threads
        processes=True,
        dashboard_address=None,
        memory_limit=parse_memory_limit("auto", 1, n, logger=_LOG),  # as LocalCluster(n_workers=n)
        plugins=[warmup] if warmup is not None else [],
    )
    cluster.scale(n)  # type: ignore[no-untyped-call]
    return cluster


def dask_warmup_report(address: str) -> list[str]:
    """One line per worker of the cluster at ``address``: how long its model load took and whether it
    was done before the worker's first task (`flows._warmup.warmup_status`)."""
    from distributed import Client

    from flows._warmup import describe, warmup_status

    with Client(address, timeout="30s") as client:  # type: ignore[no-untyped-call]
        return describe(client.run(warmup_status))


def forget_warmup(address: str) -> None:
    """Unregister the warm-up plugin from an existing cluster (its workers keep what they loaded)."""
    from distributed import Client

    from flows._warmup import WARMUP_PLUGIN

    with Client(address, timeout="30s") as client:  # type: ignore[no-untyped-call]
        client.unregister_worker_plugin(WARMUP_PLUGIN)


def make_task_runner(settings: Settings, cluster_address: str | None = None) -> Any:
    """ThreadPoolTaskRunner(max_workers=settings.workers), or a DaskTaskRunner for the Dask settings:
    on the cluster at ``cluster_address`` (the run's local cluster, `start_local_cluster`) when given."""
    if cluster_address:
        return _dask_runner()(address=cluster_address)
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
