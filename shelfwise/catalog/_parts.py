"""Where a catalog's rows live: one file, a folder of part files, a glob, or an fsspec prefix (``s3://``).

A shop's export often arrives as many files (``part-00000.parquet`` ... written by Spark, a warehouse
unload, a daily drop per seller). :func:`catalog_parts` turns what ``--catalog`` names into the list of
parts, in a stable order (sorted by name), and :func:`local_copy` gives a reader one part as a local
file (a remote part is downloaded to a temporary file that is deleted once read, so only one part is on
disk at a time). :func:`catalog_fingerprint` says whether two runs read the same parts (names, sizes and
versions), without reading them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq

from shelfwise.catalog._read import SUFFIX_FORMATS
from shelfwise.errors import CatalogError

__all__ = [
    "CatalogPart",
    "RowRange",
    "catalog_fingerprint",
    "catalog_parts",
    "is_remote",
    "local_copy",
    "row_ranges",
]

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class CatalogPart:
    """One file of a catalog: its name as messages and the quarantine show it (a path or a URL), its size
    and a version (modification time, or the object store's ETag)."""

    name: str
    size: int = 0
    version: str = ""

    @property
    def remote(self) -> bool:
        return is_remote(self.name)

    @property
    def suffix(self) -> str:
        return Path(self.name.split("?", 1)[0]).suffix.lower()


def is_remote(location: str | Path) -> bool:
    """True for an fsspec URL other than ``file://`` (``s3://bucket/prefix``, ``gs://``, ...)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _is_part_name(name: str) -> bool:
    """A file a folder listing counts as a part: a known suffix, not hidden, not a marker (``_SUCCESS``)."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and Path(base).suffix.lower() in SUFFIX_FORMATS


def _local_part(path: str) -> CatalogPart:
    st = os.stat(path)
    return CatalogPart(name=path, size=st.st_size, version=str(st.st_mtime_ns))


def _local_parts(source: str) -> list[CatalogPart]:
    if _GLOB_CHARS & set(source):
        names = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
        return [_local_part(p) for p in names]
    if os.path.isdir(source):
        root = Path(source)
        names = sorted(
            str(p)
            for p in root.rglob("*")
            if p.is_file() and _is_part_name(p.name) and not _hidden_below(p, root)
        )
        return [_local_part(p) for p in names]
    if os.path.isfile(source):
        return [_local_part(source)]
    return [CatalogPart(name=source)]  # the reader names the missing file and the fix


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts[:-1])


def _remote_info(fs: Any, protocol: str, info: dict[str, Any]) -> CatalogPart:
    name = str(info["name"])
    url = name if "://" in name else f"{protocol}://{name}"
    version = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return CatalogPart(name=url, size=int(info.get("size") or 0), version=str(version).strip('"'))


def _remote_parts(source: str) -> list[CatalogPart]:
    fs, path = fsspec.core.url_to_fs(source)
    protocol = source.split("://", 1)[0]
    try:
        if _GLOB_CHARS & set(path):
            listing = fs.glob(path, detail=True)
            infos = [i for i in listing.values() if i.get("type") == "file"]
        elif fs.isdir(path):
            infos = [i for i in fs.find(path, detail=True).values() if _is_part_name(str(i["name"]))]
        elif fs.exists(path):
            infos = [fs.info(path)]
        else:
            infos = []
    except Exception as exc:  # any store's failure (botocore, gcsfs, ...) becomes one clear error
        raise CatalogError(
            f"catalog {source}: cannot list it ({exc}); fix: check the URL and the store's credentials "
            "(for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for an S3-compatible store)"
        ) from exc
    return sorted((_remote_info(fs, protocol, i) for i in infos), key=lambda p: p.name)


def catalog_parts(source: str | Path) -> list[CatalogPart]:
    """The part files of a catalog: ``source`` itself when it is a file; every file with a catalog suffix
    (``.csv .tsv .txt .parquet .pq .jsonl .ndjson .json``) under a folder or prefix, hidden files and
    ``_`` markers left out; or what a glob matches (``data/night-*.csv``, ``s3://bucket/tonight/*.parquet``).
    Sorted by name, so the first occurrence of a duplicate ``sku_id`` is the same on every run."""
    text = str(source)
    parts = _remote_parts(text) if is_remote(text) else _local_parts(text)
    if not parts:
        raise CatalogError(
            f"catalog {text}: no catalog files found there; fix: point --catalog at a file, a folder or "
            f"prefix holding files ending in {', '.join(sorted(SUFFIX_FORMATS))}, or a glob such as "
            f"{text.rstrip('/')}/*.parquet"
        )
    return parts


def catalog_fingerprint(source: str | Path) -> str:
    """A short hash of the catalog's parts (names, sizes, versions): equal for two runs that would read
    the same bytes (unless a file was rewritten in place with the same size within the clock's step)."""
    try:
        parts = catalog_parts(source)
    except CatalogError:
        parts = [CatalogPart(name=str(source))]
    listing = [[p.name, p.size, p.version] for p in parts]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:20]


@contextmanager
def local_copy(part: CatalogPart) -> Iterator[Path]:
    """``part`` as a local file: itself, or a temporary download (same suffix) deleted afterwards."""
    if not part.remote:
        yield Path(part.name)
        return
    fd, name = tempfile.mkstemp(prefix="shelfwise-part-", suffix=part.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        fs, path = fsspec.core.url_to_fs(part.name)
        try:
            fs.get_file(path, str(tmp))
        except Exception as exc:  # any store's failure becomes one clear error
            raise CatalogError(
                f"catalog part {part.name}: cannot download it ({exc}); fix: check the store and retry"
            ) from exc
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RowRange:
    """Rows ``first_row`` .. ``first_row + rows - 1`` (0-based) of one Parquet file: whole row groups, so a
    reader of the range touches only its own row groups. Row numbers in messages stay the file's own."""

    first_row: int
    rows: int


def row_ranges(part: CatalogPart, *, min_rows: int) -> list[RowRange]:
    """A local Parquet part cut into ranges of consecutive row groups, each of at least ``min_rows`` rows
    (a remainder smaller than that joins the range before it), so that several tasks read one big file.
    Empty (the part is read whole, by one task) for anything else: a CSV or JSON Lines part (a byte range
    would have to find a row's start inside quoted fields spanning lines, and a row's number needs every
    line before it), a remote part (every task would download the whole file), an unreadable footer (the
    reader reports it), or a file too small for two ranges."""
    if part.remote or part.suffix not in (".parquet", ".pq"):
        return []
    try:
        meta = pq.read_metadata(part.name)
    except (OSError, ValueError):
        return []
    ranges: list[RowRange] = []
    first = rows = 0
    for g in range(meta.num_row_groups):
        rows += meta.row_group(g).num_rows
        if rows >= max(1, min_rows):
            ranges.append(RowRange(first, rows))
            first, rows = first + rows, 0
    if rows and ranges:
        last = ranges.pop()
        ranges.append(RowRange(last.first_row, last.rows + rows))
    elif rows:
        ranges.append(RowRange(first, rows))
    return ranges if len(ranges) > 1 else []
