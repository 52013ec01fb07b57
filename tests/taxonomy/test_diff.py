"""Taxonomy diff and mapping files: the two real Google releases, counted independently by id."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from shelfwise.errors import TaxonomyError
from taxonomy import (
    ExportStatus,
    Taxonomy,
    TaxonomyValidationError,
    diff_taxonomies,
    export_targets,
    load_mapping,
    load_taxonomy,
)

GOOGLE_2019 = "taxonomies/google_product_taxonomy_2019-07-10.en-US.txt"
GOOGLE_2021 = "taxonomies/google_product_taxonomy_2021-09-21.en-US.csv"


def _raw_google(path: Path) -> dict[str, str]:
    """id -> path straight from the file, without the taxonomy package (the independent count)."""
    out: dict[str, str] = {}
    if path.suffix == ".csv":
        with path.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out[row["google_id"]] = row["full_path"]
    else:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                node_id, _, full = line.partition(" - ")
                out[node_id.strip()] = full.strip()
    return out


def _parent_ids(raw: dict[str, str]) -> dict[str, str | None]:
    by_path = {p: i for i, p in raw.items()}
    return {i: by_path.get(p.rpartition(" > ")[0]) if " > " in p else None for i, p in raw.items()}


def test_google_releases_diff_matches_a_plain_set_count_by_id(real_data: Path) -> None:
    old_raw, new_raw = _raw_google(real_data / GOOGLE_2019), _raw_google(real_data / GOOGLE_2021)
    old_par, new_par = _parent_ids(old_raw), _parent_ids(new_raw)
    common = old_raw.keys() & new_raw.keys()
    expected = {
        "added": new_raw.keys() - old_raw.keys(),
        "removed": old_raw.keys() - new_raw.keys(),
        "renamed": {i for i in common if old_raw[i].rpartition(" > ")[2] != new_raw[i].rpartition(" > ")[2]},
        "moved": {i for i in common if old_par[i] != new_par[i]},
    }
    d = diff_taxonomies(load_taxonomy(real_data / GOOGLE_2019), load_taxonomy(real_data / GOOGLE_2021))
    for kind, ids in expected.items():
        assert set(getattr(d, kind)) == ids, kind
    # the figures docs/taxonomy-evolution.md quotes
    assert {k: len(v) for k, v in expected.items()} == {"added": 13, "removed": 0, "renamed": 23, "moved": 0}
    assert d.counts()["old_nodes"] == len(old_raw) == 5582 and d.counts()["new_nodes"] == len(new_raw) == 5595
    assert "1093" in d.renamed and d.kind("1093") == "renamed"  # Football -> American Football
    assert d.new.get("1093").path == "Sporting Goods > Athletics > American Football"
    doc = json.loads(d.to_json())
    assert {"added", "removed", "renamed", "moved", "mapped"} <= doc.keys()
    assert doc["paths"]["old"]["1093"] == "Sporting Goods > Athletics > Football"


def _trees() -> tuple[Taxonomy, Taxonomy]:
    old = Taxonomy.from_paths(
        [
            "Home",
            "Home > Lamps",
            "Home > Rugs",
            "Home > Vases",
            "Home > Clocks",
            "Toys",
            "Toys > Kites",
            "Toys > Puzzles",
            "Toys > Dolls",
            "Toys > Games",
        ],
        source="old.txt",
    )
    new = Taxonomy.from_paths(
        [
            "Home",
            "Home > Lighting",
            "Home > Rugs",
            "Home > Decor",
            "Home > Kites",
            "Toys",
            "Toys > Puzzles & Games",
            "Toys > Figures",
            "Toys > Dolls",
        ],
        source="new.txt",
    )
    return old, new


def test_path_only_diff_uses_the_mapping_for_renames_merges_splits_and_moves(tmp_path: Path) -> None:
    old, new = _trees()
    m = tmp_path / "map.csv"
    m.write_text(
        "old,new\n"
        "Home > Lamps,Home > Lighting\n"  # rename (new id in a path-only tree)
        "Home > Vases,Home > Decor\n"  # merge: Vases and Clocks -> Decor
        "Home > Clocks,Home > Decor\n"
        "Toys > Kites,Home > Kites\n"  # move to another parent
        "Toys > Games,Toys > Puzzles & Games\n"  # split: Games -> Puzzles & Games + Figures
        "Toys > Games,Toys > Figures\n"
        "Toys > Puzzles,\n"  # deliberately no target
    )
    mapping = load_mapping(m, old, new)
    d = diff_taxonomies(old, new, mapping=mapping)
    path = {i: old.get(i).path for i in old.ids}
    kinds = {path[i]: k for i, k in d.mapped_kinds.items()}
    assert kinds == {
        "Home > Lamps": "renamed",
        "Home > Vases": "merged",
        "Home > Clocks": "merged",
        "Toys > Kites": "moved",
        "Toys > Games": "split",
    }
    assert [path[i] for i in d.unmapped] == ["Toys > Puzzles"]
    assert d.target(old.by_path("Home > Rugs").id) == old.by_path("Home > Rugs").id  # kept
    assert new.get(d.target(old.by_path("Toys > Games").id)).path == "Toys > Puzzles & Games"
    assert d.target(old.by_path("Toys > Puzzles").id) is None
    assert d.counts()["removed_without_target"] == 1 and d.counts()["split"] == 1
    html = d.to_html()
    assert "Home &gt; Lamps" in html and "Removed without a target (1)" in html


def test_a_mapping_row_naming_an_unknown_node_is_reported_with_row_column_and_fix(tmp_path: Path) -> None:
    old, new = _trees()
    m = tmp_path / "map.csv"
    m.write_text(
        "old,new\nHome > Lamps,Home > Lighting\nHome > Lampz,Home > Lighting\nHome > Vases,Home > Deco\n"
    )
    with pytest.raises(TaxonomyValidationError) as err:
        load_mapping(m, old, new)
    text = str(err.value)
    assert "row 3: column 'old' value 'Home > Lampz'" in text
    assert "row 4: column 'new' value 'Home > Deco'" in text and "fix:" in text
    with pytest.raises(TaxonomyError, match="does not exist"):
        load_mapping(tmp_path / "missing.csv", old, new)


def test_shopify_export_targets_agree_with_the_shared_mapping_file(real_data: Path) -> None:
    tax_dir = real_data / "taxonomies"
    shopify = load_taxonomy(tax_dir / "shopify_categories_2025-01.en.txt")
    google = load_taxonomy(tax_dir / GOOGLE_2021.split("/")[1])
    map_file = tax_dir / "shopify_2025-01_to_google_2021-09-21.csv"
    targets = export_targets(shopify, load_mapping(map_file, shopify, google))
    with map_file.open(encoding="utf-8") as fh:
        pairs = {r["shopify_full_path"]: r["google_full_path"] for r in csv.DictReader(fh)}
    seen = {status: 0 for status in ExportStatus}
    for node in shopify:
        target, status = targets[node.id]
        seen[status] += 1
        if node.path in pairs:
            assert status == ExportStatus.MAPPED and google.get(target).path == pairs[node.path]
            continue
        listed = [a.path for a in shopify.ancestors(node.id) if a.path in pairs]
        if listed:  # the nearest listed ancestor's target
            assert status == ExportStatus.ANCESTOR and google.get(target).path == pairs[listed[-1]]
        else:
            assert status == ExportStatus.UNMAPPED and target is None
    assert seen[ExportStatus.MAPPED] == len(pairs) and seen[ExportStatus.UNMAPPED] > 0
