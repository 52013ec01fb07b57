"""The Taxonomy API on real trees: lookups, structure, localized names, immutability, pickling."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from shelfwise.errors import TaxonomyError
from taxonomy import Node, Taxonomy, TaxonomyValidationError, UnknownNodeError, load_taxonomy

LB = "gid://shopify/TaxonomyCategory/lb"
LB1 = "gid://shopify/TaxonomyCategory/lb-1"


def test_get_unknown_id_is_a_keyerror_and_a_taxonomy_error(shopify_en: Taxonomy) -> None:
    with pytest.raises(KeyError) as info:
        shopify_en.get("gid://shopify/TaxonomyCategory/zz-9")
    assert isinstance(info.value, TaxonomyError)
    assert "'gid://shopify/TaxonomyCategory/zz-9' is not in taxonomy" in str(info.value)
    assert "gid://shopify/TaxonomyCategory/zz-9" not in shopify_en
    assert LB1 in shopify_en and shopify_en.get(LB1) in shopify_en


def test_path_lookups(shopify_en: Taxonomy) -> None:
    assert shopify_en.by_path("Luggage & Bags > Backpacks").id == LB1
    assert shopify_en.by_path("Luggage & Bags>Backpacks").id == LB1  # whitespace around '>' ignored
    with pytest.raises(UnknownNodeError, match="find_path"):
        shopify_en.by_path("luggage & bags > backpacks")  # by_path is case-sensitive
    assert shopify_en.find_path("  luggage & bags  >>  BACKPACKS ").id == LB1
    assert shopify_en.find_path("Luggage & Bags > Rucksacks") is None
    assert shopify_en.find_path("") is None


def test_deepest_known(shopify_en: Taxonomy) -> None:
    deep = "Luggage & Bags > Backpacks > Hiking Backpacks > Osprey Talon 22 > Blue"
    assert shopify_en.deepest_known(deep).name == "Hiking Backpacks"
    assert shopify_en.deepest_known('["Luggage & Bags >> Backpacks >> Osprey"]').id == LB1
    assert shopify_en.deepest_known("Nothing > Here") is None


def test_structure(shopify_en: Taxonomy) -> None:
    hiking = shopify_en.by_path("Luggage & Bags > Backpacks > Hiking Backpacks")
    assert [n.id for n in shopify_en.ancestors(hiking.id)] == [LB, LB1]
    assert [n.id for n in shopify_en.ancestors(hiking.id, include_self=True)][-1] == hiking.id
    assert shopify_en.ancestors(LB) == []
    assert shopify_en.parent(LB1).id == LB and shopify_en.parent(LB) is None
    assert shopify_en.ancestor_at(hiking.id, 1).id == LB
    assert shopify_en.ancestor_at(LB, 3).id == LB
    assert shopify_en.children(None) == shopify_en.roots()
    assert "Luggage & Bags" in [n.name for n in shopify_en.roots()]
    assert all(n.parent_id == LB1 for n in shopify_en.children(LB1))
    below = shopify_en.descendants(LB)
    assert below[0].id == LB1 and all(n.path.startswith("Luggage & Bags > ") for n in below)
    assert len(below) == sum(1 for n in shopify_en if n.path.startswith("Luggage & Bags > "))
    assert all(n.is_leaf for n in shopify_en.leaves()) and hiking in shopify_en.leaves()
    with pytest.raises(UnknownNodeError):
        shopify_en.children("nope")


def test_nodes_and_taxonomy_are_immutable(shopify_en: Taxonomy) -> None:
    node = shopify_en.get(LB1)
    with pytest.raises(AttributeError):
        node.name = "Rucksacks"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        shopify_en.source = "other"  # type: ignore[misc]
    kids = shopify_en.children(LB1)
    kids.clear()
    assert shopify_en.children(LB1)  # callers get copies


def test_pickle_round_trip_keeps_version_and_names(shopify_en_ko: Taxonomy) -> None:
    copy = pickle.loads(pickle.dumps(shopify_en_ko))
    assert copy.version == shopify_en_ko.version and len(copy) == len(shopify_en_ko)
    assert copy.name_in(LB1, "ko") == "배낭"


def test_localized_names(shopify_en: Taxonomy, shopify_ko: Taxonomy, shopify_en_ko: Taxonomy) -> None:
    assert shopify_en_ko.version == shopify_en.version  # names in another language do not change it
    assert shopify_en_ko.languages == ("ko",)
    assert shopify_en_ko.name_in(LB1, "ko") == "배낭"
    assert shopify_en_ko.localized_paths("ko")[LB1] == "여행용 가방/가방 > 배낭"
    assert len(shopify_en_ko.localized_names("ko")) == 10315
    assert shopify_en_ko.localized_names("en")[LB1] == "Backpacks"
    # an English-only id falls back to its English name
    assert shopify_en_ko.name_in("gid://shopify/TaxonomyCategory/aa-1-24", "ko") == "Uniforms & Workwear"
    # Korean paths resolve too
    assert shopify_en_ko.find_path("여행용 가방/가방 > 배낭").id == LB1
    assert shopify_en_ko.deepest_known("여행용 가방/가방 > 배낭 > 어떤 상품").id == LB1
    with pytest.raises(TaxonomyError, match="no names in language 'ja'"):
        shopify_en_ko.localized_names("ja")


def test_with_names_needs_shared_ids(shopify_en: Taxonomy, tax_dir: Path) -> None:
    google = load_taxonomy(tax_dir / "google_product_taxonomy_2019-07-10.en-US.txt")
    with pytest.raises(TaxonomyError, match="shares no ids"):
        shopify_en.with_names(google, lang="en-GB")
    flipkart = load_taxonomy(tax_dir / "flipkart_categories.txt")
    with pytest.raises(TaxonomyError, match="language unknown"):
        shopify_en.with_names(flipkart)


def test_from_records_and_from_paths() -> None:
    tax = Taxonomy.from_records([("2", "Dolls", "1"), ("1", "Toys", None), ("3", "Fashion Dolls", "2")])
    assert tax.get("3").path == "Toys > Dolls > Fashion Dolls" and tax.get("3").depth == 3
    assert [n.id for n in tax.leaves()] == ["3"]
    with pytest.raises(TaxonomyValidationError, match=r"record 1: parent cycle"):
        Taxonomy.from_records([("a", "A", "b"), ("b", "B", "a")])
    with pytest.raises(TaxonomyValidationError, match=r"record 2: category 'x' names parent 'missing'"):
        Taxonomy.from_records([("a", "A", None), ("x", "X", "missing")])
    paths = Taxonomy.from_paths(["Toys > Dolls", "Toys > Kites"])
    assert [n.path for n in paths] == ["Toys", "Toys > Dolls", "Toys > Kites"]
    assert isinstance(paths.get(paths.by_path("Toys").id), Node)
