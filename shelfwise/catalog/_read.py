"""Streaming readers for catalog files (internal): CSV, Parquet, JSON Lines -> batches of source text.

Every reader yields :class:`SourceBatch` objects: a polars frame with *all source columns as strings*
plus :data:`ROW` (1-based data row number), and a way to get the original rows back verbatim for the
quarantine. Memory stays bounded by the batch size: CSV and Parquet go through polars' streaming engine
(``scan_* .collect_batches``), JSON Lines is read line by line.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import polars as pl

from shelfwise.catalog._parse import to_text
from shelfwise.catalog._spec import CatalogSpec
from shelfwise.errors import CatalogError

ROW = "__shelfwise_row__"

SUFFIX_FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}

_UTF8 = {"utf8", "utf-8", "utf_8", "utf8-lossy", "utf-8-sig", "utf_8_sig"}


@dataclass
class SourceBatch:
    frame: pl.DataFrame
    raw_rows: Callable[[Sequence[int]], list[dict[str, Any]]]
    #: JSON Lines only: (line number, line text, problem) for lines that are not a JSON object.
    bad_lines: list[tuple[int, str, str]] = field(default_factory=list)


def detect_format(path: str | Path, override: str | None) -> str:
    """``csv``, ``parquet`` or ``jsonl``: ``override`` (the spec's ``format``), else from the suffix."""
    if override:
        return override
    suffix = Path(str(path).split("?", 1)[0]).suffix
    fmt = SUFFIX_FORMATS.get(suffix.lower())
    if fmt is None:
        raise CatalogError(
            f"catalog {path}: cannot tell the format from the suffix {suffix!r}; "
            f"known suffixes: {', '.join(sorted(SUFFIX_FORMATS))}; fix: rename the file or set "
            "`format: csv|parquet|jsonl` in the catalog spec (--map format=csv)"
        )
    return fmt


def _stringify(frame: pl.DataFrame) -> pl.DataFrame:
    """All columns but :data:`ROW` as strings; nested values become JSON text."""
    exprs: list[pl.Series | pl.Expr] = []
    for name, dtype in frame.schema.items():
        if name == ROW or dtype == pl.String:
            continue
        if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
            values = [to_text(v) for v in frame.get_column(name).to_list()]
            exprs.append(pl.Series(name, values, dtype=pl.String))
        else:
            exprs.append(pl.col(name).cast(pl.String))
    return frame.with_columns(exprs) if exprs else frame


def _positions_getter(frame: pl.DataFrame) -> Callable[[Sequence[int]], list[dict[str, Any]]]:
    def raw_rows(positions: Sequence[int]) -> list[dict[str, Any]]:
        if not positions:
            return []
        picked = frame[list(positions)].drop(ROW)
        return picked.to_dicts()

    return raw_rows


class SourceFile:
    """One catalog file opened for streaming. Use as a context manager (it may own a temp file)."""

    def __init__(
        self,
        path: Path,
        *,
        fmt: str,
        separator: str = ",",
        encoding: str = "utf8",
        quote_char: str | None = '"',
        batch_size: int = 20_000,
        label: str | None = None,
        row_range: tuple[int, int] | None = None,
    ) -> None:
        self.path = path
        self.row_range = row_range  # Parquet only: (first row, rows), 0-based
        self.label = label or str(path)  # what messages name (a part's URL when ``path`` is its download)
        self.fmt = fmt
        self.separator = "\t" if (separator == "," and path.suffix.lower() == ".tsv") else separator
        self.encoding = encoding
        self.quote_char = quote_char
        self.batch_size = batch_size
        self._tmp: Path | None = None
        self._columns: list[str] | None = None
        self._first_jsonl: SourceBatch | None = None
        self._jsonl_iter: Iterator[SourceBatch] | None = None
        if not path.is_file():
            raise CatalogError(f"catalog {path}: file not found; fix: check the path (cwd is {Path.cwd()})")
        if path.stat().st_size == 0:
            raise CatalogError(f"catalog {path}: the file is empty; fix: export the catalog again")
        if row_range is not None and fmt != "parquet":
            raise CatalogError(
                f"catalog {self.label}: a row range is read from Parquet files only, not {fmt}; "
                "fix: read the file whole (no row range)"
            )

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    # ------------------------------------------------------------------ CSV
    def _csv_path(self) -> tuple[Path, str]:
        enc = self.encoding.lower().replace("_", "-")
        if enc in {"utf8-lossy"}:
            return self.path, "utf8-lossy"
        if enc.replace("-", "") in {e.replace("-", "").replace("_", "") for e in _UTF8}:
            return self.path, "utf8"
        if self._tmp is None:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise CatalogError(
                    f"catalog {self.label}: unknown encoding {self.encoding!r}; fix: use a Python codec name "
                    "such as utf-8, latin-1, cp1252, euc-kr (csv.encoding in the spec)"
                ) from None
            fd, name = tempfile.mkstemp(prefix="shelfwise-", suffix=".csv")
            os.close(fd)
            tmp = Path(name)
            try:
                with (
                    open(self.path, encoding=self.encoding, newline="") as src,
                    open(tmp, "w", encoding="utf-8", newline="") as dst,
                ):
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except UnicodeDecodeError as exc:
                tmp.unlink(missing_ok=True)
                raise CatalogError(
                    f"catalog {self.label}: cannot decode byte {exc.start} as {self.encoding}; "
                    "fix: set csv.encoding in the catalog spec to the file's real encoding"
                ) from None
            self._tmp = tmp
        return self._tmp, "utf8"

    def _scan_csv(self) -> pl.LazyFrame:
        path, enc = self._csv_path()
        return pl.scan_csv(
            path,
            separator=self.separator,
            quote_char=self.quote_char,
            infer_schema=False,
            empty_string_is_null=False,
            encoding=enc,  # type: ignore[arg-type]
            row_index_name=ROW,
            row_index_offset=1,
        )

    # ------------------------------------------------------------------ columns
    @property
    def columns(self) -> list[str]:
        if self._columns is None:
            try:
                if self.fmt == "csv":
                    names = self._scan_csv().collect_schema().names()
                elif self.fmt == "parquet":
                    names = pl.scan_parquet(self.path).collect_schema().names()
                elif self.fmt == "jsonl":
                    self._jsonl_iter = self._iter_jsonl()
                    self._first_jsonl = next(self._jsonl_iter, None)
                    names = [] if self._first_jsonl is None else self._first_jsonl.frame.columns
                else:
                    raise CatalogError(
                        f"catalog {self.label}: unknown format {self.fmt!r}; allowed: csv, parquet, jsonl"
                    )
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise CatalogError(
                    f"catalog {self.label}: cannot read it as {self.fmt}: {exc}; fix: check the file, or set "
                    "`format:` / `csv.separator:` / `csv.encoding:` in the catalog spec"
                ) from exc
            self._columns = [c for c in names if c != ROW]
        return self._columns

    # ------------------------------------------------------------------ batches
    def batches(self) -> Iterator[SourceBatch]:
        _ = self.columns
        if self.fmt == "jsonl":
            if self._first_jsonl is not None:
                yield self._first_jsonl
            assert self._jsonl_iter is not None
            yield from self._jsonl_iter
            return
        if self.fmt == "csv":
            lazy = self._scan_csv()
        elif self.row_range is not None:
            first, rows = self.row_range  # the file's own row numbers: the range starts at first + 1
            lazy = pl.scan_parquet(self.path).slice(first, rows).with_row_index(ROW, offset=first + 1)
        else:
            lazy = pl.scan_parquet(self.path).with_row_index(ROW, offset=1)
        try:
            for chunk in lazy.collect_batches(chunk_size=self.batch_size):
                if chunk.height == 0:
                    continue
                chunk = chunk.with_columns(pl.col(ROW).cast(pl.Int64))
                yield SourceBatch(frame=_stringify(chunk), raw_rows=_positions_getter(chunk))
        except pl.exceptions.PolarsError as exc:
            raise CatalogError(
                f"catalog {self.label}: reading failed part-way: {exc}; fix: {_read_fix(str(exc))}"
            ) from exc

    def _iter_jsonl(self) -> Iterator[SourceBatch]:
        with open(self.path, "rb") as fh:
            line_no = 0
            while True:
                records: list[dict[str, Any]] = []
                rows: list[int] = []
                bad: list[tuple[int, str, str]] = []
                for raw in fh:
                    line_no += 1
                    text = raw.decode("utf-8", errors="replace").strip()
                    if not text:
                        continue
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as exc:
                        bad.append((line_no, text, f"not valid JSON ({exc.msg} at character {exc.pos})"))
                        continue
                    if not isinstance(obj, dict):
                        bad.append((line_no, text, f"a JSON {type(obj).__name__}, not an object"))
                        continue
                    records.append(obj)
                    rows.append(line_no)
                    if len(records) >= self.batch_size:
                        break
                if not records and not bad:
                    return
                yield _jsonl_batch(records, rows, bad)
                if len(records) < self.batch_size:
                    return


def _read_fix(message: str) -> str:
    if "utf-8" in message.lower() or "utf8" in message.lower():
        return (
            "the file is not UTF-8: set `csv.encoding` in the catalog spec (e.g. --map encoding=latin-1 "
            "or cp1252)"
        )
    return (
        "repair the file (e.g. a row with the wrong number of fields or an unclosed quote) or check "
        "`csv.separator` in the spec (--map separator=;)"
    )


def _jsonl_batch(
    records: list[dict[str, Any]], rows: list[int], bad: list[tuple[int, str, str]]
) -> SourceBatch:
    names: dict[str, None] = {}
    for rec in records:
        for key in rec:
            names.setdefault(key, None)
    data: dict[str, pl.Series] = {ROW: pl.Series(ROW, rows, dtype=pl.Int64)}
    for name in names:
        data[name] = pl.Series(name, [to_text(rec.get(name)) for rec in records], dtype=pl.String)
    frame = pl.DataFrame(data) if records else pl.DataFrame({ROW: pl.Series(ROW, [], dtype=pl.Int64)})

    def raw_rows(positions: Sequence[int]) -> list[dict[str, Any]]:
        return [records[i] for i in positions]

    return SourceBatch(frame=frame, raw_rows=raw_rows, bad_lines=bad)


def open_source(
    path: Path,
    spec: CatalogSpec,
    *,
    batch_size: int,
    label: str | None = None,
    row_range: tuple[int, int] | None = None,
) -> SourceFile:
    """``path`` opened for streaming with the spec's format and CSV options (``label``: its display name;
    ``row_range``: only those rows of a Parquet file, ``(first row, rows)``, 0-based)."""
    name = label or str(path)
    return SourceFile(
        path,
        fmt=detect_format(name, spec.format.value if spec.format else None),
        separator=spec.csv.separator,
        encoding=spec.csv.encoding,
        quote_char=spec.csv.quote_char,
        batch_size=batch_size,
        label=name,
        row_range=row_range,
    )
