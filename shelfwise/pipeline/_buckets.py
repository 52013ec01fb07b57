"""Staging a night bucket by bucket, so that no process holds the whole catalog's per-SKU state.

    plan = plan_stage(source, settings, model_dir)   main: night key, carry mode, bucket count B, parts
    read_part(task, settings)        one task per catalog part, or per range of a big Parquet part's
                                     row groups (`_reads`): canonical rows, each written into its
                                     bucket's staging folder (a stable hash of sku_id, `bucket_of`)
    stage_bucket(task, settings)     one task per bucket: the duplicate-id check across parts, the carry
                                     decision against that bucket's carry state, shards of new/changed
                                     rows, the bucket's distinct contents, keys and change counts
    staged = gather_staged(...)      main: the night's distinct contents (deduplicated across buckets,
                                     one bucket's list at a time), quarantine, counts -> staged.json

Every task is idempotent (its result is written next to its output) and takes plain data, so the flow
runs them on threads or Dask like the shard tasks; `stage_night` runs them all in this process.
Changing the bucket count between nights re-buckets the last state: each bucket task then reads every
file of the previous state and keeps its own SKUs (`previous_scan`).
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from shelfwise import storage
from shelfwise._memory import trim
from shelfwise.catalog import (
    CatalogPart,
    CatalogSpec,
    Quarantine,
    RowRange,
    catalog_parts,
    iter_catalog,
    load_reviews,
    parse_mapping,
    quarantine_duplicate,
    row_ranges,
)
from shelfwise.model_folder import load_model_taxonomy
from shelfwise.pipeline._incremental import CarryMode, CarryPlan, carry_mode, plan_carry
from shelfwise.pipeline._resources import model_card
from shelfwise.pipeline._stage import CatalogSource, DistinctContents, StagedNight, night_key
from shelfwise.settings import Settings
from shelfwise.state import STATE_HASH, StateGeneration, bucket_of, current_state

__all__ = [
    "SKUS_PER_BUCKET",
    "BucketStaged",
    "BucketTask",
    "PartStaged",
    "ReadPartTask",
    "StagePlan",
    "bucket_count",
    "gather_staged",
    "plan_stage",
    "previous_scan",
    "read_part",
    "stage_bucket",
    "stage_night",
]

#: SKUs per bucket the automatic bucket count aims at (`bucket_count`).
SKUS_PER_BUCKET = 1_000_000
_INTERNAL = ("_part", "_bucket")


class ReadPartTask(BaseModel):
    """One catalog part, or one range of a big Parquet part's row groups, to read into the buckets'
    staging folders (plain data: it travels to any worker). ``index``: the task's place in catalog order;
    ``part_index``: the part's (None: the same); ``rows``: ``(first row, rows)`` of the part, 0-based."""

    source: CatalogSource
    part: str
    index: int
    work_url: str
    buckets: int
    model_dir: str
    part_index: int | None = None
    rows: tuple[int, int] | None = None


class PartStaged(BaseModel):
    """A read part: its rows per bucket (``pieces``: staged files), rows kept and quarantined."""

    index: int
    part: str
    rows: int = 0
    pieces: dict[int, list[str]] = Field(default_factory=dict)
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    quarantine_url: str | None = None


class BucketTask(BaseModel):
    """One bucket to stage: its pieces from every part, in catalog order (plain data)."""

    bucket: int
    buckets: int
    work_url: str
    parts: list[str]  # every part's name, by index (a duplicate's record names the part that kept it)
    pieces: list[str]
    carry: CarryMode
    previous: StateGeneration | None
    model_dir: str
    use_price: bool = False


class BucketStaged(BaseModel):
    """A staged bucket: its shards to score, distinct contents, counts and quarantine."""

    bucket: int
    rows: int = 0
    to_score: int = 0
    carried: int = 0
    shards: list[str] = Field(default_factory=list)
    candidates: list[str] = Field(default_factory=list)  # the bucket's distinct contents to score
    changes: dict[str, int] = Field(default_factory=lambda: {"new": 0, "changed": 0, "unchanged": 0})
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    quarantine_url: str | None = None


