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

Many files: ``iter_catalog`` takes one file, a folder of part files, a glob (``exports/night-*.csv``) or
an fsspec prefix (``s3://bucket/tonight/``), formats mixed as the suffixes say (:func:`catalog_parts`).
Parts are read one after the other in name order (a remote part is downloaded to a temporary file that
is deleted once read), a thread reading up to ``READ_AHEAD`` batches ahead of the one being checked and
canonicalised; a ``sku_id`` already used in an earlier part is quarantined as a duplicate whose
fix names the file and row that kept it. One big Parquet file can be read by several readers, each a
range of its row groups (:func:`row_ranges`, ``iter_catalog(..., rows=range)``); row numbers stay the
file's own, and a ``sku_id`` repeated across ranges is the caller's to catch (the night's bucket tasks).

Streaming: rows are read in batches of ``shard_size`` by polars' streaming engine (CSV, Parquet) or line
by line (JSON Lines), so memory is bounded by the shard size, not by the number or size of the parts,
except for one structure: the SKU ids already seen (a dict ``sku_id -> part and row`` for duplicate
detection across shards and parts, roughly 100-150 bytes per SKU, i.e. ~1-1.5 GB for 10 million SKUs).

Layout (everything but this module is private): ``_parts`` (which files), ``_read`` (streaming readers),
``_spec`` (catalog specs), ``_parse`` (field parsers, hashing), ``_rows`` (canonical columns, column
plan), ``_canonical`` (a batch -> canonical rows, the row checks), ``_quarantine``, ``_iter``
(shards), ``_reviews``.
"""

from __future__ import annotations

from shelfwise.catalog._canonical import quarantine_duplicate
from shelfwise.catalog._iter import content_hash, iter_catalog, read_catalog
from shelfwise.catalog._parse import hash_columns, hash_values, parse_attributes
from shelfwise.catalog._parts import (
    CatalogPart,
    RowRange,
    catalog_fingerprint,
    catalog_parts,
    is_remote,
    row_ranges,
)
from shelfwise.catalog._quarantine import Quarantine, QuarantineReason
from shelfwise.catalog._reviews import load_reviews
from shelfwise.catalog._rows import REVIEWS_SCHEMA, SHARD_SCHEMA
from shelfwise.catalog._spec import (
    CANONICAL_INPUTS,
    AttributesFormat,
    CatalogFormat,
    CatalogSpec,
    CategoryFormat,
    CsvOptions,
    ImageFormat,
    parse_mapping,
)

__all__ = [
    "CANONICAL_INPUTS",
    "REVIEWS_SCHEMA",
    "SHARD_SCHEMA",
    "AttributesFormat",
    "CatalogFormat",
    "CatalogPart",
    "CatalogSpec",
    "CategoryFormat",
    "CsvOptions",
    "ImageFormat",
    "Quarantine",
    "QuarantineReason",
    "RowRange",
    "catalog_fingerprint",
    "catalog_parts",
    "content_hash",
    "hash_columns",
    "hash_values",
    "is_remote",
    "iter_catalog",
    "load_reviews",
    "parse_attributes",
    "parse_mapping",
    "quarantine_duplicate",
    "read_catalog",
    "row_ranges",
]
