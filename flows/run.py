"""`shelfwise run`'s entry point: own Prefect server, the chosen task runner, then the nightly flow."""

from __future__ import annotations

import threading

from flows._runner import engine_of, make_task_runner
from flows._server import prefect_api
from shelfwise import night as nights
from shelfwise.night import NightRequest
from shelfwise.settings import Settings
from shelfwise.summary import RunSummary

__all__ = ["run_night"]


def run_night(request: NightRequest, settings: Settings) -> RunSummary:
    """Run one night of `nightly_reclassification` on threads or Dask, as ``settings`` say."""
    settings = _absolute(settings)  # workers in other processes may have another working directory
    nights.limit_arenas()  # many threads, one heap: keep the night's process small (shelfwise/_memory.py)
    preload = _preload_model(settings, request)
    with prefect_api(settings.state_dir):
        from flows.nightly import nightly_reclassification  # Prefect reads its API URL on first import

        runner = make_task_runner(settings)
        flow = nightly_reclassification.with_options(task_runner=runner)
        try:
            summary: RunSummary = flow(
                catalog=request.source.catalog, settings=settings, engine=engine_of(settings), request=request
            )
        finally:
            _drain_prefect()  # send the last logs and events before our server stops
            if preload is not None:
                preload.join()
        return summary


def _preload_model(settings: Settings, request: NightRequest) -> threading.Thread | None:
    """Load the model while our Prefect server starts (threads runner: the tasks run in this process and
    share the memo, see `shelfwise.pipeline.worker_resources`). Not when the night may train or migrate
    first, nor on Dask, whose workers load their own (this process then never loads it)."""
    if settings.dask_address or settings.dask_workers or request.retrain or request.taxonomy:
        return None
    folder = settings.model_folder(request.model_dir)
    if not (folder / "manifest.json").is_file():
        return None

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
