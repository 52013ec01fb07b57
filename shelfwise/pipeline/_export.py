"""Feed another taxonomy: add ``export_category_id/_path`` and ``export_mapping_status`` to predictions.

    shelfwise classify ... --export-taxonomy google.csv --export-mapping shopify_to_google.csv

Each prediction's category is looked up in the mapping file (source = the model's taxonomy, target =
the export taxonomy); a category the file does not list takes the target of its nearest listed
ancestor (status ``ancestor``); with none, the export columns stay empty (status ``unmapped``).
The columns are added to the predictions file in place (atomically: a temp file renamed over it).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel

from shelfwise.errors import ConfigError
from taxonomy import ExportStatus, Taxonomy, export_targets, load_mapping, load_taxonomy

__all__ = [
    "EXPORT_COLUMNS",
    "ExportRequest",
    "add_export_columns",
    "check_export_flags",
    "export_frame",
    "export_request",
]

EXPORT_COLUMNS = ("export_category_id", "export_category_path", "export_mapping_status")


def export_frame(predictions: pl.DataFrame, source: Any, target: Any, mapping: Any) -> pl.DataFrame:
    """``predictions`` with the three export columns (computed once per distinct ``category_id``)."""
    lookup = export_targets(source, mapping)
    ids = [c for c in predictions.get_column("category_id").unique().to_list() if c is not None]
    tid: dict[str, str | None] = {}
    tpath: dict[str, str | None] = {}
    status: dict[str, str] = {}
    for cid in ids:
        t, st = lookup.get(str(cid), (None, ExportStatus.UNMAPPED))
        tid[cid], tpath[cid], status[cid] = t, None if t is None else target.get(t).path, str(st)
    col = pl.col("category_id")
    out = predictions.drop([c for c in EXPORT_COLUMNS if c in predictions.columns])
    return out.with_columns(
        col.replace_strict(tid, default=None, return_dtype=pl.String).alias("export_category_id"),
        col.replace_strict(tpath, default=None, return_dtype=pl.String).alias("export_category_path"),
        col.replace_strict(status, default=str(ExportStatus.UNMAPPED), return_dtype=pl.String)
        .fill_null(str(ExportStatus.UNMAPPED))
        .alias("export_mapping_status"),
    )


def add_export_columns(
    predictions_path: str | Path, *, source: Any, export_taxonomy: str | Path, export_mapping: str | Path
) -> dict[str, int]:
    """Add the export columns to the predictions Parquet file; returns the row count per status."""
    target = load_taxonomy(export_taxonomy)
    mapping = load_mapping(export_mapping, source, target)
    path = Path(predictions_path)
    frame = export_frame(pl.read_parquet(path), source, target, mapping)
    tmp = path.with_name(f".{path.name}.export.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
    return dict(Counter(frame.get_column("export_mapping_status").to_list()))


def check_export_flags(export_taxonomy: str | Path | None, export_mapping: str | Path | None) -> bool:
    """Whether an export was asked for; raises :class:`ConfigError` when only one flag is given or a file
    is missing (checked before the night's work, not after)."""
    if export_taxonomy is None and export_mapping is None:
        return False
    if export_taxonomy is None or export_mapping is None:
        raise ConfigError(
            "--export-taxonomy and --export-mapping go together: the taxonomy to export to and the CSV "
            "mapping the model's categories to it (e.g. --export-taxonomy "
            "google_product_taxonomy_2021-09-21.en-US.csv "
            "--export-mapping shopify_2025-01_to_google_2021-09-21.csv)"
        )
    for flag, value in (("--export-taxonomy", export_taxonomy), ("--export-mapping", export_mapping)):
        if not Path(value).is_file():
            raise ConfigError(f"{flag} {value}: no such file; fix: pass an existing file")
    return True


class ExportRequest(BaseModel):
    """Tonight's predictions also in another taxonomy: that taxonomy and the mapping file to it."""

    taxonomy: str
    mapping: str

    def apply(self, predictions: pl.DataFrame, source: Taxonomy) -> pl.DataFrame:
        """``predictions`` with the export columns (source = the model's taxonomy)."""
        target = load_taxonomy(self.taxonomy)
        return export_frame(predictions, source, target, load_mapping(self.mapping, source, target))


def export_request(
    export_taxonomy: str | Path | None, export_mapping: str | Path | None
) -> ExportRequest | None:
    """The export the flags ask for (``None``: none); a `ConfigError` for one flag alone or a missing file."""
    if not check_export_flags(export_taxonomy, export_mapping):
        return None
    return ExportRequest(taxonomy=str(export_taxonomy), mapping=str(export_mapping))
