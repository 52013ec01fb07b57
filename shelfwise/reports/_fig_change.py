"""Figures of change and of the reviewers: churn and distribution shift since the previous run, review
backlog, throughput and agreement between reviewers. Pure computations; the prose is in ``_sections``."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shelfwise.reports._fig_common import (
    ANSWER_KINDS,
    collect,
    top_counter,
    top_expr,
    value_counter,
    with_choice,
)
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
# SKUs of each night one pass of the change join holds at most (on average): the join runs on hash
# partitions of sku_id, one after the other, so its memory stays flat in catalog size
JOIN_ROWS = 250_000
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
    new_skus: int | None = None  # SKUs tonight that the previous run did not have
    new_top: Counter[str] = field(default_factory=Counter)  # the new SKUs by top-level category
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
        if not self.new_skus:
            return None
        new_top = self.new_top
        total = max(1, sum(self.current_top.values()))
        return (
            pl.DataFrame({"top_level": list(new_top), "new products": list(new_top.values())})
            .with_columns(
                (pl.col("new products") / self.new_skus).alias("share of new"),
                pl.col("top_level")
                .replace_strict(
                    {t: n / total for t, n in self.current_top.items()}, default=0.0, return_dtype=pl.Float64
                )
                .alias("share of all"),
            )
            .sort(["new products", "top_level"], descending=[True, False])  # ties: by name
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
            "new_skus": self.new_skus or 0,
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


def drift_figures(inp: RunInputs, *, join_rows: int = JOIN_ROWS) -> DriftFigures:
    pred = inp.predictions
    prev = inp.previous_predictions
    cur_top = top_counter(pred.scan)
    if prev is None or prev.is_empty():
        return DriftFigures(
            False, cur_top, Counter(), _distribution(Counter(), cur_top, Counter(), value_counter(pred.scan))
        )
    ch = sku_changes(pred.scan, prev.scan, parts=max(1, -(-max(pred.rows, prev.rows) // join_rows)))
    prev_top = top_counter(prev.scan)
    prev_leaf, cur_leaf = value_counter(prev.scan), value_counter(pred.scan)
    return DriftFigures(
        True,
        cur_top,
        prev_top,
        _distribution(prev_top, cur_top, prev_leaf, cur_leaf),
        in_both=ch.in_both,
        moved=ch.moved,
        new_skus=ch.new,
        new_top=ch.new_top,
        gone=ch.gone,
        flows=ch.flows,
        js_top=jensen_shannon(prev_top, cur_top),
        js_leaf=jensen_shannon(prev_leaf, cur_leaf),
        psi_top=psi(prev_top, cur_top),
    )


@dataclass(frozen=True)
class SkuChanges:
    """What changed between two nights, SKU by SKU, as counts."""

    in_both: int
    moved: int  # in both nights, on another category id
    new: int  # only tonight
    gone: int  # only in the previous night
    new_top: Counter[str]  # the new SKUs by top-level category
    flows: pl.DataFrame  # from_path, to_path, count (the moved SKUs)


def sku_changes(cur: pl.LazyFrame, prev: pl.LazyFrame, *, parts: int = 1) -> SkuChanges:
    """Tonight's predictions against the previous night's, joined on ``sku_id``.

    The join runs ``parts`` times, each time on the SKUs of one hash partition of ``sku_id`` (both files
    filtered as they are read), so it holds at most about ``rows / parts`` SKUs of each night; each pass
    leaves only its counts (moved pairs, new SKUs by top-level category)."""
    tallies = [collect(_change_tally(cur, prev, part, parts)) for part in range(parts)]
    t = (
        pl.concat(tallies)
        .with_columns(pl.col("a", "b").cast(pl.String))
        .group_by("kind", "a", "b")
        .agg(pl.col("n").sum())
    )
    total = dict(t.group_by("kind").agg(pl.col("n").sum()).iter_rows())
    moved = t.filter(pl.col("kind") == "moved")
    new = t.filter(pl.col("kind") == "new").group_by(top_expr("a")).agg(pl.col("n").sum())
    return SkuChanges(
        in_both=int(total.get("moved", 0) + total.get("same", 0)),
        moved=int(total.get("moved", 0)),
        new=int(total.get("new", 0)),
        gone=int(total.get("gone", 0)),
        new_top=Counter(dict(zip(new["a"].to_list(), new["n"].to_list(), strict=True))),
        flows=moved.select(
            pl.col("a").alias("from_path"),
            pl.col("b").alias("to_path"),
            pl.col("n").cast(pl.UInt32).alias("count"),
        ).sort(["count", "from_path", "to_path"], descending=[True, False, False]),
    )


def _change_tally(cur: pl.LazyFrame, prev: pl.LazyFrame, part: int, parts: int) -> pl.LazyFrame:
    """One hash partition's change counts: ``kind`` (same, moved, new, gone), ``a``, ``b`` (the moved
    pair, or the new SKU's category path), ``n``. The paths are joined as categoricals (a few bytes a
    row instead of the path's text)."""
    mine = (pl.col("sku_id").hash(seed=0) % parts) == part
    path = pl.col("category_path").cast(pl.Categorical)
    c = cur.select("sku_id", "category_id", path, pl.lit(True).alias("_cur"))
    p = prev.select(
        "sku_id",
        pl.col("category_id").alias("prev_id"),
        path.alias("prev_path"),
        pl.lit(True).alias("_prev"),
    )
    if parts > 1:
        c, p = c.filter(mine), p.filter(mine)
    both = pl.col("_cur").is_not_null() & pl.col("_prev").is_not_null()
    moved = both & (pl.col("category_id") != pl.col("prev_id")).fill_null(False)
    kind = (
        pl.when(moved)
        .then(pl.lit("moved"))
        .when(both)
        .then(pl.lit("same"))
        .when(pl.col("_cur").is_not_null())
        .then(pl.lit("new"))
        .otherwise(pl.lit("gone"))
    )
    new = pl.col("_cur").is_not_null() & pl.col("_prev").is_null()
    a = pl.when(moved).then(pl.col("prev_path")).when(new).then(pl.col("category_path"))
    b = pl.when(moved).then(pl.col("category_path"))
    return (
        c.join(p, on="sku_id", how="full", coalesce=True)
        .group_by(kind.alias("kind"), a.alias("a"), b.alias("b"))
        .agg(pl.len().cast(pl.Int64).alias("n"))
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
