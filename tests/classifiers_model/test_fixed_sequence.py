"""One proven cut over the whole accepted set (fixed-sequence testing) on synthetic scores with a known
precision: the promise holds, the share is near what the ranking can carry, and it beats per-category
proofs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from classifiers.calibration import GLOBAL, fit_thresholds_per_category
from classifiers.selective import (
    Carried,
    CutSequence,
    best_cut_share,
    fit_backoff_threshold,
    fit_thresholds,
    fixed_sequence_test,
    information_gain,
    provably_below,
    rows_to_prove,
)

N_ROWS, N_CATS, N_DRAWS = 5000, 300, 300


@dataclass
class World:
    """A population of rows with known P(right): a score, a Zipf-sized category, the chance it is right.

    Scores are calibrated on the whole but not within categories (each has its own offset), and the top
    of the ranking is noisy: the ~2% most confident rows are right only 96% of the time (overconfident),
    as on Amazon UK's unseen products.
    """

    size_p: np.ndarray  # category sizes (probabilities), Zipf-like
    offset: np.ndarray  # per-category shift of P(right)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cat = rng.choice(len(self.size_p), size=n, p=self.size_p)
        s = rng.beta(6.0, 0.8, size=n)
        p = np.clip(s + self.offset[cat], 0.0, 0.999)
        p = np.where(s > 0.999, np.minimum(p, 0.96), p)  # the noisy top
        return s, cat, p


def _world() -> World:
    ranks = np.arange(1, N_CATS + 1)
    size_p = 1.0 / ranks**1.1
    offset = np.random.default_rng(42).normal(0.0, 0.03, N_CATS)
    offset[[5, 11]] = -0.3  # two big categories far worse than their scores say
    return World(size_p / size_p.sum(), offset)


@pytest.fixture(scope="module")
def world() -> tuple[World, np.ndarray, np.ndarray, np.ndarray]:
    """The world and a large population sample (scores, categories, P(right)) to measure cuts on."""
    w = _world()
    s, cat, p = w.draw(200_000, np.random.default_rng(7))
    return w, s, cat, p


def _true_precision(pop: tuple[np.ndarray, np.ndarray, np.ndarray], cut: float, excluded: set[int]) -> float:
    s, cat, p = pop
    take = s >= cut
    if excluded:
        bad = np.zeros(N_CATS, dtype=bool)
        bad[list(excluded)] = True
        take &= ~bad[cat]
    return float(p[take].mean()) if take.any() else 1.0


def _true_share(pop: tuple[np.ndarray, np.ndarray, np.ndarray], cut: float, excluded: set[int]) -> float:
    s, cat, _ = pop
    take = s >= cut
    if excluded:
        bad = np.zeros(N_CATS, dtype=bool)
        bad[list(excluded)] = True
        take &= ~bad[cat]
    return float(take.mean())


def _oracle_share(pop: tuple[np.ndarray, np.ndarray, np.ndarray], precision: float) -> float:
    """The population share of the best cut on the score at a true precision."""
    s, _, p = pop
    order = np.argsort(-s)
    prec = np.cumsum(p[order]) / np.arange(1, len(s) + 1)
    good = np.flatnonzero(prec >= precision)
    return (good.max() + 1) / len(s) if len(good) else 0.0


def test_one_cut_keeps_the_promise_and_reaches_most_of_what_the_ranking_carries(world):
    w, *pop_ = world
    pop = (pop_[0], pop_[1], pop_[2])
    rng = np.random.default_rng(0)
    held, shares, excluded_any = 0, [], 0
    for _ in range(N_DRAWS):
        s, cat, p = w.draw(N_ROWS, rng)
        ok = rng.uniform(size=N_ROWS) < p
        th = fit_thresholds(s, ok, cat.astype(str), target_precision=0.95, delta=0.04)
        excluded = {int(k) for k, v in th.per_node.items() if math.isinf(v) and math.isfinite(th.global_)}
        excluded_any += bool(excluded)
        cut = th.global_
        held += math.isinf(cut) or _true_precision(pop, cut, excluded) >= 0.95
        shares.append(0.0 if math.isinf(cut) else _true_share(pop, cut, excluded))
    oracle_96 = _oracle_share(pop, 0.96)
    assert held / N_DRAWS >= 0.95, held
    assert np.mean(shares) >= 0.85 * oracle_96, (np.mean(shares), oracle_96)
    assert excluded_any > 0.5 * N_DRAWS  # the two bad big categories are usually caught


def test_per_category_proofs_reach_less_on_the_same_data(world):
    w = world[0]
    rng = np.random.default_rng(1)
    new, old = [], []
    for _ in range(20):  # the old procedure is slow (one proof per category): fewer draws
        s, cat, p = w.draw(N_ROWS, rng)
        ok = rng.uniform(size=N_ROWS) < p
        ids = cat.astype(str)
        th = fit_thresholds(s, ok, ids, target_precision=0.95, delta=0.04)
        new.append(_share_of(th.for_nodes(ids), s))
        legacy = fit_thresholds_per_category(s, ok, ids, target_precision=0.95, min_node_support=100)
        old.append(_share_of(legacy.for_nodes(ids), s))
    assert np.mean(new) > np.mean(old) + 0.05, (np.mean(new), np.mean(old))


def _share_of(bars: np.ndarray, s: np.ndarray) -> float:
    return float((s >= bars).mean())


def test_the_sequence_stops_at_the_first_failure_even_when_a_lower_cut_would_pass():
    # 1,000 rows ranked by score: the top 300 all right, the next 30 all wrong, the rest right again.
    # The cut at 300 rows passes, the one at 310 fails (300 of 310 right does not prove 0.95): the
    # sequence stops there and keeps 300 rows, although every cut past ~700 rows has a plain precision
    # that proves 0.95 again; a scan taking the lowest passing cut anywhere would take them.
    s = np.linspace(1.0, 0.0, 1000, endpoint=False)
    ok = np.ones(1000, dtype=bool)
    ok[300:330] = False
    seq = CutSequence(min_start_rows=300, max_start_share=0.3)
    assert seq.sizes(1000)[:2].tolist() == [300, 310]
    fit = fixed_sequence_test(s, ok, target_precision=0.95, delta=0.05, sequence=seq)
    assert fit.fit.accepted == 300 and fit.passed == 1 and fit.tested == 2
    assert fit.first_failure is not None and fit.first_failure["accepted"] == 310
    assert best_cut_share(s, ok, 0.96) == 1.0  # a lower cut does reach 0.96 observed
    # the first cut fails at once: nothing is accepted, never a weaker promise
    bad = np.r_[np.zeros(300, dtype=bool), np.ones(700, dtype=bool)]
    none = fixed_sequence_test(s, bad, target_precision=0.9, sequence=seq)
    assert math.isinf(none.fit.threshold) and none.fit.accepted == 0 and none.tested == 1


def test_the_start_of_the_sequence_is_a_row_count_rule_fixed_in_advance():
    seq = CutSequence()
    # enough rows that a ranking one point above the target (0.96) passes ...
    assert rows_to_prove(0.96, 0.95, 0.05) == seq.start_rows(20_000, target_precision=0.95) == 1148
    assert rows_to_prove(1.0, 0.95, 0.05) == 59  # 59 right out of 59: the bare minimum
    # ... but on a small catalog at most half its rows, and never fewer than 300
    assert seq.start_rows(617, target_precision=0.95) == 309
    assert seq.start_rows(500, target_precision=0.95) == 300
    assert seq.sizes(150).tolist() == [150]  # fewer rows than that: one test on all of them
    sizes = seq.sizes(4206, target_precision=0.95)
    assert np.all(np.diff(sizes) > 0) and sizes[-1] == 4206 and sizes[1] - sizes[0] == 43


def test_ties_join_their_cut():
    s = np.r_[np.full(400, 0.9), np.linspace(0.8, 0.1, 600)]
    ok = np.r_[np.ones(400, dtype=bool), np.zeros(600, dtype=bool)]
    seq = CutSequence(max_start_share=0.3)
    fit = fixed_sequence_test(s, ok, target_precision=0.97, sequence=seq)
    assert fit.fit.accepted == 400 and fit.fit.threshold == 0.9


def test_a_category_provably_below_target_under_the_cut_is_excluded():
    rng = np.random.default_rng(3)
    ids = np.array(["good"] * 3000 + ["bad"] * 300 + ["tiny"] * 8, dtype=object)
    s = rng.uniform(0.5, 1.0, len(ids))
    p = np.where(ids == "bad", 0.7, 0.995)
    ok = rng.uniform(size=len(ids)) < p
    ok[ids == "tiny"] = False  # wrong, but too few rows to prove anything: not excluded
    th = fit_thresholds(s, ok, ids, target_precision=0.95)
    assert math.isfinite(th.global_)
    assert math.isinf(th.per_node["bad"]) and th.per_node["good"] == th.per_node["tiny"] == th.global_
    ev = th.groups["bad (excluded)"]
    assert ev["upper_bound"] < 0.95 and ev["support"] == 300
    # removing the bad rows only raises the precision of what remains
    keep = s >= th.for_nodes(ids)
    everything = s >= th.global_
    assert ok[keep].mean() > ok[everything].mean()
    assert th.group_of["good"] == GLOBAL
    assert provably_below(ids, s, ok, math.inf) == {}


def test_the_backoff_tier_is_proven_on_its_own_share_of_delta():
    rng = np.random.default_rng(5)
    n = 3000
    parent = rng.uniform(0.3, 1.0, n)
    leaf = np.minimum(parent, rng.uniform(0.3, 1.0, n))
    sc = np.column_stack([leaf, parent])  # deepest first, rising upwards
    cor = np.column_stack([rng.uniform(size=n) < leaf**0.3, rng.uniform(size=n) < parent**0.2])
    cor[:, 1] |= cor[:, 0]
    own, j = fit_backoff_threshold(sc, cor, target_precision=0.9)
    assert own.delta == pytest.approx(0.02)  # 40% of the 0.05 budget; the leaf tier keeps 0.03
    full, _ = fit_backoff_threshold(sc, cor, target_precision=0.9, delta=0.05)
    assert math.isfinite(own.fit.threshold)
    assert own.fit.lower_bound >= 0.9 and own.fit.accepted <= full.fit.accepted
    chosen_ok = cor[np.flatnonzero(j >= 0), j[j >= 0]]
    assert chosen_ok.mean() == pytest.approx(own.fit.correct / own.fit.accepted)
    # the answer climbs from the label: the deepest node clearing the cut
    row = int(np.flatnonzero(sc[:, 0] >= own.fit.threshold)[0])
    assert j[row] == 0


def test_information_gain_is_one_at_a_leaf_and_zero_at_the_root():
    got = information_gain(np.array([1, 16, 256]), 256)
    assert got.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_the_backoff_sequence_starts_at_a_row_count_read_without_labels():
    rng = np.random.default_rng(11)
    n = 2000
    s1 = np.clip(rng.beta(5.0, 0.6, n), 0.0, 0.9995)
    sc = np.column_stack([s1, s1 + (1.0 - s1) * rng.uniform(0.0, 0.8, n)])
    cor = np.column_stack([rng.uniform(size=n) < sc[:, 0], rng.uniform(size=n) < sc[:, 1]])
    fit, _ = fit_backoff_threshold(sc, cor)
    again, _ = fit_backoff_threshold(sc, ~cor)  # other outcomes, the same start
    assert fit.start == again.start and fit.start is not None
    first = float(fit.start["cut"])
    assert (sc >= first).any(axis=1).sum() >= 300  # the first cut answers 300 rows ...
    assert (sc >= first + 0.005).any(axis=1).sum() < 300  # ... the one above it fewer
    # with the accepted labels carried (>= 300 rows), the sequence starts at the top of the grid
    carried, _ = fit_backoff_threshold(sc, cor, carried=Carried(rows=400, correct=392))
    assert carried.start is not None and carried.start["cut"] == 0.995


def test_the_accepted_leaves_carry_the_backoff_answers_in_one_test_of_the_whole_column():
    """`confident_*` holds the accepted labels and the back-off answers: one test over both, so a set of
    ancestor answers a little under 97% right, too few to prove 0.95 alone, is proven with 1,600
    accepted labels at 96.5% (Amazon UK's out-of-fold figures: 224 of 230, then 1,543 of 1,602)."""
    rng = np.random.default_rng(3)
    n = 900
    s = np.clip(rng.beta(8.0, 0.5, n), 0.0, 0.999)
    p = np.minimum(s, 0.965)  # overconfident at the top
    sc = np.column_stack([s, np.full(n, -np.inf)])
    cor = np.column_stack([rng.uniform(size=n) < p, np.zeros(n, dtype=bool)])
    alone, _ = fit_backoff_threshold(sc, cor)
    leaves = Carried(rows=1600, correct=1544)
    both, j = fit_backoff_threshold(sc, cor, carried=leaves)
    assert math.isinf(alone.fit.threshold)
    assert math.isfinite(both.fit.threshold) and both.fit.lower_bound >= 0.95
    answered = j >= 0
    assert both.fit.accepted == leaves.rows + answered.sum()
    assert both.fit.correct == leaves.correct + cor[answered, 0].sum()
    assert both.fit.rows == leaves.rows + n
