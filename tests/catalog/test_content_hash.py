"""content_hash is stable and sensitive to what the product says."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.catalog import content_hash, read_catalog
from shelfwise.catalog._parse import hash_columns, hash_values

BASE: dict[str, str | None] = {
    "title": "Sathiyas Cotton Bath Towel",
    "description": "3 Bath Towel, Red, Yellow, Blue",
    "brand": "Sathiyas",
    "attributes": "Material: Cotton; GSM: 500",
    "image": "images/7b72c92c.jpg",
    "review_text": None,
}


def test_stable_and_sensitive() -> None:
    h = content_hash(**BASE)
    assert h == content_hash(**BASE) and len(h) == 64
    # whitespace and Unicode width do not count; the image's folder does not count
    assert content_hash(**{**BASE, "title": "  Sathiyas  Cotton\tBath Towel "}) == h
    assert content_hash(**{**BASE, "image": "/srv/photos/7b72c92c.jpg"}) == h
    # every content field does
    for field, value in [
        ("title", "Sathiyas Cotton Hand Towel"),
        ("description", "2 Bath Towel"),
        ("brand", "Eurospa"),
        ("attributes", "Material: Linen"),
        ("image", "images/other.jpg"),
        ("review_text", "Very soft"),
    ]:
        assert content_hash(**{**BASE, field: value}) != h, field
    # moving text between fields is a change too
    assert content_hash(title="a b", description=None) != content_hash(title="a", description="b")


def test_shards_hash_matches_function_and_changes_with_the_file(
    tmp_path: Path, flipkart_tidy: pl.DataFrame
) -> None:
    rows = flipkart_tidy.head(20).select("sku_id", "title", "description", "brand", "category_path")
    rows.write_csv(tmp_path / "a.csv")
    first = read_catalog(tmp_path / "a.csv")
    r0 = rows.row(0, named=True)
    assert first["content_hash"][0] == content_hash(
        title=r0["title"], description=r0["description"], brand=r0["brand"]
    )
    # a second night: one description edited, one category changed (category is not content)
    night2 = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.col("description") + " Now in blue.")
        .otherwise(pl.col("description")),
        pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("Watches")).otherwise(pl.col("category_path")),
    )
    night2.write_csv(tmp_path / "b.csv")
    second = read_catalog(tmp_path / "b.csv")
    changed = [i for i, (x, y) in enumerate(zip(first["content_hash"], second["content_hash"])) if x != y]
    assert changed == [3]


def _per_row(frame: pl.DataFrame, columns: tuple[str, ...]) -> list[str]:
    return [hash_values(list(r)) for r in frame.select(columns).iter_rows()]


def test_vectorised_hash_equals_the_per_row_function_on_real_catalogs(real_data: Path) -> None:
    """Staging hashes whole shards at once (`hash_columns`); a product keeps the content_hash it had
    under the per-row function, so an upgrade does not re-score an unchanged catalog."""
    for name in ("amazon_uk", "flipkart", "womens_clothing_reviews"):
        frame = pl.read_parquet(real_data / "catalogs" / f"{name}.parquet").head(3000)
        present = [c for c in ("title", "description", "brand") if c in frame.columns]
        cols = tuple(present) + tuple(
            f"_none{i}" for i in range(6 - len(present))
        )  # missing fields hash as empty
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in cols if c.startswith("_"))
        assert hash_columns(frame, cols).to_list() == _per_row(frame, cols), name


_TEXT = st.text(
    alphabet=st.sampled_from(list("ab Ⅻﬁ\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2003\u3000\u200b\u180e=é")),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(*[st.none() | _TEXT] * 6), min_size=1, max_size=8))
def test_vectorised_hash_equals_the_per_row_function_on_any_text(
    rows: list[tuple[str | None, ...]],
) -> None:
    cols = ("t", "d", "b", "a", "i", "r")
    frame = pl.DataFrame(rows, schema={c: pl.String for c in cols}, orient="row")
    assert hash_columns(frame, cols).to_list() == _per_row(frame, cols)
