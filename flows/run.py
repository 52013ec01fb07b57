"""`shelfwise run`'s entry point: own Prefect server, the chosen task runner, then the nightly flow."""

from __future__ import annotations

import threading
from typing import Any

from flows._server import prefect_api
from shelfwise.settings import Settings
from shelfwise.summary import RunSummary

__all__ = ["run_night"]


def run_night(*, catalog: str, settings: Settings, **params: Any) -> RunSummary:
    """Run one night of `nightly_reclassification` (params: taxonomy, labelled, model_dir, reviews,
    images_root, spec, mapping, out, retrain) on threads or Dask, as ``settings`` say."""
    from shelfwise._memory import limit_arenas

    settings = _absolute(settings)  # workers in other processes may have another working directory
    limit_arenas()  # many threads, one heap: keep the night's process small (shelfwise/_memory.py)
    preload = _preload_model(settings, params)
    with prefect_api(settings.state_dir):
        from flows._runner import engine_of, make_task_runner
        from flows.nightly import nightly_reclassification

        runner = make_task_runner(settings)
        flow = nightly_reclassification.with_options(task_runner=runner)
        try:
            summary: RunSummary = flow(
                catalog=catalog, settings=settings, engine=engine_of(settings), **params
            )
        finally:
            _drain_prefect()  # send the last logs and events before our server stops
            if preload is not None:
                preload.join()
        return summary


def _preload_model(settings: Settings, params: dict[str, Any]) -> threading.Thread | None:
    """Load the model while our Prefect server starts (threads runner: the tasks run in this process and
    share the memo, see `shelfwise._worker.worker_resources`). Not when the night may train or migrate
    first, nor on Dask, whose workers load their own."""
    if settings.dask_address or settings.dask_workers or params.get("retrain") or params.get("taxonomy"):
        return None
    folder = settings.model_folder(params.get("model_dir"))
    if not (folder / "manifest.json").is_file():
        return None

    def load() -> None:
        from shelfwise._worker import worker_resources

        try:
            worker_resources(folder, settings)
        except Exception:  # noqa: BLE001, S110 - the stage step loads it again and reports the error
            pass

    thread = threading.Thread(target=load, name="shelfwise-preload", daemon=True)
    thread.start()
    return thread


def _drain_prefect() -> None:
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
