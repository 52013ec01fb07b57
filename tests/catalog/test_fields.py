"""Messy field values as real exports write them: price text, image URL lists, category paths."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from shelfwise.catalog import Quarantine, parse_mapping, read_catalog


def test_original_promptcloud_image_url_lists(
    tmp_path: Path, flipkart_tidy: pl.DataFrame, real_data: Path
) -> None:
    """The original export lists image URLs; the photos on disk are matched by file name."""
    rows = flipkart_tidy.head(6).select("sku_id", "title")
    urls = [
        json.dumps(
            [f"http://img5a.flixcart.com/image/curtain/4/z/{s}.jpg?q=70", "http://img6a.flixcart.com/x.jpg"]
        )
        for s in rows["sku_id"]
    ]
    rows.with_columns(pl.Series("image", urls)).write_csv(tmp_path / "c.csv")
    spec = parse_mapping(
        ["image_path=image", "image_format=json_list", f"images_root={real_data / 'images' / 'flipkart'}"]
    )
    frame = read_catalog(tmp_path / "c.csv", spec=spec)
    want = [str(real_data / "images" / "flipkart" / f"{s}.jpg") for s in rows["sku_id"]]
    assert frame["image_path"].to_list() == want


def test_price_text_and_category_separators(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(
        "sku_id,title,price,category_path\n"
        'A,Steel bottle,"Rs. 1,899",Kitchen >> Bottles\n'
        "B,Cotton towel,₹449.50,Home/Bath/Towels\n"
        "C,Wall clock,$12, Home  >  Decor \n"
        "D,Brass lamp,,\n"
    )
    q = Quarantine(None)
    frame = read_catalog(tmp_path / "c.csv", quarantine=q)
    assert frame["price"].to_list() == [1899.0, 449.5, 12.0, None]
    assert frame["category_path"].to_list() == ["Kitchen > Bottles", "Home/Bath/Towels", "Home > Decor", None]
    assert q.total == 0 and q.warnings == 0
    slash = read_catalog(tmp_path / "c.csv", spec=parse_mapping(["category_separator=/"]))
    assert slash["category_path"][1] == "Home > Bath > Towels"
