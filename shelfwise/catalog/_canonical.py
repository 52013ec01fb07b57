"""One batch of source text -> canonical rows, step by step (internal; used by the catalog readers).

    parse the fields      categories (taxonomy spelling), attributes, images, prices, ratings
    join the reviews      the row's own review text + the reviews table's aggregate
    check each row        missing id, broken category, no text, duplicate id (across every part)
    warn on kept rows     price, rating, attributes, image nulled or kept as text
    finish                image file resolved, content hash, the canonical columns in order

Vectorised with polars where the work is plain (trimming, nulls, joins); per-value Python only where
a value must be parsed (category JSON, attributes, prices, image lists) or hashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shelfwise.catalog._parse import (
    hash_columns,
    parse_attributes,
    parse_category,
    parse_image,
    parse_number,
)
from shelfwise.catalog._quarantine import Quarantine, QuarantineReason
from shelfwise.catalog._read import ROW, SourceBatch
from shelfwise.catalog._rows import (
    SHARD_SCHEMA,
    TEXT_FIELDS,
    ImageResolver,
    Plan,
    TaxonomyLike,
    clean_text,
    image_name,
    source_column,
)
from shelfwise.catalog._spec import CategoryFormat

__all__ = ["RowContext", "SeenIds", "canonical_batch", "quarantine_duplicate"]

_FIX = {
    QuarantineReason.MISSING_SKU_ID: (
        "give the row a unique id in column {col!r} (or --map sku_id=<id column>)"
    ),
    QuarantineReason.NO_TEXT: "fill the title or description (or supply reviews with --reviews)",
    QuarantineReason.BAD_CATEGORY: (
        "write the category as {hint} (category_format: {fmt} in the spec), or leave it empty"
    ),
    QuarantineReason.BAD_PRICE: "write the price as a number like 1299.00 in column {col!r}",
    QuarantineReason.BAD_RATING: "write the rating as a number like 4.5 in column {col!r}",
    QuarantineReason.BAD_ATTRIBUTES: "write attributes as 'key: value; key: value' or set attributes_format",
    QuarantineReason.BAD_IMAGE: 'write the image as a path, or a JSON list like ["a.jpg"] (image_format)',
}

_PART_BITS = 40  # a first occurrence is stored as one int: part index << 40 | row number


class SeenIds:
    """Every accepted ``sku_id`` and where it was first accepted (part, row): the duplicate check across
    all shards and all parts of a catalog. One small int per SKU (about 100-150 bytes with the key)."""

    def __init__(self, files: list[str] | None = None) -> None:
        self.files = list(files or [])
        self._first: dict[str, int] = {}
        self.part = 0

    def first(self, sku_id: str) -> tuple[str, int] | None:
        """``(file, row)`` of the accepted row that used ``sku_id`` first, if any."""
        packed = self._first.get(sku_id)
        if packed is None:
            return None
        part, row = packed >> _PART_BITS, packed & ((1 << _PART_BITS) - 1)
        return (self.files[part] if part < len(self.files) else "", row)

    def add(self, sku_id: str, row: int) -> None:
        self._first[sku_id] = (self.part << _PART_BITS) | row

    def __len__(self) -> int:
        return len(self._first)


@dataclass
class RowContext:
    """What every batch of a catalog is checked against: taxonomy, reviews, quarantine, ids seen so far."""

    quarantine: Quarantine
    seen: SeenIds = field(default_factory=SeenIds)
    taxonomy: TaxonomyLike | None = None
    reviews: pl.DataFrame | None = None


@dataclass
class _Parsed:
    """Per-row parsed fields of one batch and what was wrong with them."""

    categories: list[str | None]
    category_problems: list[str | None]
    category_raw: list[str | None]
    attributes: list[str | None]
    attribute_problems: list[str | None]
    images: list[str | None]
    image_problems: list[str | None]
    prices: list[float | None]
    price_problems: list[list[tuple[str, str]]]
    ratings: list[float | None]
    rating_problems: list[str | None]


def _quarantine_bad_lines(batch: SourceBatch, file: str, q: Quarantine) -> None:
    for line_no, line_text, line_problem in batch.bad_lines:
        q.add(
            file=file,
            row_number=line_no,
            sku_id=None,
            field="(line)",
            reason=QuarantineReason.BAD_JSON_LINE,
            fix=f"make line {line_no} one JSON object per line ({line_problem})",
            raw=line_text,
            value=None,
        )


def _categories(
    values: list[str | None], plan: Plan, taxonomy: TaxonomyLike | None
) -> tuple[list[str | None], list[str | None]]:
    """Category paths in the taxonomy's spelling, and problems; parsed once per distinct value."""
    spec = plan.spec
    cache: dict[str, tuple[str | None, str | None]] = {}
    categories: list[str | None] = []
    problems: list[str | None] = []
    for value in values:
        if value is None:
            categories.append(None)
            problems.append(None)
            continue
        hit = cache.get(value)
        if hit is None:
            parsed, problem = parse_category(
                value, fmt=spec.category_format.value, separator=spec.category_separator
            )
            if parsed is not None and taxonomy is not None:
                node = (
                    taxonomy.deepest_known(parsed)
                    if spec.truncate_category_to_taxonomy
                    else taxonomy.find_path(parsed)
                )
                if node is not None:
                    parsed = node.path
            hit = cache[value] = (parsed, problem)
        categories.append(hit[0])
        problems.append(hit[1])
    return categories, problems


