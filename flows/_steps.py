"""The plain functions behind the flow's non-shard steps (no Prefect imports here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shelfwise import pipeline
from shelfwise.errors import ConfigError
from shelfwise.settings import Settings
from shelfwise.summary import RunSummary

__all__ = ["PreparedModel", "artifact_markdown", "prepare_model", "report"]


class PreparedModel(BaseModel):
    """The model folder the night uses, and what a taxonomy migration did before it (if one ran)."""

    model_dir: str
    migration: dict[str, Any] | None = None


def prepare_model(
    settings: Settings,
    *,
    model_dir: str | None,
    taxonomy: str | None,
    labelled: str | None,
    retrain: bool,
    reviews: str | None = None,
    images_root: str | None = None,
    spec: str | None = None,
    mapping: list[str] | None = None,
    taxonomy_mapping: str | None = None,
) -> PreparedModel:
    """Migrate to a new taxonomy if ``taxonomy`` differs from the model's, train when there is no model
    yet (or ``retrain``); returns the model folder the night uses."""
    from shelfwise._migrate import migrate_if_needed

    folder = settings.model_folder(model_dir)
    migration = migrate_if_needed(
        model_dir=folder,
        taxonomy=taxonomy,
        taxonomy_mapping=taxonomy_mapping,
        labelled=labelled,
        settings=settings,
        reviews=reviews,
        images_root=images_root,
        spec=spec,
        mapping=mapping,
    )
    if migration is not None:
        print(f"taxonomy migration: model retrained on {taxonomy}")
        return PreparedModel(model_dir=str(folder), migration=migration.summary())
    if retrain or not (folder / pipeline.MODEL_TAXONOMY_DIR).exists():
        if not taxonomy or not labelled:
            raise ConfigError(
                f"no trained model in {folder}: pass --taxonomy and --labelled so the run can train one, "
                "or train first with `shelfwise train`"
            )
        trained = pipeline.train(
            taxonomy_path=taxonomy,
            catalog=labelled,
            model_dir=folder,
            settings=settings,
            reviews=reviews,
            images_root=images_root,
            spec=spec,
            mapping=mapping,
        )
        print(
            f"trained model {trained.model_version} on {trained.labelled} labelled SKUs "
            f"({trained.human_labels} human labels)"
        )
    return PreparedModel(model_dir=str(folder))


def report(summary: RunSummary, settings: Settings) -> RunSummary:
    """Write the governance report for the run and record its path in summary.json."""
    from shelfwise.reports import write_report

    path = write_report(summary.run_id, settings=settings)
    updated = summary.model_copy(update={"report": str(path)})
    updated.write(settings.runs_dir / summary.run_id)
    return updated


def artifact_markdown(summary: RunSummary, settings: Settings) -> str:
    """The governance report's key figures for the Prefect artifact (the run summary if that fails):
    the ``report.md`` the report step wrote, computed again only when it is not there."""
    written = Path(summary.report).with_name("report.md") if summary.report else None
    if written is not None and written.is_file():
        return written.read_text(encoding="utf-8")
    try:
        from shelfwise.reports import report_markdown

        return report_markdown(summary.run_id, settings)
    except Exception as exc:  # noqa: BLE001 - the artifact must never fail the run
        return summary.markdown() + f"\n\n(report figures unavailable: {exc})"
