"""Prose, charts and display tables of the volumes and quality sections (figures from ``_fig_run``)."""

from __future__ import annotations

import polars as pl

from shelfwise.reports import _charts as charts
from shelfwise.reports._fig_run import WHAT_IF_MIN_AUDITS, QualityFigures, VolumeFigures
from shelfwise.reports._model import Chart, Section, Table, ci, money, num, pct, plural, share

__all__ = ["display_frame", "moves_chart", "quality_section", "volumes_section"]


def display_frame(
    frame: pl.DataFrame, *, pct_cols: tuple[str, ...] = (), path_cols: tuple[str, ...] = ()
) -> pl.DataFrame:
    """A small display copy: percentages as text, long paths shortened."""
    out = frame
    for c in pct_cols:
        if c in out.columns:
            out = out.with_columns(pl.Series(c, [pct(v) for v in out[c].to_list()], dtype=pl.String))
    for c in path_cols:
        if c in out.columns:
            out = out.with_columns(
                pl.Series(
                    c, [charts.short_path(v, keep=3, width=70) for v in out[c].to_list()], dtype=pl.String
                )
            )
    return out


def moves_chart(name: str, moves: pl.DataFrame, *, title: str, alt: str) -> Chart:
    """Bars of the ten largest ``from_path -> to_path`` moves (``count``)."""
    shown = moves.head(10)
    labels = [charts.pair_labels(a, b) for a, b in zip(shown["from_path"], shown["to_path"], strict=True)]
    bars = charts.barh(
        labels, shown["count"].to_list(), title=title, xlabel="products", colors=charts.PALETTE["accent"]
    )
    return Chart(name, bars, alt)


# --------------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------------
def volumes_section(v: VolumeFigures, *, notes: list[str]) -> Section:
    llm = v.llm
    sec = Section("volumes", "Volumes", "")
    sec.notes += notes
    sec.headline = (
        f"{plural(v.seen, 'product')} seen: {num(v.classified)} classified and {num(v.quarantined)} "
        f"quarantined; "
        f"{num(v.new)} new and {num(v.changed)} changed since the last run. "
        f"{num(v.auto)} ({pct(v.auto_rate)}) were auto-accepted, "
        f"{num(v.review + v.suspect)} need a human look."
    )
    if llm.enabled and (llm.gated or llm.calls):
        sec.headline += (
            f" The LLM looked at {plural(llm.gated, 'uncertain product')} "
            f"({plural(llm.calls, 'call')}, {num(llm.tokens)} tokens, {money(llm.cost_usd)})."
        )
    sec.facts = [
        ("seen", num(v.seen)),
        ("new", num(v.new)),
        ("changed", num(v.changed)),
        ("unchanged", num(v.unchanged)),
        ("classified", num(v.classified)),
        ("quarantined", num(v.quarantined)),
        ("auto-accepted", num(v.auto)),
        ("low confidence (review)", num(v.review)),
        ("suspect (current category disagrees)", num(v.suspect)),
        ("kept human decisions", num(v.human_locked)),
    ]
    if v.gone is not None:
        sec.facts.append(("no longer in the catalog", num(v.gone)))
    labels = ["auto-accepted", "review: low confidence", "review: suspect", "quarantined (bad rows)"]
    values = [v.auto, v.review, v.suspect, v.quarantined]
    colors = [
        charts.PALETTE["main"],
        charts.PALETTE["accent"],
        charts.PALETTE["bad"],
        charts.PALETTE["second"],
    ]
    if v.seen:
        sec.charts.append(
            Chart(
                "Where tonight's products went",
                charts.barh(
                    labels, values, title="Where tonight's products went", xlabel="products", colors=colors
                ),
                "bar chart of products auto-accepted, sent to review, flagged suspect and quarantined",
            )
        )
    queue_df = v.queues()
    if sum(queue_df["items sent"]):
        sec.charts.append(
            Chart(
                "Review queues",
                charts.barh(
                    [q.replace("_", " ") for q in queue_df["queue"]],
                    queue_df["items sent"].to_list(),
                    title="Items sent to each review queue",
                    xlabel="items",
                    colors=[
                        charts.PALETTE["accent"],
                        charts.PALETTE["bad"],
                        charts.PALETTE["second"],
                        charts.PALETTE["main"],
                    ],
                ),
                "bar chart of items sent to each review queue",
            )
        )
    sec.tables.append(
        Table("Items sent to each review queue tonight (within the nightly capacity)", queue_df)
    )
    _quarantine(sec, v)
    _llm(sec, v)
    return sec


