"""What every taxonomy reader shares: the layouts, reading a file as text, the common errors (internal)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from shelfwise.errors import TaxonomyError


class TaxonomyFormat(StrEnum):
    """The taxonomy layouts :func:`load_taxonomy` reads."""

    GOOGLE_TXT = "google-txt"  # "5181 - Luggage & Bags > Backpacks", '#' header lines
    GOOGLE_CSV = "google-csv"  # CSV with google_id, full_path columns
    SHOPIFY_TXT = "shopify-txt"  # "gid://shopify/TaxonomyCategory/lb-1 : Luggage & Bags > Backpacks"
    BESTBUY_JSON = "bestbuy-json"  # Best Buy categories.json: entries with id, name, path, subCategories
    PATHS_TXT = "paths-txt"  # one "A > B > C" path a line, no ids
    TABLE = "table"  # CSV/TSV/Parquet/JSONL with a path column (and optionally id / name columns)


GOOGLE_LINE = re.compile(r"^(\d+)\s*-\s+(.*)$")
SHOPIFY_LINE = re.compile(r"^(\S+)\s*:\s+(.*)$")
ATTRIBUTE_MARKERS = ("Shopify Product Taxonomy - Attributes", "gid://shopify/TaxonomyAttribute/")


def raise_attribute_list(source: str) -> None:
    raise TaxonomyError(
        f"taxonomy {source} is Shopify's attribute list (gid://shopify/TaxonomyAttribute/...), not a "
        f"category taxonomy; fix: load the categories file instead, e.g. shopify_categories_2025-01.en.txt"
    )


def read_text(file: Path, source: str) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TaxonomyError(
            f"taxonomy {source} line {line}: not valid UTF-8 (byte {data[exc.start]:#04x}); fix: re-save the "
            f"file as UTF-8"
        ) from None


def text_lines(file: Path, source: str) -> list[str]:
    return [line.rstrip("\r") for line in read_text(file, source).split("\n")]


def empty_error(source: str, what: str) -> TaxonomyError:
    return TaxonomyError(
        f"taxonomy {source} is empty ({what}); fix: point to a file with at least one category"
    )


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