class StagePlan(BaseModel):
    """What staging tonight takes: the night's key and folders, its parts, bucket count and carry mode.
    ``done``: the staged night an earlier attempt of the same night finished (then nothing runs)."""

    night_key: str
    local_dir: str
    work_url: str
    source: CatalogSource
    model_dir: str
    buckets: int
    parts: list[str]
    carry: CarryMode
    previous: StateGeneration | None = None
    use_price: bool = False
    done: StagedNight | None = None
    #: one read per part, or per row range of a big Parquet part: (part index, first row, rows)
    reads: list[tuple[int, int, int | None]] = Field(default_factory=list)

    def read_tasks(self) -> list[ReadPartTask]:
        reads = self.reads or [(i, 0, None) for i in range(len(self.parts))]
        return [
            ReadPartTask(
                source=self.source,
                part=self.parts[p],
                index=i,
                work_url=self.work_url,
                buckets=self.buckets,
                model_dir=self.model_dir,
                part_index=p,
                rows=(first, rows) if rows is not None else None,
            )
            for i, (p, first, rows) in enumerate(reads)
        ]

    def bucket_tasks(self, parts: Sequence[PartStaged]) -> list[BucketTask]:
        ordered = sorted(parts, key=lambda p: p.index)
        return [
            BucketTask(
                bucket=b,
                buckets=self.buckets,
                work_url=self.work_url,
                parts=self.parts,
                pieces=[u for p in ordered for u in p.pieces.get(b, [])],
                carry=self.carry,
                previous=self.previous,
                model_dir=self.model_dir,
                use_price=self.use_price,
            )
            for b in range(self.buckets)
        ]


def _estimate_rows(parts: Sequence[CatalogPart]) -> int:
    """Rows in the catalog, roughly: a local Parquet part's own count, else its size over 250 bytes."""
    rows = 0
    for part in parts:
        if not part.remote and part.suffix in (".parquet", ".pq"):
            try:
                rows += pq.read_metadata(part.name).num_rows
                continue
            except (OSError, ValueError):
                pass
        rows += part.size // 250
    return rows


def bucket_count(settings: Settings, parts: Sequence[CatalogPart], previous: StateGeneration | None) -> int:
    """The setting ``state_buckets``; else about one bucket per `SKUS_PER_BUCKET` SKUs of the catalog (or
    of last night's state, whichever is larger), keeping last night's count while it is within a factor
    of two of that (so a catalog that grows a little is not re-bucketed every night)."""
    if settings.state_buckets:
        return settings.state_buckets
    rows = max(_estimate_rows(parts), previous.rows if previous is not None else 0)
    wanted = max(1, math.ceil(rows / SKUS_PER_BUCKET))
    if previous is not None and not previous.legacy and wanted / 2 <= previous.buckets <= wanted * 2:
        return previous.buckets
    return wanted


def previous_scan(
    previous: StateGeneration | None, kind: str, bucket: int, buckets: int, tmp: Path
) -> pl.LazyFrame | None:
    """Bucket ``bucket`` of the last state's ``kind`` (``predictions`` | ``catalog``), lazily; remote files
    are copied under ``tmp`` first. Bucketed another way (another count, or an older version's single
    file): every file is read and this bucket's SKUs kept."""
    if previous is None:
        return None
    same = previous.buckets == buckets and previous.hash == STATE_HASH and not previous.legacy
    urls = [u for u in ([previous.file(kind, bucket)] if same else previous.files(kind)) if storage.exists(u)]
    if not urls:
        return None
    folder = tmp / f"previous-{kind}"
    frames = [pl.scan_parquet(storage.local_copy(u, folder)) for u in urls]
    scan = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    if same or buckets == 1:
        return scan
    return scan.filter(
        pl.col("sku_id").map_batches(lambda s: bucket_of(s, buckets), return_dtype=pl.UInt32) == bucket
    )


#: A row range of a big Parquet part holds at least this many shards' rows (`_reads`).
RANGE_SHARDS = 5