def _quarantine(sec: Section, v: VolumeFigures) -> None:
    reasons, dropped = v.quarantine_reasons, v.dropped_reasons
    if v.quarantined and dropped.is_empty():
        sec.notes.append(f"{num(v.quarantined)} rows were quarantined, but no reasons were recorded")
    if not dropped.is_empty():
        by_reason = (
            dropped.group_by("reason")
            .agg(pl.col("count").sum())
            .sort(["count", "reason"], descending=[True, False])
            .head(12)
        )
        sec.charts.append(
            Chart(
                "Why rows were quarantined",
                charts.barh(
                    [str(x).replace("_", " ") for x in by_reason["reason"]],
                    by_reason["count"].to_list(),
                    title="Why rows were quarantined",
                    xlabel="rows",
                    colors=charts.PALETTE["second"],
                ),
                "bar chart of quarantine reasons",
            )
        )
    if not reasons.is_empty():
        sec.tables.append(
            Table("Quarantined rows and field warnings by reason, with the fix", reasons.head(20))
        )
    if v.quarantined and v.quarantine_path:
        sec.text.append(
            f"The quarantined rows, with the row number and the fix for each, are in {v.quarantine_path}."
        )


def _llm(sec: Section, v: VolumeFigures) -> None:
    llm = v.llm
    llm_rows = [
        ("LLM step", "on" if llm.enabled else "off"),
        ("items sent to the LLM (gated)", num(llm.gated)),
        ("LLM calls", num(llm.calls)),
        ("answers from the LLM cache", num(llm.cache_hits)),
        ("tokens in / out", f"{num(llm.tokens_in)} / {num(llm.tokens_out)}"),
        ("cost", money(llm.cost_usd)),
        ("failed / skipped", f"{num(llm.failed)} / {num(llm.skipped)}"),
    ]
    if llm.statuses:
        llm_rows.append(("outcomes", ", ".join(f"{k}: {num(n)}" for k, n in sorted(llm.statuses.items()))))
    if llm.latency_ms_p50 is not None:
        llm_rows.append(
            ("latency p50 / p95", f"{llm.latency_ms_p50:,.0f} ms / {llm.latency_ms_p95 or 0:,.0f} ms")
        )
    sec.tables.append(
        Table(
            "LLM arbitration", pl.DataFrame({"": [a for a, _ in llm_rows], "value": [b for _, b in llm_rows]})
        )
    )
    if llm.outcomes is not None:
        sec.tables.append(
            Table("LLM answers during this run, by outcome (from the LLM decision log)", llm.outcomes)
        )
    if llm.note:
        sec.text.append(llm.note)


# --------------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------------
def quality_section(q: QualityFigures, *, notes: list[str]) -> Section:
    sec = Section("quality", "Quality", "")
    sec.notes += notes
    _quality_text(sec, q)
    _what_if(sec, q)
    _agreement(sec, q)
    return sec


