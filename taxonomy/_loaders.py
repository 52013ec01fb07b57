"""Readers for every taxonomy layout, format detection and load-time validation (internal)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfwise.errors import ConfigError, TaxonomyError

from ._errors import Problem
from ._text import join_path, split_path
from ._tree import Node, RawNode, Taxonomy, add_path_nodes, assemble

if TYPE_CHECKING:
    import polars as pl


class TaxonomyFormat(StrEnum):
    """The taxonomy layouts :func:`load_taxonomy` reads."""

    GOOGLE_TXT = "google-txt"  # "5181 - Luggage & Bags > Backpacks", '#' header lines
    GOOGLE_CSV = "google-csv"  # CSV with google_id, full_path columns
    SHOPIFY_TXT = "shopify-txt"  # "gid://shopify/TaxonomyCategory/lb-1 : Luggage & Bags > Backpacks"
    BESTBUY_JSON = "bestbuy-json"  # Best Buy categories.json: entries with id, name, path, subCategories
    PATHS_TXT = "paths-txt"  # one "A > B > C" path a line, no ids
    TABLE = "table"  # CSV/TSV/Parquet/JSONL with a path column (and optionally id / name columns)


_GOOGLE_LINE = re.compile(r"^(\d+)\s*-\s+(.*)$")
_SHOPIFY_LINE = re.compile(r"^(\S+)\s*:\s+(.*)$")
_LANG_RE = re.compile(r"\.([a-z]{2})(?:[-_][A-Za-z]{2})?\.(?:txt|csv|tsv|json|jsonl|ndjson|parquet|pq)$")
_ATTRIBUTE_MARKERS = ("Shopify Product Taxonomy - Attributes", "gid://shopify/TaxonomyAttribute/")
_TABLE_SUFFIXES = {".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson"}
_PATH_COLUMNS = ("full_path", "category_path", "path", "taxonomy_path", "category", "full_name")
_ID_COLUMNS = ("category_id", "google_id", "node_id", "taxonomy_id", "gid", "id")
_NAME_COLUMNS = ("category_name", "node_name", "name")


# ---------------------------------------------------------------------- public entry points
def load_taxonomy(
    path: str | os.PathLike[str],
    *,
    format: TaxonomyFormat | str | None = None,
    path_column: str | None = None,
    id_column: str | None = None,
    name_column: str | None = None,
    lang: str | None = None,
) -> Taxonomy:
    """Load and validate a taxonomy file into an immutable :class:`Taxonomy`.

    ``format`` defaults to :func:`detect_format`. ``path_column`` / ``id_column`` / ``name_column``
    apply to tables (CSV/TSV/Parquet/JSONL). ``lang`` defaults to the language code in the file name
    (``categories.ko.txt`` -> ``"ko"``, ``taxonomy.en-US.txt`` -> ``"en"``).

    Raises :class:`TaxonomyError` (or its subclass ``TaxonomyValidationError`` listing every problem,
    with line numbers and fixes, the first 20 in the message).
    """
    file = Path(path)
    if not file.is_file():
        raise TaxonomyError(
            f"taxonomy file {file} does not exist or is not a file; fix: pass the path of a taxonomy file "
            f"(Google .txt/.csv, Shopify categories .txt, Best Buy .json, one path a line, CSV/Parquet table)"
        )
    fmt = _coerce_format(format) if format is not None else detect_format(file)
    lang = lang or _lang_from_name(file.name)
    source = str(file)
    if fmt is TaxonomyFormat.GOOGLE_TXT:
        return _load_id_lines(file, source, fmt, lang, _GOOGLE_LINE, "'<numeric id> - A > B > C'")
    if fmt is TaxonomyFormat.SHOPIFY_TXT:
        return _load_id_lines(file, source, fmt, lang, _SHOPIFY_LINE, "'<gid> : A > B > C'")
    if fmt is TaxonomyFormat.PATHS_TXT:
        return _load_paths_txt(file, source, lang)
    if fmt is TaxonomyFormat.BESTBUY_JSON:
        return _load_bestbuy(file, source, lang)
    if fmt is TaxonomyFormat.GOOGLE_CSV:
        return _load_table(
            file,
            source,
            fmt,
            lang,
            path_column=path_column or "full_path",
            id_column=id_column or "google_id",
            name_column=name_column,
        )
    return _load_table(
        file, source, fmt, lang, path_column=path_column, id_column=id_column, name_column=name_column
    )


def detect_format(path: str | os.PathLike[str]) -> TaxonomyFormat:
    """Guess the layout of a taxonomy file from its suffix and first lines.

    Raises :class:`TaxonomyError` for Shopify's attribute list, which is not a category taxonomy.
    """
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix == ".json":
        return TaxonomyFormat.BESTBUY_JSON
    if suffix in {".parquet", ".pq", ".jsonl", ".ndjson"}:
        return TaxonomyFormat.TABLE
    if suffix in {".csv", ".tsv"}:
        header = _read_text(file, str(file))[:4096].splitlines()[:1]
        columns = {c.strip().strip('"').lower() for c in re.split(r"[,\t]", header[0])} if header else set()
        if {"google_id", "full_path"} <= columns:
            return TaxonomyFormat.GOOGLE_CSV
        return TaxonomyFormat.TABLE
    text = _read_text(file, str(file))
    data_lines: list[str] = []
    for line in text.split("\n")[:200]:
        stripped = line.strip()
        if any(marker in stripped for marker in _ATTRIBUTE_MARKERS):
            _raise_attribute_list(str(file))
        if stripped and not stripped.startswith("#"):
            data_lines.append(stripped)
        if len(data_lines) >= 20:
            break
    if data_lines and all(line.startswith("gid://") for line in data_lines):
        return TaxonomyFormat.SHOPIFY_TXT
    if data_lines and all(_GOOGLE_LINE.match(line) for line in data_lines):
        return TaxonomyFormat.GOOGLE_TXT
    if data_lines and all(_SHOPIFY_LINE.match(line) and " : " in line for line in data_lines):
        return TaxonomyFormat.SHOPIFY_TXT
    return TaxonomyFormat.PATHS_TXT


# ---------------------------------------------------------------------- helpers
def _coerce_format(fmt: TaxonomyFormat | str) -> TaxonomyFormat:
    try:
        return TaxonomyFormat(fmt)
    except ValueError:
        allowed = ", ".join(f.value for f in TaxonomyFormat)
        raise ConfigError(
            f"taxonomy format {fmt!r} is not known; allowed: {allowed}; fix: pass one of these or leave it "
            f"unset to auto-detect"
        ) from None


def _lang_from_name(name: str) -> str | None:
    match = _LANG_RE.search(name)
    return match.group(1) if match else None


def _raise_attribute_list(source: str) -> None:
    raise TaxonomyError(
        f"taxonomy {source} is Shopify's attribute list (gid://shopify/TaxonomyAttribute/...), not a "
        f"category taxonomy; fix: load the categories file instead, e.g. shopify_categories_2025-01.en.txt"
    )


def _read_text(file: Path, source: str) -> str:
    data = file.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TaxonomyError(
            f"taxonomy {source} line {line}: not valid UTF-8 (byte {data[exc.start]:#04x}); fix: re-save the "
            f"file as UTF-8"
        ) from None


def _lines(file: Path, source: str) -> list[str]:
    return [line.rstrip("\r") for line in _read_text(file, source).split("\n")]


def _empty(source: str, what: str) -> TaxonomyError:
    return TaxonomyError(
        f"taxonomy {source} is empty ({what}); fix: point to a file with at least one category"
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------- id + path layouts
def _load_id_lines(
    file: Path, source: str, fmt: TaxonomyFormat, lang: str | None, pattern: re.Pattern[str], layout: str
) -> Taxonomy:
    entries: list[tuple[str, str, str]] = []
    problems: list[Problem] = []
    for lineno, line in enumerate(_lines(file, source), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if any(marker in stripped for marker in _ATTRIBUTE_MARKERS):
                _raise_attribute_list(source)
            continue
        match = pattern.match(stripped)
        if match is None:
            problems.append(
                Problem(
                    f"line {lineno}",
                    f"expected {layout}, got {_short(stripped)!r}",
                    "write the line in that layout, or pass the right format= (see TaxonomyFormat)",
                )
            )
            continue
        node_id, node_path = match.group(1), match.group(2)
        if "/TaxonomyAttribute/" in node_id:
            _raise_attribute_list(source)
        entries.append((node_id, node_path, f"line {lineno}"))
    if not entries and not problems:
        raise _empty(source, "no category lines after the '#' header")
    return _from_id_paths(entries, source, fmt, lang, problems, add_hint="a line for it with its own id")


def _from_id_paths(
    entries: list[tuple[str, str, str]],
    source: str,
    fmt: TaxonomyFormat,
    lang: str | None,
    problems: list[Problem],
    *,
    add_hint: str,
) -> Taxonomy:
    """Nodes with ids and full paths: the parent is the node whose path is the path minus its last level."""
    parsed: list[tuple[str, list[str], str]] = []
    by_path: dict[str, list[str]] = {}
    for node_id, raw_path, where in entries:
        segments = split_path(raw_path)
        if not segments:
            problems.append(Problem(where, f"category {node_id!r} has an empty path", "write its full path"))
            continue
        if any(not seg for seg in segments):
            level = segments.index("") + 1
            problems.append(
                Problem(
                    where,
                    f"empty name at level {level} in path {_short(raw_path.strip())!r} of {node_id!r}",
                    "remove the doubled '>' or write the missing name",
                )
            )
            continue
        parsed.append((node_id, segments, where))
        by_path.setdefault(join_path(segments), []).append(node_id)
    raws: list[RawNode] = []
    orphans: set[str] = set()
    for node_id, segments, where in parsed:
        parent: str | None = None
        if len(segments) > 1:
            parent_path = join_path(segments[:-1])
            candidates = by_path.get(parent_path)
            if candidates and all(c in orphans for c in candidates):
                orphans.add(node_id)  # below an orphan: the orphan's line is the one to fix
                continue
            if not candidates:
                orphans.add(node_id)
                problems.append(
                    Problem(
                        where,
                        f"parent {_short(parent_path)!r} of {node_id!r} is not in the file (orphan)",
                        f"add {add_hint}, or correct the path",
                    )
                )
                continue
            # Two ids for one path (Shopify translation collisions): prefer the id this id extends.
            parent = next((c for c in candidates if node_id.startswith(c + "-")), candidates[0])
        raws.append(RawNode(node_id, segments[-1], parent, where, join_path(segments)))
    return assemble(raws, source=source, fmt=fmt.value, lang=lang, problems=problems)


# ---------------------------------------------------------------------- path-only text
def _load_paths_txt(file: Path, source: str, lang: str | None) -> Taxonomy:
    raws: list[RawNode] = []
    seen: set[str] = set()
    problems: list[Problem] = []
    listed: set[str] = set()
    for lineno, line in enumerate(_lines(file, source), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        node_id = add_path_nodes(raws, seen, problems, stripped, where=f"line {lineno}")
        if node_id is not None:
            listed.add(node_id)
    if not raws and not problems:
        raise _empty(source, "no path lines")
    return assemble(
        raws,
        source=source,
        fmt=TaxonomyFormat.PATHS_TXT.value,
        lang=lang,
        problems=problems,
        warnings=_implicit_warning(raws, listed),
    )


def _implicit_warning(raws: list[RawNode], listed: set[str]) -> list[str]:
    implied = [r for r in raws if r.id not in listed]
    if not implied:
        return []
    sample = ", ".join(repr(r.path) for r in implied[:3])
    return [f"{len(implied)} ancestor categories were not listed themselves and were added: {sample}"]


# ---------------------------------------------------------------------- tables
def _read_table(file: Path, source: str) -> Any:
    """The file as a polars frame (Parquet, JSON Lines, else CSV/TSV read as text)."""
    import polars as pl

    suffix = file.suffix.lower()
    try:
        if suffix in {".parquet", ".pq"}:
            return pl.read_parquet(file)
        if suffix in {".jsonl", ".ndjson"}:
            return pl.read_ndjson(file)
        text = _read_text(file, source)  # names the line of any non-UTF-8 byte
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
        return f"{self.unit} {i + 1 + self.offset} ({self.path_col}={_short(str(self.paths[i]), 60)!r})"


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
        raise _empty(source, "no data rows")
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
    taxonomy = _from_id_paths(
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
        raise _empty(t.source, f"column {t.path_col!r} has no values")
    warnings = _implicit_warning(raws, listed)
    if missing:
        warnings.append(f"{missing} rows have no {t.path_col!r} and were skipped")
    return assemble(raws, source=t.source, fmt=t.fmt.value, lang=t.lang, problems=problems, warnings=warnings)


def _load_table(
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


# ---------------------------------------------------------------------- Best Buy JSON
def _bestbuy_data(file: Path, source: str) -> list[Any]:
    """The file's list of category objects (a bare list, or under ``categories`` / ``subCategories``)."""
    text = _read_text(file, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(
            f"taxonomy {source} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
            f"fix: repair the JSON or pass the right format="
        ) from None
    if isinstance(data, dict):
        data = data.get("categories", data.get("subCategories"))
    if not isinstance(data, list):
        raise TaxonomyError(
            f"taxonomy {source}: expected a JSON list of category objects (or {{'categories': [...]}}); fix: "
            f"pass a Best Buy categories.json or another layout with format="
        )
    if not data:
        raise _empty(source, "the JSON list has no categories")
    return data


class _BestBuyWalk:
    """One pass over Best Buy entries: nested (``subCategories`` hold the children) or flat (each entry
    carries its ``path`` from the root). Collects nodes, ancestors named only in paths, and problems."""

    def __init__(self, flat: bool) -> None:
        self.flat = flat
        self.problems: list[Problem] = []
        self.entries: dict[str, RawNode] = {}
        self.implied: dict[str, RawNode] = {}
        self.repeats = 0
        self.stripped = 0
        self.counter = 0

    def visit(self, obj: Any, enclosing: str | None) -> None:
        self.counter += 1
        where = f"entry {self.counter}"
        if (
            not isinstance(obj, dict)
            or not isinstance(obj.get("id"), (str, int))
            or not str(obj["id"]).strip()
        ):
            self.problems.append(
                Problem(where, f"entry without an 'id': {_short(json.dumps(obj)[:200])}", "give it an id")
            )
            return
        node_id = str(obj["id"]).strip()
        where = f"entry {self.counter} (id {node_id!r})"
        name = obj.get("name")
        if isinstance(name, str) and name != name.strip():
            self.stripped += 1
        parent: str | None = enclosing
        path = obj.get("path")
        if self.flat and isinstance(path, list):
            ok, parent = self._path_parent(path, node_id, where)
            if not ok:
                return
        self._record(RawNode(node_id, name if isinstance(name, str) else "", parent, where))
        if not self.flat:
            for child in _as_list(obj.get("subCategories"), where, "subCategories", self.problems):
                self.visit(child, node_id)

    def _path_parent(self, path: list[Any], node_id: str, where: str) -> tuple[bool, str | None]:
        """Check a flat entry's ``path``, note its ancestors; (usable, parent id)."""
        ids = [str(p.get("id")) for p in path if isinstance(p, dict)]
        if len(ids) != len(path) or not ids or ids[-1] != node_id:
            problem = f"'path' does not end with the entry itself ({ids[-3:]})"
            self.problems.append(Problem(where, problem, "fix the path list"))
            return False, None
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            problem = f"'path' lists {dup!r} twice (a parent cycle)"
            self.problems.append(Problem(where, problem, "remove the repeated level"))
            return False, None
        for pos, step in enumerate(path[:-1]):
            step_id = ids[pos]
            if step_id not in self.implied:
                step_name = step.get("name")
                self.implied[step_id] = RawNode(
                    step_id,
                    step_name if isinstance(step_name, str) else "",
                    ids[pos - 1] if pos else None,
                    f"{where} 'path'",
                )
        return True, (ids[-2] if len(ids) > 1 else None)

    def _record(self, raw: RawNode) -> None:
        previous = self.entries.get(raw.id)
        if previous is None:
            self.entries[raw.id] = raw
        elif previous.name.strip() == raw.name.strip():
            self.repeats += 1  # the same category listed again (cross-listed under a second parent)
        else:
            self.problems.append(
                Problem(
                    raw.where,
                    f"duplicate id {raw.id!r} with another name {raw.name!r} (first on {previous.where} "
                    f"as {previous.name!r})",
                    "give each category its own id",
                )
            )

    def drop_unnamed_leaves(self) -> list[RawNode]:
        """Best Buy marks unpublished pages with ``"name": null``: unnamed entries no one descends from."""
        in_use = {r.parent_id for r in self.entries.values()} | {r.parent_id for r in self.implied.values()}
        unnamed = [r for r in self.entries.values() if not r.name.strip() and r.id not in in_use]
        for raw in unnamed:
            del self.entries[raw.id]
        return unnamed


def _dangling_refs(data: list[Any], known: set[str]) -> set[str]:
    """Ids a flat file names only inside ``subCategories``, with no entry of their own."""
    return {
        str(ref.get("id"))
        for item in data
        if isinstance(item, dict)
        for ref in _list_or_empty(item.get("subCategories"))
        if isinstance(ref, dict) and str(ref.get("id")) not in known
    }


def _bestbuy_warnings(
    walk: _BestBuyWalk, data: list[Any], unnamed: list[RawNode], added: list[RawNode]
) -> list[str]:
    warnings: list[str] = []
    if unnamed:
        warnings.append(
            f"{len(unnamed)} unnamed leaf entries were skipped: " + ", ".join(r.where for r in unnamed[:5])
        )
    if added:
        warnings.append(
            f"{len(added)} ancestor categories appear only inside 'path' lists and were added with the "
            f"name given there: " + ", ".join(repr(r.id) for r in added[:5])
        )
    if walk.repeats:
        warnings.append(f"{walk.repeats} entries repeat an id already listed; the first was kept")
    if walk.flat and (dangling := _dangling_refs(data, set(walk.entries) | {r.id for r in added})):
        warnings.append(
            f"{len(dangling)} ids named only in 'subCategories' have no entry of their own (no path) and "
            f"were left out: " + ", ".join(repr(i) for i in sorted(dangling)[:3])
        )
    if walk.stripped:
        warnings.append(f"{walk.stripped} names had leading/trailing spaces, which were removed")
    return warnings


def _load_bestbuy(file: Path, source: str, lang: str | None) -> Taxonomy:
    data = _bestbuy_data(file, source)
    walk = _BestBuyWalk(flat=all(isinstance(item, dict) and "path" in item for item in data))
    for item in data:
        walk.visit(item, None)
    unnamed = walk.drop_unnamed_leaves()
    added = [r for r in walk.implied.values() if r.id not in walk.entries]
    return assemble(
        list(walk.entries.values()) + added,
        source=source,
        fmt=TaxonomyFormat.BESTBUY_JSON.value,
        lang=lang,
        problems=walk.problems,
        warnings=_bestbuy_warnings(walk, data, unnamed, added),
    )


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _as_list(value: Any, where: str, key: str, problems: list[Problem]) -> list[Any]:
    """A JSON field that must be a list (or absent/null); anything else is reported, not iterated."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    problems.append(
        Problem(
            where,
            f"{key!r} is a JSON {type(value).__name__}, not a list",
            f"write {key} as a list of entries",
        )
    )
    return []
