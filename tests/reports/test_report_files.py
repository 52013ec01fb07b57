"""The report's figures read from predictions files lazily: the change join in hash partitions gives the
same counts as one join, and a report built on two nights' files counts what the files hold."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from shelfwise.reports import build_report
from shelfwise.reports._fig_change import sku_changes
from shelfwise.reports._render import render_markdown
from shelfwise.settings import Settings

PATHS = [
    "Toys > Puzzles",
    "Toys > Games > Board",
    "Home > Kitchen > Knives",
    "Home > Garden",
    "Books",
    " > odd",  # an empty top level reads as "(none)"
]


def _night(rng: random.Random, skus: list[str]) -> pl.DataFrame:
    ids = [rng.choice([*range(len(PATHS)), None]) for _ in skus]
    return pl.DataFrame(
        {
            "sku_id": skus,
            "category_id": [None if i is None else f"n{i}" for i in ids],
            "category_path": [None if i is None else PATHS[i] for i in ids],
            "confidence": [rng.random() for _ in skus],
            "route": [rng.choice(["auto", "auto", "review", "suspect"]) for _ in skus],
            "current_category_path": [rng.choice([*PATHS, None, ""]) for _ in skus],
            "predicted_depth": [rng.choice([1, 2, 3]) for _ in skus],
        }
    )


@pytest.fixture
def two_nights(tmp_path: Path) -> tuple[Path, Path]:
    rng = random.Random(3)
    prev_skus = [f"s{i:05d}" for i in range(3_000)]
    cur_skus = [f"s{i:05d}" for i in range(200, 3_400)]  # 200 gone, 400 new
    prev, cur = _night(rng, prev_skus), _night(rng, cur_skus)
    # most SKUs keep their category from one night to the next
    keep = prev.select("sku_id", pl.col("category_id").alias("k_id"), pl.col("category_path").alias("k_path"))
    cur = (
        cur.join(keep, on="sku_id", how="left")
        .with_columns(
            pl.when(pl.int_range(pl.len()) % 5 != 0)
            .then(pl.col("k_id"))
            .otherwise(pl.col("category_id"))
            .alias("category_id"),
            pl.when(pl.int_range(pl.len()) % 5 != 0)
            .then(pl.col("k_path"))
            .otherwise(pl.col("category_path"))
            .alias("category_path"),
        )
        .drop("k_id", "k_path")
    )
    prev.write_parquet(tmp_path / "prev.parquet", row_group_size=500)
    cur.write_parquet(tmp_path / "cur.parquet", row_group_size=500)
    return tmp_path / "prev.parquet", tmp_path / "cur.parquet"


def _by_hand(prev: pl.DataFrame, cur: pl.DataFrame) -> tuple[int, int, int, int, Counter[tuple[str, str]]]:
    """in both, moved, new, gone, moved pairs: plain Python over the rows."""
    p = {r["sku_id"]: r for r in prev.iter_rows(named=True)}
    c = {r["sku_id"]: r for r in cur.iter_rows(named=True)}
    both = set(p) & set(c)
    moved = [
        s
        for s in both
        if None not in (c[s]["category_id"], p[s]["category_id"])
        and c[s]["category_id"] != p[s]["category_id"]
    ]
    pairs = Counter((p[s]["category_path"], c[s]["category_path"]) for s in moved)
    return len(both), len(moved), len(set(c) - set(p)), len(set(p) - set(c)), pairs


@pytest.mark.parametrize("parts", [1, 3, 8])
def test_changes_between_nights_match_a_plain_comparison_in_any_number_of_partitions(
    two_nights: tuple[Path, Path], parts: int
) -> None:
    prev_path, cur_path = two_nights
    prev, cur = pl.read_parquet(prev_path), pl.read_parquet(cur_path)
    in_both, moved, new, gone, pairs = _by_hand(prev, cur)
    assert moved > 100 and new == 400 and gone == 200
    ch = sku_changes(pl.scan_parquet(cur_path), pl.scan_parquet(prev_path), parts=parts)
    assert (ch.in_both, ch.moved, ch.new, ch.gone) == (in_both, moved, new, gone)
    assert Counter({(a, b): n for a, b, n in ch.flows.iter_rows()}) == pairs
    assert ch.flows["count"].is_sorted(descending=True)
    new_rows = cur.filter(~pl.col("sku_id").is_in(prev["sku_id"].to_list()))
    tops = Counter(
        (p.split(">")[0].strip() or "(none)") if p else "(none)" for p in new_rows["category_path"].to_list()
    )
    assert ch.new_top == tops


def _run(state: Path, run_id: str, pred: Path, previous: str | None, rows: int) -> None:
    run_dir = state / "runs" / run_id
    run_dir.mkdir(parents=True)
    summary = {
        "run_id": run_id,
        "started_at": "2026-01-02T02:00:00+00:00",
        "finished_at": "2026-01-02T02:10:00+00:00",
        "catalog": "c.parquet",
        "taxonomy_version": "t",
        "model_version": "m",
        "model_dir": str(state / "no-model"),
        "counts": {"seen": rows, "classified": rows},
        "predictions_path": str(pred),
        "previous_run_id": previous,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_report_on_two_nights_files_counts_what_the_files_hold(
    two_nights: tuple[Path, Path], tmp_path: Path
) -> None:
    prev_path, cur_path = two_nights
    prev, cur = pl.read_parquet(prev_path), pl.read_parquet(cur_path)
    state = tmp_path / "state"
    _run(state, "r1", prev_path, None, prev.height)
    _run(state, "r2", cur_path, "r1", cur.height)
    report = build_report("r2", Settings(state_dir=state))
    f = report.figures
    in_both, moved, new, gone, _ = _by_hand(prev, cur)
    assert (f["churn_moved"], f["new_skus"], f["gone_skus"]) == (moved, new, gone)
    assert f["churn_rate"] == pytest.approx(moved / in_both)
    with_current = [c for c in cur["current_category_path"].to_list() if c]
    assert f["uncategorized"] == cur.height - len(with_current)
    assert f["suspect_confident"] == cur["route"].to_list().count("suspect")
    assert f["unclassified"] == sum(r != "auto" for r in cur["route"].to_list())
    mix = report.tables["new_product_mix"]
    assert mix["new products"].sum() == new
    coverage = report.tables["coverage_by_branch"]
    assert coverage["classified"].sum() == cur.height
    assert coverage["auto"].sum() == cur["route"].to_list().count("auto")
    dist = report.tables["category_distribution"].filter(pl.col("level") == "category")
    assert dict(zip(dist["category"], dist["current_count"], strict=True)) == dict(
        Counter(p for p in cur["category_path"].to_list() if p)
    )
    assert f"{moved:,} of {in_both:,} products" in render_markdown(report)
