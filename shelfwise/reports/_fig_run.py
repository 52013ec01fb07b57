"""Figures of tonight's run: volumes (what went where) and quality (audit precision, agreement, calibration).

Pure computations on :class:`~shelfwise.reports._sources.RunInputs`: typed figures and the tables behind
them; the sentences, charts and display tables are written in ``_sections``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from shelfwise.reports._fig_common import answers, collect, top_expr
from shelfwise.reports._metrics import expected_calibration_error, reliability_bins, wilson_interval
from shelfwise.reports._model import ci, share
from shelfwise.reports._sources import Predictions, RunInputs

__all__ = [
    "QUEUE_NAMES",
    "LLMFigures",
    "QualityFigures",
    "VolumeFigures",
    "WhatIf",
    "quality_figures",
    "volume_figures",
    "what_if_table",
]

QUEUE_NAMES = ("low_confidence", "suspect", "llm_failed", "audit")
QUARANTINE_SCHEMA = {
    "outcome": pl.String,
    "reason": pl.String,
    "field": pl.String,
    "count": pl.Int64,
    "how to fix": pl.String,
}
WHAT_IF_MIN_AUDITS = 20  # audit answers (with a shown confidence) the what-if table needs
CALIBRATION_MIN_ANSWERS = 5


def _int(v: Any) -> int:
    return int(v or 0)


# --------------------------------------------------------------------------------------------------
# Volumes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LLMFigures:
    """The LLM step of the run, from the summary (and its decision log, when read)."""

    enabled: bool
    gated: int
    calls: int
    cache_hits: int
    tokens_in: int
    tokens_out: int
    cost_usd: float
    failed: int
    skipped: int
    statuses: dict[str, int]
    latency_ms_p50: float | None
    latency_ms_p95: float | None
    note: str
    outcomes: pl.DataFrame | None  # answers by outcome, from the LLM decision log

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


@dataclass(frozen=True)
class VolumeFigures:
    """What tonight's run did with the products: counts, queues, quarantine reasons, the LLM step."""

    seen: int
    new: int
    changed: int
    unchanged: int
    classified: int
    quarantined: int
    auto: int
    review: int
    suspect: int
    human_locked: int
    queued: dict[str, int]  # items sent to each review queue, in QUEUE_NAMES order
    gone: int | None  # SKUs of the catalog state not in tonight's catalog (None: state not of this run)
    embeddings_computed: int
    embeddings_cached: int
    quarantine_path: str | None
    quarantine_reasons: pl.DataFrame  # outcome, reason, field, count, how to fix
    llm: LLMFigures

    @property
    def auto_rate(self) -> float | None:
        return share(self.auto, self.classified)

    @property
    def dropped_reasons(self) -> pl.DataFrame:
        return self.quarantine_reasons.filter(pl.col("outcome") == "row dropped")

    def queues(self) -> pl.DataFrame:
        return pl.DataFrame(
            [{"queue": k, "items sent": v} for k, v in self.queued.items()],
            schema={"queue": pl.String, "items sent": pl.Int64},
        )

    def counts(self) -> dict[str, int]:
        """The product counts of the run, by name (history and volumes table)."""
        return {
            "seen": self.seen,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "classified": self.classified,
            "quarantined": self.quarantined,
            "auto": self.auto,
            "review": self.review,
            "suspect": self.suspect,
            "human_locked": self.human_locked,
        }

    def headline_figures(self) -> dict[str, Any]:
        return {
            **self.counts(),
            "auto_rate": self.auto_rate,
            "queued_total": int(sum(self.queued.values())),
            "llm_calls": self.llm.calls,
            "llm_tokens": self.llm.tokens,
            "llm_cost_usd": self.llm.cost_usd,
            "gone": self.gone,
        }

    def tables(self, run_id: str) -> dict[str, pl.DataFrame]:
        """The export tables: quarantine reasons, LLM outcomes, the volumes metric list, queues."""
        rows = {
            **self.counts(),
            **{f"queued_{k}": v for k, v in self.queued.items()},
            "llm_gated": self.llm.gated,
            "llm_calls": self.llm.calls,
            "llm_cache_hits": self.llm.cache_hits,
            "llm_tokens_in": self.llm.tokens_in,
            "llm_tokens_out": self.llm.tokens_out,
            "embeddings_computed": self.embeddings_computed,
            "embeddings_cached": self.embeddings_cached,
            "llm_cost_usd": self.llm.cost_usd,
        }
        out = {"quarantine_reasons": self.quarantine_reasons}
        if self.llm.outcomes is not None:
            out["llm_outcomes"] = self.llm.outcomes
        out["volumes"] = pl.DataFrame(
            {"run_id": [run_id] * len(rows), "metric": list(rows), "value": [float(v) for v in rows.values()]}
        )
        out["queues"] = self.queues()
        return out


