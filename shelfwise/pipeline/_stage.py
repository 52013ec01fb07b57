"""What a staged night is (`StagedNight`), the night's key, the catalog as canonical shards, and the
night's distinct contents to score; the staging tasks themselves are in `shelfwise.pipeline._buckets`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from shelfwise import storage
from shelfwise._scores import score_keys
from shelfwise.catalog import (
    CatalogSpec,
    Quarantine,
    catalog_fingerprint,
    is_remote,
    iter_catalog,
    load_reviews,
    parse_mapping,
)
from shelfwise.pipeline._incremental import routing_fingerprint
from shelfwise.settings import Settings
from shelfwise.state import StateGeneration, current_state

__all__ = [
    "DISTINCT_SHARD_ROWS",
    "CatalogSource",
    "DistinctContents",
    "StagedNight",
    "iter_shards",
    "new_run_id",
    "night_key",
    "remove_staged",
    "utcnow",
]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def utcnow() -> str:
    """Now in UTC, ISO 8601 to the second (the run summary's time stamps)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class CatalogSource(BaseModel):
    """A catalog file and how to read it: reviews table, image folder, catalog spec, column mapping
    (plain data: it travels to any worker and into a flow run's parameters)."""

    catalog: str
    reviews: str | None = None
    images_root: str | None = None
    spec: str | None = None
    mapping: list[str] | None = None

    @classmethod
    def of(cls, catalog: CatalogSource | str | Path) -> CatalogSource:
        """``catalog`` as a source (a bare path: read with no reviews, images, spec or mapping)."""
        return catalog if isinstance(catalog, CatalogSource) else cls(catalog=str(catalog))

    def key(self) -> list[Any]:
        """What besides the file itself changes the shards it gives (part of the night's key)."""
        return [self.reviews, self.images_root, self.spec, list(self.mapping or [])]


def iter_shards(
    catalog: CatalogSource | str | Path, *, settings: Settings, taxonomy: Any, quarantine: Quarantine
) -> Iterator[pl.DataFrame]:
    """Stream the catalog as canonical shards; bad rows go to ``quarantine``."""
    source = CatalogSource.of(catalog)
    spec = CatalogSpec.from_file(source.spec) if source.spec else None
    if source.mapping:
        spec = parse_mapping(list(source.mapping), base=spec)
    review_frame = load_reviews(source.reviews, quarantine=quarantine) if source.reviews else None
    yield from iter_catalog(
        source.catalog,
        spec=spec,
        taxonomy=taxonomy,
        reviews=review_frame,
        images_root=source.images_root,
        quarantine=quarantine,
        shard_size=settings.shard_size,
    )


class StagedNight(BaseModel):
    """A staged night: shards to score (at ``work_url``), carried SKUs and keys per bucket, quarantine."""

    night_key: str
    local_dir: str  # the quarantine file and staged.json (main process only)
    work_url: (
        str  # staging/, shards/, keys/, carry/, scores/, predictions/ (every worker reads and writes here)
    )
    buckets: int = 1
    shards: list[str] = Field(default_factory=list)
    distinct_shards: list[str] = Field(default_factory=list)  # one row per distinct content to score
    distinct: int = 0
    rows: int = 0
    to_score: int = 0
    carried: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    quarantine_path: str = ""
    mode: str = "full"
    reason: str = ""
    previous_run_id: str | None = None
    previous: StateGeneration | None = None  # the state the night started from (read per bucket)
    changes: dict[str, int] = Field(default_factory=lambda: {"new": 0, "changed": 0, "unchanged": 0})

    def prediction_url(self, shard_url: str) -> str:
        return storage.join(self.work_url, "predictions", shard_url.rstrip("/").rsplit("/", 1)[-1])

    def score_url(self, distinct_url: str) -> str:
        return storage.join(self.work_url, "scores", distinct_url.rstrip("/").rsplit("/", 1)[-1])

    def keys_url(self, bucket: int) -> str:
        """Bucket ``bucket``'s ``sku_id, content_hash`` of tonight's catalog (the catalog state's input)."""
        return storage.join(self.work_url, "keys", f"bucket-{bucket:05d}.parquet")

    def carry_url(self, bucket: int) -> str:
        """Bucket ``bucket``'s carried ``sku_id`` list (absent: nothing carried)."""
        return storage.join(self.work_url, "carry", f"bucket-{bucket:05d}.parquet")

    def shards_of(self, bucket: int) -> list[str]:
        """Tonight's shards of new and changed SKUs of bucket ``bucket`` (named ``bBBBBB-sSSSSS``)."""
        prefix = f"b{bucket:05d}-"
        return [u for u in self.shards if u.rstrip("/").rsplit("/", 1)[-1].startswith(prefix)]


def night_key(
    catalog: str | Path,
    settings: Settings,
    *,
    model_version: str,
    taxonomy_version: str,
    extra: Sequence[Any] = (),
) -> str:
    """What makes two runs "the same night": same catalog (where it is, and its part files' names, sizes
    and versions: `catalog_fingerprint`), model, taxonomy, settings and carry state. A rerun after a kill
    finds the staged shards and finished shard results."""
    state = current_state(settings)
    parts = [
        str(catalog) if is_remote(catalog) else str(Path(catalog).resolve()),
        catalog_fingerprint(catalog),
        model_version,
        taxonomy_version,
        routing_fingerprint(settings),
        settings.shard_size,
        settings.incremental,
        state.meta_text() if state is not None else "",
        settings.state_buckets,
        *[str(e) for e in extra],
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


#: Rows per distinct-content shard: small enough that the score step spreads over every worker and
#: its last tasks end close together (at 2,000, a titles night's 6,327 new contents made tasks of 2,000,
#: 2,000, 2,000 and 327 on two threads, and one thread ran the third 2,000 alone for 16 of the step's
#: 51 s; benchmarks/scale.py, docs/scale.md). A task costs ~5 ms on threads, ~200 ms on Dask.
DISTINCT_SHARD_ROWS = 1_000


class DistinctContents:
    """The night's distinct contents to score (first row of each `score_keys` value), written as small
    shards: the flow scores them first, spread over the workers, so each content is embedded and scored
    once a night instead of once per shard (and two workers never encode the same text at once)."""

    def __init__(self, model: Any, work: str, folder: str = "distinct") -> None:
        self.model, self.work, self.folder = model, work, folder
        self.seen: set[str] = set()
        self.pending: list[pl.DataFrame] = []
        self.pending_rows = 0
        self.urls: list[str] = []
        self.rows = 0

    def add(self, score: pl.DataFrame) -> None:
        keys = score_keys(score, self.model).tolist()
        take: list[int] = []
        for i, k in enumerate(keys):
            if k not in self.seen:
                self.seen.add(k)
                take.append(i)
        if take:
            self.pending.append(score[take])
            self.pending_rows += len(take)
        if self.pending_rows >= DISTINCT_SHARD_ROWS:
            self.flush(full_only=True)

    def flush(self, *, full_only: bool = False) -> None:
        if not self.pending:
            return
        frame = pl.concat(self.pending)
        self.pending, self.pending_rows = [], 0
        for start in range(0, frame.height, DISTINCT_SHARD_ROWS):
            part = frame.slice(start, DISTINCT_SHARD_ROWS)
            if full_only and part.height < DISTINCT_SHARD_ROWS:
                self.pending, self.pending_rows = [part], part.height
                break
            url = storage.join(self.work, self.folder, f"part-{len(self.urls):05d}.parquet")
            storage.write_parquet(part, url)
            self.urls.append(url)
            self.rows += part.height


def remove_staged(staged: StagedNight) -> None:
    """Delete a night's staged shards, prediction parts and keys (after its state is committed)."""
    if staged.work_url != staged.local_dir:
        storage.remove_tree(staged.work_url)
    storage.remove_tree(staged.local_dir)