def _reads(parts: Sequence[CatalogPart], settings: Settings) -> list[tuple[int, int, int | None]]:
    """The read-part tasks: one per part, a big local Parquet part cut into ranges of its row groups of at
    least `RANGE_SHARDS` shards (100,000 rows at the default shard size), so several workers read it."""
    reads: list[tuple[int, int, int | None]] = []
    for i, part in enumerate(parts):
        ranges = row_ranges(part, min_rows=RANGE_SHARDS * settings.shard_size)
        reads += [(i, r.first_row, r.rows) for r in ranges] if ranges else [(i, 0, None)]
    return reads


def plan_stage(
    catalog: CatalogSource | str | Path, *, settings: Settings, model_dir: str | Path
) -> StagePlan:
    """Plan tonight's staging (main process): a rerun of a staged night gets ``done``; otherwise the
    night's folders are cleared of a killed attempt's staging."""
    source = CatalogSource.of(catalog)
    card = model_card(model_dir, settings)  # staging needs no model: scoring loads it, where it runs
    key = night_key(
        source.catalog,
        settings,
        model_version=card.version,
        taxonomy_version=card.taxonomy.version,
        extra=source.key(),
    )
    local = settings.state_dir / "work" / key
    work = storage.join(settings.work_root, key) if settings.work_url else str(local)
    manifest = local / "staged.json"
    previous = current_state(settings)
    parts = catalog_parts(source.catalog)
    plan = StagePlan(
        night_key=key,
        local_dir=str(local),
        work_url=work,
        source=source,
        model_dir=str(Path(model_dir).resolve()),
        buckets=bucket_count(settings, parts, previous),
        parts=[p.name for p in parts],
        carry=carry_mode(
            settings,
            previous,
            model_version=card.version,
            taxonomy_version=card.taxonomy.version,
            uses_price=card.use_price,
        ),
        previous=previous,
        use_price=card.use_price,
        reads=_reads(parts, settings),
    )
    if manifest.exists():
        plan.done = StagedNight.model_validate_json(manifest.read_text())
        return plan
    storage.remove_tree(str(local))
    if settings.work_url:
        storage.remove_tree(work)
    local.mkdir(parents=True, exist_ok=True)
    return plan


def _part_shards(task: ReadPartTask, settings: Settings, q: Quarantine) -> Iterator[pl.DataFrame]:
    source = task.source
    spec = CatalogSpec.from_file(source.spec) if source.spec else None
    if source.mapping:
        spec = parse_mapping(list(source.mapping), base=spec)
    # the reviews table is read by every part's task; its bad rows are quarantined by the first only
    reviews_q = q if task.index == 0 else Quarantine(None)
    reviews = load_reviews(source.reviews, quarantine=reviews_q) if source.reviews else None
    yield from iter_catalog(
        task.part,
        spec=spec,
        taxonomy=load_model_taxonomy(Path(task.model_dir)),
        reviews=reviews,
        images_root=source.images_root,
        quarantine=q,
        shard_size=settings.shard_size,
        rows=RowRange(*task.rows) if task.rows is not None else None,
    )


def read_part(task: ReadPartTask, settings: Settings) -> PartStaged:
    """Read one catalog part (the row checks and canonical columns of `shelfwise.catalog`; a ``sku_id``
    repeated inside the part is quarantined here) and write each shard's rows into their buckets'
    staging folders. Idempotent: a finished part's result is returned as it is."""
    done = storage.join(task.work_url, "staging", "parts", f"part-{task.index:05d}.json")
    if storage.exists(done):
        return PartStaged.model_validate_json(storage.read_bytes(done))
    out = PartStaged(index=task.index, part=task.part)
    with tempfile.TemporaryDirectory(prefix="shelfwise-part-") as tmp:
        qpath = Path(tmp) / "quarantine.jsonl"
        with Quarantine(qpath) as q:
            for seq, shard in enumerate(_part_shards(task, settings, q)):
                _write_pieces(task, seq, shard, out)
        out.quarantine_reasons = dict(q.counts)
        if qpath.stat().st_size:
            out.quarantine_url = storage.join(
                task.work_url, "staging", "quarantine", f"part-{task.index:05d}.jsonl"
            )
            storage.write_bytes(out.quarantine_url, qpath.read_bytes())
    storage.write_bytes(done, out.model_dump_json().encode())
    trim()
    return out


