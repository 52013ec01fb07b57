"""Reader for taxonomy tables: CSV/TSV/Parquet/JSON Lines with a path column, optionally ids and names."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfwise.errors import TaxonomyError

from ._build import add_path_nodes
from ._errors import Problem
from ._load_lines import from_id_paths, implicit_warning
from ._node import Node, RawNode
from ._source import TaxonomyFormat, empty_error, read_text, short
from ._tree import Taxonomy, assemble

if TYPE_CHECKING:
    import polars as pl

_PATH_COLUMNS = ("full_path", "category_path", "path", "taxonomy_path", "category", "full_name")
_ID_COLUMNS = ("category_id", "google_id", "node_id", "taxonomy_id", "gid", "id")
_NAME_COLUMNS = ("category_name", "node_name", "name")


def _read_table(file: Path, source: str) -> Any:
    """The file as a polars frame (Parquet, JSON Lines, else CSV/TSV read as text)."""
    import polars as pl

    suffix = file.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(file)
        if suffix in {".jsonl", ".ndjson"}:
            return pl.read_ndjson(file)
        text = read_text(file, source)  # names the line of any non-UTF-8 byte
        return pl.read_csv(
            text.encode("utf-8"), separator="\t" if suffix == ".tsv" else ",", infer_schema=False
        )
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise TaxonomyError(
            f"taxonomy {source}: cannot read it as a {suffix or 'CSV'} table ({exc}); fix: check the file "
            f"or pass format= for a non-table layout"
        ) from None


@dataclass
class _Table:
    """A taxonomy table and which columns hold the path, the id and the name."""

    source: str
    fmt: TaxonomyFormat
    lang: str | None
    path_col: str
    paths: list[str | None]
    ids: list[Any] | None
    id_col: str | None
    names: list[str | None] | None
    unit: str
    offset: int

    def where(self, i: int) -> str:
        return f"{self.unit} {i + 1 + self.offset} ({self.path_col}={short(str(self.paths[i]), 60)!r})"


def _table(
    frame: Any,
    file: Path,
    source: str,
    fmt: TaxonomyFormat,
    lang: str | None,
    columns: tuple[str | None, str | None, str | None],
) -> _Table:
    """Check the named columns (path, id, name), guess the missing ones, and read them."""
    path_column, id_column, name_column = columns
    found = list(frame.columns)
    path_col = path_column or _guess_path_column(frame, source)
    for label, col in (("path_column", path_col), ("id_column", id_column), ("name_column", name_column)):
        if col is not None and col not in found:
            raise TaxonomyError(
                f"taxonomy {source}: {label} {col!r} is not a column (columns: {found}); fix: pass one of "
                f"the listed columns"
            )
    if frame.height == 0:
        raise empty_error(source, "no data rows")
    paths = [None if v is None else str(v) for v in frame[path_col].to_list()]
    if id_column is None and path_column is None:
        candidate = next((c for c in _ID_COLUMNS if c in found), None)
        # Auto-pick an id column only for taxonomy tables (one row per path), never for catalogs.
        if candidate is not None and len({p for p in paths if p}) == sum(1 for p in paths if p):
            id_column = candidate
    if name_column is None and id_column is not None:
        name_column = next((c for c in _NAME_COLUMNS if c in found), None)
    names = (
        None if name_column is None else [None if v is None else str(v) for v in frame[name_column].to_list()]
    )
    offset, unit = (1, "line") if file.suffix.lower() in {".csv", ".tsv"} else (0, "row")
    ids = None if id_column is None else frame[id_column].to_list()
    return _Table(source, fmt, lang, path_col, paths, ids, id_column, names, unit, offset)


def _table_with_ids(t: _Table) -> Taxonomy:
    """A table with an id column: one node per row, its parent found from its path."""
    assert t.ids is not None and t.id_col is not None
    problems: list[Problem] = []
    entries: list[tuple[str, str, str]] = []
    for i, (raw_id, path) in enumerate(zip(t.ids, t.paths)):
        if raw_id is None or not str(raw_id).strip():
            problems.append(Problem(t.where(i), f"empty {t.id_col!r}", "fill in the category id"))
            continue
        if path is None or not path.strip():
            problems.append(
                Problem(t.where(i), f"empty {t.path_col!r} for id {raw_id!r}", "write the full path")
            )
            continue
        entries.append((str(raw_id).strip(), path, t.where(i)))
    taxonomy = from_id_paths(
        entries, t.source, t.fmt, t.lang, problems, add_hint="a row for it with its own id"
    )
    if t.names is None:
        return taxonomy
    named = {str(i).strip(): n for i, n in zip(t.ids, t.names) if i is not None and n}
    return Taxonomy(
        [_rename(node, named.get(node.id)) for node in taxonomy],
        source=t.source,
        format=t.fmt.value,
        lang=t.lang,
        warnings=taxonomy.warnings,
    )


def _table_of_paths(t: _Table) -> Taxonomy:
    """A table of paths only: every path's levels become nodes (ids derived from the paths)."""
    problems: list[Problem] = []
    raws: list[RawNode] = []
    seen: set[str] = set()
    listed: set[str] = set()
    missing = 0
    for i, path in enumerate(t.paths):
        if path is None or not path.strip():
            missing += 1
            continue
        leaf_name = None if t.names is None else t.names[i]
        node_id = add_path_nodes(raws, seen, problems, path, where=t.where(i), name=leaf_name)
        if node_id is not None:
            listed.add(node_id)
    if not raws and not problems:
        raise empty_error(t.source, f"column {t.path_col!r} has no values")
    warnings = implicit_warning(raws, listed)
    if missing:
        warnings.append(f"{missing} rows have no {t.path_col!r} and were skipped")
    return assemble(raws, source=t.source, fmt=t.fmt.value, lang=t.lang, problems=problems, warnings=warnings)


def load_table(
    file: Path,
    source: str,
    fmt: TaxonomyFormat,
    lang: str | None,
    *,
    path_column: str | None,
    id_column: str | None,
    name_column: str | None,
) -> Taxonomy:
    frame = _read_table(file, source)
    table = _table(frame, file, source, fmt, lang, (path_column, id_column, name_column))
    return _table_with_ids(table) if table.ids is not None else _table_of_paths(table)


def _rename(node: Node, name: str | None) -> Node:
    return node if not name or not name.strip() else replace(node, name=name.strip())


def _guess_path_column(frame: pl.DataFrame, source: str) -> str:
    columns: list[str] = list(frame.columns)
    for candidate in _PATH_COLUMNS:
        if candidate in columns:
            return candidate
    with_sep: list[str] = []
    for col in columns:
        values = [v for v in frame[col].head(200).to_list() if isinstance(v, str)]
        if values and sum(" > " in v or ">>" in v for v in values) >= max(1, len(values) // 4):
            with_sep.append(col)
    if len(with_sep) == 1:
        return with_sep[0]
    if with_sep:
        raise TaxonomyError(
            f"taxonomy {source}: several columns hold category paths ({with_sep}); fix: pass "
            f"path_column= (and id_column= if the table has ids)"
        )
    raise TaxonomyError(
        f"taxonomy {source}: no column holds category paths (columns: {columns}); fix: pass path_column= "
        f"naming the column with 'A > B > C' paths"
    )