def _quality_text(sec: Section, q: QualityFigures) -> None:
    """The headline (precision against the target, coverage) and the key facts."""
    n_audit, lo, hi, target = q.audit_answers, q.precision_lo, q.precision_hi, q.target
    if n_audit:
        verdict = (
            "on target"
            if lo >= target
            else "below target"
            if hi < target
            else "not yet provably on target (the interval includes the target)"
        )
        sec.headline = (
            f"Auto-accepted items are an estimated {pct(q.precision)} correct (95% CI {ci(lo, hi)}, "
            f"{plural(n_audit, 'audit answer')}), against a target of {pct(target)}: {verdict}. "
            f"Coverage at that target: {pct(q.auto_rate)} of classified products were auto-accepted."
        )
    else:
        sec.headline = (
            f"No audit answers yet, so the precision of auto-accepted items is not estimated; "
            f"coverage at the {pct(target)} precision target: {pct(q.auto_rate)} of "
            f"{num(q.classified)} classified products were auto-accepted."
        )
        sec.notes.append(
            "no audit answers yet: reviewers have not checked any sampled auto-accepted item (queue `audit`)"
        )
    n_ans = q.answers
    sec.facts = [
        ("estimated precision of auto-accepted", pct(q.precision, 1)),
        ("95% confidence interval", ci(lo, hi)),
        (
            "based on",
            f"{plural(n_audit, 'audit answer')} ({q.audit_scope})" if n_audit else "no audit answers yet",
        ),
        ("precision target", pct(target)),
        ("coverage (auto-accepted share)", pct(q.auto_rate, 1)),
        (
            "model agrees with reviewers",
            f"{pct(share(q.agree, n_ans))} of {plural(n_ans, 'answer')}"
            if n_ans
            else "no reviewer answers yet",
        ),
    ]


def _agreement(sec: Section, q: QualityFigures) -> None:
    """Agreement with the reviewers by queue, the reliability diagram and coverage by branch."""
    if q.agreement is not None:
        sec.tables.append(
            Table(
                "Agreement between the model's suggestion and the reviewers, by queue",
                display_frame(q.agreement, pct_cols=("agreement",)),
            )
        )
    else:
        sec.notes.append(
            "no reviewer answers yet: agreement and calibration need accepted or corrected items"
        )
    if q.calibration is not None and q.calibration_error is not None:
        sec.charts.append(
            Chart(
                "Calibration",
                charts.reliability(
                    q.calibration, title="Does confidence match reviewer-confirmed correctness?"
                ),
                "reliability diagram of model confidence against the share of answers confirming the "
                "suggestion",
            )
        )
        sec.text.append(
            f"Calibration over {plural(q.calibrated_answers, 'answer')}: confidence is off by "
            f"{pct(q.calibration_error, 1)} on average (expected calibration error). Review queues hold "
            f"mostly "
            "uncertain items, so low confidences are over-represented here."
        )
    elif q.answers:
        sec.notes.append(
            f"only {plural(q.calibrated_answers, 'answer')} with a shown confidence: the reliability "
            "diagram needs at least 5"
        )
    if q.coverage_by_branch is not None:
        shown = q.coverage_by_branch.head(12)
        sec.charts.append(
            Chart(
                "Coverage by branch",
                charts.barh(
                    [charts.short_path(x, keep=1, width=38) for x in shown["top"]],
                    shown["coverage"].to_list(),
                    title="Share auto-accepted, by predicted top-level category",
                    kind="pct",
                    ref=(q.auto_rate, f"all: {pct(q.auto_rate)}"),
                ),
                "bar chart of the share of auto-accepted products per top-level category",
            )
        )


def _what_if(sec: Section, q: QualityFigures) -> None:
    w, target = q.what_if, q.target
    if w.table is None:
        if 0 < w.audits < WHAT_IF_MIN_AUDITS:
            sec.notes.append(
                f"only {plural(w.audits, 'audit answer')}: the what-if table on raising the "
                f"auto-accept bar needs at least {WHAT_IF_MIN_AUDITS}"
            )
        return
    sec.tables.append(
        Table(
            "What if auto-accept required a higher confidence? (estimated from audit answers)",
            display_frame(
                w.table.drop("_lo").with_columns(pl.col("min confidence").round(3)),
                pct_cols=("estimated precision", "coverage"),
            ),
        )
    )
    if w.best is None:
        sec.text.append(
            f"None of the confidence bars in the what-if table is proven to reach {pct(target)} "
            "precision yet (the lower end of every interval is below it): more audit answers, "
            "or retraining with the reviewers' labels, are needed."
        )
    else:
        best = w.best
        sec.text.append(
            f"Requiring confidence >= {best['min confidence']:.2f} is the lowest bar whose precision is "
            f"proven above {pct(target)} (95% CI {best['95% CI']}); it would auto-accept "
            f"{pct(best['coverage'])} of tonight's products."
        )