def _write_pieces(task: ReadPartTask, seq: int, shard: pl.DataFrame, out: PartStaged) -> None:
    framed = shard.with_columns(
        pl.lit(task.index if task.part_index is None else task.part_index, dtype=pl.Int32).alias("_part"),
        bucket_of(shard.get_column("sku_id"), task.buckets).alias("_bucket"),
    )
    for key, piece in framed.partition_by("_bucket", as_dict=True, include_key=False).items():
        bucket = int(key[0])
        name = f"part-{task.index:05d}-{seq:05d}.parquet"
        url = storage.join(task.work_url, "staging", f"bucket-{bucket:05d}", name)
        storage.write_parquet(piece, url)
        out.pieces.setdefault(bucket, []).append(url)
    out.rows += shard.height


def _bucket_index(pieces: Sequence[str]) -> pl.DataFrame:
    """Every row of a bucket's pieces, in catalog order: ``_piece``, ``_pos`` (row in the piece), where
    it came from (``_part``, ``row_number``) and what the carry decision needs (``sku_id``,
    ``content_hash``, ``category_path``). Read once; the pieces themselves are read one at a time."""
    columns = ["sku_id", "_part", "row_number", "content_hash", "category_path"]
    return pl.concat(
        [
            storage.read_parquet(u, columns=columns).with_columns(
                pl.lit(i, dtype=pl.Int64).alias("_piece"),
                pl.int_range(pl.len(), dtype=pl.Int64).alias("_pos"),
            )
            for i, u in enumerate(pieces)
        ]
    )


def _duplicates(index: pl.DataFrame) -> pl.DataFrame:
    """Rows whose ``sku_id`` an earlier row of the catalog (part, then row order) already used:
    ``_piece``, ``_pos`` and the part and row that kept the id."""
    index = index.select("sku_id", "_part", "row_number", "_piece", "_pos")
    index = index.filter(index.get_column("sku_id").is_duplicated()).sort(
        "_part", "row_number", "_piece", "_pos"
    )
    kept = index.unique("sku_id", keep="first", maintain_order=True).select(
        "sku_id",
        pl.col("_piece").alias("_kept_piece"),
        pl.col("_pos").alias("_kept_pos"),
        pl.col("_part").alias("_kept_part"),
        pl.col("row_number").alias("_kept_row"),
    )
    return index.join(kept, on="sku_id").filter(
        (pl.col("_piece") != pl.col("_kept_piece")) | (pl.col("_pos") != pl.col("_kept_pos"))
    )


