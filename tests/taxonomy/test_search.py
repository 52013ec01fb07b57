"""Category search in English and Korean on the real Shopify tree, and the ranking rules."""

from __future__ import annotations

import statistics
import time

import pytest

from taxonomy import Taxonomy, TaxonomyIndex, UnknownNodeError

GID = "gid://shopify/TaxonomyCategory/"


def top_ids(index: TaxonomyIndex, query: str, limit: int = 5) -> list[str]:
    return [node.id.removeprefix(GID) for node, _score in index.search(query, limit=limit)]


def test_english_queries(shopify_index: TaxonomyIndex) -> None:
    assert top_ids(shopify_index, "Backpacks")[0] == "lb-1"
    assert top_ids(shopify_index, "backpack")[0] == "lb-1"  # prefix of the name, shallowest first
    assert top_ids(shopify_index, "BACKPACKS") == top_ids(shopify_index, "backpacks")
    assert top_ids(shopify_index, "dog food")[0] == "ap-2-3-3"
    assert top_ids(shopify_index, "hiking backp")[0] == "lb-1-15"  # word prefixes
    assert top_ids(shopify_index, "Luggage & Bags > Backpacks")[0] == "lb-1"  # a full path is exact
    node, score = shopify_index.search("Backpacks")[0]
    assert node.name == "Backpacks" and score == pytest.approx(0.99)


def test_korean_queries(shopify_index: TaxonomyIndex) -> None:
    assert top_ids(shopify_index, "배낭")[0] == "lb-1"  # exact Korean name
    assert top_ids(shopify_index, "하이킹 배낭")[0] == "lb-1-15"
    assert top_ids(shopify_index, "반려견 사료")[0] == "ap-2-3-3"
    # written without the space the Korean file uses: still the exact category
    assert top_ids(shopify_index, "반려견용품")[0] == "ap-2-3"
    # Hangul substring inside a compound word: 사료 (feed) inside 생사료 (raw feed)
    assert "ap-2-4-16-8" in top_ids(shopify_index, "사료", limit=200)
    # the Korean query reaches the same node object as the English one
    ko_hit = shopify_index.search("모자", limit=1)[0].node
    assert ko_hit.name == "Hats" and ko_hit.id == GID + "aa-2-17"


def test_korean_needs_the_korean_names(shopify_en: Taxonomy, shopify_ko: Taxonomy) -> None:
    assert TaxonomyIndex(shopify_en).search("배낭") == []
    via_list = TaxonomyIndex(shopify_en, extra_names=[shopify_ko])
    assert top_ids(via_list, "배낭")[0] == "lb-1"


def test_synonyms_and_unknown_ids(shopify_en: Taxonomy) -> None:
    index = TaxonomyIndex(shopify_en, extra_names={GID + "lb-1": ["Rucksacks", "Knapsacks"]})
    assert top_ids(index, "rucksack")[0] == "lb-1"
    with pytest.raises(UnknownNodeError, match="extra_names names 1 ids not in taxonomy"):
        TaxonomyIndex(shopify_en, extra_names={"nope": "x"})


def test_ranking_tiers_and_tie_breaks() -> None:
    tax = Taxonomy.from_paths(
        [
            "Bags > Totes",
            "Bags > Bag Straps",
            "Music > Bagpipes",
            "Music > Sleeping Bag Songs",
            "Outdoor > Airbags",
            "Home > Bag",
            "Zeta",
        ]
    )
    hits = TaxonomyIndex(tax).search("bag")
    assert [(n.path, s) for n, s in hits] == [
        ("Home > Bag", 0.99),  # exact name
        ("Bags", 0.85),  # name prefix, shallowest first
        ("Music > Bagpipes", 0.84),  # name prefix, shorter name first
        ("Bags > Bag Straps", 0.84),
        ("Music > Sleeping Bag Songs", 0.69),  # a word of the name starts with it
        ("Outdoor > Airbags", 0.59),  # inside the name
        ("Bags > Totes", 0.44),  # a word of the path starts with it
    ]
    assert TaxonomyIndex(tax).search("bag", limit=2) == hits[:2]
    assert TaxonomyIndex(tax).search("   ") == [] and TaxonomyIndex(tax).search("bag", limit=0) == []
    # words may come from different levels of the path, in any order
    assert {n.path for n, _ in TaxonomyIndex(tax).search("music bag")} == {
        "Music > Bagpipes",
        "Music > Sleeping Bag Songs",
    }


def test_search_latency_loose_guard(shopify_index: TaxonomyIndex) -> None:
    """Loose guard only (median well under 100 ms); benchmarks/taxonomy_search.py measures properly."""
    queries = ["backpack", "dog food", "a", "s", "배낭", "사료", "반려동물용품", "xyzzy", "hiking backp", "e"]
    timings = []
    for _ in range(3):
        for query in queries:
            start = time.perf_counter()
            shopify_index.search(query)
            timings.append(time.perf_counter() - start)
    assert statistics.median(timings) < 0.1
