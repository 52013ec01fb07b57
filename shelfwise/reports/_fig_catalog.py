"""Figures of the catalog and the taxonomy: disagreements, confirmed misfiles, corrections, empty and
deprecated nodes. Pure computations; the prose is written in ``_sections``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from shelfwise.reports._fig_common import (
    SEP,
    answers,
    collect,
    pairs,
    same_branch,
    top_level,
    value_counts,
)
from shelfwise.reports._metrics import wilson_interval
from shelfwise.reports._model import share
from shelfwise.reports._sources import RunInputs

__all__ = ["CatalogFigures", "TaxonomyFigures", "catalog_figures", "taxonomy_figures"]

NODE_SCHEMA = {
    "category_id": pl.String,
    "category_path": pl.String,
    "depth": pl.Int64,
    "is_leaf": pl.Boolean,
    "top_level": pl.String,
    "current_count": pl.Int64,
    "predicted_count": pl.Int64,
    "in_use": pl.Boolean,
}


# --------------------------------------------------------------------------------------------------
# Catalog health
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogFigures:
    """Where the catalog's current categories and shelfwise disagree, and what reviewers confirmed."""

    with_current: int  # products with a current category
    disagree: int
    flagged_suspect: int
    suspect_answers: int
    confirmed: int  # suspects a reviewer moved off their current category
    confirmed_lo: float
    confirmed_hi: float
    uncategorized: int
    uncategorized_auto: int
    awaiting_review: int
    top_only: int
    reviewer_answers: int
    corrections: pl.DataFrame | None  # current_category_path, corrections, most often moved to
    hot_spots: pl.DataFrame  # kind, from_path, to_path, count (current vs predicted)
    reviewer_confusion: pl.DataFrame  # same columns (suggestion vs reviewer)

    @property
    def suspect_rate(self) -> float | None:
        return share(self.disagree, self.with_current)

    def headline_figures(self, *, quarantined: int) -> dict[str, Any]:
        return {
            "suspect_rate": self.suspect_rate,
            "suspect_confident": self.flagged_suspect,
            "confirmed_misfile_rate": share(self.confirmed, self.suspect_answers),
            "suspect_answers": self.suspect_answers,
            "uncategorized": self.uncategorized,
            "unclassified": self.awaiting_review + quarantined,
        }

    def tables(self) -> dict[str, pl.DataFrame]:
        out = {} if self.corrections is None else {"corrections": self.corrections}
        out["confusion"] = pl.concat([self.hot_spots, self.reviewer_confusion], how="vertical_relaxed")
        return out


HAS_CURRENT = pl.col("current_category_path").is_not_null() & (pl.col("current_category_path") != "")


def _disagreements(pred: pl.LazyFrame) -> pl.DataFrame:
    """Current -> predicted pairs on different branches, with counts (``n``): a group-by of the file."""
    pc = collect(
        pred.filter(HAS_CURRENT).group_by("current_category_path", "category_path").agg(pl.len().alias("n"))
    )
    agree_map = {
        (a, b): same_branch(b, a)
        for a, b in zip(pc["current_category_path"], pc["category_path"], strict=True)
    }
    pc = pc.with_columns(
        pl.Series(
            "agree",
            [
                agree_map[(a, b)]
                for a, b in zip(pc["current_category_path"], pc["category_path"], strict=True)
            ],
            dtype=pl.Boolean,
        )
    )
    return pc.filter(~pl.col("agree"))


def _route_counts(pred: pl.LazyFrame) -> dict[str, int]:
    """The catalog-health counts of the predictions, in one pass over the file."""
    route = pl.col("route")
    counts = collect(
        pred.select(
            HAS_CURRENT.sum().alias("with_current"),
            (~HAS_CURRENT & (route == "auto")).sum().alias("uncategorized_auto"),
            (route == "suspect").sum().alias("flagged_suspect"),
            (route != "auto").sum().alias("awaiting_review"),
            (pl.col("predicted_depth") == 1).sum().alias("top_only"),
        )
    )
    return {k: int(v or 0) for k, v in counts.row(0, named=True).items()}


