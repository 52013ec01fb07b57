"""Shared figure helpers: category paths, reviewer answers, value counts (pure polars, no prose)."""

from __future__ import annotations

from collections import Counter

import polars as pl

__all__ = [
    "ANSWER_KINDS",
    "SEP",
    "answers",
    "collect",
    "pairs",
    "same_branch",
    "top_counter",
    "top_expr",
    "top_level",
    "value_counter",
    "value_counts",
    "with_choice",
]

SEP = " > "
ANSWER_KINDS = ("accept", "choose")


def _segments(path: str | None) -> list[str]:
    return [s.strip().casefold() for s in str(path).split(">")] if path else []


def same_branch(a: str | None, b: str | None) -> bool:
    """Equal, or one is an ancestor of the other (the routing's notion of 'agree')."""
    if not a or not b:
        return True
    pa, pb = _segments(a), _segments(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def top_expr(col: str) -> pl.Expr:
    """Vectorised :func:`top_level` (millions of rows stay in polars)."""
    return pl.col(col).str.split(">").list.first().str.strip_chars().fill_null("(none)").replace("", "(none)")


def collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """A lazy query's result, run by polars' streaming engine: a scan of a predictions file is read in
    batches, so an aggregate over millions of rows holds its groups, not the rows."""
    return frame.collect(engine="streaming")


def top_counter(frame: pl.DataFrame | pl.LazyFrame, col: str = "category_path") -> Counter[str]:
    """How many rows fall under each top-level category of ``col``: the rows are counted by path as they
    are read, then the (few) paths by their top level."""
    by_path = collect(frame.lazy().group_by(col).agg(pl.len().alias("n")))
    vc = by_path.group_by(top_expr(col).alias("top")).agg(pl.col("n").sum())
    return Counter(dict(zip(vc["top"].to_list(), vc["n"].to_list(), strict=True)))


def top_level(path: str | None) -> str:
    return str(path).split(">")[0].strip() if path else "(none)"


def answers(decisions: pl.DataFrame) -> pl.DataFrame:
    """Final reviewer decisions that name a category (accept / choose), one per review item, with
    ``chosen_id``, ``chosen_path`` and ``model_correct`` (the reviewer kept the shown suggestion).

    A first opinion still waiting for a second reviewer is not an answer yet."""
    if decisions.is_empty():
        return decisions.with_columns(
            pl.lit(None, pl.String).alias("chosen_id"),
            pl.lit(None, pl.String).alias("chosen_path"),
            pl.lit(None, pl.Boolean).alias("model_correct"),
            pl.lit(None, pl.String).alias("item_key"),
        )
    d = with_choice(decisions.filter(pl.col("kind").is_in(ANSWER_KINDS) & pl.col("final").fill_null(False)))
    d = d.sort(["item_key", "final", "decided_at"], nulls_last=False)
    return d.group_by("item_key", maintain_order=True).last()


def with_choice(d: pl.DataFrame) -> pl.DataFrame:
    accept = pl.col("kind") == "accept"
    chosen_id = (
        pl.when(accept).then(pl.coalesce("category_id", "shown_category_id")).otherwise(pl.col("category_id"))
    )
    chosen_path = (
        pl.when(accept)
        .then(pl.coalesce("category_path", "shown_category_path"))
        .otherwise(pl.col("category_path"))
    )
    d = d.with_columns(
        chosen_id.alias("chosen_id"),
        chosen_path.alias("chosen_path"),
        pl.coalesce(
            pl.col("item_id").cast(pl.String), pl.col("sku_id") + "|" + pl.col("run_id").fill_null("")
        ).alias("item_key"),
        pl.col("final").fill_null(False),
    )
    same_id = pl.col("chosen_id") == pl.col("shown_category_id")
    same_path = pl.col("chosen_path") == pl.col("shown_category_path")
    correct = (
        pl.when(pl.col("shown_category_id").is_not_null() & pl.col("chosen_id").is_not_null())
        .then(same_id)
        .otherwise(same_path)
    )
    return d.with_columns(correct.fill_null(False).alias("model_correct"))


def pairs(frame: pl.DataFrame, a: str, b: str) -> pl.DataFrame:
    return frame.group_by(a, b).agg(pl.len().alias("n"))


def value_counts(frame: pl.DataFrame | pl.LazyFrame, col: str) -> tuple[list[str], list[int]]:
    """Non-empty values of ``col`` and how often each occurs."""
    vc = collect(
        frame.lazy()
        .filter(pl.col(col).is_not_null() & (pl.col(col) != ""))
        .group_by(col)
        .agg(pl.len().alias("n"))
    )
    return vc[col].to_list(), vc["n"].to_list()


def value_counter(frame: pl.DataFrame | pl.LazyFrame, col: str = "category_path") -> Counter[str]:
    keys, vals = value_counts(frame, col)
    return Counter(dict(zip(keys, vals, strict=True)))
