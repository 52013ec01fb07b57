"""Catalog and reviews input: any CSV / Parquet / JSON Lines export -> canonical shards.

    spec = CatalogSpec.from_file("data/specs/flipkart_raw.yaml")      # or parse_mapping(["title=name"])
    with Quarantine("quarantine.jsonl") as q:
        for shard in iter_catalog("export.csv", spec=spec, taxonomy=tax, quarantine=q, shard_size=20_000):
            ...                                                           # polars frames, SHARD_SCHEMA

A :class:`CatalogSpec` says how the source columns map to shelfwise's canonical columns and how to read
the messy ones (a category tree stored as a JSON list, prices as text, Flipkart's Ruby-hash attributes,
an image list). Anything not mapped is used when the source already has a column of the canonical name.

Bad rows never stop a run: they go to the :class:`Quarantine` (JSON Lines, one record per row with the
row verbatim) and the good rows flow on. Which problem drops a row and which only nulls a field:

=====================  ============================  ==========================================
problem                 what happens                  why
=====================  ============================  ==========================================
no / blank sku_id       row quarantined               nothing can be keyed on it
broken category value   row quarantined               a silently dropped label would look
 (e.g. broken JSON)                                   "unfiled" and be auto-assigned
no title, description   row quarantined               nothing to classify
 or review text
duplicate sku_id        later row quarantined         first accepted occurrence wins
broken JSON line        line quarantined              (JSON Lines only)
price not a number      price nulled + warning        price is not used to classify
rating not a number     rating nulled + warning       same
attributes unparseable  kept as plain text + warning  the text still helps the classifier
image list unparseable  image nulled + warning        the image is optional
image file not found    image nulled, counted only    the image embedder tolerates it
=====================  ============================  ==========================================

A file that is unusable as a whole (missing required column, unreadable) raises :class:`CatalogError`.

Streaming: rows are read in batches of ``shard_size`` by polars' streaming engine (CSV, Parquet) or line
by line (JSON Lines), so memory is bounded by the shard size, except for one structure: the set of
SKU ids already seen (a dict ``sku_id -> row number`` for duplicate detection across shards, roughly
100-150 bytes per SKU, i.e. ~1-1.5 GB for 10 million SKUs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise._catalog_parse import hash_values
from shelfwise._catalog_quarantine import Quarantine, QuarantineReason
from shelfwise._catalog_read import ROW, SourceFile, detect_format
from shelfwise._catalog_rows import (
    REVIEWS_SCHEMA,
    SHARD_SCHEMA,
    ImageResolver,
    Plan,
    TaxonomyLike,
    canonical_batch,
    clean_text,
    image_name,
    log,
    resolve_images_root,
    source_column,
)
from shelfwise._catalog_spec import (
    CANONICAL_INPUTS,
    AttributesFormat,
    CatalogFormat,
    CatalogSpec,
    CategoryFormat,
    CsvOptions,
    ImageFormat,
    parse_mapping,
)
from shelfwise.errors import CatalogError, ConfigError

__all__ = [
    "CANONICAL_INPUTS",
    "REVIEWS_SCHEMA",
    "SHARD_SCHEMA",
    "AttributesFormat",
    "CatalogFormat",
    "CatalogSpec",
    "CategoryFormat",
    "CsvOptions",
    "ImageFormat",
    "Quarantine",
    "QuarantineReason",
    "content_hash",
    "iter_catalog",
    "load_reviews",
    "parse_mapping",
    "read_catalog",
]


# ==================================================================================================
# Content hash
# ==================================================================================================
def content_hash(
    *,
    title: str | None = None,
    description: str | None = None,
    brand: str | None = None,
    attributes: str | None = None,
    image: str | None = None,
    review_text: str | None = None,
) -> str:
    """sha256 (hex) over the normalised content of one product (NFKC, whitespace collapsed, trimmed).

    ``image`` is the image's *file name* (``iter_catalog`` passes the name from the source reference, not
    the resolved path): moving the images folder or exporting the same product from another system does
    not mark it as changed; renaming the file does. The category and the price are not content.
    """
    return hash_values([title, description, brand, attributes, image_name(image), review_text])


def _reviews_frame(reviews: pl.DataFrame | str | Path | None, quarantine: Quarantine) -> pl.DataFrame | None:
    if reviews is None:
        return None
    if isinstance(reviews, pl.DataFrame):
        missing = [c for c in ("sku_id", "review_text") if c not in reviews.columns]
        if missing:
            raise CatalogError(
                f"reviews frame: missing column(s) {missing}; columns found: {reviews.columns}; "
                "fix: build it with load_reviews()"
            )
        return reviews
    return load_reviews(reviews, quarantine=quarantine)


def iter_catalog(
    path: str | Path,
    *,
    spec: CatalogSpec | None = None,
    taxonomy: TaxonomyLike | None = None,
    reviews: pl.DataFrame | str | Path | None = None,
    images_root: str | Path | None = None,
    quarantine: Quarantine | None = None,
    shard_size: int = 20_000,
) -> Iterator[pl.DataFrame]:
    """Stream a catalog file as canonical shards of exactly ``shard_size`` rows (the last one smaller).

    ``taxonomy`` canonicalises category spellings (``find_path``) and, with
    ``spec.truncate_category_to_taxonomy``, cuts product-specific trailing levels (``deepest_known``).
    ``reviews``: a :func:`load_reviews` frame or a reviews file; its text counts as product text.
    ``images_root``: relative image paths are resolved against it (default: ``spec.images_root``, else the
    catalog file's folder); missing files leave ``image_path`` null. Bad rows go to ``quarantine``.
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}; fix: --shard-size 20000")
    spec = spec or CatalogSpec()
    path = Path(path)
    q = quarantine if quarantine is not None else Quarantine(None)
    review_frame = _reviews_frame(reviews, q)
    fmt = detect_format(path, spec.format.value if spec.format else None)
    resolver = ImageResolver(resolve_images_root(images_root, spec, path))
    seen: dict[str, int] = {}
    buffer: list[pl.DataFrame] = []
    buffered = 0
    with SourceFile(
        path,
        fmt=fmt,
        separator=spec.csv.separator,
        encoding=spec.csv.encoding,
        quote_char=spec.csv.quote_char,
        batch_size=shard_size,
    ) as src:
        plan = Plan(spec, src.columns, path, has_reviews=review_frame is not None, kind="catalog")
        for batch in src.batches():
            good = canonical_batch(batch, plan, taxonomy, review_frame, resolver, q, seen)
            if good.height:
                buffer.append(good)
                buffered += good.height
            while buffered >= shard_size:
                merged = pl.concat(buffer) if len(buffer) > 1 else buffer[0]
                yield merged.head(shard_size)
                rest = merged.slice(shard_size)
                buffer, buffered = ([rest], rest.height) if rest.height else ([], 0)
            q.flush()
    if buffered:
        yield pl.concat(buffer) if len(buffer) > 1 else buffer[0]
    if resolver.missing:
        q.count_only(QuarantineReason.IMAGE_NOT_FOUND, resolver.missing)
        log.warning(
            "catalog %s: %d image file(s) not found under %s (e.g. %s); image_path left empty "
            "(fix: --images-root <folder with the images>)",
            path,
            resolver.missing,
            resolver.root,
            resolver.example,
        )


