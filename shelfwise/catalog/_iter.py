"""Streaming a catalog (one file or many parts) as canonical shards (internal; see shelfwise.catalog)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from shelfwise.catalog._canonical import RowContext, SeenIds, canonical_batch
from shelfwise.catalog._parse import hash_values
from shelfwise.catalog._parts import CatalogPart, RowRange, catalog_parts, local_copy
from shelfwise.catalog._quarantine import Quarantine, QuarantineReason
from shelfwise.catalog._read import SourceBatch, open_source
from shelfwise.catalog._reviews import load_reviews
from shelfwise.catalog._rows import (
    SHARD_SCHEMA,
    ImageResolver,
    Plan,
    TaxonomyLike,
    image_name,
    log,
    resolve_images_root,
)
from shelfwise.catalog._spec import CatalogSpec
from shelfwise.errors import CatalogError, ConfigError

__all__ = ["READ_AHEAD", "content_hash", "iter_catalog", "read_catalog"]

T = TypeVar("T")


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


class _Resolvers:
    """One image resolver per images root (a folder catalog's parts may sit in several folders)."""

    def __init__(self, images_root: str | Path | None, spec: CatalogSpec) -> None:
        self.images_root, self.spec = images_root, spec
        self.by_root: dict[Path, ImageResolver] = {}

    def for_part(self, part: CatalogPart) -> ImageResolver:
        anchor = Path(os.getcwd(), "catalog") if part.remote else Path(part.name)
        root = resolve_images_root(self.images_root, self.spec, anchor)
        return self.by_root.setdefault(root, ImageResolver(root))

    def report(self, source: str, q: Quarantine) -> None:
        for resolver in self.by_root.values():
            if not resolver.missing:
                continue
            q.count_only(QuarantineReason.IMAGE_NOT_FOUND, resolver.missing)
            log.warning(
                "catalog %s: %d image file(s) not found under %s (e.g. %s); image_path left empty "
                "(fix: --images-root <folder with the images>)",
                source,
                resolver.missing,
                resolver.root,
                resolver.example,
            )


class _Shards:
    """Cuts a stream of canonical frames into shards of exactly ``size`` rows (the last one smaller)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0

    def add(self, good: pl.DataFrame) -> Iterator[pl.DataFrame]:
        if good.height:
            self.buffer.append(good)
            self.buffered += good.height
        while self.buffered >= self.size:
            merged = pl.concat(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            yield merged.head(self.size)
            rest = merged.slice(self.size)
            self.buffer, self.buffered = ([rest], rest.height) if rest.height else ([], 0)

    def rest(self) -> Iterator[pl.DataFrame]:
        if self.buffered:
            yield pl.concat(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        self.buffer, self.buffered = [], 0


#: Source batches read ahead of the one being canonicalised (memory: this many batches more).
READ_AHEAD = 2


def _source_batches(
    parts: list[CatalogPart],
    spec: CatalogSpec,
    *,
    has_reviews: bool,
    batch_size: int,
    rows: RowRange | None = None,
) -> Iterator[tuple[int, CatalogPart, Plan, SourceBatch]]:
    """Every part's source batches, part after part (a remote part is downloaded, read, then deleted)."""
    span = (rows.first_row, rows.rows) if rows is not None else None
    for index, part in enumerate(parts):
        with (
            local_copy(part) as path,
            open_source(path, spec, batch_size=batch_size, label=part.name, row_range=span) as src,
        ):
            plan = Plan(spec, src.columns, part.name, has_reviews=has_reviews, kind="catalog")
            for batch in src.batches():
                yield index, part, plan, batch


def _read_ahead(items: Iterator[T], depth: int) -> Iterator[T]:
    """``items``, produced on a thread up to ``depth`` ahead of the caller: reading and parsing the next
    batch (polars works outside the GIL; a remote part downloads) overlaps with the caller's work on this
    one. An error of the producer is raised here; stopping early stops the thread and closes ``items``."""
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=produce, name="shelfwise-catalog-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a part left half-read: its file and temporary download are released here


def iter_catalog(
    path: str | Path,
    *,
    spec: CatalogSpec | None = None,
    taxonomy: TaxonomyLike | None = None,
    reviews: pl.DataFrame | str | Path | None = None,
    images_root: str | Path | None = None,
    quarantine: Quarantine | None = None,
    shard_size: int = 20_000,
    rows: RowRange | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream a catalog as canonical shards of exactly ``shard_size`` rows (the last one smaller).

    ``path``: a file, a folder of part files, a glob, or an fsspec URL (``s3://bucket/prefix/``), see
    `catalog_parts`; parts are read one after the other, in name order, and a ``sku_id`` used in an
    earlier part (or row) is quarantined as a duplicate naming the file and row that kept it.
    ``taxonomy`` canonicalises category spellings (``find_path``) and, with
    ``spec.truncate_category_to_taxonomy``, cuts product-specific trailing levels (``deepest_known``).
    ``reviews``: a :func:`load_reviews` frame or a reviews file; its text counts as product text.
    ``images_root``: relative image paths are resolved against it (default: ``spec.images_root``, else the
    part file's folder); missing files leave ``image_path`` null. Bad rows go to ``quarantine``.
    ``rows``: only that range of one Parquet file (`row_ranges`), row numbers still the file's own; a
    ``sku_id`` repeated across two ranges is left for the caller to catch (the staging's bucket tasks do).
    """
    if shard_size < 1:
        raise ConfigError(f"shard_size must be >= 1, got {shard_size}; fix: --shard-size 20000")
    spec = spec or CatalogSpec()
    q = quarantine if quarantine is not None else Quarantine(None)
    parts = catalog_parts(path)
    if rows is not None and len(parts) != 1:
        raise ConfigError(
            f"catalog {path}: a row range reads one Parquet file, and this names {len(parts)} files; "
            "fix: pass the range with a single file"
        )
    ctx = RowContext(quarantine=q, seen=SeenIds([p.name for p in parts]), taxonomy=taxonomy)
    ctx.reviews = _reviews_frame(reviews, q)
    resolvers = _Resolvers(images_root, spec)
    shards = _Shards(shard_size)
    sources = _source_batches(
        parts, spec, has_reviews=ctx.reviews is not None, batch_size=shard_size, rows=rows
    )
    for index, part, plan, batch in _read_ahead(sources, READ_AHEAD):
        ctx.seen.part = index
        good = canonical_batch(batch, plan, ctx, resolvers.for_part(part))
        q.flush()
        yield from shards.add(good)
    yield from shards.rest()
    resolvers.report(str(path), q)


def read_catalog(path: str | Path, **options: Any) -> pl.DataFrame:
    """All shards of :func:`iter_catalog` in one frame (convenience for small files and tests)."""
    shards = list(iter_catalog(path, **options))
    if not shards:
        return pl.DataFrame(schema=SHARD_SCHEMA)
    return pl.concat(shards)
