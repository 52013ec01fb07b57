"""Glue between flow parameters and the plain pipeline functions (no Prefect imports here)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise import pipeline
from shelfwise._stage import _utcnow
from shelfwise.pipeline import Resources, RunStats
from shelfwise.settings import Settings, load_settings

__all__ = [
    "Resources",
    "ShardResult",
    "artifact_markdown",
    "classify_shard_file",
    "finalize",
    "prepare_resources",
    "report",
    "settings_from",
    "stage",
    "start_run",
    "summary_markdown",
]


@dataclass
class ShardResult:
    predictions: Path
    stats: RunStats = field(default_factory=RunStats)


def settings_from(params: dict[str, Any]) -> Settings:
    return load_settings(**(params.get("settings_overrides") or {}))


def start_run(params: dict[str, Any]) -> tuple[str, Path, str]:
    settings = settings_from(params)
    run_id = pipeline.new_run_id()
    run_dir = settings.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_id, run_dir, _utcnow()


def prepare_resources(params: dict[str, Any]) -> Resources:
    """Train when there is no model yet (or ``retrain``), then load everything the run needs once."""
    settings = settings_from(params)
    model_dir = Path(params.get("model_dir") or settings.default_model_dir)
    if params.get("retrain") or not (model_dir / pipeline.MODEL_TAXONOMY_DIR).exists():
        if not params.get("taxonomy") or not params.get("labelled"):
            from shelfwise.errors import ConfigError

            raise ConfigError(
                f"no trained model in {model_dir}: pass --taxonomy and --labelled so the run can train one, "
                "or train first with `shelfwise train`"
            )
        summary = pipeline.train(
            taxonomy_path=params["taxonomy"], catalog=params["labelled"], model_dir=model_dir, settings=settings,
            reviews=params.get("reviews"), images_root=params.get("images_root"), spec=params.get("spec"),
            mapping=params.get("mapping"),
        )
        print(f"trained model {summary.model_version} on {summary.labelled} labelled SKUs "
              f"({summary.human_labels} human labels)")
    return pipeline.load_resources(model_dir, settings)


def stage(params: dict[str, Any], res: Resources, run_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    return pipeline.stage_catalog(
        params["catalog"], run_dir=run_dir, settings=res.settings, taxonomy=res.taxonomy,
        reviews=params.get("reviews"), images_root=params.get("images_root"), spec=params.get("spec"),
        mapping=params.get("mapping"),
    )


def classify_shard_file(shard_path: Path, res: Resources, *, run_id: str, run_dir: Path) -> ShardResult:
    shard = pl.read_parquet(shard_path)
    preds, stats = pipeline.classify_frame(shard, res, run_id=run_id)
    out = run_dir / "predictions" / shard_path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    preds.write_parquet(out)
    shard_path.unlink(missing_ok=True)  # the staged copy is no longer needed
    return ShardResult(out, stats)


def finalize(params: dict[str, Any], res: Resources, results: list[ShardResult], staging: dict[str, Any], *,
             run_id: str, run_dir: Path, started_at: str) -> dict[str, Any]:
    out = Path(params.get("out") or run_dir / "predictions.parquet")
    written = pipeline.write_predictions(((pl.read_parquet(r.predictions), r.stats) for r in results), out)
    for r in results:
        r.predictions.unlink(missing_ok=True)
    summary = pipeline.finalize_run(
        res=res, run_id=run_id, run_dir=run_dir, predictions_path=out, queue_rows=written.queue_rows,
        stats=written.stats, catalog=params["catalog"], staging=staging, started_at=started_at,
        hashes=written.hashes,
    )
    print(summary_markdown(summary))
    return summary


def report(summary: dict[str, Any], res: Resources) -> str:
    """Write the governance report for the run (if the reports module is available)."""
    try:
        from shelfwise.reports import write_report
    except ImportError:  # pragma: no cover - reports are part of the package
        return ""
    path = write_report(summary["run_id"], settings=res.settings)
    summary_path = res.settings.runs_dir / summary["run_id"] / "summary.json"
    data = json.loads(summary_path.read_text())
    data["report"] = str(path)
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, summary_path)
    return str(path)


def artifact_markdown(summary: dict[str, Any], res: Resources) -> str:
    """The governance report's key figures for the Prefect artifact (the run summary if that fails)."""
    try:
        from shelfwise.reports import report_markdown

        return report_markdown(summary["run_id"], res.settings)
    except Exception as exc:  # the artifact must never fail the run
        return summary_markdown(summary) + f"\n\n(report figures unavailable: {exc})"


def summary_markdown(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    q = c["queued"]
    llm = summary["llm"]
    lines = [
        f"# shelfwise run `{summary['run_id']}`",
        "",
        "| items | count |",
        "|---|---:|",
        f"| seen | {c['seen']} |",
        f"| new / changed / unchanged | {c['new']} / {c['changed']} / {c['unchanged']} |",
        f"| classified | {c['classified']} |",
        f"| quarantined | {c['quarantined']} |",
        f"| auto-accepted | {c['auto']} |",
        f"| review (low confidence) | {c['review']} |",
        f"| suspect (current category disagrees) | {c['suspect']} |",
        f"| kept human decisions | {c.get('human_locked', 0)} |",
        f"| queued: low_confidence / suspect / llm_failed / audit | {q['low_confidence']} / {q['suspect']} / "
        f"{q['llm_failed']} / {q['audit']} |",
        f"| LLM gated items | {llm.get('gated', 0)} |",
        f"| embeddings computed / from cache | {summary['embedding']['misses']} / {summary['embedding']['hits']} |",
        "",
        f"{llm.get('note', '')}",
        "",
        f"Predictions: `{summary['predictions_path']}`  ",
        f"Quarantine: `{summary.get('quarantine_path')}`  ",
        f"Taxonomy {summary['taxonomy_version']}, model {summary['model_version']}",
    ]
    if c.get("quarantine_reasons"):
        lines += ["", "Quarantine reasons: " + ", ".join(f"{k}: {v}" for k, v in c["quarantine_reasons"].items())]
    return "\n".join(lines)
