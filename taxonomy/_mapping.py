"""Mapping files between two taxonomies (internal): OLD -> NEW for a migration, or shop -> marketplace.

A mapping file is a CSV with a header row and (at least) two columns: the source node and the target
node, each given as an id or a full path (``A > B > C``). Further columns are ignored. One source may
appear on several rows (a split: the first row is the primary target); several sources may share a
target (a merge). An empty target means "deliberately removed, no target".

    source,target
    Electronics > Phones,Electronics > Mobile Phones
    gid://shopify/TaxonomyCategory/el-1,222

The Shopify -> Google file (``shopify_full_path,google_full_path``) is such a file.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from shelfwise.errors import TaxonomyError

from ._errors import Problem, TaxonomyValidationError
from ._tree import Taxonomy

__all__ = ["ExportStatus", "TaxonomyMapping", "export_targets", "load_mapping"]


@dataclass(frozen=True)
class TaxonomyMapping:
    """Resolved source-id -> target-ids pairs between two taxonomies (targets in file order).

    ``dropped`` holds source ids the file maps to nothing on purpose (an empty target cell).
    """

    source_version: str
    target_version: str
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: frozenset[str] = frozenset()
    file: str = "<memory>"

    def target(self, source_id: str) -> str | None:
        """The primary target of ``source_id`` (the first row naming it), or ``None``."""
        found = self.targets.get(source_id)
        return found[0] if found else None

    def __len__(self) -> int:
        return sum(len(v) for v in self.targets.values())

    def __contains__(self, source_id: object) -> bool:
        return source_id in self.targets


def _resolve(tax: Taxonomy, value: str) -> str | None:
    if value in tax:
        return value
    node = tax.find_path(value)
    return None if node is None else node.id


def load_mapping(path: str | os.PathLike[str], source: Taxonomy, target: Taxonomy) -> TaxonomyMapping:
    """Read a mapping CSV and resolve both columns against ``source`` and ``target``.

    Raises :class:`TaxonomyValidationError` naming every row whose source or target is not a node of
    its taxonomy (with the row number, the column and the fix), and :class:`TaxonomyError` when the file
    is missing or has fewer than two columns.
    """
    file = Path(path)
    name = str(file)
    if not file.is_file():
        raise TaxonomyError(f"mapping file {name} does not exist; fix: pass the path of a CSV mapping file")
    with file.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or len(rows[0]) < 2:
        raise TaxonomyError(
            f"mapping file {name}: needs a header row and two columns (source, target: ids or full paths); "
            f"got {rows[0] if rows else 'an empty file'}"
        )
    src_col, dst_col = rows[0][0].strip() or "column 1", rows[0][1].strip() or "column 2"
    targets: dict[str, list[str]] = {}
    dropped: set[str] = set()
    problems: list[Problem] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        src_value = row[0].strip()
        dst_value = row[1].strip() if len(row) > 1 else ""
        src_id = _resolve(source, src_value)
        if src_id is None:
            problems.append(
                Problem(
                    f"row {line}",
                    f"column {src_col!r} value {src_value!r} is not a node of {source.source}",
                    "use an id or full path of the source (old) taxonomy",
                )
            )
            continue
        if not dst_value:
            dropped.add(src_id)
            continue
        dst_id = _resolve(target, dst_value)
        if dst_id is None:
            problems.append(
                Problem(
                    f"row {line}",
                    f"column {dst_col!r} value {dst_value!r} is not a node of {target.source}",
                    "use an id or full path of the target (new) taxonomy, or leave it empty for 'no target'",
                )
            )
            continue
        bucket = targets.setdefault(src_id, [])
        if dst_id not in bucket:
            bucket.append(dst_id)
    if problems:
        raise TaxonomyValidationError(f"mapping {name}", problems)
    return TaxonomyMapping(
        source_version=source.version,
        target_version=target.version,
        targets={k: tuple(v) for k, v in targets.items()},
        dropped=frozenset(dropped - set(targets)),
        file=name,
    )


class ExportStatus(StrEnum):
    """How a node reached the other taxonomy (column ``export_mapping_status``)."""

    MAPPED = "mapped"  # the node itself is in the mapping file
    ANCESTOR = "ancestor"  # not listed: the nearest listed ancestor's target is used
    UNMAPPED = "unmapped"  # neither the node nor any ancestor is listed


def export_targets(source: Taxonomy, mapping: TaxonomyMapping) -> dict[str, tuple[str | None, ExportStatus]]:
    """``source id -> (target id, status)`` for every node of ``source``: its own primary target, else the
    nearest ancestor's (status ``ancestor``), else ``(None, unmapped)``."""
    out: dict[str, tuple[str | None, ExportStatus]] = {}
    for node in source:
        own = mapping.target(node.id)
        if own is not None:
            out[node.id] = (own, ExportStatus.MAPPED)
            continue
        found: tuple[str | None, ExportStatus] = (None, ExportStatus.UNMAPPED)
        for anc in reversed(source.ancestors(node.id)):
            t = mapping.target(anc.id)
            if t is not None:
                found = (t, ExportStatus.ANCESTOR)
                break
        out[node.id] = found
    return out
