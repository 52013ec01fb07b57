"""The quality benchmark's data sets, its fixed split and the TF-IDF + LinearSVC baseline.

Shared by benchmarks/quality.py (main table, ablations) and its ``--disjoint`` mode
(benchmarks/_quality_disjoint.py); not a script of its own.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

from classifiers.estimators import tfidf_union
from taxonomy import load_taxonomy

DATA = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH = REPO / ".shelfwise-bench"
SEED = 0

_SPEC = re.compile(r'"key"=>"(.*?)",\s*"value"=>"(.*?)"')


def _flipkart_attributes(raw: str | None) -> str:
    if not raw:
        return ""
    return "; ".join(f"{k}: {v}" for k, v in _SPEC.findall(raw))


def load_dataset(name: str) -> tuple[pl.DataFrame, Any, tuple[str, ...]]:
    """(canonical frame, taxonomy, text fields) of one benchmark data set."""
    cats = DATA / "catalogs"
    taxes = DATA / "taxonomies"
    if name == "amazon_uk":
        df = pl.read_parquet(cats / "amazon_uk.parquet").filter(pl.col("category_path").is_not_null())
        frame = df.select("sku_id", "title", "brand", "category_path", pl.col("price_gbp").alias("price"))
        return frame, load_taxonomy(taxes / "amazon_uk_categories.txt"), ("title", "brand")
    if name == "flipkart":
        df = pl.read_parquet(cats / "flipkart.parquet")
        frame = df.select(
            "sku_id",
            "title",
            "description",
            "brand",
            "category_path",
            pl.col("retail_price_inr").alias("price"),
            pl.col("product_specifications")
            .map_elements(_flipkart_attributes, return_dtype=pl.String)
            .alias("attributes"),
            pl.when(pl.col("image_path").is_not_null())
            .then(pl.lit(str(DATA) + "/") + pl.col("image_path"))
            .alias("image_path"),
        )
        return (
            frame,
            load_taxonomy(taxes / "flipkart_categories.txt"),
            ("title", "brand", "description", "attributes"),
        )
    if name == "womens_clothing":
        df = pl.read_parquet(cats / "womens_clothing_reviews.parquet").sort("review_id")
        text = pl.concat_str(
            [pl.col("review_title").fill_null(""), pl.col("review_text").fill_null("")], separator=". "
        )
        frame = (
            df.with_columns(text.alias("_t"))
            .group_by("sku_id", maintain_order=True)
            .agg(pl.col("_t").str.join(" || ").alias("review_text"), pl.col("category_path").mode().first())
        )
        return frame, load_taxonomy(taxes / "womens_clothing_categories.txt"), ("review_text",)
    raise SystemExit(f"unknown data set {name!r}; use amazon_uk, flipkart or womens_clothing")


def split(labels: list[str], seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60/20/20 train/calibration/test, stratified; classes with < 3 rows only in train."""
    y = np.asarray(labels, dtype=object)
    idx = np.arange(len(y))
    _, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    rare = counts[inv] < 3
    ok = idx[~rare]
    rest, test = train_test_split(ok, test_size=0.2, stratify=y[ok], random_state=seed)
    _, inv2, c2 = np.unique(y[rest], return_inverse=True, return_counts=True)
    strat = np.where(c2[inv2] >= 2, y[rest], "__rare__")
    train, cal = train_test_split(rest, test_size=0.25, stratify=strat, random_state=seed)
    return np.concatenate([train, idx[rare]]), cal, test


def lexical_text(frame: pl.DataFrame, fields: tuple[str, ...]) -> list[str]:
    cols = [pl.col(f).fill_null("") for f in fields if f in frame.columns]
    return frame.select(pl.concat_str(cols, separator=" | ").alias("t")).get_column("t").to_list()


def baseline_predict(
    frame: pl.DataFrame, fields: tuple[str, ...], fit_idx: np.ndarray, test_idx: np.ndarray, paths: list[str]
) -> tuple[list[str], list[float]]:
    texts = np.asarray(lexical_text(frame, fields), dtype=object)
    y = np.asarray(paths, dtype=object)
    _, inv, counts = np.unique(y[fit_idx], return_inverse=True, return_counts=True)
    keep = fit_idx[counts[inv] >= 3]
    vec = tfidf_union(2).fit(texts[keep])
    clf = CalibratedClassifierCV(LinearSVC(C=1.0), method="sigmoid", cv=3).fit(
        vec.transform(texts[keep]), y[keep]
    )
    proba = clf.predict_proba(vec.transform(texts[test_idx]))
    return list(clf.classes_[proba.argmax(axis=1)]), proba.max(axis=1).tolist()


def ancestor_ok(pred_paths: list[str], true_paths: list[str], tax: Any) -> np.ndarray:
    from classifiers.metrics import split_path

    out = []
    for p, t in zip(pred_paths, true_paths, strict=True):
        node = tax.find_path(t)
        tt = split_path(node.path if node else t)
        pp = split_path(p)
        out.append(len(pp) > 0 and tt[: len(pp)] == pp)
    return np.asarray(out, dtype=bool)


def fmt(x: Any, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def write_results(out_path: Path, results: dict[str, Any]) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=float))
