"""Field parsers for catalog input (internal): category paths, prices, attributes, images, hashing.

Each parser works on one value and returns ``(value, problem)``: ``problem`` is ``None`` when the value
parsed (or was empty), else a short description of what is wrong with it, for the quarantine record.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import polars as pl

CANONICAL_SEPARATOR = " > "

_AUTO_SEP_RE = re.compile(r"\s*>>?\s*")
# Ruby's hash-rocket after a quoted key, and Ruby's nil.
_RUBY_ROCKET_RE = re.compile(r'"\s*=>\s*')
_RUBY_NIL_RE = re.compile(r"(?<=:\s)nil(?=\s*[,}\]])")
_RUBY_PAIR_RE = re.compile(r'"key"=>"((?:[^"\\]|\\.)*)",\s*"value"=>"((?:[^"\\]|\\.)*)"')
# A number with optional thousands commas/spaces and decimals (used to read prices written as text).
_NUMBER_RE = re.compile(r"[-+]?\d(?:[\d,]|\s(?=\d))*(?:\.\d+)?|[-+]?\.\d+")


def is_blank(value: str | None) -> bool:
    return value is None or not value.strip()


# ---------------------------------------------------------------------------------------------- categories
def split_category(text: str, separator: str | None) -> list[str]:
    """Split one category path into trimmed, non-empty segments (``separator=None``: ``>`` or ``>>``)."""
    if separator is None or not separator.strip():
        parts = _AUTO_SEP_RE.split(text)
    else:
        parts = text.split(separator.strip())
    return [" ".join(p.split()) for p in parts if p.strip()]


def _json_items(text: str) -> tuple[Any, str | None]:
    """Decode a JSON list cell (a lone JSON string counts as a one-item list), or say why it isn't one."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not a JSON list ({exc.msg} at character {exc.pos})"
    return ([items] if isinstance(items, str) else items), None


def parse_category(value: str | None, *, fmt: str, separator: str | None) -> tuple[str | None, str | None]:
    """A source category value -> ``" > "``-joined path (or ``None``), and a problem description."""
    if is_blank(value):
        return None, None
    assert value is not None
    text = value.strip()
    if fmt == "json_list" or (fmt == "auto" and text.startswith("[")):
        items, problem = _json_items(text)
        if problem is not None:
            return None, problem
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return None, 'expected a JSON list of strings like ["A >> B >> C"]'
        items = [i for i in items if i.strip()]
        if not items:
            return None, None
        text = items[0]
    segments = split_category(text, separator)
    return (CANONICAL_SEPARATOR.join(segments) if segments else None), None


# ---------------------------------------------------------------------------------------------- numbers
def parse_number(value: str | None) -> tuple[float | None, str | None]:
    """``"Rs. 1,899.00"`` -> 1899.0; blank -> None; anything else -> a problem."""
    if is_blank(value):
        return None, None
    assert value is not None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(number):
            return None, None
        if math.isinf(number):
            return None, "not a finite number"
        return number, None
    # currency words/symbols around exactly one number: "Rs. 1,899", "₹449.50", "1899 INR"
    numbers = _NUMBER_RE.findall(text)
    if len(numbers) == 1:
        digits = re.sub(r"[,\s]", "", numbers[0])
        try:
            return float(digits), None
        except ValueError:
            pass
    return None, "not a number"


# ---------------------------------------------------------------------------------------------- attributes
def _pairs_text(pairs: Iterable[tuple[str | None, Any]]) -> str | None:
    parts = []
    for key, val in pairs:
        val_text = "" if val is None else " ".join(str(val).split())
        key_text = "" if key is None else " ".join(str(key).split())
        if key_text and val_text:
            parts.append(f"{key_text}: {val_text}")
        elif val_text:
            parts.append(val_text)
    return "; ".join(parts) if parts else None


def _entries_to_pairs(entries: Any) -> list[tuple[str | None, Any]] | None:
    """Flipkart's ``[{"key": k, "value": v}, ...]`` or a plain ``{k: v}`` mapping -> pairs."""
    if entries is None:
        return []
    if isinstance(entries, dict):
        if set(entries) <= {"key", "value"}:
            return [(entries.get("key"), entries.get("value"))]
        return [(k, v) for k, v in entries.items()]
    if isinstance(entries, list):
        pairs: list[tuple[str | None, Any]] = []
        for entry in entries:
            if isinstance(entry, dict):
                if set(entry) <= {"key", "value"}:
                    pairs.append((entry.get("key"), entry.get("value")))
                else:
                    pairs.extend(entry.items())
            elif entry is not None:
                pairs.append((None, entry))
        return pairs
    return None


