"""Reading the catalog as canonical shards, and staging them as Parquet files for the flow's shard tasks."""

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
from shelfwise._memory import trim
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
from shelfwise.pipeline._incremental import CarryPlan, plan_carry, routing_fingerprint
from shelfwise.pipeline._resources import ModelCard, model_card
from shelfwise.settings import Settings
from shelfwise.state import PREDICTIONS_META

__all__ = [
    "CatalogSource",
    "StagedNight",
    "iter_shards",
    "new_run_id",
    "remove_staged",
    "stage_night",
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
    """A staged night: shards to score (at ``work_url``), carried SKUs and keys (local), quarantine."""

    night_key: str
    local_dir: str  # keys/ and carry/ files, the quarantine file, staged.json (main process only)
    work_url: str  # shards/ and predictions/ (every worker reads and writes here)
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

    def prediction_url(self, shard_url: str) -> str:
        return storage.join(self.work_url, "predictions", shard_url.rstrip("/").rsplit("/", 1)[-1])

    def score_url(self, distinct_url: str) -> str:
        return storage.join(self.work_url, "scores", distinct_url.rstrip("/").rsplit("/", 1)[-1])

    @property
    def key_files(self) -> list[Path]:
        return sorted((Path(self.local_dir) / "keys").glob("*.parquet"))

    @property
    def carry_files(self) -> list[Path]:
        return sorted((Path(self.local_dir) / "carry").glob("*.parquet"))


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
    meta = settings.state_dir / PREDICTIONS_META
    parts = [
        str(catalog) if is_remote(catalog) else str(Path(catalog).resolve()),
        catalog_fingerprint(catalog),
        model_version,
        taxonomy_version,
        routing_fingerprint(settings),
        settings.shard_size,
        settings.incremental,
        meta.read_text() if meta.exists() else "",
        *[str(e) for e in extra],
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def stage_night(
    catalog: CatalogSource | str | Path, *, settings: Settings, model_dir: str | Path
) -> StagedNight:
    """Stream the catalog into canonical shards; write the rows to score as shard files at ``work_url``.

    Rows that keep last night's prediction (see `shelfwise.pipeline._incremental`) are only listed
    (carry/), and every row's ``sku_id, content_hash`` goes to keys/ for the change counts. Staging the
    same night again (a rerun after a kill) returns what the first attempt staged.
    """
    source = CatalogSource.of(catalog)
    res = model_card(model_dir, settings)  # staging needs no model: scoring loads it, where it runs
    key = night_key(
        source.catalog,
        settings,
        model_version=res.version,
        taxonomy_version=res.taxonomy.version,
        extra=source.key(),
    )
    local = settings.state_dir / "work" / key
    manifest = local / "staged.json"
    if manifest.exists():
        return StagedNight.model_validate_json(manifest.read_text())
    storage.remove_tree(str(local))
    work = storage.join(settings.work_root, key) if settings.work_url else str(local)
    if settings.work_url:
        storage.remove_tree(work)
    (local / "keys").mkdir(parents=True, exist_ok=True)
    (local / "carry").mkdir(parents=True, exist_ok=True)
    plan = plan_carry(
        settings,
        model_version=res.version,
        taxonomy_version=res.taxonomy.version,
        uses_price=res.use_price,
        locked=res.locked,
    )
    staged = StagedNight(
        night_key=key,
        local_dir=str(local),
        work_url=work,
        mode=plan.mode,
        reason=plan.reason,
        previous_run_id=plan.previous_run_id,
        quarantine_path=str(local / "quarantine.jsonl"),
    )
    _stage_shards(staged, source, settings=settings, res=res, plan=plan)
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(staged.model_dump_json())
    tmp.replace(manifest)
    del plan
    trim()  # staging a large catalog freed a lot of heap: hand it back before the shards run
    return staged


def _stage_shards(
    staged: StagedNight, source: CatalogSource, *, settings: Settings, res: ModelCard, plan: CarryPlan
) -> None:
    """Write each shard's keys, carried SKUs, rows to score and distinct contents; count them."""
    local, work = Path(staged.local_dir), staged.work_url
    quarantine = Quarantine(local / "quarantine.jsonl")
    distinct = _DistinctContents(res, work)
    try:
        shards = iter_shards(source, settings=settings, taxonomy=res.taxonomy, quarantine=quarantine)
        for i, shard in enumerate(shards):
            name = f"shard-{i:05d}.parquet"
            shard.select("sku_id", "content_hash").write_parquet(local / "keys" / name)
            score, carry = plan.split(shard)
            if carry.height:
                carry.write_parquet(local / "carry" / name)
            if score.height:
                url = storage.join(work, "shards", name)
                storage.write_parquet(score, url)
                staged.shards.append(url)
                distinct.add(score)
            staged.rows += shard.height
            staged.to_score += score.height
            staged.carried += carry.height
        distinct.flush()
    finally:
        quarantine.close()
    staged.distinct_shards, staged.distinct = distinct.urls, distinct.rows
    staged.quarantined = quarantine.total
    staged.quarantine_reasons = dict(quarantine.counts)


#: Rows per distinct-content shard: small enough that the score step spreads over every worker.
DISTINCT_SHARD_ROWS = 2_000


class _DistinctContents:
    """The night's distinct contents to score (first row of each `score_keys` value), written as small
    shards: the flow scores them first, spread over the workers, so each content is embedded and scored
    once a night instead of once per shard (and two workers never encode the same text at once)."""

    def __init__(self, model: Any, work: str) -> None:
        self.model, self.work = model, work
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
            url = storage.join(self.work, "distinct", f"part-{len(self.urls):05d}.parquet")
            storage.write_parquet(part, url)
            self.urls.append(url)
            self.rows += part.height


def remove_staged(staged: StagedNight) -> None:
    """Delete a night's staged shards, prediction parts and keys (after its summary is written)."""
    if staged.work_url != staged.local_dir:
        storage.remove_tree(staged.work_url)
    storage.remove_tree(staged.local_dir)
