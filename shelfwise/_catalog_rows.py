"""Turning one batch of source text into canonical rows (internal; used by shelfwise.catalog).

Vectorised with polars where the work is plain (trimming, nulls, joins); per-value Python only where
a value must be parsed (category JSON, attributes, prices, image lists) or hashed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from shelfwise._catalog_parse import (
    hash_columns,
    parse_attributes,
    parse_category,
    parse_image,
    parse_number,
)
from shelfwise._catalog_quarantine import Quarantine, QuarantineReason
from shelfwise._catalog_read import ROW, SourceBatch
from shelfwise._catalog_spec import CANONICAL_INPUTS, CatalogSpec, CategoryFormat
from shelfwise.errors import CatalogError

log = logging.getLogger("shelfwise.catalog")

#: The canonical shard columns, in order (the contract in docs/catalog-input.md).
SHARD_SCHEMA: dict[str, pl.DataType] = {
    "row_number": pl.Int64(),
    "sku_id": pl.String(),
    "title": pl.String(),
    "description": pl.String(),
    "brand": pl.String(),
    "attributes": pl.String(),
    "image_path": pl.String(),
    "category_path": pl.String(),
    "review_text": pl.String(),
    "review_count": pl.Int64(),
    "rating_mean": pl.Float64(),
    "price": pl.Float64(),
    "content_hash": pl.String(),
}

#: What load_reviews returns: one row per SKU.
REVIEWS_SCHEMA: dict[str, pl.DataType] = {
    "sku_id": pl.String(),
    "review_text": pl.String(),
    "review_count": pl.Int64(),
    "rating_mean": pl.Float64(),
}

TEXT_FIELDS = ("title", "description", "review_text")


class TaxonomyLike(Protocol):
    def deepest_known(self, path: str) -> Any: ...

    def find_path(self, path: str) -> Any: ...


class Plan:
    """Which source column feeds each canonical column (resolved once per file)."""

    def __init__(
        self, spec: CatalogSpec, found: list[str], path: Path, *, has_reviews: bool, kind: str
    ) -> None:
        self.spec = spec
        self.path = path
        present = set(found)
        self.source: dict[str, str | None] = {}
        for name in CANONICAL_INPUTS:
            if name in spec.columns:
                self.source[name] = spec.columns[name]
            else:
                self.source[name] = name if name in present else None
        explicit_price = spec.price_columns or ([spec.columns["price"]] if "price" in spec.columns else [])
        self.price: list[str] = explicit_price or (["price"] if "price" in present else [])

        def fail(what: str, column: str, canonical: str) -> CatalogError:
            hint = suggest(found, canonical)
            return CatalogError(
                f"{kind} {path}: {what} column {column!r} not found; "
                f"columns found: {', '.join(found) or '(none)'}; "
                f"fix: --map {canonical}=<your column>{hint} (or `columns: {{{canonical}: ...}}` in the spec)"
            )

        # explicitly mapped columns must exist (a typo must not silently drop a field)
        for name, column in spec.columns.items():
            if column not in present:
                raise fail(f"mapped ({name}={column})", column, name)
        for column in explicit_price:
            if column not in present:
                raise fail("price", column, "price")
        if self.source["sku_id"] is None:
            raise fail("required", "sku_id", "sku_id")
        text_sources = ("review_text", "review_title") if kind == "reviews" else TEXT_FIELDS
        if not has_reviews and not any(self.source[n] for n in text_sources):
            raise CatalogError(
                f"{kind} {path}: no text column: need at least one of {', '.join(text_sources)}"
                f"{'' if kind == 'reviews' else ' (or a reviews table)'}; columns found: {', '.join(found)}; "
                f"fix: --map {text_sources[0]}=<your column>{suggest(found, text_sources[0])}"
            )


def suggest(found: list[str], canonical: str) -> str:
    keys = {"sku_id": ("sku", "id"), "title": ("title", "name"), "review_text": ("review", "text")}.get(
        canonical, (canonical.split("_")[0],)
    )
    hits = [c for c in found if any(k in c.lower() for k in keys)]
    return f" (candidates: {', '.join(hits[:5])})" if hits else ""


def source_column(frame: pl.DataFrame, name: str | None, nulls: list[str]) -> pl.Series:
    if name is None or name not in frame.columns:
        return pl.Series([None] * frame.height, dtype=pl.String)
    s = frame.get_column(name)
    if nulls:
        s = frame.select(
            pl.when(pl.col(name).str.strip_chars().is_in(nulls)).then(None).otherwise(pl.col(name))
        ).to_series()
    return s


def clean_text(s: pl.Series) -> pl.Series:
    """Trim; blank -> null."""
    t = s.str.strip_chars()
    return pl.select(pl.when(t.str.len_chars() > 0).then(t).otherwise(None)).to_series()


def resolve_images_root(images_root: str | Path | None, spec: CatalogSpec, path: Path) -> Path:
    if images_root is not None:
        return Path(os.path.normpath(images_root))
    if spec.images_root:
        root = Path(spec.images_root)
        return Path(os.path.normpath(root if root.is_absolute() else path.parent / root))
    return path.parent


def image_name(ref: str | None) -> str | None:
    """The file name of an image reference (path or URL): what the content hash sees."""
    if ref is None:
        return None
    return ref.replace("\\", "/").rsplit("/", 1)[-1].split("?", 1)[0]


class ImageResolver:
    """Image reference -> absolute path of an existing file, else ``None`` (counted in ``missing``).

    One ``stat`` per image; the root is made absolute once (symlinks inside it are not resolved).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = os.path.abspath(root)
        self.missing = 0
        self.example: str | None = None

    def __call__(self, ref: str | None) -> str | None:
        if ref is None:
            return None
        if "://" in ref:
            candidate = os.path.join(self._root, image_name(ref) or "")
        else:
            candidate = os.path.normpath(os.path.join(self._root, ref))  # an absolute ref stays as it is
        if os.path.isfile(candidate):
            return candidate
        self.missing += 1
        self.example = self.example or candidate
        return None


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