class _Cutter:
    """Cuts a bucket's rows to score into shards of ``size`` rows, written as ``bBBBBB-sSSSSS.parquet``."""

    def __init__(self, work: str, bucket: int, size: int) -> None:
        self.work, self.bucket, self.size = work, bucket, size
        self.buffer: list[pl.DataFrame] = []
        self.buffered = 0
        self.urls: list[str] = []

    def add(self, rows: pl.DataFrame, *, last: bool = False) -> None:
        if rows.height:
            self.buffer.append(rows)
            self.buffered += rows.height
        while self.buffered >= self.size or (last and self.buffered):
            merged = pl.concat(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
            url = storage.join(self.work, "shards", f"b{self.bucket:05d}-s{len(self.urls):05d}.parquet")
            storage.write_parquet(merged.head(self.size), url)
            self.urls.append(url)
            rest = merged.slice(self.size)
            self.buffer, self.buffered = ([rest], rest.height) if rest.height else ([], 0)


def _drop_duplicates(
    piece: pl.DataFrame, dups: pl.DataFrame | None, parts: Sequence[str], q: Quarantine
) -> pl.DataFrame:
    """``piece`` without its duplicate rows, each quarantined naming the file and row that kept the id."""
    if dups is None or dups.is_empty():
        return piece
    positions = dups.get_column("_pos").to_list()
    for pos, kept_part, kept_row in dups.iter_rows():
        row = piece.row(pos, named=True)
        raw = {k: v for k, v in row.items() if k not in ("_part", "row_number", "content_hash")}
        quarantine_duplicate(
            q,
            sku_id=row["sku_id"],
            file=parts[row["_part"]],
            row_number=row["row_number"],
            kept=(parts[kept_part], kept_row),
            raw=raw,
        )
    return piece.with_row_index("_i").filter(~pl.col("_i").is_in(positions)).drop("_i")


def stage_bucket(task: BucketTask, settings: Settings) -> BucketStaged:
    """Stage one bucket: drop ``sku_id``s repeated across parts, split its rows into carried and to score
    against the bucket's carry state, write its shards, keys, carried ids and distinct contents, and count
    its new, changed and unchanged SKUs against the bucket's catalog state. Idempotent."""
    done = storage.join(task.work_url, "staging", "buckets", f"bucket-{task.bucket:05d}.json")
    if storage.exists(done):
        return BucketStaged.model_validate_json(storage.read_bytes(done))
    out = BucketStaged(bucket=task.bucket)
    with tempfile.TemporaryDirectory(prefix="shelfwise-bucket-") as tmp:
        locked = model_card(task.model_dir, settings).locked if task.carry.mode == "incremental" else {}
        previous = previous_scan(task.previous, "predictions", task.bucket, task.buckets, Path(tmp))
        plan = plan_carry(task.carry, previous, locked)
        qpath = Path(tmp) / "quarantine.jsonl"
        with Quarantine(qpath) as q:
            keys, carried = _split_pieces(task, plan, q, out, settings)
        out.quarantine_reasons = dict(q.counts)
        if qpath.stat().st_size:
            out.quarantine_url = storage.join(
                task.work_url, "staging", "quarantine", f"bucket-{task.bucket:05d}.jsonl"
            )
            storage.write_bytes(out.quarantine_url, qpath.read_bytes())
        url = storage.join(task.work_url, "keys", f"bucket-{task.bucket:05d}.parquet")
        storage.write_parquet(keys, url)
        if carried.height:
            storage.write_parquet(
                carried, storage.join(task.work_url, "carry", f"bucket-{task.bucket:05d}.parquet")
            )
        out.changes = _change_counts(
            keys, previous_scan(task.previous, "catalog", task.bucket, task.buckets, Path(tmp))
        )
    storage.write_bytes(done, out.model_dump_json().encode())
    del keys, carried, plan
    trim()
    return out


def _split_pieces(
    task: BucketTask, plan: CarryPlan, q: Quarantine, out: BucketStaged, settings: Settings
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The bucket's rows, in catalog order: duplicates dropped, then carried or cut into shards. The carry
    decision is one join for the whole bucket (`CarryPlan.carries`); then each piece is read in turn."""
    cutter = _Cutter(task.work_url, task.bucket, settings.shard_size)
    distinct = DistinctContents(
        SimpleNamespace(use_price=task.use_price),
        task.work_url,
        folder=f"candidates/bucket-{task.bucket:05d}",
    )
    empty_keys = pl.DataFrame(schema={"sku_id": pl.String, "content_hash": pl.String})
    if not task.pieces:
        cutter.add(pl.DataFrame(), last=True)
        return empty_keys, pl.DataFrame(schema={"sku_id": pl.String})
    index = _bucket_index(task.pieces)
    dups = _duplicates(index)
    if not dups.is_empty():
        index = index.join(dups.select("_piece", "_pos"), on=["_piece", "_pos"], how="anti")
        index = index.sort("_piece", "_pos")
    index = index.with_columns(plan.carries(index)).select("sku_id", "content_hash", "_piece", "carried")
    by_piece = {
        int(k[0]): f.select("_pos", "_kept_part", "_kept_row")
        for k, f in dups.partition_by("_piece", as_dict=True).items()
    }
    sizes = dict(index.group_by("_piece").len().iter_rows())
    start = 0
    for i, url in enumerate(task.pieces):
        piece = _drop_duplicates(storage.read_parquet(url), by_piece.get(i), task.parts, q).drop("_part")
        n = sizes.get(i, 0)
        if piece.height != n:  # the index and the piece must agree row for row
            raise RuntimeError(f"staging piece {url}: {piece.height} rows, its index says {n}")
        carried = index.get_column("carried").slice(start, n)
        start += n
        score = piece.filter(~carried)
        cutter.add(score)
        distinct.add(score)
        out.to_score += score.height
    cutter.add(pl.DataFrame(), last=True)
    distinct.flush()
    out.shards, out.candidates = cutter.urls, distinct.urls
    out.rows = index.height
    carry = index.filter(pl.col("carried")).select("sku_id")
    out.carried = carry.height
    return index.select("sku_id", "content_hash"), carry


def _change_counts(keys: pl.DataFrame, previous: pl.LazyFrame | None) -> dict[str, int]:
    """Tonight's SKUs of one bucket that are new, changed (another content hash) or unchanged."""
    if previous is None or keys.is_empty():
        return {"new": keys.height, "changed": 0, "unchanged": 0}
    prev = previous.select("sku_id", pl.col("content_hash").alias("_prev"))
    j = (
        keys.lazy()
        .join(prev, on="sku_id", how="left")
        .select(
            pl.len().alias("n"),
            pl.col("_prev").is_null().sum().alias("new"),
            (pl.col("_prev") == pl.col("content_hash")).sum().alias("unchanged"),
        )
        .collect()
        .row(0, named=True)
    )
    return {
        "new": int(j["new"]),
        "changed": int(j["n"] - j["new"] - j["unchanged"]),
        "unchanged": int(j["unchanged"]),
    }


def gather_staged(
    plan: StagePlan, parts: Sequence[PartStaged], buckets: Sequence[BucketStaged], settings: Settings
) -> StagedNight:
    """The staged night from its tasks' results (main process): tonight's distinct contents to score,
    deduplicated across buckets one bucket's list at a time; the quarantine in one file; staged.json."""
    local = Path(plan.local_dir)
    staged = StagedNight(
        night_key=plan.night_key,
        local_dir=plan.local_dir,
        work_url=plan.work_url,
        buckets=plan.buckets,
        mode=plan.carry.mode,
        reason=plan.carry.reason,
        previous_run_id=plan.carry.previous_run_id,
        previous=plan.previous,
        quarantine_path=str(local / "quarantine.jsonl"),
    )
    ordered = sorted(buckets, key=lambda b: b.bucket)
    distinct = DistinctContents(SimpleNamespace(use_price=plan.use_price), plan.work_url)
    changes: Counter[str] = Counter()
    for b in ordered:
        staged.shards += b.shards
        staged.rows += b.rows
        staged.to_score += b.to_score
        staged.carried += b.carried
        changes.update(b.changes)
        for url in b.candidates:
            distinct.add(storage.read_parquet(url))
    distinct.flush()
    staged.distinct_shards, staged.distinct = distinct.urls, distinct.rows
    staged.changes = {k: int(changes.get(k, 0)) for k in ("new", "changed", "unchanged")}
    _gather_quarantine(staged, sorted(parts, key=lambda p: p.index), ordered)
    storage.remove_tree(storage.join(plan.work_url, "staging"))
    storage.remove_tree(storage.join(plan.work_url, "candidates"))
    local.mkdir(parents=True, exist_ok=True)
    manifest = local / "staged.json"
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(staged.model_dump_json())
    tmp.replace(manifest)
    trim()
    return staged


def _gather_quarantine(
    staged: StagedNight, parts: Sequence[PartStaged], buckets: Sequence[BucketStaged]
) -> None:
    reasons: Counter[str] = Counter()
    results: list[PartStaged | BucketStaged] = [*parts, *buckets]
    with open(staged.quarantine_path, "wb") as fh:
        for result in results:
            reasons.update(result.quarantine_reasons)
            if result.quarantine_url:
                fh.write(storage.read_bytes(result.quarantine_url))
    staged.quarantine_reasons = dict(reasons)
    staged.quarantined = sum(reasons.values())


def stage_night(
    catalog: CatalogSource | str | Path, *, settings: Settings, model_dir: str | Path
) -> StagedNight:
    """Stage tonight's catalog with every task in this process (``shelfwise classify``, tests)."""
    plan = plan_stage(catalog, settings=settings, model_dir=model_dir)
    if plan.done is not None:
        return plan.done
    parts = [read_part(t, settings) for t in plan.read_tasks()]
    buckets = [stage_bucket(t, settings) for t in plan.bucket_tasks(parts)]
    return gather_staged(plan, parts, buckets, settings)