def parse_attributes(value: str | None, *, fmt: str) -> tuple[str | None, str | None]:
    """Attributes -> ``"k: v; k: v"`` text. Unparseable structured values are kept verbatim (+ problem)."""
    if is_blank(value):
        return None, None
    assert value is not None
    text = value.strip()
    if fmt == "text":
        return text, None
    looks_ruby = "=>" in text
    if fmt == "auto" and not (looks_ruby or text.startswith(("{", "["))):
        return text, None
    data: Any
    try:
        if fmt == "ruby_hash" or (fmt == "auto" and looks_ruby):
            data = json.loads(_RUBY_NIL_RE.sub("null", _RUBY_ROCKET_RE.sub('": ', text)))
        else:
            data = json.loads(text)
    except json.JSONDecodeError:
        pairs = _RUBY_PAIR_RE.findall(text) if looks_ruby else []
        if pairs:
            return _pairs_text(pairs), None
        if fmt == "auto":  # free text that merely starts with a bracket
            return text, None
        kind = "a Ruby-style hash" if fmt == "ruby_hash" else "JSON"
        return text, f"not {kind}; kept as plain text"
    if isinstance(data, dict) and set(data) == {"product_specification"}:
        data = data["product_specification"]
    entries = _entries_to_pairs(data)
    if entries is None:
        return text, "unexpected structure; kept as plain text"
    return _pairs_text(entries), None


# ---------------------------------------------------------------------------------------------- images
def parse_image(value: str | None, *, fmt: str) -> tuple[str | None, str | None]:
    """The image reference (path, file name or URL): the value itself or the first item of a JSON list."""
    if is_blank(value):
        return None, None
    assert value is not None
    text = value.strip()
    if fmt == "json_list" or (fmt == "auto" and text.startswith("[")):
        items, problem = _json_items(text)
        if problem is not None:
            return None, problem
        if not isinstance(items, list):
            return None, "expected a JSON list of image paths or URLs"
        items = [i for i in items if isinstance(i, str) and i.strip()]
        return (items[0].strip() if items else None), None
    return text, None


# ---------------------------------------------------------------------------------------------- hashing
HASH_FIELDS: tuple[str, ...] = ("title", "description", "brand", "attributes", "image", "review_text")


def normalise_text(value: str | None) -> str:
    if value is None:
        return ""
    return " ".join(unicodedata.normalize("NFKC", value).split())


def hash_values(values: Sequence[str | None]) -> str:
    """sha256 hex of the normalised values, in :data:`HASH_FIELDS` order, unit-separator joined."""
    payload = "\x1f".join(f"{name}={normalise_text(v)}" for name, v in zip(HASH_FIELDS, values, strict=True))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


#: Whitespace as Python's ``str.split()`` sees it: Unicode White_Space plus the ASCII separators \x1c-\x1f.
_SPACE_RUN = r"[\s\x1c-\x1f]+"


def hash_columns(frame: pl.DataFrame, columns: Sequence[str]) -> pl.Series:
    """`hash_values` for every row of ``frame`` (``columns`` in :data:`HASH_FIELDS` order), vectorised:
    the same normalisation (NFKC, whitespace runs to one space, trimmed) and payload in polars, then one
    sha256 per row. Equal to ``hash_values`` row by row (tests/catalog/test_content_hash.py)."""
    parts = []
    for name, column in zip(HASH_FIELDS, columns, strict=True):
        norm = (
            pl.col(column)
            .cast(pl.String)
            .str.normalize("NFKC")
            .str.replace_all(_SPACE_RUN, " ")
            .str.strip_chars()
            .fill_null("")
        )
        parts.append(pl.lit(f"{name}=") + norm)
    payload = frame.select(pl.concat_str(parts, separator="\x1f").alias("p")).get_column("p")
    sha = hashlib.sha256
    distinct = payload.unique()
    if distinct.len() < payload.len():  # a content repeated in the batch is hashed once
        hashes = pl.Series([sha(v.encode("utf-8")).hexdigest() for v in distinct.to_list()], dtype=pl.String)
        return payload.replace_strict(distinct, hashes, return_dtype=pl.String).alias("content_hash")
    return pl.Series(
        "content_hash", [sha(v.encode("utf-8")).hexdigest() for v in payload.to_list()], dtype=pl.String
    )


def to_text(value: Any) -> str | None:
    """A JSON/Parquet value as source text: strings as is, containers as JSON, scalars as JSON scalars."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