def canonical_batch(
    batch: SourceBatch,
    plan: Plan,
    taxonomy: TaxonomyLike | None,
    review_frame: pl.DataFrame | None,
    resolve_image: ImageResolver,
    q: Quarantine,
    seen: dict[str, int],
) -> pl.DataFrame:
    spec, src, file = plan.spec, plan.source, plan.path
    frame = batch.frame
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
    n = frame.height
    if n == 0:
        return pl.DataFrame(schema=SHARD_SCHEMA)
    nulls = spec.null_values
    rows = frame.get_column(ROW).to_list()
    sku = clean_text(source_column(frame, src["sku_id"], nulls))
    # title and brand are one-liners (whitespace runs -> one space); the description keeps its lines
    text_cols = {
        name: clean_text(source_column(frame, src[name], nulls).str.replace_all(r"\s+", " "))
        for name in ("title", "brand")
    }
    text_cols["description"] = clean_text(source_column(frame, src["description"], nulls))
    own_reviews = clean_text(source_column(frame, src["review_text"], nulls))

    # category: per-shard cache (values repeat a lot in real catalogs)
    cat_raw = source_column(frame, src["category_path"], nulls).to_list()
    cat_cache: dict[str, tuple[str | None, str | None]] = {}
    categories: list[str | None] = []
    cat_problems: list[str | None] = []
    for value in cat_raw:
        if value is None:
            categories.append(None)
            cat_problems.append(None)
            continue
        hit = cat_cache.get(value)
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
            hit = cat_cache[value] = (parsed, problem)
        categories.append(hit[0])
        cat_problems.append(hit[1])

    attrs: list[str | None] = []
    attr_problems: list[str | None] = []
    for value in source_column(frame, src["attributes"], nulls).to_list():
        a, p = parse_attributes(value, fmt=spec.attributes_format.value)
        attrs.append(a)
        attr_problems.append(p)

    image_refs: list[str | None] = []
    image_problems: list[str | None] = []
    for value in source_column(frame, src["image_path"], nulls).to_list():
        r, p = parse_image(value, fmt=spec.image_format.value)
        image_refs.append(r)
        image_problems.append(p)

    prices: list[float | None] = [None] * n
    price_problems: list[list[tuple[str, str]]] = [[] for _ in range(n)]
    for column in plan.price:
        for i, value in enumerate(source_column(frame, column, nulls).to_list()):
            number, problem = parse_number(value)
            if problem:
                price_problems[i].append((column, value))
            elif prices[i] is None and number is not None:
                prices[i] = number
    ratings: list[float | None] = []
    rating_problems: list[str | None] = []
    for value in source_column(frame, src["rating"], nulls).to_list():
        number, problem = parse_number(value)
        ratings.append(number)
        rating_problems.append(value if problem else None)

    canon = pl.DataFrame(
        {
            "row_number": pl.Series(rows, dtype=pl.Int64),
            "sku_id": sku,
            "title": text_cols["title"],
            "description": text_cols["description"],
            "brand": text_cols["brand"],
            "attributes": pl.Series(attrs, dtype=pl.String),
            "image_ref": pl.Series(image_refs, dtype=pl.String),
            "category_path": pl.Series(categories, dtype=pl.String),
            "own_review_text": own_reviews,
            "own_rating": pl.Series(ratings, dtype=pl.Float64),
            "price": pl.Series(prices, dtype=pl.Float64),
        }
    )
    if review_frame is not None:
        joined = canon.join(
            review_frame.select(
                pl.col("sku_id").cast(pl.String),
                pl.col("review_text").alias("table_review_text"),
                (pl.col("review_count") if "review_count" in review_frame.columns else pl.lit(1))
                .cast(pl.Int64)
                .alias("table_review_count"),
                (pl.col("rating_mean") if "rating_mean" in review_frame.columns else pl.lit(None))
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
    joined = joined.with_columns(
        pl.concat_str(["own_review_text", "table_review_text"], separator="\n", ignore_nulls=True).alias(
            "review_text"
        ),
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

    # ---- row checks (first problem wins; one record per dropped row)
    sku_list = joined.get_column("sku_id").to_list()
    has_text = (
        joined.select(pl.any_horizontal([pl.col(c).is_not_null() for c in TEXT_FIELDS]).alias("t"))
        .get_column("t")
        .to_list()
    )
    dropped: list[tuple[int, QuarantineReason, str, str, Any]] = []  # (position, reason, field, fix, value)
    keep: list[int] = []
    for i in range(n):
        sku_id = sku_list[i]
        if sku_id is None:
            dropped.append(
                (
                    i,
                    QuarantineReason.MISSING_SKU_ID,
                    "sku_id",
                    _FIX[QuarantineReason.MISSING_SKU_ID].format(col=src["sku_id"]),
                    None,
                )
            )
        elif cat_problems[i] is not None:
            hint = '["A >> B >> C"]' if spec.category_format != CategoryFormat.PATH else "A > B > C"
            fix = f"{cat_problems[i]}; " + _FIX[QuarantineReason.BAD_CATEGORY].format(
                hint=hint, fmt=spec.category_format.value
            )
            dropped.append((i, QuarantineReason.BAD_CATEGORY, "category_path", fix, cat_raw[i]))
        elif not has_text[i]:
            dropped.append((i, QuarantineReason.NO_TEXT, "title", _FIX[QuarantineReason.NO_TEXT], None))
        elif sku_id in seen:
            first = seen[sku_id]
            dropped.append(
                (
                    i,
                    QuarantineReason.DUPLICATE_SKU_ID,
                    "sku_id",
                    (
                        f"sku_id {sku_id!r} was already used on row {first} (that row was kept); "
                        "give this product its own id or remove the duplicate"
                    ),
                    first,
                )
            )
        else:
            seen[sku_id] = rows[i]
            keep.append(i)
    if dropped:
        raws = batch.raw_rows([d[0] for d in dropped])
        for (i, reason, field, fix, value), raw in zip(dropped, raws, strict=True):
            q.add(
                file=file,
                row_number=rows[i],
                sku_id=sku_list[i],
                field=field,
                reason=reason,
                fix=fix,
                raw=raw,
                value=value,
            )

    # ---- warnings on kept rows
    for i in keep:
        for column, value in price_problems[i]:
            q.add(
                file=file,
                row_number=rows[i],
                sku_id=sku_list[i],
                field="price",
                reason=QuarantineReason.BAD_PRICE,
                fix=_FIX[QuarantineReason.BAD_PRICE].format(col=column) + " (price left empty)",
                value=value,
                severity="warning",
            )
        if rating_problems[i] is not None:
            q.add(
                file=file,
                row_number=rows[i],
                sku_id=sku_list[i],
                field="rating",
                reason=QuarantineReason.BAD_RATING,
                fix=_FIX[QuarantineReason.BAD_RATING].format(col=src["rating"]) + " (rating left empty)",
                value=rating_problems[i],
                severity="warning",
            )
        if attr_problems[i] is not None:
            q.add(
                file=file,
                row_number=rows[i],
                sku_id=sku_list[i],
                field="attributes",
                reason=QuarantineReason.BAD_ATTRIBUTES,
                fix=f"{attr_problems[i]}; " + _FIX[QuarantineReason.BAD_ATTRIBUTES],
                value=attrs[i],
                severity="warning",
            )
        if image_problems[i] is not None:
            q.add(
                file=file,
                row_number=rows[i],
                sku_id=sku_list[i],
                field="image_path",
                reason=QuarantineReason.BAD_IMAGE,
                fix=f"{image_problems[i]}; " + _FIX[QuarantineReason.BAD_IMAGE] + " (image left empty)",
                value=None,
                severity="warning",
            )

    good = joined[keep] if len(keep) < n else joined
    refs = good.get_column("image_ref").to_list()
    names = pl.Series("_image_name", [image_name(r) for r in refs], dtype=pl.String)
    fields = ("title", "description", "brand", "attributes", "_image_name", "review_text")
    hashes = hash_columns(good.with_columns(names), fields)
    images = [resolve_image(r) for r in refs]
    return good.with_columns(
        pl.Series("image_path", images, dtype=pl.String),
        hashes,
        pl.col("review_count").fill_null(0),
    ).select([pl.col(name).cast(dtype) for name, dtype in SHARD_SCHEMA.items()])
