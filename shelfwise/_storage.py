"""Run files that every worker can reach: a local/shared folder or an fsspec URL (``s3://bucket/prefix``).

Staged shards and prediction parts go through these helpers, so the same run works on threads, on a
local Dask cluster and on Dask workers on other machines (with ``work_url`` on S3 or a shared mount).
Writes are atomic where the store allows it (local: temp file + rename; S3: a PUT is all-or-nothing).
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "exists",
    "is_remote",
    "join",
    "read_bytes",
    "read_parquet",
    "remove_tree",
    "write_bytes",
    "write_parquet",
]


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def exists(url: str) -> bool:
    if not is_remote(url):
        return Path(url).exists()
    fs, path = _fs(url)
    return bool(fs.exists(path))


def write_bytes(url: str, data: bytes) -> None:
    if not is_remote(url):
        p = Path(url)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return
    fs, path = _fs(url)
    fs.pipe_file(path, data)


def read_bytes(url: str) -> bytes:
    if not is_remote(url):
        return Path(url).read_bytes()
    fs, path = _fs(url)
    return bytes(fs.cat_file(path))


def write_parquet(frame: pl.DataFrame, url: str) -> None:
    """Write one Parquet file atomically (a reader sees the old file or the whole new one)."""
    if not is_remote(url):
        p = Path(url)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
        frame.write_parquet(tmp, compression="zstd")
        os.replace(tmp, p)
        return
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd")
    write_bytes(url, buf.getvalue())


def read_parquet(url: str, *, columns: list[str] | None = None) -> pl.DataFrame:
    if not is_remote(url):
        return pl.read_parquet(url, columns=columns)
    return pl.read_parquet(io.BytesIO(read_bytes(url)), columns=columns)


def local_copy(url: str, folder: Path) -> Path:
    """A local path for ``url`` (itself when local; else downloaded into ``folder``)."""
    if not is_remote(url):
        return Path(url)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / url.rstrip("/").rsplit("/", 1)[-1]
    dest.write_bytes(read_bytes(url))
    return dest


def remove_tree(url: str) -> None:
    """Delete a folder (or prefix) and everything under it; missing is fine."""
    if not is_remote(url):
        import shutil

        shutil.rmtree(url, ignore_errors=True)
        return
    fs, path = _fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
