"""`load_taxonomy` and format detection: each layout is read by its own module (`_load_lines`, `_load_table`,
`_load_bestbuy`) on what `_source` shares (internal).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from shelfwise.errors import ConfigError, TaxonomyError

from ._load_bestbuy import load_bestbuy
from ._load_lines import load_id_lines, load_paths_txt
from ._load_table import load_table
from ._source import (
    ATTRIBUTE_MARKERS,
    GOOGLE_LINE,
    SHOPIFY_LINE,
    TaxonomyFormat,
    raise_attribute_list,
    read_text,
)
from ._tree import Taxonomy

__all__ = ["TaxonomyFormat", "detect_format", "load_taxonomy"]

_LANG_RE = re.compile(r"\.([a-z]{2})(?:[-_][A-Za-z]{2})?\.(?:txt|csv|tsv|json|jsonl|ndjson|parquet|pq)$")


# ---------------------------------------------------------------------- public entry points
def load_taxonomy(
    path: str | os.PathLike[str],
    *,
    format: TaxonomyFormat | str | None = None,
    path_column: str | None = None,
    id_column: str | None = None,
    name_column: str | None = None,
    lang: str | None = None,
) -> Taxonomy:
    """Load and validate a taxonomy file into an immutable :class:`Taxonomy`.

    ``format`` defaults to :func:`detect_format`. ``path_column`` / ``id_column`` / ``name_column``
    apply to tables (CSV/TSV/Parquet/JSONL). ``lang`` defaults to the language code in the file name
    (``categories.ko.txt`` -> ``"ko"``, ``taxonomy.en-US.txt`` -> ``"en"``).

    Raises :class:`TaxonomyError` (or its subclass ``TaxonomyValidationError`` listing every problem,
    with line numbers and fixes, the first 20 in the message).
    """
    file = Path(path)
    if not file.is_file():
        raise TaxonomyError(
            f"taxonomy file {file} does not exist or is not a file; fix: pass the path of a taxonomy file "
            f"(Google .txt/.csv, Shopify categories .txt, Best Buy .json, one path a line, CSV/Parquet table)"
        )
    fmt = _coerce_format(format) if format is not None else detect_format(file)
    lang = lang or _lang_from_name(file.name)
    source = str(file)
    if fmt is TaxonomyFormat.GOOGLE_TXT:
        return load_id_lines(file, source, fmt, lang, GOOGLE_LINE, "'<numeric id> - A > B > C'")
    if fmt is TaxonomyFormat.SHOPIFY_TXT:
        return load_id_lines(file, source, fmt, lang, SHOPIFY_LINE, "'<gid> : A > B > C'")
    if fmt is TaxonomyFormat.PATHS_TXT:
        return load_paths_txt(file, source, lang)
    if fmt is TaxonomyFormat.BESTBUY_JSON:
        return load_bestbuy(file, source, lang)
    if fmt is TaxonomyFormat.GOOGLE_CSV:
        return load_table(
            file,
            source,
            fmt,
            lang,
            path_column=path_column or "full_path",
            id_column=id_column or "google_id",
            name_column=name_column,
        )
    return load_table(
        file, source, fmt, lang, path_column=path_column, id_column=id_column, name_column=name_column
    )


def detect_format(path: str | os.PathLike[str]) -> TaxonomyFormat:
    """Guess the layout of a taxonomy file from its suffix and first lines.

    Raises :class:`TaxonomyError` for Shopify's attribute list, which is not a category taxonomy.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".json":
        return TaxonomyFormat.BESTBUY_JSON
    if suffix in {".parquet", ".pq", ".jsonl", ".ndjson"}:
        return TaxonomyFormat.TABLE
    if suffix in {".csv", ".tsv"}:
        header = read_text(file, str(file))[:4096].splitlines()[:1]
        columns = {c.strip().strip('"').lower() for c in re.split(r"[,\t]", header[0])} if header else set()
        if {"google_id", "full_path"} <= columns:
            return TaxonomyFormat.GOOGLE_CSV
        return TaxonomyFormat.TABLE
    text = read_text(file, str(file))
    data_lines: list[str] = []
    for line in text.split("\n")[:200]:
        stripped = line.strip()
        if any(marker in stripped for marker in ATTRIBUTE_MARKERS):
            raise_attribute_list(str(file))
        if stripped and not stripped.startswith("#"):
            data_lines.append(stripped)
        if len(data_lines) >= 20:
            break
    if data_lines and all(line.startswith("gid://") for line in data_lines):
        return TaxonomyFormat.SHOPIFY_TXT
    if data_lines and all(GOOGLE_LINE.match(line) for line in data_lines):
        return TaxonomyFormat.GOOGLE_TXT
    if data_lines and all(SHOPIFY_LINE.match(line) and " : " in line for line in data_lines):
        return TaxonomyFormat.SHOPIFY_TXT
    return TaxonomyFormat.PATHS_TXT


# ---------------------------------------------------------------------- helpers
def _coerce_format(fmt: TaxonomyFormat | str) -> TaxonomyFormat:
    try:
        return TaxonomyFormat(fmt)
    except ValueError:
        allowed = ", ".join(f.value for f in TaxonomyFormat)
        raise ConfigError(
            f"taxonomy format {fmt!r} is not known; allowed: {allowed}; fix: pass one of these or leave it "
            f"unset to auto-detect"
        ) from None


def _lang_from_name(name: str) -> str | None:
    match = _LANG_RE.search(name)
    return match.group(1) if match else None
