"""Bad rows go to the quarantine file with row number, reason and the row verbatim; good rows flow on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import CatalogSpec, Quarantine, load_reviews, read_catalog


@pytest.fixture()
def messy_csv(tmp_path: Path, flipkart_raw_path: Path) -> tuple[Path, list[dict]]:
    """12 real rows of the Flipkart export with one problem each in rows 3, 5, 7-11 (1-based)."""
    rows = pl.read_csv(flipkart_raw_path, infer_schema=False, n_rows=12).to_dicts()
    rows[2]["uniq_id"] = "  "  # row 3: no sku_id
    rows[4]["product_name"] = ""  # row 5: no text at all
    rows[4]["description"] = " "
    rows[6]["uniq_id"] = rows[1]["uniq_id"]  # row 7: duplicate of row 2
    rows[7]["product_category_tree"] = '["Home Furnishing >> Curtains'  # row 8: broken JSON
    rows[8]["discounted_price"] = "ask us"  # row 9: bad price -> retail price used, warning
    rows[9]["product_specifications"] = '{"product_specification"=>[{"key"=>"Type"'  # row 10: broken hash
    rows[10]["image"] = '["broken.jpg"'  # row 11: broken image list
    path = tmp_path / "messy.csv"
    pl.DataFrame(rows, schema={k: pl.String for k in rows[0]}).write_csv(path)
    return path, rows


def test_bad_rows_are_quarantined_with_reasons(
    tmp_path: Path, messy_csv, specs_dir: Path, flipkart_taxonomy, real_data: Path
) -> None:
    path, rows = messy_csv
    qpath = tmp_path / "quarantine.jsonl"
    spec = CatalogSpec.from_file(specs_dir / "flipkart_raw.yaml")
    with Quarantine(qpath) as q:
        frame = read_catalog(
            path,
            spec=spec,
            taxonomy=flipkart_taxonomy,
            quarantine=q,
            images_root=real_data / "images" / "flipkart",
        )
    records = Quarantine.read(qpath)
    errors = [r for r in records if r["severity"] == "error"]
    assert [(r["row_number"], r["reason"], r["field"]) for r in errors] == [
        (3, "missing_sku_id", "sku_id"),
        (5, "no_text", "title"),
        (7, "duplicate_sku_id", "sku_id"),
        (8, "bad_category", "category_path"),
    ]
    assert q.total == 4
    assert q.counts == {"missing_sku_id": 1, "no_text": 1, "duplicate_sku_id": 1, "bad_category": 1}
    # the raw row is kept verbatim (exactly the file's text), nothing the user wrote is lost
    with open(path, newline="", encoding="utf-8") as fh:
        as_written = list(csv.DictReader(fh))
    for r in errors:
        assert r["raw"] == as_written[r["row_number"] - 1]
        assert r["file"] == str(path) and r["fix"]
    dup = errors[2]
    assert dup["sku_id"] == rows[1]["uniq_id"] and "row 2" in dup["fix"]
    assert "not a JSON list" in errors[3]["fix"]
    # the good rows still come through, in order
    assert frame["row_number"].to_list() == [1, 2, 4, 6, 9, 10, 11, 12]
    assert frame.filter(pl.col("row_number") == 2)["title"].item() == rows[1]["product_name"]
    # optional fields: nulled / kept as text, with a warning record (no raw: the row is in the output)
    warnings = {(r["row_number"], r["reason"]): r for r in records if r["severity"] == "warning"}
    assert set(warnings) == {(9, "bad_price"), (10, "bad_attributes"), (11, "bad_image")}
    assert warnings[(9, "bad_price")]["value"] == "ask us" and warnings[(9, "bad_price")]["raw"] is None
    by_row = {r["row_number"]: r for r in frame.iter_rows(named=True)}
    assert by_row[9]["price"] == float(rows[8]["retail_price"])  # falls back to the next price column
    assert by_row[10]["attributes"] == rows[9]["product_specifications"]  # kept verbatim
    assert by_row[11]["image_path"] is None
    assert q.warning_counts == {"bad_price": 1, "bad_attributes": 1, "bad_image": 1}


def test_broken_json_line(tmp_path: Path) -> None:
    lines = [
        json.dumps({"sku_id": "a", "title": "Steel water bottle"}),
        json.dumps({"sku_id": "b", "title": "Cotton bath towel"}),
        '{"sku_id": "c", "title": "Wall clock',
        "[1, 2]",
        json.dumps({"sku_id": "d", "description": "A wooden photo frame"}),
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    q = Quarantine(None)
    frame = read_catalog(tmp_path / "p.jsonl", quarantine=q)
    assert frame["sku_id"].to_list() == ["a", "b", "d"]
    assert frame["row_number"].to_list() == [1, 2, 5]
    assert [(r["row_number"], r["reason"], r["raw"]) for r in q.records] == [
        (3, "bad_json_line", lines[2]),
        (4, "bad_json_line", lines[3]),
    ]


def test_first_accepted_occurrence_wins(tmp_path: Path) -> None:
    """A bad first row does not block a later good row with the same id."""
    (tmp_path / "d.csv").write_text("sku_id,title\nX1,\nX1,Brass diya\nX1,Brass diya again\n")
    q = Quarantine(None)
    frame = read_catalog(tmp_path / "d.csv", quarantine=q)
    assert frame.select("row_number", "title").rows() == [(2, "Brass diya")]
    assert [(r["row_number"], r["reason"], r["value"]) for r in q.records] == [
        (1, "no_text", None),
        (3, "duplicate_sku_id", 2),
    ]


def test_bad_review_rows(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(
        "sku_id,review_title,review_text,rating\n"
        "S1,Great,Fits well,5\n"
        ",Orphan,No product,4\n"
        "S1,,,3\n"
        "S2,,Too small,five\n"
    )
    q = Quarantine(None)
    reviews = load_reviews(tmp_path / "r.csv", quarantine=q)
    assert reviews.rows() == [("S1", "Great. Fits well", 1, 5.0), ("S2", "Too small", 1, None)]
    assert [(r["row_number"], r["reason"], r["severity"]) for r in q.records] == [
        (2, "missing_sku_id", "error"),
        (3, "no_text", "error"),
        (4, "bad_rating", "warning"),
    ]
    assert q.records[0]["raw"] == {
        "sku_id": "",
        "review_title": "Orphan",
        "review_text": "No product",
        "rating": "4",
    }
