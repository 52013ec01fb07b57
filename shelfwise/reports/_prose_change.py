"""Prose, charts and display tables of the change, reviewer and trend sections (figures from ``_fig_change``
and the report history)."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import polars as pl

from shelfwise.reports import _charts as charts
from shelfwise.reports._fig_change import AGE_BUCKETS, DriftFigures, ReviewerFigures
from shelfwise.reports._model import Chart, Section, Table, age, num, pct, plural, share
from shelfwise.reports._prose_run import display_frame, moves_chart
from shelfwise.summary import RunSummary

__all__ = ["drift_section", "reviewers_section", "trends"]


# --------------------------------------------------------------------------------------------------
# Change and drift
# --------------------------------------------------------------------------------------------------
def drift_section(
    d: DriftFigures,
    *,
    previous_run_id: str | None,
    summary: RunSummary,
    previous_summary: RunSummary | None,
    notes: list[str],
) -> Section:
    sec = Section("drift", "Change and drift", "")
    sec.notes += notes
    if not d.compared:
        return _first_comparison(sec, d, previous_run_id)
    _drift_text(sec, d, previous_run_id, summary, previous_summary)
    _drift_tables(sec, d)
    return sec


def _first_comparison(sec: Section, d: DriftFigures, previous_run_id: str | None) -> Section:
    """The drift section of a run with nothing to compare against: tonight's mix alone."""
    cur_top = d.current_top
    sec.headline = (
        "This is the first run to compare against: churn and distribution shift appear from the next run on."
        if previous_run_id is None
        else f"The previous run {previous_run_id} has no readable predictions, so churn is unknown."
    )
    if cur_top:
        labels, vals = _top_shares(cur_top, Counter())
        sec.charts.append(
            Chart(
                "Category mix",
                charts.barh(labels, vals["tonight"], title="Tonight's mix by top-level category", kind="pct"),
                "bar chart of the share of products per top-level category",
            )
        )
    return sec


def _drift_text(
    sec: Section,
    d: DriftFigures,
    previous_run_id: str | None,
    summary: RunSummary,
    previous_summary: RunSummary | None,
) -> None:
    """Headline, what changed besides the catalog (model, taxonomy) and the key facts."""
    n_moved, n_both, n_new = d.moved, d.in_both, d.new_skus or 0
    size = (
        "stayed stable" if d.psi_top < 0.1 else "shifted moderately" if d.psi_top < 0.25 else "shifted a lot"
    )
    sec.headline = (
        f"{num(n_moved)} of {num(n_both)} products ({pct(share(n_moved, n_both), 1)}) moved category since "
        f"run "
        f"{previous_run_id}; the top-level mix {size} (PSI {d.psi_top:.3f}; Jensen-Shannon divergence "
        f"{d.js_top:.3f} at the top level, {d.js_leaf:.3f} over all categories). {num(n_new)} products are "
        f"new, {num(d.gone)} dropped out."
    )
    ps = previous_summary
    if ps is not None and ps.model_version and ps.model_version != summary.model_version:
        sec.text.append(
            f"The model changed since the previous run ({ps.model_version} → "
            f"{summary.model_version}): part of the churn is the new model's doing."
        )
    if ps is not None and ps.taxonomy_version and ps.taxonomy_version != summary.taxonomy_version:
        sec.text.append(
            f"The taxonomy changed since the previous run ({ps.taxonomy_version} → "
            f"{summary.taxonomy_version})."
        )
    sec.facts = [
        ("products in both runs", num(n_both)),
        ("moved category", num(n_moved)),
        ("churn", pct(share(n_moved, n_both), 1)),
        ("new products", num(n_new)),
        ("dropped out", num(d.gone)),
        ("JS divergence (categories)", f"{d.js_leaf:.4f}"),
        ("JS divergence (top level)", f"{d.js_top:.4f}"),
        ("PSI (top level)", f"{d.psi_top:.4f}"),
    ]


def _drift_tables(sec: Section, d: DriftFigures) -> None:
    """The moves chart and table, the top-level mix chart and the new-product mix."""
    flows = d.flows
    if flows is not None and not flows.is_empty():
        sec.charts.append(
            moves_chart(
                "Top category moves",
                flows,
                title="Biggest moves since the previous run (from → to)",
                alt="bar chart of the largest category-to-category moves",
            )
        )
        sec.tables.append(
            Table(
                "Biggest category moves since the previous run",
                display_frame(flows.head(12), path_cols=("from_path", "to_path")).rename(
                    {"from_path": "from", "to_path": "to"}
                ),
            )
        )
    labels, vals = _top_shares(d.current_top, d.previous_top)
    if labels:
        sec.charts.append(
            Chart(
                "Top-level mix",
                charts.grouped_barh(
                    labels,
                    {"previous run": vals["previous"], "tonight": vals["tonight"]},
                    title="Share of products per top-level category",
                ),
                "grouped bars of top-level category shares, previous run vs tonight",
            )
        )
    mix = d.new_product_mix()
    if mix is not None:
        sec.tables.append(
            Table(
                "New-product mix by top-level category",
                display_frame(mix.head(12), pct_cols=("share of new", "share of all")),
            )
        )