def _each(
    values: list[str | None], parse: Callable[[str | None], tuple[Any, str | None]]
) -> tuple[list[Any], list[str | None]]:
    pairs = [parse(v) for v in values]
    return [p[0] for p in pairs], [p[1] for p in pairs]


#: A price cell that is a plain decimal number: read by polars (the same correctly rounded double as
#: Python's ``float``), without `parse_number`'s per-cell Python; any other cell goes through it.
_PLAIN_NUMBER = r"^\s*-?[0-9]+(\.[0-9]+)?\s*$"


def _prices(frame: pl.DataFrame, plan: Plan) -> tuple[list[float | None], list[list[tuple[str, str]]]]:
    """The first price column that holds a number, per row; every unparseable price cell as a problem."""
    n = frame.height
    prices = pl.Series("price", [None] * n, dtype=pl.Float64)
    problems: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for column in plan.price:
        values = source_column(frame, column, plan.spec.null_values)
        plain = values.str.contains(_PLAIN_NUMBER).fill_null(False)
        numbers = (
            pl.DataFrame({"v": values, "plain": plain})
            .select(pl.when("plain").then(pl.col("v").str.strip_chars().cast(pl.Float64)))
            .to_series()
        )
        others = (~plain & values.is_not_null()).arg_true().to_list()
        if others:
            parsed = numbers.to_list()
            for i in others:
                number, problem = parse_number(values[i])
                if problem:
                    problems[i].append((column, values[i]))
                else:
                    parsed[i] = number
            numbers = pl.Series("price", parsed, dtype=pl.Float64)
        prices = prices.fill_null(numbers)
    return prices.to_list(), problems


def _parse_fields(frame: pl.DataFrame, plan: Plan, taxonomy: TaxonomyLike | None) -> _Parsed:
    spec, src, nulls = plan.spec, plan.source, plan.spec.null_values
    category_raw = source_column(frame, src["category_path"], nulls).to_list()
    categories, category_problems = _categories(category_raw, plan, taxonomy)
    attributes, attribute_problems = _each(
        source_column(frame, src["attributes"], nulls).to_list(),
        lambda v: parse_attributes(v, fmt=spec.attributes_format.value),
    )
    images, image_problems = _each(
        source_column(frame, src["image_path"], nulls).to_list(),
        lambda v: parse_image(v, fmt=spec.image_format.value),
    )
    rating_raw = source_column(frame, src["rating"], nulls).to_list()
    ratings, rating_flags = _each(rating_raw, parse_number)
    prices, price_problems = _prices(frame, plan)
    return _Parsed(
        categories=categories,
        category_problems=category_problems,
        category_raw=category_raw,
        attributes=attributes,
        attribute_problems=attribute_problems,
        images=images,
        image_problems=image_problems,
        prices=prices,
        price_problems=price_problems,
        ratings=ratings,
        rating_problems=[raw if flag else None for raw, flag in zip(rating_raw, rating_flags, strict=True)],
    )


def _canonical_frame(frame: pl.DataFrame, plan: Plan, parsed: _Parsed) -> pl.DataFrame:
    src, nulls = plan.source, plan.spec.null_values

    def one_line(name: str) -> pl.Series:  # title and brand: whitespace runs -> one space
        return clean_text(source_column(frame, src[name], nulls).str.replace_all(r"\s+", " "))

    return pl.DataFrame(
        {
            "row_number": frame.get_column(ROW).cast(pl.Int64),
            "sku_id": clean_text(source_column(frame, src["sku_id"], nulls)),
            "title": one_line("title"),
            "description": clean_text(source_column(frame, src["description"], nulls)),  # keeps its lines
            "brand": one_line("brand"),
            "attributes": pl.Series(parsed.attributes, dtype=pl.String),
            "image_ref": pl.Series(parsed.images, dtype=pl.String),
            "category_path": pl.Series(parsed.categories, dtype=pl.String),
            "own_review_text": clean_text(source_column(frame, src["review_text"], nulls)),
            "own_rating": pl.Series(parsed.ratings, dtype=pl.Float64),
            "price": pl.Series(parsed.prices, dtype=pl.Float64),
        }
    )


