"""Rebuild the bundled test excerpt (tests/data/) from the shared data folder, reproducibly.

    python tests/data/make_excerpt.py [--shared ../shared/data] [--out tests/data]

The excerpt keeps the shared folder's layout (catalogs/, taxonomies/, images/flipkart/) so a test reads
``real_data / "catalogs" / "flipkart.parquet"`` whether ``real_data`` is this folder or the full one.
What is copied whole and what is cut is listed in SOURCES.md next to this script. Everything is
deterministic: running it twice gives the same files (same Pillow version assumed for the JPEGs).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# Copied byte for byte (small enough, and tests rely on their full published shape).
WHOLE = [
    "catalogs/amazon_uk.parquet",
    "catalogs/flipkart.parquet",
    "taxonomies/amazon_uk_categories.txt",
    "taxonomies/flipkart_categories.txt",
    "taxonomies/womens_clothing_categories.txt",
    "taxonomies/google_product_taxonomy_2019-07-10.en-US.txt",
    "taxonomies/google_product_taxonomy_2021-09-21.en-US.csv",
    "taxonomies/shopify_categories_2025-01.en.txt",
    "taxonomies/shopify_categories_2025-01.ko.txt",
]
RAW_ROWS = 200  # first data records of flipkart_raw.csv (byte for byte), plus the 3 without a photo
REVIEW_SKUS = 150  # all reviews of the first 150 products (file order) with at most MAX_REVIEWS reviews
MAX_REVIEWS = 25
ATTRIBUTE_LINES = 200  # first data lines of the Shopify attribute list
MAPPING_ROWS = 1000  # first rows of the Shopify -> Google mapping table
BESTBUY_ENTRIES = 400  # first entries of the Best Buy tree, plus its one unnamed entry
IMAGE_SIDE = 128  # same thumbnails as data/sample/make_sample.py (identical bytes: git stores them once)
# kept as published (256 px): an image test enlarges the first analog-watch photo 24x past 20 megapixels
FULL_SIZE_TITLE = "(?i)analog watch"


def _csv_records(path: Path) -> Iterator[str]:
    """The file's CSV records as their exact source text (quoted fields may span lines)."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = handle.readlines()
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed += 1
            yield line

    reader = csv.reader(feed())
    start = 0
    for _record in reader:
        yield "".join(lines[start:consumed])
        start = consumed


def _head_lines(src: Path, dst: Path, n_data: int) -> None:
    """Comment/header lines plus the first n_data data lines."""
    out: list[str] = []
    taken = 0
    for line in src.read_text(encoding="utf-8").splitlines(keepends=True):
        if line.startswith("#") or not line.strip() or not out:
            out.append(line)
            continue
        if taken < n_data:
            out.append(line)
            taken += 1
    dst.write_text("".join(out), encoding="utf-8")


def _thumbnail(src: Path, dst: Path) -> None:
    with Image.open(src) as img:
        img = img.convert("RGB")
        img.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
        img.save(dst, format="JPEG", quality=80, optimize=True)


def build(shared: Path, out: Path) -> None:
    for rel in WHOLE:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared / rel, out / rel)

    # the first RAW_ROWS records, plus the products whose photo is missing (real 'image not found' rows)
    flipkart = pl.read_parquet(shared / "catalogs" / "flipkart.parquet")
    no_photo = set(flipkart.filter(pl.col("image_path").is_null()).get_column("sku_id").to_list())
    header, *records = _csv_records(shared / "catalogs" / "flipkart_raw.csv")
    kept_raw = [r for i, r in enumerate(records) if i < RAW_ROWS or r.split(",", 1)[0] in no_photo]
    (out / "catalogs" / "flipkart_raw.csv").write_text(header + "".join(kept_raw), encoding="utf-8")

    reviews = pl.read_parquet(shared / "catalogs" / "womens_clothing_reviews.parquet")
    counts = reviews.group_by("sku_id", maintain_order=True).len()
    skus = counts.filter(pl.col("len") <= MAX_REVIEWS).get_column("sku_id").head(REVIEW_SKUS)
    reviews.filter(pl.col("sku_id").is_in(skus.implode())).write_parquet(
        out / "catalogs" / "womens_clothing_reviews.parquet", compression="zstd", compression_level=19
    )

    tax = out / "taxonomies"
    _head_lines(
        shared / "taxonomies" / "shopify_attributes_2025-01.en.txt",
        tax / "shopify_attributes_2025-01.en.txt",
        ATTRIBUTE_LINES,
    )
    _head_lines(
        shared / "taxonomies" / "shopify_2025-01_to_google_2021-09-21.csv",
        tax / "shopify_2025-01_to_google_2021-09-21.csv",
        MAPPING_ROWS,
    )
    entries = json.loads((shared / "taxonomies" / "bestbuy_categories_2016.json").read_text(encoding="utf-8"))
    kept = entries[:BESTBUY_ENTRIES] + [e for e in entries[BESTBUY_ENTRIES:] if e.get("name") is None]
    (tax / "bestbuy_categories_2016.json").write_text(
        json.dumps(kept, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )

    images = out / "images" / "flipkart"
    images.mkdir(parents=True, exist_ok=True)
    with_photo = flipkart.filter(pl.col("image_path").is_not_null())
    full_size = (
        with_photo.filter(pl.col("title").str.contains(FULL_SIZE_TITLE)).get_column("image_path").head(1)
    )
    for rel in with_photo.get_column("image_path").unique().sort():
        src = shared / rel
        if src.is_file() and rel in full_size:
            shutil.copyfile(src, out / rel)
        elif src.is_file():
            _thumbnail(src, out / rel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    build(args.shared, args.out)


if __name__ == "__main__":
    main()
