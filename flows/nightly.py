"""The nightly catalog reclassification flow: a table of contents, one task per stage (and per shard)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows import _steps as steps

__all__ = ["nightly_reclassification"]


@task(cache_policy=NO_CACHE, name="prepare-model")
def prepare(params: dict[str, Any]) -> steps.Resources:
    return steps.prepare_resources(params)


@task(cache_policy=NO_CACHE, name="stage-catalog")
def stage(params: dict[str, Any], res: steps.Resources, run_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    return steps.stage(params, res, run_dir)


@task(cache_policy=NO_CACHE, name="classify-shard")
def classify_shard(shard_path: Path, res: steps.Resources, run_id: str, run_dir: Path) -> steps.ShardResult:
    return steps.classify_shard_file(shard_path, res, run_id=run_id, run_dir=run_dir)


@task(cache_policy=NO_CACHE, name="write-and-enqueue")
def finalize(params: dict[str, Any], res: steps.Resources, results: list[steps.ShardResult], staging: dict[str, Any],
             run_id: str, run_dir: Path, started_at: str) -> dict[str, Any]:
    return steps.finalize(params, res, results, staging, run_id=run_id, run_dir=run_dir, started_at=started_at)


@task(cache_policy=NO_CACHE, name="governance-report")
def report(summary: dict[str, Any], res: steps.Resources) -> str:
    return steps.report(summary, res)


@flow(name="nightly-reclassification", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
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
    settings_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train if needed, classify the catalog shard by shard, route, write predictions, enqueue, report."""
    params = dict(locals())
    run_id, run_dir, started_at = steps.start_run(params)
    res = prepare(params)
    shard_paths, staging = stage(params, res, run_dir)
    results = classify_shard.map(shard_paths, unmapped(res), unmapped(run_id), unmapped(run_dir)).result()
    summary = finalize(params, res, results, staging, run_id, run_dir, started_at)
    summary["report"] = report(summary, res)
    create_markdown_artifact(key="nightly-summary", markdown=steps.artifact_markdown(summary, res),
                             description=f"shelfwise run {run_id}")
    return summary