def _corrections(ans: pl.DataFrame) -> pl.DataFrame | None:
    """Categories with the most corrections (a reviewer moved the product off its current category)."""
    corr = ans.filter(pl.col("current_category_path").is_not_null() & pl.col("chosen_path").is_not_null())
    corr = corr.filter(
        pl.Series(
            [
                not same_branch(ch, cur)
                for ch, cur in zip(corr["chosen_path"], corr["current_category_path"], strict=True)
            ],
            dtype=pl.Boolean,
        )
    )
    if corr.is_empty():
        return None
    return (
        corr.group_by("current_category_path")
        .agg(
            pl.len().alias("corrections"),
            pl.col("chosen_path").mode().sort().first().alias("most often moved to"),
        )
        .sort(["corrections", "current_category_path"], descending=[True, False])
    )


def catalog_figures(inp: RunInputs) -> CatalogFigures:
    pred = inp.predictions
    disagree = _disagreements(pred.scan)
    counts = _route_counts(pred.scan)
    uncategorized = pred.rows - counts["with_current"]
    # reviewers on suspects: did they confirm the current category was wrong?
    ans = answers(inp.decisions)
    sus = ans.filter((pl.col("queue") == "suspect") & pl.col("current_category_path").is_not_null())
    confirmed = sum(
        not same_branch(ch, cur)
        for ch, cur in zip(sus["chosen_path"], sus["current_category_path"], strict=True)
    )
    c_lo, c_hi = wilson_interval(confirmed, sus.height)
    # ties broken by both paths: the pairs come from a group-by, whose order varies from run to run
    hot = disagree.sort(
        ["n", "current_category_path", "category_path"], descending=[True, False, False]
    ).select(
        pl.lit("current_vs_predicted").alias("kind"),
        pl.col("current_category_path").alias("from_path"),
        pl.col("category_path").alias("to_path"),
        pl.col("n").alias("count"),
    )
    rev = ans.filter(~pl.col("model_correct") & pl.col("chosen_path").is_not_null())
    rev_pairs = (
        pairs(rev, "shown_category_path", "chosen_path")
        .sort(["n", "shown_category_path"], descending=[True, False])
        .select(
            pl.lit("suggestion_vs_reviewer").alias("kind"),
            pl.col("shown_category_path").alias("from_path"),
            pl.col("chosen_path").alias("to_path"),
            pl.col("n").alias("count"),
        )
    )
    return CatalogFigures(
        with_current=counts["with_current"],
        disagree=int(disagree["n"].sum()) if not disagree.is_empty() else 0,
        flagged_suspect=counts["flagged_suspect"],
        suspect_answers=sus.height,
        confirmed=confirmed,
        confirmed_lo=c_lo,
        confirmed_hi=c_hi,
        uncategorized=uncategorized,
        uncategorized_auto=counts["uncategorized_auto"] if uncategorized else 0,
        awaiting_review=counts["awaiting_review"],
        top_only=counts["top_only"],
        reviewer_answers=ans.height,
        corrections=_corrections(ans),
        hot_spots=hot,
        reviewer_confusion=rev_pairs,
    )


