"""Figures of change and of the reviewers: churn and distribution shift since the previous run, review
backlog, throughput and agreement between reviewers. Pure computations; the prose is in ``_sections``."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import polars as pl

from shelfwise.reports._fig_common import ANSWER_KINDS, top_counter, value_counter, with_choice
from shelfwise.reports._metrics import cohen_kappa, jensen_shannon, psi
from shelfwise.reports._model import share
from shelfwise.reports._sources import RunInputs

__all__ = ["AGE_BUCKETS", "DriftFigures", "ReviewerFigures", "drift_figures", "reviewer_figures"]

AGE_BUCKETS = (
    ("< 1 day", 1.0),
    ("1–3 days", 3.0),
    ("3–7 days", 7.0),
    ("1–4 weeks", 28.0),
    ("> 4 weeks", math.inf),
)
DISTRIBUTION_SCHEMA = {
    "level": pl.String,
    "category": pl.String,
    "previous_count": pl.Int64,
    "current_count": pl.Int64,
    "previous_share": pl.Float64,
    "current_share": pl.Float64,
}


# --------------------------------------------------------------------------------------------------
# Change and drift
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftFigures:
    """Tonight against the previous run (``compared`` False: nothing to compare against)."""

    compared: bool
    current_top: Counter[str]
    previous_top: Counter[str]
    distribution: pl.DataFrame  # DISTRIBUTION_SCHEMA
    in_both: int = 0
    moved: int = 0
    new_skus: pl.DataFrame | None = None
    gone: int = 0
    flows: pl.DataFrame | None = None  # from_path, to_path, count
    js_top: float = 0.0
    js_leaf: float = 0.0
    psi_top: float = 0.0

    @property
    def churn_rate(self) -> float | None:
        return share(self.moved, self.in_both)

    def new_product_mix(self) -> pl.DataFrame | None:
        """New SKUs by top-level category: count, share of new, share of all products tonight."""
        if self.new_skus is None or self.new_skus.is_empty():
            return None
        new_top = top_counter(self.new_skus)
        total = max(1, sum(self.current_top.values()))
        return (
            pl.DataFrame({"top_level": list(new_top), "new products": list(new_top.values())})
            .with_columns(
                (pl.col("new products") / self.new_skus.height).alias("share of new"),
                pl.col("top_level")
                .replace_strict(
                    {t: n / total for t, n in self.current_top.items()}, default=0.0, return_dtype=pl.Float64
                )
                .alias("share of all"),
            )
            .sort("new products", descending=True)
        )

    def headline_figures(self) -> dict[str, Any]:
        if not self.compared:
            return {"churn_moved": None, "churn_rate": None, "js_divergence": None, "psi_top": None}
        return {
            "churn_moved": self.moved,
            "churn_rate": self.churn_rate,
            "js_divergence": self.js_leaf,
            "js_divergence_top": self.js_top,
            "psi_top": self.psi_top,
            "new_skus": 0 if self.new_skus is None else self.new_skus.height,
            "gone_skus": self.gone,
        }

    def tables(self) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        if self.flows is not None:
            out["churn"] = self.flows
        out["category_distribution"] = self.distribution
        mix = self.new_product_mix()
        if mix is not None:
            out["new_product_mix"] = mix
        return out


def drift_figures(inp: RunInputs) -> DriftFigures:
    pred = inp.predictions
    prev = inp.previous_predictions
    cur_top = top_counter(pred)
    if prev is None or prev.is_empty():
        return DriftFigures(
            False, cur_top, Counter(), _distribution(Counter(), cur_top, Counter(), value_counter(pred))
        )
    a = prev.select(
        "sku_id", pl.col("category_id").alias("prev_id"), pl.col("category_path").alias("prev_path")
    )
    j = pred.select("sku_id", "category_id", "category_path").join(a, on="sku_id", how="inner")
    moved = j.filter(pl.col("category_id") != pl.col("prev_id"))
    flows = (
        moved.group_by("prev_path", "category_path")
        .agg(pl.len().alias("count"))
        .sort(["count", "prev_path", "category_path"], descending=[True, False, False])
        .rename({"prev_path": "from_path", "category_path": "to_path"})
    )
    prev_top = top_counter(prev)
    prev_leaf, cur_leaf = value_counter(prev), value_counter(pred)
    return DriftFigures(
        True,
        cur_top,
        prev_top,
        _distribution(prev_top, cur_top, prev_leaf, cur_leaf),
        in_both=j.height,
        moved=moved.height,
        new_skus=pred.join(a, on="sku_id", how="anti"),
        gone=a.join(pred.select("sku_id"), on="sku_id", how="anti").height,
        flows=flows,
        js_top=jensen_shannon(prev_top, cur_top),
        js_leaf=jensen_shannon(prev_leaf, cur_leaf),
        psi_top=psi(prev_top, cur_top),
    )


def _distribution(
    prev_top: Counter[str], cur_top: Counter[str], prev_leaf: Counter[str], cur_leaf: Counter[str]
) -> pl.DataFrame:
    rows = []
    for level, p, c in (("top_level", prev_top, cur_top), ("category", prev_leaf, cur_leaf)):
        tp, tc = sum(p.values()), sum(c.values())
        for k in sorted(set(p) | set(c)):
            rows.append(
                {
                    "level": level,
                    "category": k,
                    "previous_count": int(p.get(k, 0)),
                    "current_count": int(c.get(k, 0)),
                    "previous_share": p.get(k, 0) / tp if tp else None,
                    "current_share": c.get(k, 0) / tc if tc else None,
                }
            )
    return pl.DataFrame(rows, schema=DISTRIBUTION_SCHEMA)


# --------------------------------------------------------------------------------------------------
# Reviewers
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReviewerFigures:
    """The review backlog and, once reviewers decided anything, their throughput and agreement."""

    open_items: pl.DataFrame  # review items open or claimed
    oldest_open_days: float | None
    backlog: pl.DataFrame  # queue, age (AGE_BUCKETS), open_items
    decisions: int = 0
    stats: pl.DataFrame | None = None  # per reviewer
    median_seconds: float | None = None
    decisions_last_day: int = 0
    kappa: float | None = None
    double_checked: int = 0
    raw_agreement: float | None = None
    per_day: pl.DataFrame | None = None  # day, reviewer, n

    @property
    def reviewers(self) -> int:
        return 0 if self.stats is None else self.stats.height

    def headline_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "open_backlog": self.open_items.height,
            "oldest_open_days": self.oldest_open_days,
        }
        if self.stats is None:
            out.update(decisions=0, reviewers=0, median_seconds=None, kappa=None, double_checked=0)
        else:
            out.update(
                decisions=self.decisions,
                reviewers=self.reviewers,
                median_seconds=self.median_seconds,
                kappa=self.kappa,
                double_checked=self.double_checked,
                reviewer_raw_agreement=self.raw_agreement,
                decisions_last_day=self.decisions_last_day,
            )
        return out

    def tables(self) -> dict[str, pl.DataFrame]:
        out = {"backlog": self.backlog}
        if self.stats is not None:
            out["reviewer_stats"] = self.stats
        return out


def reviewer_figures(inp: RunInputs, *, now: dt.datetime) -> ReviewerFigures:
    d = inp.decisions
    items = inp.items
    now_naive = now.astimezone(dt.UTC).replace(tzinfo=None)
    open_items = items.filter(pl.col("status").is_in(["open", "claimed"])) if not items.is_empty() else items
    ages = [
        (now_naive - c).total_seconds() / 86400 if c is not None else 0.0
        for c in open_items["created_at"].to_list()
    ]
    buckets = [next(name for name, hi in AGE_BUCKETS if a < hi) for a in ages]
    backlog = (
        pl.DataFrame(
            {"queue": open_items["queue"].to_list(), "age": buckets},
            schema={"queue": pl.String, "age": pl.String},
        )
        .group_by("queue", "age")
        .agg(pl.len().alias("open_items"))
        .sort("queue", "age")
    )
    oldest = max(ages) if ages else None
    if d.is_empty():
        return ReviewerFigures(open_items, oldest, backlog)
    dd = d.with_columns((pl.col("duration_ms") / 1000.0).alias("seconds"))
    stats = (
        dd.group_by("reviewer")
        .agg(
            pl.len().alias("decisions"),
            (pl.col("kind") == "accept").sum().alias("accepted"),
            (pl.col("kind") == "choose").sum().alias("corrected"),
            (~pl.col("kind").is_in(ANSWER_KINDS)).sum().alias("other"),
            pl.col("seconds").median().alias("median_seconds"),
            pl.col("seconds").quantile(0.9).alias("p90_seconds"),
            pl.col("decided_at").min().alias("first"),
            pl.col("decided_at").max().alias("last"),
        )
        .sort(["decisions", "reviewer"], descending=[True, False])
    )
    med_raw = dd["seconds"].median()
    med = float(med_raw) if isinstance(med_raw, int | float) and not math.isnan(med_raw) else None
    day = now_naive - dt.timedelta(days=1)
    kappa, n_double, raw = _double_checks(d)
    per_day = (
        dd.with_columns(pl.col("decided_at").dt.date().alias("day"))
        .group_by("day", "reviewer")
        .agg(pl.len().alias("n"))
        .sort("day")
    )
    return ReviewerFigures(
        open_items,
        oldest,
        backlog,
        decisions=d.height,
        stats=stats,
        median_seconds=med,
        decisions_last_day=int(dd.filter(pl.col("decided_at") >= day).height),
        kappa=kappa,
        double_checked=n_double,
        raw_agreement=raw,
        per_day=per_day,
    )


def _double_checks(d: pl.DataFrame) -> tuple[float | None, int, float | None]:
    """Items answered by two reviewers: Cohen's kappa of their first answers, the count, raw agreement."""
    a = with_choice(d.filter(pl.col("kind").is_in(ANSWER_KINDS))).sort("decided_at")
    first, second = [], []
    for _, grp in a.group_by("item_key"):
        seen: dict[str, str | None] = {}
        for who, choice in zip(grp["reviewer"], grp["chosen_id"], strict=True):
            if who not in seen:
                seen[who] = choice
        if len(seen) >= 2:
            vals = list(seen.values())
            first.append(vals[0] or "")
            second.append(vals[1] or "")
    if not first:
        return None, 0, None
    raw = sum(x == y for x, y in zip(first, second, strict=True)) / len(first)
    return cohen_kappa(first, second), len(first), raw
