"""Reading the catalog as canonical shards, and staging them as Parquet files for the flow's shard tasks."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from shelfwise.settings import Settings

__all__ = ["iter_shards", "new_run_id", "stage_catalog"]


def new_run_id(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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



def stage_catalog(
    catalog: str | Path,
    *,
    run_dir: Path,
    settings: Settings,
    taxonomy: Any,
    reviews: str | Path | None = None,
    images_root: str | Path | None = None,
    spec: str | Path | None = None,
    mapping: Sequence[str] | None = None,
) -> tuple[list[Path], dict[str, Any]]:
    """Write the catalog as canonical shard files under ``run_dir/shards`` (quarantine alongside)."""
    from shelfwise.catalog import Quarantine

    shard_dir = run_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    quarantine = Quarantine(run_dir / "quarantine.jsonl")
    paths = []
    for i, shard in enumerate(
        iter_shards(catalog, settings=settings, taxonomy=taxonomy, quarantine=quarantine, reviews=reviews,
                    images_root=images_root, spec=spec, mapping=mapping)
    ):
        p = shard_dir / f"shard-{i:05d}.parquet"
        shard.write_parquet(p)
        paths.append(p)
    quarantine.close()
    return paths, _staging(quarantine)


def _staging(quarantine: Any) -> dict[str, Any]:
    """The quarantine figures a run summary reports."""
    return {"quarantined": quarantine.total, "quarantine_reasons": dict(quarantine.counts),
            "quarantine_path": str(quarantine.path)}