# --------------------------------------------------------------------------------------------------
# Taxonomy health
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaxonomyFigures:
    """How the taxonomy is used: busiest nodes, empty nodes, paths that left the taxonomy."""

    categories_predicted: int
    median: float  # products per predicted category (median)
    busiest: list[tuple[str, int]]  # the ten categories with the most predicted products
    loaded: bool  # False: the taxonomy could not be loaded (the figures below are empty)
    nodes: pl.DataFrame | None = None  # one row per node (NODE_SCHEMA)
    empty_leaves: int = 0
    deprecated: dict[str, int] | None = None  # current path not in the taxonomy -> products
    only_predicted: list[str] | None = None
    never_predicted: list[str] | None = None
    labels_missing: list[str] | None = None
    has_labels: bool = False

    @property
    def node_count(self) -> int:
        return 0 if self.nodes is None else self.nodes.height

    @property
    def empty(self) -> pl.DataFrame:
        assert self.nodes is not None
        return self.nodes.filter(~pl.col("in_use"))

    @property
    def deprecated_items(self) -> int:
        return sum((self.deprecated or {}).values())

    def by_branch(self) -> pl.DataFrame:
        assert self.nodes is not None
        return (
            self.nodes.group_by("top_level")
            .agg(pl.len().alias("nodes"), (~pl.col("in_use")).sum().alias("empty"))
            .with_columns((pl.col("empty") / pl.col("nodes")).alias("share empty"))
            .sort(["empty", "top_level"], descending=[True, False])
        )

    def headline_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node_median": self.median}
        if self.loaded:
            out.update(
                taxonomy_nodes=self.node_count,
                empty_nodes=self.empty.height,
                deprecated_items=self.deprecated_items,
                deprecated_paths=len(self.deprecated or {}),
            )
        return out

    def tables(self) -> dict[str, pl.DataFrame]:
        out: dict[str, pl.DataFrame] = {}
        if self.busiest:
            m = self.median
            out["overloaded_nodes"] = pl.DataFrame(
                {
                    "category_path": [p for p, _ in self.busiest],
                    "products": [n for _, n in self.busiest],
                    "times the median": [n / m if m else None for _, n in self.busiest],
                }
            )
        if not self.loaded or self.nodes is None:
            return out
        out["taxonomy_nodes"] = self.nodes
        if self.deprecated:
            out["deprecated_paths"] = self.deprecated_frame()
        lists = [
            {"kind": name, "category_path": v}
            for name, values in (
                ("only in predictions", self.only_predicted or []),
                ("never predicted", self.never_predicted or []),
                ("human labels not in the taxonomy", self.labels_missing or []),
            )
            for v in values
        ]
        out["node_sets"] = pl.DataFrame(lists, schema={"kind": pl.String, "category_path": pl.String})
        return out

    def deprecated_frame(self) -> pl.DataFrame:
        dep = self.deprecated or {}
        return pl.DataFrame({"current_category_path": list(dep), "products": list(dep.values())}).sort(
            ["products", "current_category_path"], descending=[True, False]
        )


def taxonomy_figures(inp: RunInputs) -> TaxonomyFigures:
    pred = inp.predictions.scan
    tax = inp.taxonomy
    pred_counts = dict(zip(*value_counts(pred, "category_path"), strict=True))
    cur_counts = dict(zip(*value_counts(pred, "current_category_path"), strict=True))
    label_paths = (
        set(inp.labels["category_path"].drop_nulls().to_list()) if not inp.labels.is_empty() else set()
    )
    nonzero = sorted(pred_counts.values())
    median = float(nonzero[len(nonzero) // 2]) if nonzero else 0.0
    if len(nonzero) % 2 == 0 and nonzero:
        median = (nonzero[len(nonzero) // 2 - 1] + nonzero[len(nonzero) // 2]) / 2
    top = sorted(pred_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    if tax is None:
        return TaxonomyFigures(len(pred_counts), median, top, loaded=False)
    used: set[str] = set()
    for p in list(pred_counts) + list(cur_counts):
        segs = [s.strip() for s in str(p).split(">")]
        for i in range(1, len(segs) + 1):
            used.add(SEP.join(segs[:i]).casefold())
    rows = [
        {
            "category_id": node.id,
            "category_path": node.path,
            "depth": int(node.depth),
            "is_leaf": bool(node.is_leaf),
            "top_level": top_level(node.path),
            "current_count": int(cur_counts.get(node.path, 0)),
            "predicted_count": int(pred_counts.get(node.path, 0)),
            "in_use": node.path.casefold() in used,
        }
        for node in tax
    ]
    node_df = pl.DataFrame(rows, schema=NODE_SCHEMA)
    empty = node_df.filter(~pl.col("in_use"))
    deprecated = {p: n for p, n in cur_counts.items() if tax.find_path(p) is None}
    return TaxonomyFigures(
        len(pred_counts),
        median,
        top,
        loaded=True,
        nodes=node_df,
        empty_leaves=int(empty["is_leaf"].sum()) if not empty.is_empty() else 0,
        deprecated=deprecated,
        only_predicted=sorted(set(pred_counts) - set(cur_counts)),
        never_predicted=sorted(p for p in cur_counts if p not in pred_counts and p not in deprecated),
        labels_missing=sorted(p for p in label_paths if tax.find_path(p) is None),
        has_labels=bool(label_paths),
    )