def _top_shares(
    cur: Counter[str], prev: Counter[str], k: int = 10
) -> tuple[list[str], dict[str, list[float]]]:
    tc, tp = max(1, sum(cur.values())), max(1, sum(prev.values()))
    keys = sorted(set(cur) | set(prev), key=lambda x: -(cur.get(x, 0) / tc + prev.get(x, 0) / tp))[:k]
    return (
        [charts.short_path(x, keep=1, width=38) for x in keys],
        {"tonight": [cur.get(x, 0) / tc for x in keys], "previous": [prev.get(x, 0) / tp for x in keys]},
    )


# --------------------------------------------------------------------------------------------------
# Reviewers
# --------------------------------------------------------------------------------------------------
def reviewers_section(r: ReviewerFigures, *, notes: list[str], queue_ok: bool) -> Section:
    sec = Section("reviewers", "Reviewers", "")
    n_open, oldest = r.open_items.height, r.oldest_open_days
    waiting = "is" if n_open == 1 else "are"
    if r.stats is None:
        sec.headline = (
            f"No reviewer decisions yet (no audit answers yet); {plural(n_open, 'item')} "
            f"{waiting} waiting in the review queues"
            + (f", the oldest for {age(oldest)}." if oldest is not None else ".")
        )
        sec.notes += list(notes) or ["no reviewer decisions recorded yet"]
    else:
        _decisions(sec, r)
    if n_open:
        qs = sorted(set(r.open_items["queue"].to_list()))
        series = {}
        for qn in qs:
            m = {
                row["age"]: row["open_items"]
                for row in r.backlog.filter(pl.col("queue") == qn).iter_rows(named=True)
            }
            series[qn] = [m.get(name, 0) for name, _ in AGE_BUCKETS]
        sec.charts.append(
            Chart(
                "Backlog age",
                charts.stacked_bars(
                    [name for name, _ in AGE_BUCKETS],
                    series,
                    title="Open review items by age and queue",
                    ylabel="open items",
                ),
                "stacked bars of open review items per age bucket and queue",
            )
        )
    elif queue_ok:
        sec.text.append("The review queues are empty: nothing is waiting for a reviewer.")
    return sec


def _decisions(sec: Section, r: ReviewerFigures) -> None:
    assert r.stats is not None and r.per_day is not None
    stats, med, last_day, n_double = r.stats, r.median_seconds, r.decisions_last_day, r.double_checked
    n_open, oldest = r.open_items.height, r.oldest_open_days
    sec.headline = (
        f"{plural(stats.height, 'reviewer')} made {plural(r.decisions, 'decision')} ({num(last_day)} in the "
        f"last "
        f"24 hours), taking a median {med:.0f} s each"
        if med is not None
        else f"{plural(stats.height, 'reviewer')} made {plural(r.decisions, 'decision')} ({num(last_day)} in "
        f"the last "
        "24 hours)"
    )
    sec.headline += (
        f"; {plural(n_open, 'item')} {'is' if n_open == 1 else 'are'} waiting"
        + (f", the oldest for {age(oldest)}" if oldest is not None else "")
        + ". "
    )
    if n_double:
        sec.headline += (
            f"On {plural(n_double, 'item')} answered by two reviewers they agreed "
            f"{pct(r.raw_agreement)} of the time (Cohen's κ {r.kappa:.2f})."
        )
    else:
        sec.headline += "No item has been answered by two reviewers yet, so their agreement is unknown."
        sec.notes.append("no item answered by two reviewers yet: Cohen's kappa needs double-checked items")
    sec.facts = [
        ("decisions", num(r.decisions)),
        ("reviewers", num(stats.height)),
        ("decisions in the last 24 h", num(last_day)),
        ("median time per decision", f"{med:.1f} s" if med is not None else "n/a"),
        ("items answered by two reviewers", num(n_double)),
        (
            "agreement between reviewers",
            "n/a" if not n_double else f"{pct(r.raw_agreement)} (κ {r.kappa:.2f})",
        ),
    ]
    per_day = r.per_day
    days = sorted(set(per_day["day"].to_list()))[-14:]
    people = stats["reviewer"].to_list()[:6]
    series = {}
    for who in people:
        m = {row["day"]: row["n"] for row in per_day.filter(pl.col("reviewer") == who).iter_rows(named=True)}
        series[who] = [m.get(x, 0) for x in days]
    others = per_day.filter(~pl.col("reviewer").is_in(people))
    if not others.is_empty():
        m2 = dict(others.group_by("day").agg(pl.col("n").sum()).iter_rows())
        series["others"] = [m2.get(x, 0) for x in days]
    sec.charts.append(
        Chart(
            "Throughput",
            charts.stacked_bars(
                [x.strftime("%d %b") for x in days],
                series,
                title="Decisions per day, by reviewer",
                ylabel="decisions",
            ),
            "stacked bars of reviewer decisions per day",
        )
    )
    show = stats.select(
        "reviewer",
        "decisions",
        "accepted",
        "corrected",
        "other",
        pl.col("median_seconds").round(1),
        pl.col("p90_seconds").round(1),
    )
    sec.tables.append(Table("Reviewer throughput and time per decision", show))