def read_catalog(path: str | Path, **options: Any) -> pl.DataFrame:
    """All shards of :func:`iter_catalog` in one frame (convenience for small files and tests)."""
    shards = list(iter_catalog(path, **options))
    if not shards:
        return pl.DataFrame(schema=SHARD_SCHEMA)
    return pl.concat(shards)


# ==================================================================================================
# Reviews
# ==================================================================================================
def _one_line(s: pl.Series) -> pl.Series:
    return s.str.replace_all(r"\s+", " ")


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
    nulled with a warning. Only the narrow columns are kept in memory while reading.
    """
    if max_reviews < 1 or max_chars < 1:
        raise ConfigError(f"max_reviews and max_chars must be >= 1, got {max_reviews}, {max_chars}")
    spec = spec or CatalogSpec()
    path = Path(path)
    q = quarantine if quarantine is not None else Quarantine(None)
    fmt = detect_format(path, spec.format.value if spec.format else None)
    parts: list[pl.DataFrame] = []
    with SourceFile(
        path,
        fmt=fmt,
        separator=spec.csv.separator,
        encoding=spec.csv.encoding,
        quote_char=spec.csv.quote_char,
        batch_size=100_000,
    ) as src:
        plan = Plan(spec, src.columns, path, has_reviews=False, kind="reviews")
        for batch in src.batches():
            for line_no, text, problem in batch.bad_lines:
                q.add(
                    file=path,
                    row_number=line_no,
                    sku_id=None,
                    field="(line)",
                    reason=QuarantineReason.BAD_JSON_LINE,
                    fix=f"make line {line_no} one JSON object ({problem})",
                    raw=text,
                )
            frame = batch.frame
            if frame.height == 0:
                continue
            nulls = spec.null_values
            rating_raw = source_column(frame, plan.source["rating"], nulls)
            narrow = pl.DataFrame(
                {
                    "row": frame.get_column(ROW),
                    "sku_id": clean_text(source_column(frame, plan.source["sku_id"], nulls)),
                    # one review per line: whitespace runs (line breaks too) inside a review become one space
                    "title": clean_text(_one_line(source_column(frame, plan.source["review_title"], nulls))),
                    "text": clean_text(_one_line(source_column(frame, plan.source["review_text"], nulls))),
                    "rating_raw": rating_raw,
                }
            ).with_columns(
                pl.col("rating_raw").str.strip_chars().cast(pl.Float64, strict=False).alias("rating")
            )
            bad = narrow.with_row_index("pos").filter(
                pl.col("sku_id").is_null() | (pl.col("title").is_null() & pl.col("text").is_null())
            )
            if bad.height:
                raws = batch.raw_rows(bad.get_column("pos").to_list())
                for rec, raw in zip(bad.iter_rows(named=True), raws, strict=True):
                    if rec["sku_id"] is None:
                        reason, field = QuarantineReason.MISSING_SKU_ID, "sku_id"
                        fix = f"give the review the product's id in column {plan.source['sku_id']!r}"
                    else:
                        reason, field = QuarantineReason.NO_TEXT, "review_text"
                        fix = "the review has neither a title nor a text; fill one or drop the row"
                    q.add(
                        file=path,
                        row_number=rec["row"],
                        sku_id=rec["sku_id"],
                        field=field,
                        reason=reason,
                        fix=fix,
                        raw=raw,
                    )
            good = narrow.filter(
                pl.col("sku_id").is_not_null()
                & (pl.col("title").is_not_null() | pl.col("text").is_not_null())
            )
            bad_rating = good.filter(
                pl.col("rating").is_null()
                & pl.col("rating_raw").is_not_null()
                & (pl.col("rating_raw").str.strip_chars().str.len_chars() > 0)
            )
            for rec in bad_rating.iter_rows(named=True):
                q.add(
                    file=path,
                    row_number=rec["row"],
                    sku_id=rec["sku_id"],
                    field="rating",
                    reason=QuarantineReason.BAD_RATING,
                    value=rec["rating_raw"],
                    severity="warning",
                    fix=(
                        f"write the rating as a number like 4 in column {plan.source['rating']!r} "
                        "(rating left empty)"
                    ),
                )
            parts.append(good.select("sku_id", "title", "text", "rating"))
    if not parts:
        return pl.DataFrame(schema=REVIEWS_SCHEMA)
    all_reviews = pl.concat(parts)
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
        all_reviews.with_columns(joined_text.alias("one"))
        .group_by("sku_id", maintain_order=True)
        .agg(
            pl.col("one").head(max_reviews).str.join("\n").str.slice(0, max_chars).alias("review_text"),
            pl.len().cast(pl.Int64).alias("review_count"),
            pl.col("rating").mean().alias("rating_mean"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in REVIEWS_SCHEMA.items()])
    )