def _join_reviews(canon: pl.DataFrame, reviews: pl.DataFrame | None) -> pl.DataFrame:
    """The row's own review text plus the reviews table's (count, mean rating) for its SKU."""
    if reviews is not None:
        joined = canon.join(
            reviews.select(
                pl.col("sku_id").cast(pl.String),
                pl.col("review_text").alias("table_review_text"),
                (pl.col("review_count") if "review_count" in reviews.columns else pl.lit(1))
                .cast(pl.Int64)
                .alias("table_review_count"),
                (pl.col("rating_mean") if "rating_mean" in reviews.columns else pl.lit(None))
                .cast(pl.Float64)
                .alias("table_rating"),
            ),
            on="sku_id",
            how="left",
            maintain_order="left",
        )
    else:
        joined = canon.with_columns(
            pl.lit(None, dtype=pl.String).alias("table_review_text"),
            pl.lit(None, dtype=pl.Int64).alias("table_review_count"),
            pl.lit(None, dtype=pl.Float64).alias("table_rating"),
        )
    text = pl.concat_str(["own_review_text", "table_review_text"], separator="\n", ignore_nulls=True)
    return joined.with_columns(
        text.alias("review_text"),
        pl.when(pl.col("table_review_count") > 0)
        .then(pl.col("table_review_count"))
        .otherwise(pl.col("own_review_text").is_not_null().cast(pl.Int64))
        .alias("review_count"),
        pl.coalesce("table_rating", "own_rating").alias("rating_mean"),
    ).with_columns(
        pl.when(pl.col("review_text").str.strip_chars().str.len_chars() > 0)
        .then(pl.col("review_text"))
        .alias("review_text")
    )


#: A dropped row: (position in the batch, reason, field, fix, value)
_Drop = tuple[int, QuarantineReason, str, str, Any]


def _duplicate(sku_id: str, first: tuple[str, int], file: str, i: int) -> _Drop:
    first_file, first_row = first
    where = f"row {first_row}" if first_file == file else f"row {first_row} of {first_file}"
    value: Any = first_row if first_file == file else {"file": first_file, "row_number": first_row}
    fix = (
        f"sku_id {sku_id!r} was already used on {where} (that row was kept); "
        "give this product its own id or remove the duplicate"
    )
    return (i, QuarantineReason.DUPLICATE_SKU_ID, "sku_id", fix, value)


def quarantine_duplicate(
    q: Quarantine, *, sku_id: str, file: str, row_number: int, kept: tuple[str, int], raw: Any
) -> None:
    """Quarantine a row whose ``sku_id`` an earlier row (``kept``: its file and row) already used: the same
    record the catalog reader writes, for a duplicate found later (a bucket's check across parts)."""
    _, reason, fld, fix, value = _duplicate(sku_id, kept, file, 0)
    q.add(
        file=file,
        row_number=row_number,
        sku_id=sku_id,
        field=fld,
        reason=reason,
        fix=fix,
        raw=raw,
        value=value,
    )


def _check_rows(
    joined: pl.DataFrame, plan: Plan, parsed: _Parsed, seen: SeenIds
) -> tuple[list[int], list[_Drop]]:
    """Rows kept and rows dropped (first problem wins); kept ids are added to ``seen``."""
    spec, file = plan.spec, plan.name
    sku_list = joined.get_column("sku_id").to_list()
    rows = joined.get_column("row_number").to_list()
    has_text = joined.select(pl.any_horizontal([pl.col(c).is_not_null() for c in TEXT_FIELDS])).to_series()
    dropped: list[_Drop] = []
    keep: list[int] = []
    for i, (sku_id, text) in enumerate(zip(sku_list, has_text.to_list(), strict=True)):
        if sku_id is None:
            fix = _FIX[QuarantineReason.MISSING_SKU_ID].format(col=plan.source["sku_id"])
            dropped.append((i, QuarantineReason.MISSING_SKU_ID, "sku_id", fix, None))
        elif (problem := parsed.category_problems[i]) is not None:
            hint = '["A >> B >> C"]' if spec.category_format != CategoryFormat.PATH else "A > B > C"
            fix = f"{problem}; " + _FIX[QuarantineReason.BAD_CATEGORY].format(
                hint=hint, fmt=spec.category_format.value
            )
            dropped.append((i, QuarantineReason.BAD_CATEGORY, "category_path", fix, parsed.category_raw[i]))
        elif not text:
            dropped.append((i, QuarantineReason.NO_TEXT, "title", _FIX[QuarantineReason.NO_TEXT], None))
        elif (first := seen.first(sku_id)) is not None:
            dropped.append(_duplicate(sku_id, first, file, i))
        else:
            seen.add(sku_id, rows[i])
            keep.append(i)
    return keep, dropped


