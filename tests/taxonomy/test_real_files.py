"""Every real taxonomy file loads with the right shape (the bundled excerpt; one test on the full files)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from shelfwise.errors import TaxonomyError
from taxonomy import Taxonomy, TaxonomyFormat, detect_format, load_taxonomy, path_id

# file, detected format, node count, roots, max depth, language from the file name
REAL_FILES = [
    ("google_product_taxonomy_2019-07-10.en-US.txt", TaxonomyFormat.GOOGLE_TXT, 5582, 21, 7, "en"),
    ("google_product_taxonomy_2021-09-21.en-US.csv", TaxonomyFormat.GOOGLE_CSV, 5595, 21, 7, "en"),
    ("shopify_categories_2025-01.en.txt", TaxonomyFormat.SHOPIFY_TXT, 10595, 26, 8, "en"),
    ("shopify_categories_2025-01.ko.txt", TaxonomyFormat.SHOPIFY_TXT, 10365, 25, 8, "ko"),
    # the excerpt's 401 entries - 1 unnamed placeholder + 58 ancestors that appear only inside 'path' lists
    ("bestbuy_categories_2016.json", TaxonomyFormat.BESTBUY_JSON, 458, 15, 6, None),
    ("amazon_uk_categories.txt", TaxonomyFormat.PATHS_TXT, 367, 43, 5, None),
    ("flipkart_categories.txt", TaxonomyFormat.PATHS_TXT, 282, 7, 5, None),
    ("womens_clothing_categories.txt", TaxonomyFormat.PATHS_TXT, 26, 6, 2, None),
]


@pytest.mark.parametrize(("name", "fmt", "count", "roots", "max_depth", "lang"), REAL_FILES)
def test_real_file_loads_with_expected_shape(
    tax_dir: Path, name: str, fmt: TaxonomyFormat, count: int, roots: int, max_depth: int, lang: str | None
) -> None:
    assert detect_format(tax_dir / name) is fmt
    tax = load_taxonomy(tax_dir / name)
    assert len(tax) == count
    assert len(tax.roots()) == roots
    assert tax.max_depth == max_depth
    assert tax.lang == lang
    assert tax.format == fmt.value
    assert tax.version.startswith("sha256:") and len(tax.version) == len("sha256:") + 16
    # tree invariants a user relies on
    for node in tax:
        if node.parent_id is None:
            assert node.depth == 1 and node.path == node.name
        else:
            parent = tax.get(node.parent_id)
            assert node.depth == parent.depth + 1
            assert node.path == f"{parent.path} > {node.name}"
            assert not parent.is_leaf
    assert len(tax.leaves()) + sum(1 for n in tax if not n.is_leaf) == len(tax)


def test_line_counts_match_the_files(tax_dir: Path) -> None:
    """The node counts above are the data lines of each file (no silent drops)."""
    for name, _fmt, count, *_ in REAL_FILES[:4]:
        lines = (tax_dir / name).read_text(encoding="utf-8").splitlines()
        data = [line for line in lines if line.strip() and not line.startswith("#")]
        expected = len(data) - (1 if name.endswith(".csv") else 0)  # CSV header
        assert expected == count, name
    entries = json.loads((tax_dir / "bestbuy_categories_2016.json").read_text(encoding="utf-8"))
    assert len(entries) == 401  # the excerpt's first 400 entries + the unnamed one (tests/data/SOURCES.md)


def test_google_txt_spot_checks(tax_dir: Path) -> None:
    tax = load_taxonomy(tax_dir / "google_product_taxonomy_2019-07-10.en-US.txt")
    backpacks = tax.get("100")
    assert backpacks.path == "Luggage & Bags > Backpacks"
    assert backpacks.parent_id == "5181" and backpacks.depth == 2 and backpacks.is_leaf
    assert tax.get("5181").name == "Luggage & Bags" and not tax.get("5181").is_leaf
    assert tax.by_path("Animals & Pet Supplies > Live Animals").id == "3237"
    assert [n.id for n in tax.ancestors("499954")] == ["1", "2", "3", "7385"]
    assert tax.get("3237").parent_id == "1"


def test_google_csv_is_the_2021_release(tax_dir: Path) -> None:
    old = load_taxonomy(tax_dir / "google_product_taxonomy_2019-07-10.en-US.txt")
    new = load_taxonomy(tax_dir / "google_product_taxonomy_2021-09-21.en-US.csv")
    assert new.get("100").path == "Luggage & Bags > Backpacks"
    old_pairs = {(n.id, n.path) for n in old}
    new_pairs = {(n.id, n.path) for n in new}
    assert len(new_pairs - old_pairs) >= 13  # the 2021 release adds categories
    assert old.version != new.version


def test_shopify_spot_checks(shopify_en: Taxonomy, shopify_ko: Taxonomy) -> None:
    gid = "gid://shopify/TaxonomyCategory/lb-1"
    assert shopify_en.get(gid).path == "Luggage & Bags > Backpacks"
    assert shopify_ko.get(gid).path == "여행용 가방/가방 > 배낭"
    assert shopify_en.get(gid).parent_id == "gid://shopify/TaxonomyCategory/lb"
    assert [n.name for n in shopify_en.children(gid)][:2] == ["Hiking Backpacks", "Laptop Backpacks"]
    dog_food = shopify_en.get("gid://shopify/TaxonomyCategory/ap-2-3-3")
    assert dog_food.path == "Animals & Pet Supplies > Pet Supplies > Dog Supplies > Dog Food"
    assert dog_food.depth == 4 and not dog_food.is_leaf


def test_korean_and_english_share_gids(shopify_en: Taxonomy, shopify_ko: Taxonomy) -> None:
    en_ids, ko_ids = set(shopify_en.ids), set(shopify_ko.ids)
    shared = en_ids & ko_ids
    assert len(shared) == 10315  # the README's Korean count is the shared part
    assert len(en_ids - ko_ids) == 280 and len(ko_ids - en_ids) == 50  # ko lags: e.g. old 'Uniforms' aa-1-21
    for gid in shared:
        assert shopify_en.get(gid).depth == shopify_ko.get(gid).depth
        assert shopify_en.get(gid).parent_id == shopify_ko.get(gid).parent_id


def test_korean_duplicate_paths_keep_their_own_ids(shopify_ko: Taxonomy) -> None:
    """Two English leaves (Curtains, Drapes) share one Korean translation; both ids survive."""
    curtains = shopify_ko.get("gid://shopify/TaxonomyCategory/hg-3-74-1-1")
    drapes = shopify_ko.get("gid://shopify/TaxonomyCategory/hg-3-74-1-2")
    assert curtains.path == drapes.path
    assert shopify_ko.by_path(drapes.path).id == curtains.id  # first one wins, documented
    assert any("listed under two ids" in w for w in shopify_ko.warnings)


def test_bestbuy_tree(tax_dir: Path) -> None:
    tax = load_taxonomy(tax_dir / "bestbuy_categories_2016.json")
    gift = tax.get("abcat0010000")
    assert gift.name == "Gift Ideas" and gift.depth == 1
    # 'Kids' exists only inside other entries' path lists; it is added with that name and parent
    kids = tax.get("abcat0014000")
    assert kids.name == "Kids" and kids.parent_id == "abcat0010000"
    assert "pcmcat748300293073" not in tax  # the one entry with "name": null
    assert all(n.name == n.name.strip() and n.name for n in tax)
    joined = " | ".join(tax.warnings)
    assert "58 ancestor categories" in joined and "1 unnamed leaf" in joined
    # children named only by reference (no entry, no path) are left out, and said so
    assert "1046 ids named only in 'subCategories'" in joined and "abcat0011000" not in tax


def test_shopify_attribute_list_is_refused(tax_dir: Path) -> None:
    attributes = tax_dir / "shopify_attributes_2025-01.en.txt"
    for call in (
        lambda: detect_format(attributes),
        lambda: load_taxonomy(attributes),
        lambda: load_taxonomy(attributes, format="shopify-txt"),
    ):
        with pytest.raises(
            TaxonomyError, match="attribute list.*not a category taxonomy.*shopify_categories"
        ):
            call()


def test_mapping_table_needs_a_path_column(tax_dir: Path, shopify_en: Taxonomy) -> None:
    mapping = tax_dir / "shopify_2025-01_to_google_2021-09-21.csv"
    with pytest.raises(
        TaxonomyError, match=r"several columns.*shopify_full_path.*google_full_path.*path_column="
    ):
        load_taxonomy(mapping)
    shopify_side = load_taxonomy(mapping, path_column="shopify_full_path")
    assert shopify_side.format == "table"
    # every mapped Shopify path is a real Shopify category
    assert all(shopify_en.find_path(n.path) is not None for n in shopify_side)


def test_path_only_ids_are_stable_and_from_the_path(tax_dir: Path) -> None:
    a = load_taxonomy(tax_dir / "womens_clothing_categories.txt")
    b = load_taxonomy(tax_dir / "womens_clothing_categories.txt")
    jeans = a.by_path("Bottoms > Jeans")
    assert (
        jeans.id == path_id("Bottoms > Jeans") == path_id("Bottoms>Jeans") == path_id(" Bottoms  >  Jeans ")
    )
    assert jeans.id.startswith("p-") and jeans.parent_id == path_id("Bottoms")
    assert [n.id for n in a] == [n.id for n in b] and a.version == b.version


def test_fingerprint_stable_across_loads_and_sensitive_to_one_name(tax_dir: Path, tmp_path: Path) -> None:
    source = tax_dir / "google_product_taxonomy_2019-07-10.en-US.txt"
    first, second = load_taxonomy(source), load_taxonomy(source)
    assert first.version == second.version
    copy = tmp_path / "copy.txt"  # another file name and place: same content, same version
    copy.write_bytes(source.read_bytes())
    assert load_taxonomy(copy).version == first.version
    text = source.read_text(encoding="utf-8")
    assert text.count("> Backpacks\n") == 1
    changed = tmp_path / "changed.txt"
    changed.write_text(text.replace("> Backpacks\n", "> Rucksacks\n"), encoding="utf-8")
    assert load_taxonomy(changed).version != first.version


def test_tables_from_catalogs(real_data: Path) -> None:
    """A catalog's category_path column is a path-only taxonomy (repeats and empty rows are fine)."""
    amazon = load_taxonomy(real_data / "catalogs" / "amazon_uk.parquet")
    listed = load_taxonomy(real_data / "taxonomies" / "amazon_uk_categories.txt")
    assert 0 < len(amazon) <= len(listed)
    assert {n.id for n in amazon} <= {n.id for n in listed}
    assert any("rows have no 'category_path'" in w for w in amazon.warnings)


