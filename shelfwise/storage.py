"""Run files that every worker can reach: a local/shared folder or an fsspec URL (``s3://bucket/prefix``).

Staged shards and prediction parts go through these helpers, so the same run works on threads, on a
local Dask cluster and on Dask workers on other machines (with ``work_url`` on S3 or a shared mount).
Writes are atomic where the store allows it (local: temp file + rename; S3: a PUT is all-or-nothing).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

__all__ = [
    "exists",
    "is_remote",
    "join",
    "read_bytes",
    "read_parquet",
    "remove_tree",
    "take_retries",
    "write_bytes",
    "write_parquet",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: pauses before retry 1..6 of a remote read or write: rides out ~30 s of an unreachable object store
_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
_RETRIES = [0]
_RETRIES_LOCK = threading.Lock()


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors of an unreachable or overloaded object store, by class (never by message text)."""
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import botocore.exceptions as boto  # type: ignore[import-untyped]
    except ImportError:  # no S3 support installed: only the builtin network errors
        return tuple(classes)
    return (*classes, boto.ConnectionError, boto.HTTPClientError)


def take_retries() -> int:
    """Remote reads and writes retried in this process since the last call (the night's summary)."""
    with _RETRIES_LOCK:
        taken, _RETRIES[0] = _RETRIES[0], 0
        return taken


def _retrying(what: str, url: str, call: Callable[[], T]) -> T:
    """``call()``, again after a pause while the object store is unreachable (a PUT is all-or-nothing)."""
    transient = _transient_errors()
    for pause in (*_BACKOFF, None):
        try:
            return call()
        except transient as exc:
            if pause is None:
                raise
            with _RETRIES_LOCK:
                _RETRIES[0] += 1
            log.warning("%s %s failed (%s); retrying in %.1f s", what, url, type(exc).__name__, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


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
    return _retrying("exists", url, lambda: bool(fs.exists(path)))


def write_bytes(url: str, data: bytes) -> None:
    if not is_remote(url):
        p = Path(url)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return
    fs, path = _fs(url)
    _retrying("write", url, lambda: fs.pipe_file(path, data))


def read_bytes(url: str) -> bytes:
    if not is_remote(url):
        return Path(url).read_bytes()
    fs, path = _fs(url)
    return _retrying("read", url, lambda: bytes(fs.cat_file(path)))


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
    if _retrying("exists", url, lambda: bool(fs.exists(path))):
        _retrying("remove", url, lambda: fs.rm(path, recursive=True))
