"""`shelfwise run`'s entry point: own Prefect server, the chosen task runner, then the nightly flow."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows._runner import (
    dask_warmup_report,
    engine_of,
    forget_warmup,
    make_task_runner,
    prepare_dask_workers,
    start_local_cluster,
)
from flows._server import prefect_api
from shelfwise import night as nights
from shelfwise.night import NightRequest
from shelfwise.settings import Settings
from shelfwise.summary import RunSummary

if TYPE_CHECKING:
    from flows._warmup import ModelWarmup

__all__ = ["run_night"]


def run_night(request: NightRequest, settings: Settings) -> RunSummary:
    """Run one night of `nightly_reclassification` on threads or Dask, as ``settings`` say."""
    settings = _absolute(settings)  # workers in other processes may have another working directory
    nights.limit_arenas()  # many threads, one heap: keep the night's process small (shelfwise/_memory.py)
    folder = _model_to_preload(settings, request)
    dask = bool(settings.dask_address or settings.dask_workers)
    # an incremental night (most SKUs carried) may score nothing: its model loads with its first score
    # task, if it has one, instead of competing with the start of our Prefect server for CPU and memory
    early = folder is not None and not dask and not nights.may_carry(settings, folder)
    preload = _preload_model(settings, folder) if early and folder is not None else None
    # a local Dask cluster starts now, its workers loading the model while our Prefect server starts
    cluster = start_local_cluster(settings, _warmup(settings, folder)) if settings.dask_workers else None
    try:
        with prefect_api(settings.state_dir):
            return _flow(request, settings, cluster, folder)
    finally:
        if preload is not None:
            preload.join()
        if cluster is not None:
            cluster.close()


def _flow(request: NightRequest, settings: Settings, cluster: Any, folder: Path | None) -> RunSummary:
    from flows.nightly import nightly_reclassification  # Prefect reads its API URL on first import

    address = cluster.scheduler_address if cluster is not None else settings.dask_address
    if address:
        warmup = _warmup(settings, folder) if cluster is None else None  # a local one's workers have it
        prepare_dask_workers(address, warmup)  # our Prefect URL (and, on an existing cluster, the model)
    runner = make_task_runner(settings, cluster.scheduler_address if cluster is not None else None)
    flow = nightly_reclassification.with_options(task_runner=runner)
    try:
        summary: RunSummary = flow(
            catalog=request.source.catalog, settings=settings, engine=engine_of(settings), request=request
        )
    finally:
        _drain_prefect()  # send the last logs and events before our server stops
    if address:
        _report_warmup(address, forget=cluster is None and folder is not None)
    return summary


def _model_to_preload(settings: Settings, request: NightRequest) -> Path | None:
    """The model folder to load ahead of the first task; None when the night may train or migrate first
    (the model is not known yet) or there is no model."""
    if request.retrain or request.taxonomy:
        return None
    folder = settings.model_folder(request.model_dir)
    return folder if (folder / "manifest.json").is_file() else None


def _warmup(settings: Settings, folder: Path | None) -> ModelWarmup | None:
    """The Dask workers' warm-up plugin for ``folder`` (flows/_warmup.py), or None."""
    if folder is None:
        return None
    from flows._warmup import ModelWarmup

    return ModelWarmup(settings, folder)


def _report_warmup(address: str, *, forget: bool) -> None:
    """Print each worker's warm-up (load time, done before its first task); best effort."""
    try:
        for line in dask_warmup_report(address):
            print(line)
        if forget:
            forget_warmup(address)
    except Exception as exc:  # noqa: BLE001 - a report only: the night's outcome is already decided
        print(f"Dask warm-up: no report ({type(exc).__name__}: {exc})")


def _preload_model(settings: Settings, folder: Path) -> threading.Thread:
    """Load the model while our Prefect server starts (threads runner: the tasks run in this process and
    share the memo, see `shelfwise.pipeline.worker_resources`). Dask workers load their own
    (`flows/_warmup.py`); this process then never loads it."""

    def load() -> None:
        try:
            nights.preload_model(settings, folder)
        except Exception:  # noqa: BLE001, S110 - the first task loads it again and reports the error
            pass

    thread = threading.Thread(target=load, name="shelfwise-preload", daemon=True)
    thread.start()
    return thread


def _drain_prefect() -> None:
    # Prefect is imported only once our server is up (it reads its API URL on first import)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    try:
        APILogHandler().flush()
        EventsWorker.drain_all(timeout=10)
    except Exception:  # noqa: BLE001, S110 - draining is best effort: the run's outcome is already decided
        pass


def _absolute(settings: Settings) -> Settings:
    """The same settings with ``state_dir`` (and what defaults from it) as absolute paths."""
    if settings.state_dir.is_absolute():
        return settings
    data = settings.model_dump()
    data["state_dir"] = settings.state_dir.resolve()
    if settings.queue_url == f"sqlite:///{(settings.state_dir / 'queue.db').as_posix()}":
        data["queue_url"] = None
    if settings.default_model_dir == settings.state_dir / "models" / "default":
        data["default_model_dir"] = None
    return Settings(**data)
