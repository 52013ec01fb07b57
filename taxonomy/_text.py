"""Small text helpers shared by the tree, the loaders and the search index (internal)."""

from __future__ import annotations

import hashlib
import re
import unicodedata

SEPARATOR = " > "

# " > ", ">", " >> " (Flipkart) with any whitespace around them.
_SEP_RE = re.compile(r"\s*>>?\s*")
_WS_RE = re.compile(r"\s+")
_ODD_WS_RE = re.compile(r"\s{2,}|[^\S ]")
TOKEN_RE = re.compile(r"\w+", re.UNICODE)
COMPACT_DROP_RE = re.compile(r"[\W_]+", re.UNICODE)


def split_path(path: str) -> list[str]:
    """Split a category path on ``>`` / ``>>`` separators, trimming whitespace around each segment.

    A Flipkart-style wrapper (``["A >> B"]``) is removed first. Inner whitespace runs collapse to one
    space. Empty segments are kept (as ``""``) so that callers can report them.
    """
    text = path.strip()
    if text.startswith('["') and text.endswith('"]'):
        text = text[2:-2].strip()
    if not text:
        return []
    if _ODD_WS_RE.search(text):
        text = _WS_RE.sub(" ", text)
    if ">>" in text:
        return [seg.strip() for seg in _SEP_RE.split(text)]
    return [seg.strip() for seg in text.split(">")]


def join_path(segments: list[str] | tuple[str, ...]) -> str:
    return SEPARATOR.join(segments)


def normalise_path(path: str) -> str:
    """The canonical ``" > "``-joined spelling of ``path`` (whitespace and separators normalised)."""
    return join_path(split_path(path))


def path_id(path: str) -> str:
    """Stable id for a node of a path-only taxonomy: ``"p-"`` + 12 hex of sha256 of the normalised path.

    Whitespace around separators and ``>>`` separators do not change the id; letter case does.
    """
    digest = hashlib.sha256(normalise_path(path).encode("utf-8")).hexdigest()
    return "p-" + digest[:12]


def fold(text: str) -> str:
    """Case- and width-insensitive form used for lookups and search (NFKC + casefold, one space)."""
    return _WS_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def compact(text: str) -> str:
    """``fold(text)`` without spaces or punctuation: lets ``"반려동물용품"`` match ``"반려동물 용품"``."""
    return COMPACT_DROP_RE.sub("", fold(text))


def tokens(text: str) -> list[str]:
    """Word tokens of ``fold(text)`` (letters/digits runs; ``&``, ``/``, ``>`` and spaces split)."""
    return TOKEN_RE.findall(fold(text))
