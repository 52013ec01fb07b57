"""Data-governance reports: what a nightly run did, how good it is, and what needs attention.

    from shelfwise.reports import write_report, report_markdown
    html = write_report("latest", settings=settings)          # <state>/runs/<run>/report/report.html
    md = report_markdown(run_id, settings)                     # key figures as markdown (Prefect artifact)

``write_report`` writes, into the report folder: ``report.html`` (self-contained: inline CSS, charts as
base64 PNG), ``report.md``, and the tables behind it as Parquet (``volumes``, ``quarantine_reasons``,
``queues``, ``agreement``, ``calibration``, ``coverage_by_branch``, ``corrections``, ``confusion``,
``taxonomy_nodes``, ``overloaded_nodes``, ``deprecated_paths``, ``node_sets``, ``churn``,
``category_distribution``, ``new_product_mix``, ``reviewer_stats``, ``backlog``, ``headline``; a table
only appears when its source has data). It also upserts one row of headline figures per run into
``<state_dir>/history.parquet`` and charts the last ``trend_runs`` runs.

Every section renders even when its source is empty or missing and says what is missing.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shelfwise.errors import ConfigError
from shelfwise.reports._build import build_report as _build_report
from shelfwise.reports._build import markdown as _markdown
from shelfwise.reports._build import write as _write
from shelfwise.reports._history import read_history as _read_history
from shelfwise.reports._metrics import cohen_kappa, jensen_shannon, psi, wilson_interval
from shelfwise.reports._model import GovernanceReport
from shelfwise.settings import Settings
from shelfwise.state import HISTORY

__all__ = [
    "GovernanceReport",
    "build_report",
    "cohen_kappa",
    "jensen_shannon",
    "psi",
    "read_history",
    "report_markdown",
    "wilson_interval",
    "write_report",
]


def write_report(
    run_id: str, settings: Settings, out_dir: str | Path | None = None, *, trend_runs: int = 30
) -> Path:
    """Write the governance report of ``run_id`` (or ``"latest"``); returns the path of ``report.html``.

    ``out_dir`` defaults to ``<state_dir>/runs/<run_id>/report``. Raises ``ConfigError`` when the run does
    not exist; any other missing source (queue DB, previous run, taxonomy) is reported inside the report.
    """
    if trend_runs < 2:
        raise ConfigError(f"write_report: trend_runs={trend_runs}; use 2 or more runs for the trend charts")
    return _write(run_id, settings, out_dir, trend_runs=trend_runs)


def report_markdown(run_id: str, settings: Settings, *, trend_runs: int = 30) -> str:
    """The report's key figures and section headlines as markdown (no files written, no charts drawn);
    the same text as the ``report.md`` that ``write_report`` writes."""
    return _markdown(run_id, settings, trend_runs=trend_runs)


def build_report(run_id: str, settings: Settings) -> GovernanceReport:
    """Compute the report of ``run_id`` (or ``"latest"``) as data: figures, cards, sections, tables."""
    return _build_report(run_id, settings)


def read_history(settings: Settings) -> pl.DataFrame:
    """``<state_dir>/history.parquet`` as a frame (empty with the full schema when no report was written)."""
    return _read_history(settings.state_dir / HISTORY)
