"""The state folder's file names, the bucketed state a night leaves for the next, and the verification
queue opened from the settings.

Everything a night leaves for the next one, the reports and the review commands lives in
``settings.state_dir`` (docs/architecture.md#state-folder); the names are here so that the writer and
every reader agree.

The per-SKU state (the carry state: last night's predictions; the catalog state: every SKU ever seen
with its content hash) is split into ``B`` buckets by a stable hash of ``sku_id`` (`bucket_of`) and kept
under `state_root` (``<state_dir>/state``, or ``<work_url>/state`` on an object store)::

    state/CURRENT                                  the committed generation (JSON: `StateGeneration`)
    state/<generation>/predictions/bucket-NNNNN.parquet   the carry state of bucket NNNNN
    state/<generation>/catalog/bucket-NNNNN.parquet       the catalog state of bucket NNNNN

A night writes a new generation beside the current one and then replaces ``CURRENT`` in one atomic
write; a night killed before that leaves the last night's state as it was. A bucket with no SKUs has no
file. Older versions kept one file each (``predictions_state.parquet``, ``predictions_state.json``,
``catalog_state.parquet``); `current_state` reads them as a generation of one bucket.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from shelfwise import storage
from shelfwise.settings import Settings
from verification.store import QueueStore

__all__ = [
    "CATALOG_STATE",
    "CURRENT",
    "HISTORY",
    "PREDICTIONS_META",
    "PREDICTIONS_STATE",
    "STATE_HASH",
    "StateGeneration",
    "bucket_of",
    "current_state",
    "open_queue",
    "read_catalog_state",
    "read_queue",
    "state_root",
]

#: The last run's predictions, every SKU (an older version's single-file carry state).
PREDICTIONS_STATE = "predictions_state.parquet"
#: What those predictions were made with (an older version's; now in `CURRENT`).
PREDICTIONS_META = "predictions_state.json"
#: Every SKU ever seen with its last content hash and the last run that saw it (older version's file).
CATALOG_STATE = "catalog_state.parquet"
#: One row of headline figures per run (the report's trends).
HISTORY = "history.parquet"
#: The file naming the committed state generation, under `state_root`.
CURRENT = "CURRENT"
#: How `bucket_of` hashes a ``sku_id`` (recorded with the state: a different hash means re-bucketing).
STATE_HASH = "blake2b-64"


def bucket_of(skus: pl.Series, buckets: int) -> pl.Series:
    """Each ``sku_id``'s bucket, ``0 .. buckets-1``: the first 8 bytes of its BLAKE2b digest (little
    endian) modulo ``buckets``. Stable across processes, hosts and versions (never Python's salted
    ``hash``)."""
    if buckets <= 1:
        return pl.Series(skus.name, np.zeros(skus.len(), dtype=np.uint32))
    values = [
        int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % buckets
        for s in skus.cast(pl.String).fill_null("").to_list()
    ]
    return pl.Series(skus.name, values, dtype=pl.UInt32)


def state_root(settings: Settings) -> str:
    """Where the bucketed state lives: ``<work_url>/state`` when the work is on shared storage (every
    worker reads its bucket there), else ``<state_dir>/state``."""
    return (
        storage.join(settings.work_url, "state") if settings.work_url else str(settings.state_dir / "state")
    )


class StateGeneration(BaseModel):
    """One committed (or being written) state: its buckets and what its predictions were made with."""

    root: str
    generation: str
    buckets: int = 1
    hash: str = STATE_HASH
    run_id: str | None = None
    model_version: str | None = None
    taxonomy_version: str | None = None
    routing: str | None = None
    rows: int = 0  # SKUs in the carry state (the next night's bucket count follows it)
    legacy: list[str] = Field(default_factory=list)  # an older version's [predictions, catalog] files

    def file(self, kind: str, bucket: int) -> str:
        """``kind`` = ``predictions`` | ``catalog``: bucket ``bucket``'s file (it may not exist)."""
        if self.legacy:
            return self.legacy[0 if kind == "predictions" else 1]
        return storage.join(self.root, self.generation, kind, f"bucket-{bucket:05d}.parquet")

    def files(self, kind: str) -> list[str]:
        """Every bucket's ``kind`` file that exists."""
        return [f for f in (self.file(kind, b) for b in range(self.buckets)) if storage.exists(f)]

    def meta_text(self) -> str:
        """What identifies this state in a night's key."""
        return self.model_dump_json()


def current_state(settings: Settings) -> StateGeneration | None:
    """The committed state (`CURRENT`), or an older version's single files read as one bucket, or
    ``None`` before the first night."""
    root = state_root(settings)
    current = storage.join(root, CURRENT)
    if storage.exists(current):
        return StateGeneration.model_validate_json(storage.read_bytes(current))
    meta = settings.state_dir / PREDICTIONS_META
    preds = settings.state_dir / PREDICTIONS_STATE
    if not (meta.exists() and preds.exists()):
        cat = settings.state_dir / CATALOG_STATE
        if not cat.exists():
            return None
        return StateGeneration(root=root, generation="", legacy=[str(preds), str(cat)])
    data = json.loads(meta.read_text())
    return StateGeneration(
        root=root,
        generation="",
        run_id=data.get("run_id"),
        model_version=data.get("model_version"),
        taxonomy_version=data.get("taxonomy_version"),
        routing=data.get("routing"),
        legacy=[str(preds), str(settings.state_dir / CATALOG_STATE)],
    )


def read_catalog_state(settings: Settings) -> pl.DataFrame:
    """The catalog state, every bucket (``sku_id, content_hash, last_seen_run``): for readers such as the
    reports; a night reads it one bucket at a time."""
    gen = current_state(settings)
    files = gen.files("catalog") if gen is not None else []
    schema = {"sku_id": pl.String, "content_hash": pl.String, "last_seen_run": pl.String}
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.concat([storage.read_parquet(f) for f in files], how="vertical_relaxed")


def open_queue(settings: Settings) -> QueueStore:
    """The verification queue at ``settings.queue_url`` (the SQLite default's folder is created; the
    store's first write migrates the schema). The caller closes it."""
    url = settings.queue_url or ""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return QueueStore(url)


def read_queue(settings: Settings) -> QueueStore | None:
    """The queue for reading, or ``None`` when nothing was ever queued there (no database, or no schema):
    reads never create or migrate it."""
    url = settings.queue_url or ""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    store = QueueStore(url)
    if store.schema_revision() is None:
        store.close()
        return None
    return store
