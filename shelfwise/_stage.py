"""Reading the catalog as canonical shards, and staging them as Parquet files for the flow's shard tasks."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from shelfwise import _storage as storage
from shelfwise._memory import trim
from shelfwise.settings import Settings

__all__ = ["StagedNight", "iter_shards", "new_run_id", "remove_staged", "stage_night", "utcnow"]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def utcnow() -> str:
    """Now in UTC, ISO 8601 to the second (the run summary's time stamps)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


_utcnow = utcnow


# --------------------------------------------------------------------------------------------------
# Catalog access
# --------------------------------------------------------------------------------------------------
def _catalog_spec(spec_path: str | Path | None, mapping: Sequence[str] | None) -> Any:
    from shelfwise.catalog import CatalogSpec, parse_mapping

    spec = CatalogSpec.from_file(spec_path) if spec_path else None
    if mapping:
        spec = parse_mapping(list(mapping), base=spec)
    return spec


def iter_shards(
    catalog: str | Path,
    *,
    settings: Settings,
    taxonomy: Any,
    quarantine: Any,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
) -> Iterator[pl.DataFrame]:
    """Stream the catalog as canonical shards; bad rows go to ``quarantine``."""
    from shelfwise.catalog import iter_catalog, load_reviews

    review_frame = load_reviews(reviews, quarantine=quarantine) if reviews else None
    yield from iter_catalog(
        catalog,
        spec=_catalog_spec(spec, mapping),
        taxonomy=taxonomy,
        reviews=review_frame,
        images_root=images_root,
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
    """What makes two runs "the same night": same catalog file (path, size, mtime), model, taxonomy,
    settings and carry state. A rerun after a kill finds the staged shards and finished shard results."""
    import hashlib
    import json

    from shelfwise._incremental import META_FILE, routing_fingerprint

    p = Path(catalog)
    st = p.stat() if p.exists() else None
    meta = settings.state_dir / META_FILE
    parts = [
        str(p.resolve()),
        st.st_size if st else 0,
        st.st_mtime_ns if st else 0,
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
    catalog: str | Path,
    *,
    settings: Settings,
    model_dir: str | Path,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
) -> StagedNight:
    """Stream the catalog into canonical shards; write the rows to score as shard files at ``work_url``.

    Rows that keep last night's prediction (see `shelfwise._incremental`) are only listed (carry/), and
    every row's ``sku_id, content_hash`` goes to keys/ for the change counts. Staging the same night
    again (a rerun after a kill) returns what the first attempt staged.
    """
    from shelfwise._incremental import plan_carry
    from shelfwise._worker import worker_resources
    from shelfwise.catalog import Quarantine

    res = worker_resources(model_dir, settings)  # the same memo the thread runner's tasks use
    key = night_key(
        catalog,
        settings,
        model_version=res.model.version,
        taxonomy_version=res.taxonomy.version,
        extra=[reviews, images_root, spec, list(mapping or [])],
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
        model_version=res.model.version,
        taxonomy_version=res.taxonomy.version,
        uses_price=bool(getattr(res.model, "use_price", False)),
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
    quarantine = Quarantine(local / "quarantine.jsonl")
    distinct = _DistinctContents(res.model, work)
    try:
        for i, shard in enumerate(
            iter_shards(
                catalog,
                settings=settings,
                taxonomy=res.taxonomy,
                quarantine=quarantine,
                reviews=reviews,
                images_root=images_root,
                spec=spec,
                mapping=mapping,
            )
        ):
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
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(staged.model_dump_json())
    tmp.replace(manifest)
    del plan, distinct
    trim()  # staging a large catalog freed a lot of heap: hand it back before the shards run
    return staged


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
        from shelfwise._scores import score_keys

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
