"""The nightly catalog reclassification flow: a table of contents, one task per stage (and per shard).

begin-night     migrate to a new taxonomy, or train if there is no model yet (or --retrain) -> Night
plan-staging    the night's key, carry mode and bucket count (a staged night: done)       -> StagePlan
read-part       one task per catalog part (or row-group range of a big Parquet part):     -> PartStaged
                its rows into their buckets (by sku_id hash)
stage-bucket    one task per bucket: duplicate ids, carry split, shards to score          -> BucketStaged
stage-catalog   distinct contents across buckets, quarantine, counts                      -> StagedNight
score-distinct  one task per 2,000 distinct contents: embed + score once                    -> ShardResult
classify-shard  one task per shard, on threads or Dask, retried                             -> ShardResult
finish-bucket   one task per bucket: final rows and state, in tonight's new generation      -> BucketFinished
finish-night    predictions, queues, summary.json, report; state/CURRENT committed last     -> RunSummary

Every task but begin, plan, stage-catalog and finish runs on the task runner (threads or Dask).

Every task is a thin wrapper around `shelfwise.night`, the one owner of a night.
"""

from __future__ import annotations

import time

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from shelfwise import night as nights
from shelfwise.night import (
    BucketFinished,
    BucketStaged,
    BucketTask,
    CatalogSource,
    FinishTask,
    Night,
    NightRequest,
    PartStaged,
    ReadPartTask,
    ShardResult,
    ShardTask,
    StagedNight,
    StagePlan,
)
from shelfwise.settings import Settings, load_settings
from shelfwise.summary import Engine, RunSummary

__all__ = ["nightly_reclassification"]


@task(cache_policy=NO_CACHE, name="begin-night")
def begin(request: NightRequest, settings: Settings, engine: Engine | None) -> Night:
    return nights.begin_night(request, settings, engine=engine)


@task(cache_policy=NO_CACHE, name="plan-staging")
def plan_staging(night: Night, settings: Settings) -> StagePlan:
    return nights.stage_plan(night, settings)


@task(cache_policy=NO_CACHE, name="read-part", retries=2, retry_delay_seconds=5)
def read_part(part: ReadPartTask, settings: Settings) -> PartStaged:
    return nights.read_part(part, settings)


@task(cache_policy=NO_CACHE, name="stage-bucket", retries=2, retry_delay_seconds=5)
def stage_bucket(bucket: BucketTask, settings: Settings) -> BucketStaged:
    return nights.stage_bucket(bucket, settings)


@task(cache_policy=NO_CACHE, name="stage-catalog")
def gather(
    plan: StagePlan, settings: Settings, parts: list[PartStaged], buckets: list[BucketStaged]
) -> StagedNight:
    return nights.gather(plan, parts, buckets, settings)


@task(cache_policy=NO_CACHE, name="finish-bucket", retries=2, retry_delay_seconds=5)
def finish_bucket(bucket: FinishTask, settings: Settings) -> BucketFinished:
    return nights.finish_bucket(bucket, settings)


def stage(night: Night, settings: Settings) -> StagedNight:
    """Staging: the plan, then the read-part and stage-bucket tasks on the runner, then the gather."""
    plan = plan_staging(night, settings)
    if plan.done is not None:
        return plan.done
    reads = plan.read_tasks()
    parts = read_part.map(reads, unmapped(settings)).result() if reads else []
    tasks = plan.bucket_tasks(parts)
    buckets = stage_bucket.map(tasks, unmapped(settings)).result() if tasks else []
    return gather(plan, settings, parts, buckets)


@task(cache_policy=NO_CACHE, name="score-distinct", retries=2, retry_delay_seconds=5)
def score_contents(shard: ShardTask, settings: Settings) -> ShardResult:
    return nights.score_contents(shard, settings)


@task(cache_policy=NO_CACHE, name="classify-shard", retries=2, retry_delay_seconds=5)
def classify_shard(shard: ShardTask, settings: Settings) -> ShardResult:
    return nights.classify_shard(shard, settings)


@task(cache_policy=NO_CACHE, name="finish-night")
def finish(
    night: Night,
    settings: Settings,
    staged: StagedNight,
    results: list[ShardResult],
    finished: list[BucketFinished],
    scored: list[ShardResult],
    score_seconds: float,
) -> RunSummary:
    return nights.finish_night(
        night, settings, staged, results, finished=finished, scored=scored, score_seconds=score_seconds
    )


@flow(name="nightly-reclassification", log_prints=True)
def nightly_reclassification(
    catalog: str,
    taxonomy: str | None = None,
    labelled: str | None = None,
    settings: Settings | None = None,
    engine: Engine | None = None,
    request: NightRequest | None = None,
) -> RunSummary:
    """Train if needed, classify the new and changed SKUs shard by shard, carry the rest, route, write
    predictions, enqueue, report. ``request`` (from `flows.run.run_night`: every `shelfwise run` flag)
    replaces ``catalog``, ``taxonomy`` and ``labelled``, the parameters a deployment's schedule gives."""
    settings = settings or load_settings()
    request = request or NightRequest(
        source=CatalogSource(catalog=catalog), taxonomy=taxonomy, labelled=labelled
    )
    night = begin(request, settings, engine)
    staged = stage(night, settings)
    # each distinct content is embedded and scored once, spread over the workers; the SKU shards then
    # only look scores up (and decide per SKU)
    step = time.perf_counter()
    contents = nights.score_tasks(night, staged)
    scored = score_contents.map(contents, unmapped(settings)).result() if contents else []
    score_seconds = time.perf_counter() - step
    tasks = nights.shard_tasks_of(night, staged)
    results = classify_shard.map(tasks, unmapped(settings)).result() if tasks else []
    nights.release_resources()  # the model's work is done: finish and report without it in memory
    ends = nights.finish_tasks_of(night, settings, staged, results)
    finished = finish_bucket.map(ends, unmapped(settings)).result() if ends else []
    summary = finish(night, settings, staged, results, finished, scored, score_seconds)
    create_markdown_artifact(
        key="nightly-summary",
        markdown=nights.artifact_markdown(summary, settings),
        description=f"shelfwise run {night.run_id}",
    )
    print(f"night {night.run_id} finished: summary and report in {settings.runs_dir / night.run_id}")
    return summary
