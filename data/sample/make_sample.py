"""Rebuild the bundled demo sample (data/sample/) from the shared Flipkart data, reproducibly.

    python data/sample/make_sample.py [--shared ../shared/data]

Writes, next to this script:
  taxonomy.txt       Flipkart's category tree (a copy of taxonomies/flipkart_categories.txt)
  labelled.parquet   ~450 products with their category_path: the training set
  catalog.csv        ~150 *other* products, "new tonight": ~10% deliberately misfiled (another product's
                     category), plus a few bad rows (no sku_id, no text, a duplicate sku_id) and one
                     unparseable price, to show the quarantine
  misfiled.csv       the answer key: sku_id, filed category_path, true_category_path
  images/<sku>.jpg   the products' photos, longest side 128 px, JPEG quality 80

Everything is seeded: running it twice gives the same files (same Pillow version assumed for the JPEGs).
"""

from __future__ import annotations

import argparse
import random
import shutil
from collections import Counter
from pathlib import Path

import polars as pl
from PIL import Image

from shelfwise.catalog import parse_attributes

HERE = Path(__file__).resolve().parent
SEED = 20261127
N_CATALOG = 150
N_LABELLED = 450
MISFILED_SHARE = 0.10
IMAGE_SIDE = 128
COLUMNS = ["sku_id", "title", "description", "brand", "category_path", "attributes", "price", "image_path"]


def _tidy(shared: Path) -> pl.DataFrame:
    frame = pl.read_parquet(shared / "catalogs" / "flipkart.parquet").sort("sku_id")
    attrs = [parse_attributes(v, fmt="ruby_hash")[0] for v in frame.get_column("product_specifications")]
    return frame.with_columns(
        pl.Series("attributes", attrs, dtype=pl.String),
        pl.coalesce("discounted_price_inr", "retail_price_inr").alias("price"),
        pl.col("image_path").str.replace(r"^images/flipkart/", "images/"),
    )


def _split(frame: pl.DataFrame, rng: random.Random) -> tuple[list[int], list[int], list[int]]:
    """Positions for the catalog, the labelled set and the spare rows (used for the bad rows).

    A catalog row is only taken from a category that keeps >= 2 examples in the labelled set, so the
    demo can classify what it is shown.
    """
    cats = frame.get_column("category_path").to_list()
    total = Counter(cats)
    order = list(range(frame.height))
    rng.shuffle(order)
    catalog: list[int] = []
    taken: Counter[str] = Counter()
    for i in order:
        c = cats[i]
        if len(catalog) < N_CATALOG and total[c] - taken[c] > 2 and taken[c] < 8:
            catalog.append(i)
            taken[c] += 1
    rest = [i for i in order if i not in set(catalog)]
    wanted = set(taken)
    # labelled: every row of a category the catalog uses first, then others, up to N_LABELLED
    first = [i for i in rest if cats[i] in wanted]
    others = [i for i in rest if cats[i] not in wanted]
    labelled = (first + others)[:N_LABELLED]
    known = {cats[i] for i in labelled}
    # spare rows (for the bad rows of the catalog) from categories the labelled set knows, first
    spare = [i for i in rest if i not in set(labelled)]
    spare.sort(key=lambda i: cats[i] not in known)
    return sorted(catalog), sorted(labelled), spare


def _shrink(src: Path, dst: Path) -> bool:
    if not src.is_file():
        return False
    with Image.open(src) as img:
        img = img.convert("RGB")
        img.thumbnail((IMAGE_SIDE, IMAGE_SIDE))
        img.save(dst, format="JPEG", quality=80, optimize=True)
    return True


def build(shared: Path, out: Path = HERE) -> dict[str, int]:
    rng = random.Random(SEED)
    frame = _tidy(shared)
    catalog_pos, labelled_pos, spare = _split(frame, rng)

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    have_image: set[str] = set()
    for pos in catalog_pos + labelled_pos + spare[:4]:
        sku = frame["sku_id"][pos]
        if _shrink(shared / "images" / "flipkart" / f"{sku}.jpg", images / f"{sku}.jpg"):
            have_image.add(sku)
    frame = frame.with_columns(
        pl.when(pl.col("sku_id").is_in(sorted(have_image))).then(pl.col("image_path")).otherwise(None)
    )

    labelled = frame[labelled_pos].select(COLUMNS)
    labelled.write_parquet(out / "labelled.parquet", compression="zstd", compression_level=19)

    catalog = frame[catalog_pos].select(COLUMNS).with_columns(pl.col("price").cast(pl.String))
    rows = catalog.to_dicts()
    # misfile ~10%: give the row the category of another catalog row from a different top level
    n_mis = round(MISFILED_SHARE * len(rows))
    misfiled = []
    for i in rng.sample(range(len(rows)), n_mis):
        true = rows[i]["category_path"]
        top = true.split(" > ")[0]
        donors = [r["category_path"] for r in rows if r["category_path"].split(" > ")[0] != top]
        wrong = rng.choice(sorted(set(donors)))
        rows[i]["category_path"] = wrong
        misfiled.append({"sku_id": rows[i]["sku_id"], "category_path": wrong, "true_category_path": true})
    # bad rows, made from spare real products
    spare_rows = frame[spare[:4]].select(COLUMNS).with_columns(pl.col("price").cast(pl.String)).to_dicts()
    no_id, no_text, duplicate, bad_price = spare_rows
    no_id["sku_id"] = ""
    no_text["title"] = ""
    no_text["description"] = ""
    duplicate["sku_id"] = rows[10]["sku_id"]  # a later row reusing an earlier row's id
    bad_price["price"] = "call for price"
    for row, at in ((no_id, 25), (no_text, 60), (duplicate, 95), (bad_price, 120)):
        rows.insert(at, row)
    pl.DataFrame(rows, schema={c: pl.String for c in COLUMNS}).write_csv(out / "catalog.csv")
    pl.DataFrame(
        misfiled, schema={"sku_id": pl.String, "category_path": pl.String, "true_category_path": pl.String}
    ).sort("sku_id").write_csv(out / "misfiled.csv")
    shutil.copyfile(shared / "taxonomies" / "flipkart_categories.txt", out / "taxonomy.txt")
    return {
        "labelled": labelled.height,
        "catalog_rows": len(rows),
        "misfiled": len(misfiled),
        "images": len(have_image),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=HERE.parents[2] / "shared" / "data",
        help="the shared data folder (default: ../shared/data next to the repo)",
    )
    args = parser.parse_args()
    print(build(args.shared))


if __name__ == "__main__":
    main()