def _quarantine_dropped(
    dropped: list[_Drop], batch: SourceBatch, joined: pl.DataFrame, file: str, q: Quarantine
) -> None:
    if not dropped:
        return
    raws = batch.raw_rows([d[0] for d in dropped])
    sku_list = joined.get_column("sku_id").to_list()
    rows = joined.get_column("row_number").to_list()
    for (i, reason, fld, fix, value), raw in zip(dropped, raws, strict=True):
        q.add(
            file=file,
            row_number=rows[i],
            sku_id=sku_list[i],
            field=fld,
            reason=reason,
            fix=fix,
            raw=raw,
            value=value,
        )


def _row_warnings(i: int, plan: Plan, parsed: _Parsed) -> list[tuple[str, QuarantineReason, str, Any]]:
    """(field, reason, fix, value) for each field of kept row ``i`` that was nulled or kept as text."""
    out: list[tuple[str, QuarantineReason, str, Any]] = []
    for column, value in parsed.price_problems[i]:
        fix = _FIX[QuarantineReason.BAD_PRICE].format(col=column) + " (price left empty)"
        out.append(("price", QuarantineReason.BAD_PRICE, fix, value))
    if (rating := parsed.rating_problems[i]) is not None:
        fix = _FIX[QuarantineReason.BAD_RATING].format(col=plan.source["rating"]) + " (rating left empty)"
        out.append(("rating", QuarantineReason.BAD_RATING, fix, rating))
    if (problem := parsed.attribute_problems[i]) is not None:
        fix = f"{problem}; " + _FIX[QuarantineReason.BAD_ATTRIBUTES]
        out.append(("attributes", QuarantineReason.BAD_ATTRIBUTES, fix, parsed.attributes[i]))
    if (problem := parsed.image_problems[i]) is not None:
        fix = f"{problem}; " + _FIX[QuarantineReason.BAD_IMAGE] + " (image left empty)"
        out.append(("image_path", QuarantineReason.BAD_IMAGE, fix, None))
    return out


def _warn_kept(keep: list[int], joined: pl.DataFrame, plan: Plan, parsed: _Parsed, q: Quarantine) -> None:
    sku_list = joined.get_column("sku_id").to_list()
    rows = joined.get_column("row_number").to_list()
    for i in keep:
        for fld, reason, fix, value in _row_warnings(i, plan, parsed):
            q.warn(
                file=plan.name,
                row_number=rows[i],
                sku_id=sku_list[i],
                field=fld,
                reason=reason,
                fix=fix,
                value=value,
            )


def _finish(good: pl.DataFrame, resolve_image: ImageResolver) -> pl.DataFrame:
    """Resolve image files, hash the content (the image's file name, not its path), order the columns."""
    column = good.get_column("image_ref")
    if column.null_count() == good.height:  # no image at all: no per-row work
        names = images = pl.Series([None] * good.height, dtype=pl.String)
    else:
        refs = column.to_list()
        names = pl.Series([image_name(r) for r in refs], dtype=pl.String)
        images = pl.Series([resolve_image(r) for r in refs], dtype=pl.String)
    fields = ("title", "description", "brand", "attributes", "_image_name", "review_text")
    hashes = hash_columns(good.with_columns(names.alias("_image_name")), fields)
    return good.with_columns(
        images.alias("image_path"),
        hashes,
        pl.col("review_count").fill_null(0),
    ).select([pl.col(name).cast(dtype) for name, dtype in SHARD_SCHEMA.items()])


def canonical_batch(
    batch: SourceBatch, plan: Plan, ctx: RowContext, resolve_image: ImageResolver
) -> pl.DataFrame:
    """The good rows of ``batch`` as canonical rows (:data:`SHARD_SCHEMA`); bad rows and warnings go to
    ``ctx.quarantine``, accepted ids to ``ctx.seen``."""
    _quarantine_bad_lines(batch, plan.name, ctx.quarantine)
    if batch.frame.height == 0:
        return pl.DataFrame(schema=SHARD_SCHEMA)
    parsed = _parse_fields(batch.frame, plan, ctx.taxonomy)
    joined = _join_reviews(_canonical_frame(batch.frame, plan, parsed), ctx.reviews)
    keep, dropped = _check_rows(joined, plan, parsed, ctx.seen)
    _quarantine_dropped(dropped, batch, joined, plan.name, ctx.quarantine)
    _warn_kept(keep, joined, plan, parsed, ctx.quarantine)
    good = joined[keep] if len(keep) < joined.height else joined
    return _finish(good, resolve_image)
