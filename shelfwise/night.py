"""One owner of a night: it begins and finishes every night, for `shelfwise classify`, `shelfwise run`
(the Prefect flow) and `shelfwise serve` alike.

    night = begin_night(request, settings)   the model the night uses: a new taxonomy version migrates
                                             and retrains (the only caller of the migration), no model
                                             yet (or --retrain) trains
    plan = stage_plan(night, settings)       the night's key, carry mode and bucket count (main)
    read_part(task, settings)                one catalog part -> its rows in their buckets (any worker)
    stage_bucket(task, settings)             one bucket: duplicate ids, carry split, shards (any worker)
    staged = gather(plan, parts, buckets)    distinct contents across buckets, quarantine (main)
    score_contents(task, settings)           a shard of distinct contents, scored once (any worker)
    classify_shard(task, settings)           a shard of SKUs decided (any worker)
    finish_bucket(task, settings)            one bucket's final rows (a migration's orphans routed to
                                             review, the export columns) and state, in tonight's new
                                             state generation (any worker)
    summary = finish_night(night, ...)       predictions.parquet (the buckets' rows, streamed), the queues,
                                             summary.json and the report, each written once; the state
                                             committed last (state/CURRENT names tonight's generation)

No process holds more than one bucket's per-SKU state at a time (a thread runner's process: one per
thread); `stage` and `finish_night` without ``finished`` run the bucket tasks in this process.

`classify_catalog` runs all of it in this process (``shelfwise classify``); `flows/nightly.py` runs the
same steps as Prefect tasks. Everything below this module is plain work (`shelfwise.pipeline`) or a
reader of what a night wrote (`shelfwise.reports`); neither knows the other.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl
from pydantic import BaseModel

from shelfwise import storage
from shelfwise._memory import limit_arenas
from shelfwise.errors import ConfigError
from shelfwise.model_folder import has_model, model_versions
from shelfwise.pipeline import (
    BucketFinished,
    BucketStaged,
    BucketTask,
    CatalogSource,
    ExportRequest,
    FinishTask,
    NightOutcome,
    PartStaged,
    ReadPartTask,
    ShardResult,
    ShardTask,
    StagedNight,
    StagePlan,
    carry_mode,
    commit_night,
    concat_predictions,
    distinct_tasks,
    enqueue_orphans,
    enqueue_rescored,
    finish_bucket,
    finish_migration,
    finish_tasks,
    gather_staged,
    load_pending,
    migrate_if_needed,
    new_run_id,
    plan_stage,
    read_part,
    release_resources,
    run_shard,
    run_summary,
    score_distinct,
    shard_tasks,
    stage_bucket,
    stage_night,
    tonight_parts,
    train,
    utcnow,
    worker_resources,
)
from shelfwise.reports import report_markdown, write_report
from shelfwise.settings import Settings
from shelfwise.state import current_state
from shelfwise.summary import QUEUES, Engine, RunSummary

__all__ = [
    "BucketFinished",
    "BucketStaged",
    "BucketTask",
    "CatalogSource",
    "ExportRequest",
    "FinishTask",
    "Night",
    "NightRequest",
    "PartStaged",
    "ReadPartTask",
    "ShardResult",
    "ShardTask",
    "StagePlan",
    "StagedNight",
    "artifact_markdown",
    "begin_night",
    "classify_catalog",
    "classify_shard",
    "finish_bucket",
    "finish_night",
    "finish_tasks_of",
    "gather",
    "limit_arenas",
    "may_carry",
    "preload_model",
    "read_part",
    "release_resources",
    "score_contents",
    "score_tasks",
    "shard_tasks_of",
    "stage",
    "stage_bucket",
    "stage_plan",
]


class NightRequest(BaseModel):
    """What a night is asked to do (plain data: the flow's parameters)."""

    source: CatalogSource
    taxonomy: str | None = None
    labelled: str | None = None
    model_dir: str | None = None
    out: str | None = None
    retrain: bool = False
    taxonomy_mapping: str | None = None
    export: ExportRequest | None = None
    enqueue: bool = True
    report: bool = True
    may_train: bool = True  # False: a missing model is an error (``shelfwise classify``)


class Night(BaseModel):
    """A begun night: its request, run id, start and model folder (plain data: it travels between tasks)."""

    request: NightRequest
    run_id: str
    started_at: str
    clock: float  # time.perf_counter() of this process when the night began
    model_dir: str
    engine: Engine


def begin_night(
    request: NightRequest, settings: Settings, *, engine: Engine | None = None, run_id: str | None = None
) -> Night:
    """Begin a night: migrate to a new taxonomy version (then retrain), or train when there is no model
    yet (or ``request.retrain``). Returns the night, with the model folder it uses."""
    clock = time.perf_counter()
    folder = settings.model_folder(request.model_dir)
    migration = migrate_if_needed(
        settings,
        folder,
        taxonomy=request.taxonomy,
        taxonomy_mapping=request.taxonomy_mapping,
        labelled=request.labelled,
        source=request.source,
    )
    if migration is not None:
        print(f"taxonomy migration: model retrained on {request.taxonomy}")
    elif request.may_train and (request.retrain or not has_model(folder)):
        _train_for(request, folder, settings)
    return Night(
        request=request,
        run_id=run_id or new_run_id(),
        started_at=utcnow(),
        clock=clock,
        model_dir=str(folder),
        engine=engine or Engine(runner="threads", workers=settings.workers),
    )


def _train_for(request: NightRequest, folder: Path, settings: Settings) -> None:
    if not request.taxonomy or not request.labelled:
        raise ConfigError(
            f"no trained model in {folder}: pass --taxonomy and --labelled so the run can train one, "
            "or train first with `shelfwise train`"
        )
    trained = train(
        taxonomy_path=request.taxonomy,
        catalog=request.source.model_copy(update={"catalog": request.labelled}),
        model_dir=folder,
        settings=settings,
    )
    print(
        f"trained model {trained.model_version} on {trained.labelled} labelled SKUs "
        f"({trained.human_labels} human labels)"
    )


def may_carry(settings: Settings, model_dir: str | Path) -> bool:
    """True when tonight would be an incremental night with the model in ``model_dir`` (same model,
    taxonomy and routing as the committed state): then most SKUs are carried and the model may not be
    needed at all, so `shelfwise run` does not load it ahead of the first score task. Reads the model's
    manifest and the state's ``CURRENT``, never the model."""
    folder = Path(model_dir)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    version, taxonomy_version = model_versions(folder)
    mode = carry_mode(
        settings,
        current_state(settings),
        model_version=version,
        taxonomy_version=taxonomy_version,
        uses_price=bool((manifest.get("params") or {}).get("use_price", False)),
    )
    return mode.mode == "incremental"


def preload_model(settings: Settings, model_dir: str | Path) -> None:
    """Load the model into this process's memo ahead of its first task (the thread runner scores here)."""
    worker_resources(model_dir, settings)


def stage(night: Night, settings: Settings) -> StagedNight:
    """Stage the night's catalog with every staging task in this process (no model needed)."""
    return stage_night(night.request.source, settings=settings, model_dir=night.model_dir)


def stage_plan(night: Night, settings: Settings) -> StagePlan:
    """Plan tonight's staging: its read-part tasks, then (from their results) its stage-bucket tasks;
    ``plan.done`` when an earlier attempt of the same night staged it already."""
    return plan_stage(night.request.source, settings=settings, model_dir=night.model_dir)


def gather(
    plan: StagePlan, parts: Sequence[PartStaged], buckets: Sequence[BucketStaged], settings: Settings
) -> StagedNight:
    """The staged night from its staging tasks (main process)."""
    return gather_staged(plan, parts, buckets, settings)


def score_tasks(night: Night, staged: StagedNight) -> list[ShardTask]:
    """The score step's tasks: one per shard of distinct contents."""
    return distinct_tasks(staged, model_dir=night.model_dir, run_id=night.run_id)


def shard_tasks_of(night: Night, staged: StagedNight) -> list[ShardTask]:
    """The night's shard tasks (plain data); they read their scores from the score step's parts."""
    return shard_tasks(staged, model_dir=night.model_dir, run_id=night.run_id)


def score_contents(task: ShardTask, settings: Settings) -> ShardResult:
    """Embed and score one shard of distinct contents, wherever the task runs."""
    return score_distinct(task, settings)


def classify_shard(task: ShardTask, settings: Settings) -> ShardResult:
    """Decide one shard of SKUs, wherever the task runs."""
    return run_shard(task, settings)


def finish_tasks_of(
    night: Night, settings: Settings, staged: StagedNight, results: Sequence[ShardResult]
) -> list[FinishTask]:
    """The night's finish-bucket tasks (plain data): one per bucket, writing tonight's state generation."""
    return finish_tasks(
        settings,
        staged,
        results,
        run_id=night.run_id,
        model_dir=Path(night.model_dir),
        export=night.request.export,
    )


def finish_night(
    night: Night,
    settings: Settings,
    staged: StagedNight,
    results: Sequence[ShardResult],
    *,
    finished: Sequence[BucketFinished] | None = None,
    scored: Sequence[ShardResult] = (),
    score_seconds: float = 0.0,
) -> RunSummary:
    """Finish a night: tonight's rows per bucket (``finished``: the finish-bucket tasks' results; ``None``
    runs them here), each of the night's files written once, the state committed last."""
    run_dir = settings.runs_dir / night.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = Path(night.model_dir)
    out = Path(night.request.out) if night.request.out else run_dir / "predictions.parquet"
    if finished is None:
        finished = [finish_bucket(t, settings) for t in finish_tasks_of(night, settings, staged, results)]
    migration = load_pending(model_dir)
    n = concat_predictions(out, finished)
    tmp = run_dir / ".parts"
    parts = tonight_parts(results, tmp=tmp)
    enqueued, queued = (
        enqueue_rescored(settings, parts, night.run_id)
        if night.request.enqueue
        else ({}, dict.fromkeys(QUEUES, 0))
    )
    if migration is not None:
        for f in finished:
            migration.catalog.update(f.migration_counts)
        _enqueue_orphans(finished, settings, night.run_id)
    shutil.rmtree(tmp, ignore_errors=True)
    outcome = NightOutcome(
        run_id=night.run_id,
        started_at=night.started_at,
        catalog=night.request.source.catalog,
        model_dir=model_dir,
        staged=staged,
        results=results,
        scored=scored,
        predictions=out,
        rows=n,
        enqueue=enqueued,
        queued=queued,
        engine=night.engine,
        seconds=round(time.perf_counter() - night.clock, 2),
        score_seconds=score_seconds,
        report=str(run_dir / "report" / "report.html") if night.request.report else None,
    )
    summary = run_summary(outcome, settings)
    if migration is not None:
        summary.taxonomy_change = finish_migration(migration, run_dir=run_dir, model_dir=model_dir)
    summary.write(run_dir)
    if night.request.report:
        write_report(night.run_id, settings=settings)
    # State last: a night killed before this point leaves last night's state, so a rerun redoes tonight.
    commit_night(settings, staged, finished, run_id=night.run_id, model_dir=model_dir)
    return summary


def _enqueue_orphans(finished: Sequence[BucketFinished], settings: Settings, run_id: str) -> None:
    """A migration's orphans (every bucket's) into the review queue."""
    urls = [f.orphans_url for f in finished if f.orphans_url]
    if urls:
        orphans = pl.concat([storage.read_parquet(u) for u in urls], how="vertical_relaxed")
        enqueue_orphans(orphans, settings, run_id=run_id)


def classify_catalog(
    catalog: CatalogSource | str | Path,
    *,
    model_dir: str | Path,
    out: str | Path,
    settings: Settings,
    enqueue: bool = True,
    export: ExportRequest | None = None,
    run_id: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """A whole night in this process, without Prefect (``shelfwise classify``): stage, score, classify
    shard by shard, finish (no report)."""
    request = NightRequest(
        source=CatalogSource.of(catalog),
        model_dir=str(model_dir),
        out=str(out),
        export=export,
        enqueue=enqueue,
        report=False,
        may_train=False,
    )
    night = begin_night(request, settings, run_id=run_id)
    try:
        staged = stage(night, settings)
        if progress and staged.carried:
            progress(staged.carried)
        step = time.perf_counter()
        scored = [score_contents(t, settings) for t in score_tasks(night, staged)]
        score_seconds = time.perf_counter() - step
        results = []
        for task in shard_tasks_of(night, staged):
            results.append(classify_shard(task, settings))
            if progress:
                progress(results[-1].seen)
        release_resources()  # the model's work is done: finish without it in memory
        return finish_night(night, settings, staged, results, scored=scored, score_seconds=score_seconds)
    finally:
        release_resources()


def artifact_markdown(summary: RunSummary, settings: Settings) -> str:
    """The governance report's key figures for the Prefect artifact (the run summary if that fails):
    the ``report.md`` the night wrote, computed again only when it is not there."""
    written = Path(summary.report).with_name("report.md") if summary.report else None
    if written is not None and written.is_file():
        return written.read_text(encoding="utf-8")
    try:
        return report_markdown(summary.run_id, settings)
    except Exception as exc:  # noqa: BLE001 - the artifact must never fail the run
        return summary.markdown() + f"\n\n(report figures unavailable: {exc})"
