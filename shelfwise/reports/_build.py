"""Assemble a report from a run's inputs and write it (HTML, markdown, Parquet tables, history)."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise.reports import _charts as charts
from shelfwise.reports import _sections as sections
from shelfwise.reports._history import history_row, read_history, upsert_history
from shelfwise.reports._model import Card, GovernanceReport, age, ci, money, num, pct, plural
from shelfwise.reports._render import render_html, render_markdown
from shelfwise.reports._sources import load_inputs
from shelfwise.settings import Settings
from shelfwise.state import HISTORY
from shelfwise.summary import RunSummary


def _target(summary: RunSummary, settings: Settings) -> float:
    t = summary.thresholds.get("target_precision")
    try:
        return float(t) if t is not None else float(settings.target_precision)
    except (TypeError, ValueError):
        return float(settings.target_precision)


def headline(f: dict[str, Any]) -> str:
    text = f"Tonight {plural(int(f.get('classified') or 0), 'product was', 'products were')} classified"
    if not f.get("classified"):
        return text + f" ({num(f.get('seen'))} seen, {num(f.get('quarantined'))} quarantined)."
    text += f"; {pct(f.get('auto_rate'))} auto-accepted"
    if f.get("audit_answers"):
        text += (
            f" at an estimated {pct(f.get('precision'))} precision (95% CI "
            f"{ci(f.get('precision_lo'), f.get('precision_hi'))})"
        )
    else:
        text += " (precision not estimated yet: no audit answers yet)"
    text += "."
    if f.get("quarantined"):
        text += f" {plural(int(f['quarantined']), 'row was', 'rows were')} quarantined."
    return text


def cards(f: dict[str, Any]) -> list[Card]:
    out = [
        Card("Classified", num(f.get("classified")), f"of {num(f.get('seen'))} seen"),
        Card("Auto-accepted", pct(f.get("auto_rate")), f"{num(f.get('auto'))} products"),
    ]
    if f.get("audit_answers"):
        lo, hi, t = (
            f.get("precision_lo") or 0.0,
            f.get("precision_hi") or 0.0,
            f.get("target_precision") or 0.0,
        )
        tone = "good" if lo >= t else "bad" if hi < t else "warn"
        out.append(
            Card(
                "Est. precision",
                pct(f.get("precision")),
                f"95% CI {ci(lo, hi)} · {num(f['audit_answers'])} audits",
                tone,
            )
        )
    else:
        out.append(Card("Est. precision", "n/a", "no audit answers yet", "warn"))
    sr = f.get("suspect_rate")
    out.append(
        Card(
            "Disagree with catalog",
            pct(sr, 1),
            f"{num(f.get('suspect_confident'))} flagged suspect",
            "bad" if (sr or 0) > 0.1 else "warn" if (sr or 0) > 0.02 else "good",
        )
    )
    out.append(
        Card(
            "Quarantined",
            num(f.get("quarantined")),
            "rows with problems",
            "warn" if f.get("quarantined") else "good",
        )
    )
    if f.get("churn_moved") is None:
        out.append(Card("Moved since last run", "–", "first run"))
    else:
        out.append(
            Card(
                "Moved since last run",
                num(f.get("churn_moved")),
                f"{pct(f.get('churn_rate'), 1)} of products",
            )
        )
    oldest = f.get("oldest_open_days")
    out.append(
        Card(
            "Waiting for review",
            num(f.get("open_backlog")),
            f"oldest {age(oldest)}" if oldest is not None else "queue empty",
            "warn" if (oldest or 0) > 7 else "neutral",
        )
    )
    out.append(
        Card(
            "LLM cost",
            money(f.get("llm_cost_usd")),
            f"{num(f.get('llm_calls'))} calls · {num(f.get('llm_tokens'))} tokens",
        )
    )
    return out


def build_report(
    run_id: str, settings: Settings, *, render_charts: bool = True, now: dt.datetime | None = None
) -> GovernanceReport:
    """Compute every section of the report for a run (no files written)."""
    now = now or dt.datetime.now(dt.UTC)
    inp = load_inputs(run_id, settings)
    figs: dict[str, Any] = {}
    tables: dict[str, pl.DataFrame] = {}
    target = _target(inp.summary, settings)
    with charts.rendering(render_charts):
        secs = sections.build_sections(inp, figs, tables, sections.ReportContext(target=target, now=now))
    return GovernanceReport(
        run_id=inp.run_id,
        generated_at=now.isoformat(timespec="seconds"),
        headline=headline(figs),
        figures=figs,
        cards=cards(figs),
        sections=secs,
        tables=tables,
        summary=inp.summary,
    )


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _add_trends(
    report: GovernanceReport,
    history: pl.DataFrame,
    settings: Settings,
    *,
    trend_runs: int,
    render_charts: bool,
) -> None:
    """The trends section (last): it needs the history, which ``write`` updates and ``markdown`` only
    reads."""
    with charts.rendering(render_charts):
        report.sections.append(
            sections.trends(
                history,
                report.figures,
                last=trend_runs,
                target=_target(report.summary, settings),
                run_id=report.run_id,
            )
        )


def write(run_id: str, settings: Settings, out_dir: str | Path | None, *, trend_runs: int) -> Path:
    report = build_report(run_id, settings)
    out = Path(out_dir) if out_dir is not None else settings.runs_dir / report.run_id / "report"
    out.mkdir(parents=True, exist_ok=True)
    history_path = settings.state_dir / HISTORY
    row = history_row(report.figures, report.summary)
    history = upsert_history(history_path, row)
    _add_trends(report, history, settings, trend_runs=trend_runs, render_charts=True)
    report.tables["headline"] = row
    for name, frame in report.tables.items():
        tmp = out / f".{name}.parquet.tmp"
        frame.write_parquet(tmp)
        os.replace(tmp, out / f"{name}.parquet")
    _write_atomic(out / "report.md", render_markdown(report))
    html_path = out / "report.html"
    _write_atomic(html_path, render_html(report, tables=sorted(report.tables), history=str(history_path)))
    return html_path


def markdown(run_id: str, settings: Settings, *, trend_runs: int = 30) -> str:
    """The markdown of ``report.md`` without writing anything (history is read, not updated)."""
    report = build_report(run_id, settings, render_charts=False)
    row = history_row(report.figures, report.summary)
    history = read_history(settings.state_dir / HISTORY)
    history = pl.concat(
        [history.filter(pl.col("run_id") != report.run_id), row], how="diagonal_relaxed"
    ).sort(["finished_at", "run_id"], nulls_last=True)
    _add_trends(report, history, settings, trend_runs=trend_runs, render_charts=False)
    return render_markdown(report)
