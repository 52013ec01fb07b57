"""Fuzzing the taxonomy loaders: any file gives a valid tree or a TaxonomyError naming the file.

A crash (any other exception) fails with the input that caused it. Bounded by the Hypothesis profile in
tests/conftest.py (50 examples, 5 s deadline each; derandomised in CI); a long hunt:
``HYPOTHESIS_PROFILE=deep pytest tests/taxonomy/test_fuzz_loaders.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from shelfwise.errors import TaxonomyError
from taxonomy import Taxonomy, detect_format, load_taxonomy

name = st.one_of(
    st.text(max_size=12),
    st.text(alphabet="> -:#\t\"',", max_size=6),
    st.sampled_from(
        ["Home", "Home & Garden", "가방", "  ", "", ">", ">>", "#", "gid://shopify/TaxonomyCategory/x"]
    ),
)
path_line = st.lists(name, min_size=1, max_size=4).map(lambda parts: " > ".join(parts))
node_id = st.one_of(st.integers(-5, 10**6).map(str), st.text(max_size=8), st.sampled_from(["1", "1-2", "a"]))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
bestbuy_entry = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(node_id, json_value),
        "name": st.one_of(name, json_value),
        "path": st.one_of(
            st.lists(st.fixed_dictionaries({"id": node_id, "name": name}), max_size=3), json_value
        ),
        "subCategories": st.one_of(
            st.lists(st.fixed_dictionaries({"id": node_id, "name": name}), max_size=3), json_value
        ),
    },
)


def _check(path: Path, **options: Any) -> None:
    """Load; either a valid tree or a TaxonomyError that names the file."""
    try:
        tax = load_taxonomy(path, **options)
    except TaxonomyError as exc:
        assert str(path) in str(exc), exc
        return
    assert isinstance(tax, Taxonomy) and len(tax) > 0
    ids = {n.id for n in tax}
    assert len(ids) == len(tax)
    for node in tax:
        assert node.name.strip() == node.name and node.name
        if node.parent_id is not None:
            parent = tax.get(node.parent_id)
            assert node.depth == parent.depth + 1 and node.path == f"{parent.path} > {node.name}"
        else:
            assert node.depth == 1
        assert tax.by_path(node.path).path == node.path


@given(
    data=st.binary(max_size=300),
    suffix=st.sampled_from([".txt", ".csv", ".tsv", ".json", ".jsonl", ".parquet"]),
)
def test_random_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"taxonomy{suffix}"
    path.write_bytes(data)
    try:
        detect_format(path)
    except TaxonomyError as exc:
        assert str(path) in str(exc)
    _check(path)


@given(lines=st.lists(path_line, max_size=10))
def test_path_lines(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "paths.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    _check(path, format="paths-txt")


@given(lines=st.lists(st.tuples(node_id, path_line), max_size=10), sep=st.sampled_from([" - ", " : "]))
def test_id_lines(tmp_path: Path, lines: list[tuple[str, str]], sep: str) -> None:
    """Google ('1 - A > B') and Shopify ('gid : A > B') layouts with random ids and paths."""
    path = tmp_path / "ids.txt"
    path.write_text("# header\n" + "\n".join(f"{i}{sep}{p}" for i, p in lines), encoding="utf-8")
    _check(path, format="google-txt" if sep == " - " else "shopify-txt")
    _check(path)


@given(data=st.one_of(st.lists(bestbuy_entry, max_size=6), json_value))
def test_bestbuy_json(tmp_path: Path, data: Any) -> None:
    path = tmp_path / "categories.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    _check(path)


@given(
    rows=st.lists(
        st.tuples(st.one_of(st.none(), node_id), st.one_of(st.none(), path_line), st.one_of(st.none(), name)),
        min_size=1,
        max_size=8,
    ),
    columns=st.sampled_from(
        [("google_id", "full_path", "name"), ("id", "category_path", "category_name"), ("x", "y", "z")]
    ),
    suffix=st.sampled_from([".csv", ".parquet", ".jsonl"]),
)
def test_tables(
    tmp_path: Path,
    rows: list[tuple[str | None, str | None, str | None]],
    columns: tuple[str, str, str],
    suffix: str,
) -> None:
    frame = pl.DataFrame(rows, schema={c: pl.String for c in columns}, orient="row")
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.write_ndjson(path)
    _check(path)
    _check(path, path_column=columns[1])
