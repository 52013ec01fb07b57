"""The canonical columns and what every reader shares (internal): the column plan of a file, text
cleaning, image references (``shelfwise.catalog._canonical`` turns a batch into canonical rows)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from shelfwise.catalog._spec import CANONICAL_INPUTS, CatalogSpec
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
        self, spec: CatalogSpec, found: list[str], path: str | Path, *, has_reviews: bool, kind: str
    ) -> None:
        self.spec = spec
        self.name = str(path)  # what messages and the quarantine name: a path or a URL
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
