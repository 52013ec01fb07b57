"""Reviews tables -> one row per SKU (internal; re-exported by shelfwise.catalog).

read          the narrow columns of each batch (sku_id, review title, text, rating)
check         rows without sku_id or without any text quarantined; bad ratings nulled with a warning
aggregate     per SKU: the first ``max_reviews`` reviews ("Title. Text", one a line), count, mean rating
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from shelfwise.catalog._parts import catalog_parts, local_copy
from shelfwise.catalog._quarantine import Quarantine, QuarantineReason
from shelfwise.catalog._read import ROW, SourceBatch, SourceFile, open_source
from shelfwise.catalog._rows import REVIEWS_SCHEMA, Plan, clean_text, source_column
from shelfwise.catalog._spec import CatalogSpec
from shelfwise.errors import ConfigError

__all__ = ["load_reviews"]


def _one_line(s: pl.Series) -> pl.Series:
    return s.str.replace_all(r"\s+", " ")


def _narrow(frame: pl.DataFrame, plan: Plan) -> pl.DataFrame:
    """The columns a review needs, cleaned: one review per line (whitespace runs become one space)."""
    nulls = plan.spec.null_values
    return pl.DataFrame(
        {
            "row": frame.get_column(ROW),
            "sku_id": clean_text(source_column(frame, plan.source["sku_id"], nulls)),
            "title": clean_text(_one_line(source_column(frame, plan.source["review_title"], nulls))),
            "text": clean_text(_one_line(source_column(frame, plan.source["review_text"], nulls))),
            "rating_raw": source_column(frame, plan.source["rating"], nulls),
        }
    ).with_columns(pl.col("rating_raw").str.strip_chars().cast(pl.Float64, strict=False).alias("rating"))


def _quarantine_lines(batch: SourceBatch, plan: Plan, q: Quarantine) -> None:
    for line_no, text, problem in batch.bad_lines:
        q.add(
            file=plan.name,
            row_number=line_no,
            sku_id=None,
            field="(line)",
            reason=QuarantineReason.BAD_JSON_LINE,
            fix=f"make line {line_no} one JSON object ({problem})",
            raw=text,
        )


def _quarantine_rows(narrow: pl.DataFrame, batch: SourceBatch, plan: Plan, q: Quarantine) -> None:
    """Rows without sku_id, or with neither title nor text: dropped, with the row verbatim."""
    bad = narrow.with_row_index("pos").filter(
        pl.col("sku_id").is_null() | (pl.col("title").is_null() & pl.col("text").is_null())
    )
    if not bad.height:
        return
    raws = batch.raw_rows(bad.get_column("pos").to_list())
    for rec, raw in zip(bad.iter_rows(named=True), raws, strict=True):
        if rec["sku_id"] is None:
            reason, field = QuarantineReason.MISSING_SKU_ID, "sku_id"
            fix = f"give the review the product's id in column {plan.source['sku_id']!r}"
        else:
            reason, field = QuarantineReason.NO_TEXT, "review_text"
            fix = "the review has neither a title nor a text; fill one or drop the row"
        q.add(
            file=plan.name,
            row_number=rec["row"],
            sku_id=rec["sku_id"],
            field=field,
            reason=reason,
            fix=fix,
            raw=raw,
        )


def _warn_ratings(good: pl.DataFrame, plan: Plan, q: Quarantine) -> None:
    bad_rating = good.filter(
        pl.col("rating").is_null()
        & pl.col("rating_raw").is_not_null()
        & (pl.col("rating_raw").str.strip_chars().str.len_chars() > 0)
    )
    fix = f"write the rating as a number like 4 in column {plan.source['rating']!r} (rating left empty)"
    for rec in bad_rating.iter_rows(named=True):
        q.warn(
            file=plan.name,
            row_number=rec["row"],
            sku_id=rec["sku_id"],
            field="rating",
            reason=QuarantineReason.BAD_RATING,
            value=rec["rating_raw"],
            fix=fix,
        )


def _good_reviews(src: SourceFile, plan: Plan, q: Quarantine) -> list[pl.DataFrame]:
    """The usable reviews of one file (sku_id, title, text, rating), batch by batch."""
    parts: list[pl.DataFrame] = []
    for batch in src.batches():
        _quarantine_lines(batch, plan, q)
        if batch.frame.height == 0:
            continue
        narrow = _narrow(batch.frame, plan)
        _quarantine_rows(narrow, batch, plan, q)
        good = narrow.filter(
            pl.col("sku_id").is_not_null() & (pl.col("title").is_not_null() | pl.col("text").is_not_null())
        )
        _warn_ratings(good, plan, q)
        parts.append(good.select("sku_id", "title", "text", "rating"))
    return parts


def _aggregate(reviews: pl.DataFrame, max_reviews: int, max_chars: int) -> pl.DataFrame:
    title = pl.col("title")
    joined_text = (
        pl.when(title.is_null())
        .then(pl.col("text"))
        .when(pl.col("text").is_null())
        .then(title)
        .when(title.str.contains(r"[.!?:;]$"))
        .then(pl.concat_str([title, pl.col("text")], separator=" "))
        .otherwise(pl.concat_str([title, pl.col("text")], separator=". "))
    )
    return (
        reviews.with_columns(joined_text.alias("one"))
        .group_by("sku_id", maintain_order=True)
        .agg(
            pl.col("one").head(max_reviews).str.join("\n").str.slice(0, max_chars).alias("review_text"),
            pl.len().cast(pl.Int64).alias("review_count"),
            pl.col("rating").mean().alias("rating_mean"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in REVIEWS_SCHEMA.items()])
    )


def load_reviews(
    path: str | Path,
    *,
    spec: CatalogSpec | None = None,
    max_reviews: int = 20,
    max_chars: int = 2000,
    quarantine: Quarantine | None = None,
) -> pl.DataFrame:
    """Aggregate a reviews table (``sku_id``, ``review_text``, optional ``review_title``, ``rating``) per SKU.

    Returns :data:`REVIEWS_SCHEMA`: the first ``max_reviews`` reviews of each SKU in file order
    (``"Title. Text"``, one per line, cut to ``max_chars``), the number of usable reviews and the mean
    rating. Rows without sku_id or without any text are quarantined; a rating that is not a number is
    nulled with a warning. Only the narrow columns are kept in memory while reading. ``path`` may name
    several files, like a catalog (a folder, a glob, an ``s3://`` prefix).
    """
    if max_reviews < 1 or max_chars < 1:
        raise ConfigError(f"max_reviews and max_chars must be >= 1, got {max_reviews}, {max_chars}")
    spec = spec or CatalogSpec()
    q = quarantine if quarantine is not None else Quarantine(None)
    parts: list[pl.DataFrame] = []
    for part in catalog_parts(path):
        with local_copy(part) as local, open_source(local, spec, batch_size=100_000, label=part.name) as src:
            plan = Plan(spec, src.columns, part.name, has_reviews=False, kind="reviews")
            parts.extend(_good_reviews(src, plan, q))
    if not parts:
        return pl.DataFrame(schema=REVIEWS_SCHEMA)
    return _aggregate(pl.concat(parts), max_reviews, max_chars)