def volume_figures(inp: RunInputs) -> VolumeFigures:
    s = inp.summary
    c = s.counts
    gone = None
    st = inp.catalog_state  # SKUs of the catalog state by the run that last saw them
    if not st.is_empty() and st.get_column("last_seen_run").max() == inp.run_id:
        gone = int(st.filter(pl.col("last_seen_run") != inp.run_id).get_column("skus").sum())
    return VolumeFigures(
        seen=c.seen,
        new=c.new,
        changed=c.changed,
        unchanged=c.unchanged,
        classified=c.classified,
        quarantined=c.quarantined,
        auto=c.auto,
        review=c.review,
        suspect=c.suspect,
        human_locked=c.human_locked,
        queued={k: int(c.queued.get(k, 0)) for k in QUEUE_NAMES},
        gone=gone,
        embeddings_computed=s.embedding.misses,
        embeddings_cached=s.embedding.hits,
        quarantine_path=s.quarantine_path,
        quarantine_reasons=_quarantine_reasons(inp),
        llm=_llm_figures(inp),
    )


def _quarantine_reasons(inp: RunInputs) -> pl.DataFrame:
    """From the quarantine JSONL when present (field + example fix), else from the summary counts."""
    qf = inp.quarantine.with_columns(
        pl.when(pl.col("severity") == "warning")
        .then(pl.lit("kept, field nulled"))
        .otherwise(pl.lit("row dropped"))
        .alias("outcome")
    )
    if not qf.is_empty():
        return (
            qf.group_by("outcome", "reason", "field")
            .agg(
                pl.len().cast(pl.Int64).alias("count"), pl.col("fix").drop_nulls().first().alias("how to fix")
            )
            .sort(["outcome", "count", "reason"], descending=[True, True, False])
        )
    r = inp.summary.counts.quarantine_reasons
    return pl.DataFrame(
        {
            "outcome": ["row dropped"] * len(r),
            "reason": list(r),
            "field": [None] * len(r),
            "count": [int(v) for v in r.values()],
            "how to fix": [None] * len(r),
        },
        schema=QUARANTINE_SCHEMA,
    ).sort("count", descending=True)


def _llm_figures(inp: RunInputs) -> LLMFigures:
    llm = inp.summary.llm.model_dump()  # the typed fields and the arbiter's counters (extra fields)
    outcomes = None
    log_frame = inp.llm_log
    if not log_frame.is_empty() and "status" in log_frame.columns:
        aggs = [pl.len().alias("answers")]
        if "confidence" in log_frame.columns:
            aggs.append(pl.col("confidence").mean().round(2).alias("mean confidence"))
        if "latency_ms" in log_frame.columns:
            aggs.append(pl.col("latency_ms").median().round(0).alias("median latency ms"))
        if "cost_usd" in log_frame.columns:
            aggs.append(pl.col("cost_usd").sum().round(4).alias("cost USD"))
        outcomes = log_frame.group_by("status").agg(aggs).sort("answers", descending=True)
    p50, p95 = llm.get("latency_ms_p50"), llm.get("latency_ms_p95")
    return LLMFigures(
        enabled=bool(llm.get("enabled")),
        gated=_int(llm.get("gated")),
        calls=_int(llm.get("calls")),
        cache_hits=_int(llm.get("cache_hits")),
        tokens_in=_int(llm.get("tokens_in")),
        tokens_out=_int(llm.get("tokens_out")),
        cost_usd=float(llm.get("cost_usd", 0.0) or 0.0),
        failed=_int(llm.get("failed")),
        skipped=_int(llm.get("skipped")),
        statuses=dict(llm.get("statuses") or {}),
        latency_ms_p50=None if p50 is None else float(p50),
        latency_ms_p95=None if p50 is None else float(p95 or 0),
        note=str(llm.get("note") or ""),
        outcomes=outcomes,
    )


