"""The auto-accept guarantee on synthetic scores with a known precision, and the earlier per-category
procedure (kept as a reference; the model proves one cut, see test_fixed_sequence.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from classifiers.calibration import (
    GLOBAL,
    Thresholds,
    fit_threshold,
    fit_thresholds_per_category,
    precision_lower_bound,
)
from classifiers.selective import fit_backoff_threshold, fit_thresholds


def test_lower_bound_is_scipys_one_sided_clopper_pearson():
    for k, n in [(59, 59), (95, 100), (940, 1000), (0, 10), (3, 3)]:
        want = binomtest(k, n).proportion_ci(method="exact", confidence_level=0.90).low
        assert precision_lower_bound(k, n) == pytest.approx(want, abs=1e-9)
    # 58 right out of 58 does not prove 0.95; 59 out of 59 does (the smallest perfect set that can)
    assert precision_lower_bound(58, 58) < 0.95 <= precision_lower_bound(59, 59)


def _draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0, 1], P(right | s) = s: precision above t is (1 + t) / 2, so 0.95 needs
    t >= 0.9."""
    s = rng.uniform(size=n)
    return s, rng.uniform(size=n) < s


def test_guarantee_holds_on_a_score_distribution_with_known_precision():
    rng = np.random.default_rng(0)
    below_bound = below_plain = 0
    reps = 300
    coverage = []
    for _ in range(reps):
        s, ok = _draw(3000, rng)
        t = fit_threshold(s, ok, target_precision=0.95).threshold
        t_plain = fit_threshold(s, ok, target_precision=0.95, delta=None).threshold
        below_bound += (1 + t) / 2 < 0.95  # the true precision above t misses the target
        below_plain += (1 + t_plain) / 2 < 0.95
        coverage.append(0.0 if math.isinf(t) else 1 - t)
    # the bound keeps the promise in >= 95% of the training sets (with room for the 300-rep noise) ...
    assert below_bound / reps <= 0.08, below_bound
    # ... where picking the cut on the plain precision breaks it about half the time
    assert below_plain / reps >= 0.3, below_plain
    # and it is not vacuous: about half of the 10% of rows that can be accepted are (measured 0.052)
    assert np.mean(coverage) > 0.04


def test_too_little_data_means_no_auto_accept_not_a_weaker_promise():
    rng = np.random.default_rng(1)
    s, ok = _draw(40, rng)
    fit = fit_threshold(s, np.ones(40, dtype=bool), target_precision=0.95)  # 40 of 40 right: not proof
    assert math.isinf(fit.threshold) and fit.accepted == 0
    fit = fit_threshold(s, ok, target_precision=0.95)
    assert math.isinf(fit.threshold)


def _tree() -> dict[str, str | None]:
    return {"A": None, "A>tiny1": "A", "A>tiny2": "A", "B": None, "B>tiny": "B"}


def test_tiny_nodes_inherit_a_pooled_threshold_and_big_nodes_keep_their_own():
    rng = np.random.default_rng(2)
    ids, scores, ok = [], [], []
    tree: dict[str, str | None] = {"A": None, "A>big": "A", "B": None, "B>bad": "B"}

    def add(node: str, n: int, p_right: float) -> None:
        ids.extend([node] * n)
        scores.extend(rng.uniform(0.5, 1.0, n))
        ok.extend(rng.uniform(size=n) < p_right)

    add("A>big", 400, 0.995)
    for i in range(100):  # 100 small categories of 20 rows: none can prove anything alone
        tree[f"C{i}"] = None
        tree[f"C{i}>x"] = f"C{i}"
        add(f"C{i}>x", 20, 0.995)
    add("B>bad", 150, 0.7)  # enough rows to be judged: far below target
    th = fit_thresholds_per_category(
        np.array(scores), np.array(ok), ids, target_precision=0.95, parent_of=tree, min_node_support=100
    )
    assert th.group_of["A>big"] == "A>big" and math.isfinite(th.per_node["A>big"])
    assert th.group_of["C0>x"] == th.group_of["C99>x"] == GLOBAL  # tiny: pooled up to the global group
    assert math.isfinite(th.global_) and th.per_node["C0>x"] == th.per_node["C99>x"] == th.global_
    # the bad category cannot prove a bar alone, and is not allowed to hide in the pool either
    assert th.group_of["B>bad"] == GLOBAL and math.isinf(th.per_node["B>bad"])
    assert th.groups["B>bad (excluded)"]["support"] == 150
    # every finite group proves the target on its own rows, and the model folder records the evidence
    for g in th.groups.values():
        if g["threshold"] != "inf":
            assert g["lower_bound"] >= 0.95 and g["accepted"] >= 59
    assert set(th.groups[GLOBAL]) >= {"threshold", "oof_precision", "lower_bound", "support", "coverage"}
    again = Thresholds.from_dict(json.loads(json.dumps(th.to_dict())))
    some = ["A>big", "C0>x", "B>bad"]
    np.testing.assert_allclose(again.for_nodes(some), th.for_nodes(some), rtol=1e-5)
    # a node that was never a label: the global bar, or `unlisted` when set (zero-shot nodes: inf)
    assert th.for_nodes(["Z"])[0] == th.global_
    th.unlisted = math.inf
    assert math.isinf(th.for_nodes(["Z"])[0])


def test_a_parent_with_enough_pooled_rows_gets_its_own_threshold():
    rng = np.random.default_rng(3)
    ids = ["A>tiny1"] * 70 + ["A>tiny2"] * 70 + ["B>tiny"] * 70
    scores = rng.uniform(0.5, 1.0, 210)
    ok = np.r_[np.ones(140, dtype=bool), rng.uniform(size=70) < 0.5]
    th = fit_thresholds_per_category(
        scores, ok, ids, target_precision=0.95, parent_of=_tree(), min_node_support=100
    )
    assert th.group_of["A>tiny1"] == th.group_of["A>tiny2"] == "A"  # 140 rows under A
    assert math.isfinite(th.per_node["A>tiny1"])
    assert th.group_of["B>tiny"] == GLOBAL and math.isinf(th.global_)  # B's 70 rows are half wrong


def test_mapping_thresholds_through_a_monotone_calibrator_keeps_the_accepted_rows():
    rng = np.random.default_rng(4)
    s, ok = _draw(2000, rng)
    th = fit_thresholds(s, ok, ["x"] * len(s), target_precision=0.9)
    cal = np.sqrt  # any increasing map
    mapped = th.mapped(cal)
    assert ((cal(s) >= mapped.global_) == (s >= th.global_)).all()


def test_backoff_bar_counts_the_truth_under_the_chosen_ancestor():
    rng = np.random.default_rng(5)
    n = 2000
    parent = rng.uniform(0.3, 1.0, n)
    top = np.minimum(parent, rng.uniform(0.3, 1.0, n))  # ancestors score >= deeper ones
    sc = np.column_stack([np.minimum(parent, top), np.maximum(parent, top)])  # deepest first, rising upwards
    cor = np.column_stack([rng.uniform(size=n) < sc[:, 0] ** 3, rng.uniform(size=n) < sc[:, 1]])
    cor[:, 1] |= cor[:, 0]  # right at the deeper node implies right at its ancestor
    seq, j = fit_backoff_threshold(sc, cor, target_precision=0.9)
    fit = seq.fit
    assert math.isfinite(fit.threshold) and fit.lower_bound >= 0.9
    chosen_ok = cor[np.flatnonzero(j >= 0), j[j >= 0]]
    assert chosen_ok.mean() == pytest.approx(fit.correct / fit.accepted)
