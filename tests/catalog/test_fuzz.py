"""Fuzzing the catalog readers: any bytes or values give rows, quarantined rows or a CatalogError.

A crash (any other exception) fails the test with the input that caused it. Each test is bounded by the
Hypothesis profile in tests/conftest.py (50 examples, 5 s deadline each; derandomised in CI); a long
hunt: ``HYPOTHESIS_PROFILE=deep pytest tests/catalog/test_fuzz.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shelfwise.catalog import SHARD_SCHEMA, CatalogSpec, CsvOptions, Quarantine, load_reviews, read_catalog
from shelfwise.errors import CatalogError

COLUMNS = ["sku_id", "title", "description", "brand", "category_path", "attributes", "price", "image_path"]

# text a real export could hold: any unicode, with CSV/JSON-significant characters made likely
cell = st.one_of(
    st.none(),
    st.text(max_size=30),
    st.text(alphabet=',"\n\r;>[]{}=:\\ \t', max_size=12),
    st.sampled_from(
        ["", " ", "null", "NaN", "1e309", "-0", "Rs. 1,899", '["A >> B"]', '{"k"=>"v"}', "[1, 2"]
    ),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _read(path: Path, **options: Any) -> tuple[pl.DataFrame, Quarantine]:
    """Read a fuzzed file; only a CatalogError naming the file may stop it."""
    q = Quarantine(None)
    try:
        frame = read_catalog(path, quarantine=q, shard_size=7, **options)
    except CatalogError as exc:
        assert str(path) in str(exc) and "fix:" in str(exc), exc
        raise
    assert frame.schema == pl.Schema(SHARD_SCHEMA)
    assert frame["sku_id"].null_count() == 0 and frame["sku_id"].n_unique() == frame.height
    for record in q.records:
        assert record["file"] == str(path) and record["reason"] and record["fix"]
    return frame, q


def _read_or_error(path: Path, **options: Any) -> None:
    try:
        _read(path, **options)
    except CatalogError:
        pass


@given(data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet"]))
def test_random_bytes_give_rows_or_a_catalog_error(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"export{suffix}"
    path.write_bytes(data)
    _read_or_error(path)


@given(
    header=st.lists(st.sampled_from([*COLUMNS, "x", ""]), min_size=1, max_size=6),
    body=st.lists(st.lists(cell, max_size=7), max_size=8),
    separator=st.sampled_from([",", ";", "\t"]),
)
def test_csv_with_random_cells(
    tmp_path: Path, header: list[str], body: list[list[str | None]], separator: str
) -> None:
    """Hand-written CSV text (ragged rows, stray quotes, odd headers): rows, quarantine or CatalogError."""
    lines = [separator.join(header)] + [separator.join(c or "" for c in row) for row in body]
    path = tmp_path / "export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _read_or_error(path, spec=CatalogSpec(csv=CsvOptions(separator=separator)))


@given(rows=st.lists(st.fixed_dictionaries({c: cell for c in COLUMNS}), min_size=1, max_size=8))
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_every_well_formed_row_is_kept_or_quarantined(
    tmp_path: Path, rows: list[dict[str, Any]], suffix: str
) -> None:
    """A table written by a real writer: no row is lost silently, in any of the three formats."""
    frame = pl.DataFrame(rows, schema={c: pl.String for c in COLUMNS})
    path = tmp_path / f"export{suffix}"
    if suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_ndjson(path)
    spec = CatalogSpec.model_validate({"category_format": "auto", "attributes_format": "auto"})
    out, q = _read(path, spec=spec, images_root=tmp_path)
    assert out.height + q.total == frame.height
    assert q.counts.get("bad_json_line", 0) == 0
    assert out["price"].drop_nulls().is_finite().all() if out.height else True


@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"sku_id": cell, "title": cell},
            optional={
                "price": json_value,
                "attributes": json_value,
                "category_path": json_value,
                "extra": json_value,
            },
        ),
        min_size=1,
        max_size=6,
    )
)
def test_jsonl_with_nested_values(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON Lines whose cells are lists, objects, numbers or null: each line kept or quarantined."""
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out, q = _read(path)
    assert out.height + q.total == len(rows)


@given(
    price=st.lists(st.one_of(st.none(), st.floats(), st.integers(-(2**62), 2**62)), min_size=1, max_size=6),
    title=st.lists(st.one_of(st.none(), st.text(max_size=10)), min_size=6, max_size=6),
    nested=st.lists(st.one_of(st.none(), st.lists(st.text(max_size=6), max_size=3)), min_size=6, max_size=6),
)
def test_parquet_with_typed_columns(
    tmp_path: Path, price: list[float | int | None], title: list[str | None], nested: list[list[str] | None]
) -> None:
    """Parquet columns of numbers, NaN/inf and lists (not strings): read as text, never a crash."""
    n = len(price)
    frame = pl.DataFrame(
        {
            "sku_id": list(range(n)),
            "title": title[:n],
            "price": pl.Series(price, dtype=pl.Float64, strict=False),
            "category_path": pl.Series(nested[:n], dtype=pl.List(pl.String)),
        }
    )
    path = tmp_path / "export.parquet"
    frame.write_parquet(path)
    out, q = _read(path)
    assert out.height + q.total == n
    assert out["price"].drop_nulls().is_finite().all() if out.height else True


@given(body=st.lists(st.lists(cell, min_size=3, max_size=3), max_size=8))
def test_reviews_with_random_cells(tmp_path: Path, body: list[list[str | None]]) -> None:
    schema = {"sku_id": pl.String, "review_text": pl.String, "rating": pl.String}
    path = tmp_path / "reviews.csv"
    pl.DataFrame(body, schema=schema, orient="row").write_csv(path)
    q = Quarantine(None)
    try:
        agg = load_reviews(path, quarantine=q)
    except CatalogError as exc:
        assert str(path) in str(exc)
        return
    kept = int(agg["review_count"].sum()) if agg.height else 0
    assert kept + q.total == len(body)
