"""`shelfwise run`'s entry point: own Prefect server, the chosen task runner, then the nightly flow."""

from __future__ import annotations

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
        return summary


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
