"""Bad taxonomy files: every problem is reported with its line and a fix, several at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shelfwise.errors import ConfigError, TaxonomyError
from taxonomy import TaxonomyValidationError, load_taxonomy

HEADER = "# Google_Product_Taxonomy_Version: 2021-09-21\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    bad = write(tmp_path, "g.txt", HEADER + "1 - Animals\n2 - Animals > Pets\n2 - Animals > Fish\n")
    with pytest.raises(TaxonomyValidationError) as info:
        load_taxonomy(bad)
    message = str(info.value)
    assert str(bad) in message
    assert (
        "line 4: duplicate id '2' for 'Animals > Fish'; it is also 'Animals > Pets' (first used on line 3)"
        in message
    )
    assert "fix: give each category its own id" in message


def test_orphan_in_id_format_is_reported(tmp_path: Path) -> None:
    bad = write(tmp_path, "g.txt", HEADER + "1 - Animals\n7 - Animals > Pets > Dogs\n")
    with pytest.raises(
        TaxonomyValidationError, match=r"line 3: parent 'Animals > Pets' of '7' is not in the file"
    ):
        load_taxonomy(bad)


def test_orphan_in_shopify_format(tmp_path: Path) -> None:
    bad = write(tmp_path, "s.txt", "gid://x/a : A\ngid://x/a-1-1 : A > B > C\n")
    with pytest.raises(TaxonomyValidationError, match=r"line 2: parent 'A > B'.*orphan.*fix: add a line"):
        load_taxonomy(bad)


def test_path_only_files_create_missing_ancestors(tmp_path: Path) -> None:
    paths = write(tmp_path, "p.txt", "Toys > Puzzles > Jigsaws\nToys > Dolls\n")
    tax = load_taxonomy(paths)
    assert [n.path for n in tax] == ["Toys", "Toys > Puzzles", "Toys > Puzzles > Jigsaws", "Toys > Dolls"]
    assert any("2 ancestor categories were not listed" in w for w in tax.warnings)


def test_empty_name_names_line_and_level(tmp_path: Path) -> None:
    bad = write(tmp_path, "p.txt", "Toys\nToys >  > Jigsaws\n")
    with pytest.raises(
        TaxonomyValidationError, match=r"line 2: empty name in path 'Toys >  > Jigsaws' \(level 2\)"
    ):
        load_taxonomy(bad)
    bad_ids = write(tmp_path, "g.txt", HEADER + "1 - Toys\n2 - Toys > \n")
    with pytest.raises(TaxonomyValidationError, match=r"line 3: empty name at level 2"):
        load_taxonomy(bad_ids)


def test_several_problems_reported_together(tmp_path: Path) -> None:
    lines = [HEADER.strip(), "1 - A"] + [f"{i} - A > X{i} > Y" for i in range(2, 40)] + ["1 - A > Z", "oops"]
    bad = write(tmp_path, "g.txt", "\n".join(lines) + "\n")
    with pytest.raises(TaxonomyValidationError) as info:
        load_taxonomy(bad)
    err = info.value
    assert len(err.problems) == 38 + 2  # 38 orphans, a duplicate id, a malformed line
    message = str(err)
    assert message.count("\n  line ") == 20 and "... and 20 more" in message
    assert any(
        p.where == "line 42" and "expected '<numeric id> - A > B > C'" in p.message for p in err.problems
    )
    assert any(p.where == "line 41" and "duplicate id '1'" in p.message for p in err.problems)


def _bestbuy(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    return write(tmp_path, "bb.json", json.dumps(entries))


def test_bestbuy_cycle_is_reported(tmp_path: Path) -> None:
    bad = _bestbuy(
        tmp_path,
        [
            {
                "id": "a",
                "name": "A",
                "path": [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}],
                "subCategories": [],
            },
            {
                "id": "b",
                "name": "B",
                "path": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
                "subCategories": [],
            },
            {"id": "c", "name": "C", "path": [{"id": "c", "name": "C"}], "subCategories": []},
        ],
    )
    with pytest.raises(TaxonomyValidationError, match=r"entry 1 \(id 'a'\): parent cycle 'a' -> 'b' -> 'a'"):
        load_taxonomy(bad)


def test_bestbuy_path_repeating_an_id_is_a_cycle(tmp_path: Path) -> None:
    bad = _bestbuy(
        tmp_path,
        [
            {
                "id": "a",
                "name": "A",
                "path": [{"id": "a", "name": "A"}, {"id": "x", "name": "X"}, {"id": "a", "name": "A"}],
            }
        ],
    )
    with pytest.raises(TaxonomyValidationError, match=r"entry 1 \(id 'a'\): 'path' lists 'a' twice"):
        load_taxonomy(bad)


def test_bestbuy_empty_name_with_children_is_an_error(tmp_path: Path) -> None:
    bad = _bestbuy(
        tmp_path,
        [
            {"id": "a", "name": " ", "path": [{"id": "a", "name": " "}]},
            {"id": "b", "name": "B", "path": [{"id": "a", "name": " "}, {"id": "b", "name": "B"}]},
        ],
    )
    with pytest.raises(TaxonomyValidationError, match=r"entry 1 \(id 'a'\): category 'a' has an empty name"):
        load_taxonomy(bad)


def test_bestbuy_nested_layout_and_repeated_nodes(tmp_path: Path) -> None:
    """Nested subCategories without 'path': the nesting gives the parent; a repeated node keeps its first
    place."""
    nested = _bestbuy(
        tmp_path,
        [
            {
                "id": "tv",
                "name": "TV",
                "subCategories": [
                    {"id": "oled", "name": "OLED TVs", "subCategories": []},
                    {"id": "mount", "name": "TV Mounts", "subCategories": []},
                ],
            },
            {"id": "acc", "name": "Accessories", "subCategories": [{"id": "mount", "name": "TV Mounts"}]},
        ],
    )
    tax = load_taxonomy(nested)
    assert tax.get("mount").path == "TV > TV Mounts"
    assert [n.id for n in tax.children("acc")] == []
    assert any("repeat an id" in w for w in tax.warnings)


def test_empty_files(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match=r"is empty \(no category lines after the '#' header\)"):
        load_taxonomy(write(tmp_path, "g.txt", HEADER), format="google-txt")
    with pytest.raises(TaxonomyError, match=r"is empty"):
        load_taxonomy(write(tmp_path, "p.txt", "\n\n"))
    with pytest.raises(TaxonomyError, match=r"is empty"):
        load_taxonomy(write(tmp_path, "e.json", "[]"))


def test_missing_file_and_bad_format_name(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_taxonomy(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match=r"'gogle-txt' is not known; allowed: google-txt, google-csv"):
        load_taxonomy(write(tmp_path, "p.txt", "A\n"), format="gogle-txt")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("Toys\nToys > Caf\xe9\n".encode("latin-1"))
    with pytest.raises(TaxonomyError, match=r"line 2: not valid UTF-8.*re-save the file as UTF-8"):
        load_taxonomy(path)


def test_broken_json_names_line(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match=r"line 2 column \d+: not valid JSON"):
        load_taxonomy(write(tmp_path, "b.json", '[{"id": "a",\n "name": }]'))


def test_table_with_ids_reports_rows(tmp_path: Path) -> None:
    bad = write(tmp_path, "t.csv", "category_id,full_path\n10,Toys\n11,Toys > Dolls\n11,Toys > Kites\n12,\n")
    with pytest.raises(TaxonomyValidationError) as info:
        load_taxonomy(bad)
    message = str(info.value)
    assert (
        "line 4 (full_path='Toys > Kites'): duplicate id '11' for 'Toys > Kites'; "
        "it is also 'Toys > Dolls' (first used on line 3" in message
    )
    assert "line 5 (full_path='None'): empty 'full_path' for id '12'" in message


def test_table_options(tmp_path: Path) -> None:
    table = write(tmp_path, "t.csv", "code,where,label\nA1,Toys,Toys\nA2,Toys > Dolls,Fashion dolls\n")
    with pytest.raises(TaxonomyError, match=r"path_column 'nope' is not a column"):
        load_taxonomy(table, path_column="nope")
    tax = load_taxonomy(table, path_column="where", id_column="code", name_column="label")
    assert tax.get("A2").name == "Fashion dolls" and tax.get("A2").path == "Toys > Dolls"
    assert tax.get("A2").parent_id == "A1"


def test_orphan_subtree_is_reported_once(tmp_path: Path) -> None:
    bad = write(tmp_path, "g.txt", HEADER + "1 - A\n7 - A > B > C\n8 - A > B > C > D\n9 - A > B > C > E\n")
    with pytest.raises(TaxonomyValidationError) as info:
        load_taxonomy(bad)
    assert [p.where for p in info.value.problems] == ["line 3"]


def test_non_utf8_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("category_id,full_path\n1,Toys\n2,Toys > Caf\xe9\n".encode("latin-1"))
    with pytest.raises(TaxonomyError, match=r"line 3: not valid UTF-8"):
        load_taxonomy(path)