# --------------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WhatIf:
    """Raising the auto-accept bar, estimated from audit answers (None: too few answers)."""

    table: pl.DataFrame | None  # min confidence, audit answers, estimated precision, 95% CI, _lo, coverage
    audits: int  # audit answers with a shown confidence
    best: dict[str, Any] | None  # the lowest bar proven above the target (a row of ``table``)


@dataclass(frozen=True)
class QualityFigures:
    """Precision of auto-accepted items (audit), reviewer agreement, calibration, coverage by branch."""

    target: float
    classified: int
    auto_rate: float | None
    audit_scope: str
    audit_answers: int
    audit_correct: int
    precision: float | None
    precision_lo: float
    precision_hi: float
    answers: int  # reviewer answers on every queue
    agree: int
    agreement: pl.DataFrame | None  # by queue
    calibration: list[dict[str, float]] | None
    calibration_error: float | None
    calibrated_answers: int
    coverage_by_branch: pl.DataFrame | None
    what_if: WhatIf = field(default_factory=lambda: WhatIf(None, 0, None))

    def headline_figures(self) -> dict[str, Any]:
        n = self.audit_answers
        out: dict[str, Any] = {
            "precision": self.precision,
            "precision_lo": None if n == 0 else self.precision_lo,
            "precision_hi": None if n == 0 else self.precision_hi,
            "audit_answers": n,
            "target_precision": self.target,
            "reviewer_answers": self.answers,
            "model_agreement": share(self.agree, self.answers),
        }
        if self.what_if.best is not None:
            out.update(
                what_if_min_confidence=self.what_if.best["min confidence"],
                what_if_coverage=self.what_if.best["coverage"],
            )
        if self.calibration_error is not None:
            out["calibration_error"] = self.calibration_error
        return out

    def tables(self) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        if self.what_if.table is not None:
            out["what_if_threshold"] = self.what_if.table.drop("_lo")
        if self.agreement is not None:
            out["agreement"] = self.agreement
        if self.calibration is not None:
            out["calibration"] = pl.DataFrame(self.calibration)
        if self.coverage_by_branch is not None:
            out["coverage_by_branch"] = self.coverage_by_branch
        return out