def test_flipkart_raw_trees_cut_to_known_categories(real_data: Path) -> None:
    """deepest_known() reproduces the published category_path from the raw '>>' trees, row for row."""
    tax = load_taxonomy(real_data / "taxonomies" / "flipkart_categories.txt")
    raw = pl.read_csv(real_data / "catalogs" / "flipkart_raw.csv", infer_schema=False)
    clean = pl.read_parquet(real_data / "catalogs" / "flipkart.parquet").select("sku_id", "category_path")
    joined = raw.select(pl.col("uniq_id").alias("sku_id"), "product_category_tree").join(
        clean, on="sku_id", how="left", maintain_order="left"
    )
    assert joined.height == raw.height and joined["category_path"].null_count() == 0
    got = [getattr(tax.deepest_known(tree), "path", None) for tree in joined["product_category_tree"]]
    assert got == joined["category_path"].to_list()
    raw = joined["product_category_tree"].to_list()
    assert raw[0].startswith('["Home Furnishing >> Curtains')


def test_to_frame(shopify_en: Taxonomy) -> None:
    frame = shopify_en.to_frame()
    assert frame.columns == ["id", "name", "parent_id", "path", "depth", "is_leaf"]
    assert frame.height == 10595
    assert frame["parent_id"].null_count() == 26
    assert frame.filter(pl.col("id") == "gid://shopify/TaxonomyCategory/lb-1")["path"].item() == (
        "Luggage & Bags > Backpacks"
    )


@pytest.mark.full_data
def test_full_shared_files_keep_their_published_shape(shared_data: Path) -> None:
    """Full-data test: the Best Buy tree and mapping table that the excerpt cuts (skips without them)."""
    tax_dir = shared_data / "taxonomies"
    bestbuy = tax_dir / "bestbuy_categories_2016.json"
    assert len(json.loads(bestbuy.read_text(encoding="utf-8"))) == 4584
    tax = load_taxonomy(bestbuy)
    # 4,584 entries - 1 unnamed placeholder + 139 ancestors that appear only inside 'path' lists
    assert (len(tax), len(tax.roots()), tax.max_depth) == (4722, 43, 6)
    joined = " | ".join(tax.warnings)
    assert "139 ancestor categories" in joined and "1990 ids named only in 'subCategories'" in joined
    shopify = load_taxonomy(tax_dir / "shopify_categories_2025-01.en.txt")
    mapped = load_taxonomy(
        tax_dir / "shopify_2025-01_to_google_2021-09-21.csv", path_column="shopify_full_path"
    )
    assert len(mapped) == 10535 and all(shopify.find_path(n.path) is not None for n in mapped)