# --------------------------------------------------------------------------------------------------
# Trends (from history.parquet)
# --------------------------------------------------------------------------------------------------
def trends(
    history: pl.DataFrame, figs: dict[str, Any], *, last: int, target: float, run_id: str | None = None
) -> Section:
    """Charts over the last ``last`` runs of the history, ending at ``run_id`` (later runs are left out)."""
    sec = Section("trends", f"Trends over the last {last} runs", "")
    ids = history["run_id"].to_list()
    if run_id in ids:
        history = history.head(ids.index(run_id) + 1)
    h = history.tail(last)
    if h.height < 2:
        sec.headline = "Trends appear from the second run on (history has one run so far)."
        return sec
    x = _run_labels(h["run_id"].to_list())

    def col(name: str) -> list[Any]:
        return h[name].to_list() if name in h.columns else [None] * h.height

    ar = [v for v in col("auto_rate") if v is not None]
    sec.headline = (
        f"Over the last {h.height} runs the auto-accept rate moved from {pct(ar[0])} to {pct(ar[-1])}"
        if ar
        else f"History holds {h.height} runs"
    )
    pr = [v for v in col("precision") if v is not None and not (isinstance(v, float) and math.isnan(v))]
    sec.headline += f" and estimated precision from {pct(pr[0])} to {pct(pr[-1])}." if len(pr) >= 2 else "."
    sec.charts += _trend_charts(x, col, target)
    if any(v for v in col("llm_calls") + col("llm_cost_usd") if v is not None):
        sec.charts.append(
            Chart(
                "LLM cost",
                charts.trend(
                    x, {"LLM cost (USD)": col("llm_cost_usd")}, kind="float", title="LLM cost per run (USD)"
                ),
                "line chart of LLM cost per run",
            )
        )
    else:
        sec.text.append("The LLM step made no calls in these runs, so there is no LLM cost to chart.")
    return sec


def _trend_charts(x: list[str], col: Callable[[str], list[Any]], target: float) -> list[Chart]:
    """Auto-accept rate, precision, volumes, churn and suspects, backlog: one line chart each."""
    out: list[Chart] = []
    out.append(
        Chart(
            "Auto-accept rate",
            charts.trend(x, {"auto-accepted": col("auto_rate")}, title="Auto-accepted share"),
            "line chart of auto-accept rate per run",
        )
    )
    out.append(
        Chart(
            "Precision",
            charts.trend(
                x,
                {"estimated precision": col("precision")},
                band=(col("precision_lo"), col("precision_hi")),
                target=target,
                target_label=f"target {pct(target)}",
                title="Precision of auto-accepted (audit)",
            ),
            "line chart of estimated precision with its confidence band and the target",
        )
    )
    out.append(
        Chart(
            "Volumes",
            charts.trend(
                x,
                {"classified": col("classified"), "quarantined": col("quarantined")},
                kind="int",
                title="Products per run",
            ),
            "line chart of classified and quarantined products per run",
        )
    )
    out.append(
        Chart(
            "Churn and suspects",
            charts.trend(
                x,
                {"moved category": col("churn_rate"), "disagree with catalog": col("suspect_rate")},
                title="Churn and suspected misfiles",
            ),
            "line chart of churn and suspect rates per run",
        )
    )
    out.append(
        Chart(
            "Backlog",
            charts.trend(x, {"open review items": col("open_backlog")}, kind="int", title="Review backlog"),
            "line chart of open review items",
        )
    )
    return out


def _run_labels(run_ids: list[str]) -> list[str]:
    """'20261127T072746Z-aff277' -> '11-27 07:27' (with seconds when two runs share a minute)."""

    def fmt(r: str, seconds: bool) -> str:
        try:
            t = dt.datetime.strptime(r[:16], "%Y%m%dT%H%M%SZ")
        except ValueError:
            return r[:14]
        return t.strftime("%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M")

    short = [fmt(r, False) for r in run_ids]
    if len(set(short)) < len(short):
        short = [fmt(r, True) for r in run_ids]
    return short
