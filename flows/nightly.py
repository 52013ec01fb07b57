"""The nightly catalog reclassification flow: a table of contents, one task per stage (and per shard).

prepare-model      train if there is no model yet (or --retrain)            -> model folder
stage-catalog      catalog -> shards to score + carried SKUs (incremental)  -> StagedNight
score-distinct     one task per 2,000 distinct contents: embed + score once -> ShardResult
classify-shard     one task per shard, on threads or Dask, retried          -> ShardResult
write-and-enqueue  predictions file, review queues, state, summary.json     -> RunSummary
governance-report  the run's report                                         -> RunSummary
"""

from __future__ import annotations

import time

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import _steps as steps
from shelfwise import pipeline
from shelfwise._stage import StagedNight
from shelfwise._worker import ShardResult, ShardTask, release_resources, run_shard, score_distinct
from shelfwise.settings import Settings, load_settings
from shelfwise.summary import Engine, RunSummary

__all__ = ["nightly_reclassification"]


@task(cache_policy=NO_CACHE, name="prepare-model")
def prepare(
    settings: Settings,
    model_dir: str | None,
    taxonomy: str | None,
    labelled: str | None,
    retrain: bool,
    reviews: str | None,
    images_root: str | None,
    spec: str | None,
    mapping: list[str] | None,
    taxonomy_mapping: str | None,
) -> steps.PreparedModel:
    return steps.prepare_model(
        settings,
        model_dir=model_dir,
        taxonomy=taxonomy,
        labelled=labelled,
        retrain=retrain,
        reviews=reviews,
        images_root=images_root,
        spec=spec,
        mapping=mapping,
        taxonomy_mapping=taxonomy_mapping,
    )


@task(cache_policy=NO_CACHE, name="stage-catalog")
def stage(
    catalog: str,
    settings: Settings,
    model_dir: str,
    reviews: str | None,
    images_root: str | None,
    spec: str | None,
    mapping: list[str] | None,
) -> StagedNight:
    return pipeline.stage_night(
        catalog,
        settings=settings,
        model_dir=model_dir,
        reviews=reviews,
        images_root=images_root,
        spec=spec,
        mapping=mapping,
    )


@task(cache_policy=NO_CACHE, name="classify-shard", retries=2, retry_delay_seconds=5)
def classify_shard(shard: ShardTask, settings: Settings) -> ShardResult:
    return run_shard(shard, settings)


@task(cache_policy=NO_CACHE, name="score-distinct", retries=2, retry_delay_seconds=5)
def score_contents(shard: ShardTask, settings: Settings) -> ShardResult:
    return score_distinct(shard, settings)


@task(cache_policy=NO_CACHE, name="write-and-enqueue")
def finalize(
    settings: Settings,
    model_dir: str,
    staged: StagedNight,
    results: list[ShardResult],
    run_id: str,
    catalog: str,
    started_at: str,
    out: str | None,
    engine: Engine,
    clock: float,
    migration: dict[str, object] | None,
    scored: list[ShardResult],
    score_seconds: float,
) -> RunSummary:
    return pipeline.finalize_run(
        settings=settings,
        model_dir=model_dir,
        staged=staged,
        results=results,
        run_id=run_id,
        catalog=catalog,
        started_at=started_at,
        out=out,
        engine=engine,
        clock_start=clock,
        migration=migration,
        scored=scored,
        score_seconds=score_seconds,
    )


@task(cache_policy=NO_CACHE, name="governance-report")
def report(summary: RunSummary, settings: Settings) -> RunSummary:
    return steps.report(summary, settings)


@flow(name="nightly-reclassification", log_prints=True)
def nightly_reclassification(
    catalog: str,
    taxonomy: str | None = None,
    labelled: str | None = None,
    model_dir: str | None = None,
    reviews: str | None = None,
    images_root: str | None = None,
    spec: str | None = None,
    mapping: list[str] | None = None,
    out: str | None = None,
    retrain: bool = False,
    taxonomy_mapping: str | None = None,
    settings: Settings | None = None,
    engine: Engine | None = None,
) -> RunSummary:
    """Train if needed, classify the new and changed SKUs shard by shard, carry the rest, route, write
    predictions, enqueue, report. Run it through `shelfwise.nightly.run_night` (it picks the task runner)."""
    clock = time.perf_counter()
    settings = settings or load_settings()
    run_id, started_at = pipeline.new_run_id(), pipeline.utcnow()
    prepared = prepare(
        settings,
        model_dir,
        taxonomy,
        labelled,
        retrain,
        reviews,
        images_root,
        spec,
        mapping,
        taxonomy_mapping,
    )
    folder = prepared.model_dir
    staged = stage(catalog, settings, folder, reviews, images_root, spec, mapping)
    if engine is not None and engine.runner == "dask":
        release_resources()  # staging loaded the model here; on Dask the workers score, not this process
    # each distinct content is embedded and scored once, spread over the workers; the SKU shards then
    # only look scores up (and decide per SKU)
    step = time.perf_counter()
    contents = pipeline.distinct_tasks(staged, model_dir=folder, run_id=run_id)
    scored = score_contents.map(contents, unmapped(settings)).result() if contents else []
    score_seconds = time.perf_counter() - step
    tasks = pipeline.shard_tasks(staged, model_dir=folder, run_id=run_id)
    results = classify_shard.map(tasks, unmapped(settings)).result() if tasks else []
    release_resources()  # the model's work is done: finish and report without it in memory
    summary = finalize(
        settings,
        folder,
        staged,
        results,
        run_id,
        catalog,
        started_at,
        out,
        engine or Engine(runner="threads", workers=settings.workers),
        clock,
        prepared.migration,
        scored,
        score_seconds,
    )
    summary = report(summary, settings)
    create_markdown_artifact(
        key="nightly-summary",
        markdown=steps.artifact_markdown(summary, settings),
        description=f"shelfwise run {run_id}",
    )
    print(summary.markdown())
    release_resources()
    return summary
