"""Hand-written checks of thresholds, calibration, tree-consistent scores, back-off and metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from classifiers.calibration import (
    IsotonicCalibrator,
    TemperatureScaler,
    Thresholds,
    fit_thresholds_per_category,
    select_threshold,
)
from classifiers.hierarchy import NodeIndex, tree_consistent
from classifiers.metrics import (
    coverage_at_precision,
    evaluate,
    evaluate_files,
    expected_calibration_error,
    write_evaluation_html,
)
from shelfwise.errors import CatalogError
from taxonomy import Taxonomy


# ---------------------------------------------------------------- thresholds
def test_select_threshold_takes_the_lowest_cut_that_keeps_precision():
    scores = [0.99, 0.97, 0.95, 0.90, 0.85, 0.80, 0.70, 0.60]
    correct = [1, 1, 1, 1, 1, 0, 1, 0]
    # top-5 all right; top-7 has 6/7 = 0.857
    assert select_threshold(scores, correct, target_precision=0.95, min_support=1, delta=None) == 0.85
    assert select_threshold(scores, correct, target_precision=0.85, min_support=1, delta=None) == 0.70
    accepted = np.asarray(scores) >= select_threshold(
        scores, correct, target_precision=0.95, min_support=1, delta=None
    )
    assert np.asarray(correct)[accepted].mean() >= 0.95


def test_select_threshold_respects_support_and_ties_and_unreachable_targets():
    # a single sure item is not enough support
    assert math.isinf(
        select_threshold([0.99, 0.5, 0.4], [1, 0, 0], target_precision=0.95, min_support=2, delta=None)
    )
    # ties: a cut can't split equal scores (0.9, 0.9 with one wrong)
    assert (
        select_threshold([0.95, 0.9, 0.9], [1, 1, 0], target_precision=0.9, min_support=1, delta=None) == 0.95
    )
    assert math.isinf(select_threshold([0.8, 0.7], [0, 0], target_precision=0.95, min_support=1, delta=None))
    with pytest.raises(ValueError, match="differ in length"):
        select_threshold([0.1, 0.2], [1], target_precision=0.9)


def test_thresholds_per_node_where_support_allows_and_round_trip():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 300)
    ids = np.array(["easy"] * 100 + ["hard"] * 100 + ["rare"] * 100, dtype=object)
    ids[-90:] = [f"tiny{i}" for i in range(90)]  # "rare" keeps 10 rows: global threshold
    correct = np.where(ids == "easy", True, rng.uniform(size=300) < conf**4)
    th = fit_thresholds_per_category(
        conf, correct, ids, target_precision=0.95, min_support=10, min_node_support=50, delta=None
    )
    # "easy" proves a bar of its own; "hard" cannot reach the target alone and is pooled
    assert {n for n, g in th.group_of.items() if g == n} == {"easy"}
    assert th.per_node["easy"] == pytest.approx(conf[ids == "easy"].min())
    assert th.group_of["hard"] == "*" and th.per_node["hard"] == th.global_ > th.per_node["easy"]
    got = th.for_nodes(["easy", "hard", "rare", "never-seen"])
    assert got[2] == got[3] == th.global_
    again = Thresholds.from_dict(json.loads(json.dumps(th.to_dict())))
    np.testing.assert_allclose(again.for_nodes(["easy", "hard", "rare"]), got[:3], rtol=1e-5)


# ---------------------------------------------------------------- calibration
def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a 4-class model that is right ~60% of the time but says ~95%."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    guess = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, 4, n))
    logits = rng.normal(0, 0.3, (n, 4))
    logits[np.arange(n), guess] += 4.0
    return logits, y


def test_temperature_and_isotonic_lower_ece_on_held_out_rows():
    fit_logits, fit_y = _overconfident(2000, 1)
    test_logits, test_y = _overconfident(2000, 2)
    raw = np.exp(test_logits) / np.exp(test_logits).sum(1, keepdims=True)
    right = raw.argmax(1) == test_y
    ece_raw = expected_calibration_error(raw.max(1), right)
    temp = TemperatureScaler().fit(fit_logits, fit_y)
    assert temp.temperature_ > 1.5  # it learned to soften
    p_t = temp.transform(test_logits)
    assert (p_t.argmax(1) == raw.argmax(1)).all()  # ranking unchanged
    raw_fit = np.exp(fit_logits) / np.exp(fit_logits).sum(1, keepdims=True)
    iso = IsotonicCalibrator().fit(raw_fit.max(1), raw_fit.argmax(1) == fit_y)
    p_i = iso.transform(raw.max(1))
    assert ece_raw > 0.2
    assert expected_calibration_error(p_t.max(1), right) < 0.05
    assert expected_calibration_error(p_i, right) < 0.05


# ---------------------------------------------------------------- hierarchy
@pytest.fixture()
def tiny_tree() -> Taxonomy:
    return Taxonomy.from_paths(
        [
            "Home",
            "Home > Bed Linen",
            "Home > Bed Linen > Blankets",
            "Home > Bed Linen > Bedsheets",
            "Home > Curtains",
            "Watches",
            "Watches > Wrist Watches",
        ],
        source="tiny",
    )


def test_aggregate_makes_parents_at_least_their_children(tiny_tree):
    labels = [
        tiny_tree.by_path(p).id
        for p in (
            "Home > Bed Linen > Blankets",
            "Home > Bed Linen > Bedsheets",
            "Home > Curtains",
            "Watches > Wrist Watches",
        )
    ]
    index = NodeIndex.from_taxonomy(tiny_tree, labels)
    probs = np.array([[0.45, 0.40, 0.10, 0.05], [0.05, 0.05, 0.05, 0.85]])
    nodes = index.aggregate(probs, index.position(labels))
    assert tree_consistent(nodes, index.parents)
    bed = index.position([tiny_tree.by_path("Home > Bed Linen").id])[0]
    home = index.position([tiny_tree.by_path("Home").id])[0]
    assert nodes[0, bed] == pytest.approx(0.85) and nodes[0, home] == pytest.approx(0.95)
    assert not tree_consistent(np.array([[0.2, 0.9]]), [-1, 0])  # child above parent


def test_backoff_goes_to_the_deepest_sure_ancestor(tiny_tree):
    labels = [
        tiny_tree.by_path(p).id
        for p in (
            "Home > Bed Linen > Blankets",
            "Home > Bed Linen > Bedsheets",
            "Home > Curtains",
            "Watches > Wrist Watches",
        )
    ]
    index = NodeIndex.from_taxonomy(tiny_tree, labels)
    pos = index.position(labels)
    probs = np.array(
        [
            [0.45, 0.40, 0.10, 0.05],  # blanket vs bedsheet unsure, bed linen sure
            [0.05, 0.05, 0.05, 0.85],  # sure watch at leaf level? 0.85 < 0.9: its parent is 0.85 too
            [0.97, 0.01, 0.01, 0.01],
        ]
    )  # sure leaf
    nodes = index.aggregate(probs, pos)
    best = pos[probs.argmax(1)]
    chosen, backed = index.backoff(nodes, best, 0.8)
    assert [index.paths[c] for c in chosen] == [
        "Home > Bed Linen",
        "Watches > Wrist Watches",
        "Home > Bed Linen > Blankets",
    ]
    assert backed.tolist() == [True, False, False]
    assert index.depths[chosen[0]] < index.depths[best[0]]
    chosen, backed = index.backoff(nodes, best, 0.999)  # nothing clears it: keep the leaf
    assert backed.tolist() == [False, False, False]


# ---------------------------------------------------------------- metrics
def test_evaluate_on_hand_written_predictions():
    truth = ["A > B > C", "A > B > D", "A > E", "F > G"]
    pred = ["A > B > C", "A>B", "A > E", "A > E"]  # the 2nd is right only down to its parent
    conf = [0.9, 0.6, 0.8, 0.3]
    r = evaluate(pred, truth, conf)
    assert r["n"] == 4 and r["leaf_accuracy"] == 0.5
    assert r["per_level_accuracy"] == {"1": 0.75, "2": 0.75, "3": 0.5}
    # ancestor sets: pred sizes 3+2+2+2=9, truth 3+3+2+2=10, overlap 3+2+2+0=7
    assert r["hierarchical"]["precision"] == pytest.approx(7 / 9)
    assert r["hierarchical"]["recall"] == pytest.approx(0.7)
    # sorted by confidence: right, right, wrong, wrong -> 50% coverage at 95%
    assert r["coverage_at_precision"]["0.95"] == 0.5
    assert r["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4)
    # per-label F1: A>B>C 1, A>E 2/3, A>B>D / F>G / A>B 0 -> macro over 5 labels, weighted by true support
    assert r["macro_f1"] == pytest.approx((1 + 2 / 3) / 5)
    assert r["weighted_f1"] == pytest.approx((1 + 2 / 3) / 4)
    # ECE: bins hold one item each: |1-.9|+|0-.6|+|1-.8|+|0-.3| over 4
    assert r["ece"] == pytest.approx((0.1 + 0.6 + 0.2 + 0.3) / 4)
    assert (
        r["coverage_at_precision_hierarchical"]["0.95"] == 0.75
    )  # "A>B" for "A>B>D" counts when ancestors do


def test_coverage_at_precision_never_splits_ties():
    assert coverage_at_precision([0.9, 0.9, 0.5], [1, 0, 1], 0.95) == 0.0
    assert coverage_at_precision([0.9, 0.8, 0.5], [1, 0, 1], 0.95) == pytest.approx(1 / 3)


def test_evaluate_files_joins_on_sku_and_writes_a_self_contained_page(tmp_path):
    pl.DataFrame(
        {
            "sku_id": ["a", "b", "c", "x"],
            "category_path": ["A > B", "A > C", "D", "D"],
            "confidence": [0.9, 0.8, 0.7, 0.6],
        }
    ).write_parquet(tmp_path / "pred.parquet")
    pl.DataFrame({"sku_id": ["a", "b", "c", "d"], "category_path": ["A > B", "A > B", "D", None]}).write_csv(
        tmp_path / "truth.csv"
    )
    r = evaluate_files(tmp_path / "pred.parquet", tmp_path / "truth.csv", out_dir=tmp_path / "eval")
    assert r["n"] == 3 and r["leaf_accuracy"] == pytest.approx(2 / 3)
    assert r["join"]["predictions_without_truth_row"] == 1
    page = (tmp_path / "eval" / "evaluation.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page.replace("http-equiv", "")
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["n"] == 3
    with pytest.raises(CatalogError, match="missing column"):
        evaluate_files(tmp_path / "truth.csv", tmp_path / "truth.csv")
    write_evaluation_html(r, tmp_path / "again.html")


def test_ece_noise_floor_shrinks_with_items_and_separates_miscalibration() -> None:
    from classifiers.metrics import ece_sampling_floor, expected_calibration_error

    rng = np.random.default_rng(7)
    small, large = rng.uniform(0.3, 1.0, 170), rng.uniform(0.3, 1.0, 5000)
    # a perfectly calibrated model still measures a sizeable ECE on 170 items, little on 5,000
    assert 0.06 < ece_sampling_floor(small) < 0.13
    assert ece_sampling_floor(large) < 0.03
    # an over-confident model (true accuracy 20 points below its confidence) stands well above its floor
    correct = rng.random(5000) < large - 0.2
    assert expected_calibration_error(large, correct) > 0.15 > 5 * ece_sampling_floor(large)


def test_evaluate_reports_the_ece_floor_and_interval() -> None:
    from classifiers.metrics import evaluate

    truth = ["A > x", "A > y", "B > z"] * 40
    pred = ["A > x", "A > y", "A > y"] * 40
    res = evaluate(pred, truth, [0.9, 0.8, 0.6] * 40)
    lo, hi = res["ece_interval_95"]
    assert lo <= res["ece"] <= hi
    assert 0 < res["ece_if_perfectly_calibrated"] < 0.15