def quality_figures(
    inp: RunInputs, *, classified: int, auto_rate: float | None, target: float
) -> QualityFigures:
    ans = answers(inp.decisions)
    model_version = inp.summary.model_version
    audit = ans.filter(pl.col("queue") == "audit")
    scope = "all audit answers"
    if model_version and not audit.is_empty():
        same_model = audit.filter(pl.col("model_version") == model_version)
        if not same_model.is_empty():
            audit, scope = same_model, f"audit answers on model {model_version}"
        else:
            scope = f"all audit answers (none yet on the current model {model_version})"
    n_audit = audit.height
    ok_audit = int(audit["model_correct"].sum()) if n_audit else 0
    lo, hi = wilson_interval(ok_audit, n_audit)
    n_ans = ans.height
    agree = int(ans["model_correct"].sum()) if n_ans else 0
    agreement = None
    if n_ans:
        byq = (
            ans.group_by("queue")
            .agg(pl.len().alias("answers"), pl.col("model_correct").sum().alias("agree"))
            .sort("answers", descending=True)
        )
        rows = []
        for r in byq.iter_rows(named=True):
            l2, h2 = wilson_interval(int(r["agree"]), int(r["answers"]))
            rows.append(
                {
                    "queue": r["queue"],
                    "answers": int(r["answers"]),
                    "reviewer kept the suggestion": int(r["agree"]),
                    "agreement": r["agree"] / r["answers"],
                    "95% CI": ci(l2, h2),
                }
            )
        agreement = pl.DataFrame(rows)
    cal = ans.filter(pl.col("shown_confidence").is_not_null())
    bins, ece = None, None
    if cal.height >= CALIBRATION_MIN_ANSWERS:
        bins = reliability_bins(cal["shown_confidence"].to_list(), cal["model_correct"].to_list(), bins=10)
        ece = expected_calibration_error(bins)
    coverage = None
    pred = inp.predictions
    if not pred.is_empty():
        by_path = collect(  # counted by path as the file is read, then the paths by top level
            pred.scan.group_by("category_path").agg(
                pl.len().alias("classified"), (pl.col("route") == "auto").sum().alias("auto")
            )
        )
        coverage = (
            by_path.group_by(top_expr("category_path").alias("top"))
            .agg(pl.col("classified", "auto").sum())
            .with_columns((pl.col("auto") / pl.col("classified")).alias("coverage"))
            .sort(["classified", "top"], descending=[True, False])  # ties: by name
        )
    return QualityFigures(
        target=target,
        classified=classified,
        auto_rate=auto_rate,
        audit_scope=scope,
        audit_answers=n_audit,
        audit_correct=ok_audit,
        precision=share(ok_audit, n_audit),
        precision_lo=lo,
        precision_hi=hi,
        answers=n_ans,
        agree=agree,
        agreement=agreement,
        calibration=bins,
        calibration_error=ece,
        calibrated_answers=cal.height,
        coverage_by_branch=coverage,
        what_if=_what_if(audit, pred, target=target),
    )


def _what_if(audit: pl.DataFrame, predictions: Predictions, *, target: float) -> WhatIf:
    audit = audit.filter(pl.col("shown_confidence").is_not_null())
    if audit.height < WHAT_IF_MIN_AUDITS:
        return WhatIf(None, audit.height, None)
    table = what_if_table(audit, predictions)
    if table.is_empty():
        return WhatIf(None, audit.height, None)
    reach = table.filter(pl.col("_lo") >= target)
    return WhatIf(table, audit.height, None if reach.is_empty() else reach.row(0, named=True))


def what_if_table(audit: pl.DataFrame, predictions: Predictions, *, steps: int = 6) -> pl.DataFrame:
    """Raising the auto-accept bar, estimated from audit answers (a random sample of auto-accepted items).

    For minimum confidences ``t`` (the audit answers' own confidence quantiles), an extra rule "auto-accept
    only when confidence >= t" would keep the audited items with confidence >= t: their share confirmed by
    the reviewers estimates the precision (Wilson 95% interval), without bias because the audit sample is
    random. Coverage is the share of tonight's classified products that would still be auto-accepted.
    The first row (lowest ``t``) is tonight's policy. Lowering the bar cannot be estimated this way
    (nothing below the threshold is audited).
    """
    conf = audit.get_column("shown_confidence").cast(pl.Float64).to_numpy()
    ok = audit.get_column("model_correct").cast(pl.Boolean).to_numpy()
    classified = max(predictions.rows, 1)
    grid = sorted({float(x) for x in np.quantile(conf, np.linspace(0, 0.9, steps))}) if len(conf) else []
    # tonight's auto-accepted products at or above each bar: one pass over the file, counts only
    auto = pl.col("route") == "auto"
    kept = (
        collect(
            predictions.scan.select(
                (auto & (pl.col("confidence") >= t)).sum().alias(str(i)) for i, t in enumerate(grid)
            )
        )
        if grid
        else pl.DataFrame()
    )
    rows = []
    for i, t in enumerate(grid):
        keep = conf >= t
        n = int(keep.sum())
        if n == 0:
            continue
        good = int(ok[keep].sum())
        lo, hi = wilson_interval(good, n)
        rows.append(
            {
                "min confidence": t,
                "audit answers": n,
                "estimated precision": good / n,
                "95% CI": ci(lo, hi),
                "_lo": lo,
                "coverage": float(kept.item(0, str(i))) / classified,
            }
        )
    return pl.DataFrame(rows)
