"""Proving a precision bar over the whole accepted set (selective classification, Learn-then-Test).

    CutSequence          the cuts to test, fixed before any label is read: a first cut with enough rows
                          to pass at all (a row-count rule), then steps of 1% coverage
    fixed_sequence_test   test the cuts from high to low with exact binomial p-values for
                          "precision >= target"; stop at the first failure; keep the lowest cut that passed
    provably_below        categories whose accepted rows are provably below the target (excluded)
    fit_thresholds        one proven cut for all categories, minus the provably bad ones
    fit_backoff_threshold the back-off tier's own cut, proven the same way on its own delta, over the
                          whole confident_* column (its answers plus the accepted labels, `Carried`)
    backoff_start         where the back-off sequence starts: the first cut answering 300 rows (or
                          half), the accepted labels it carries included (a count, no label)
    best_cut_share        the largest share a cut chosen *with the labels* reaches at a precision (a
                          reference, never a promise)
    information_gain      how much of the leaf's information a back-off answer keeps (0 root .. 1 leaf)

Why one test over the pooled rows (docs/quality.md): the promise is about the accepted set as a whole, so
one bound on it is all it needs, and easy rows may carry harder ones. Fixed-sequence testing (Angelopoulos
et al., *Learn then Test*, 2021; MAPIE ``mapie/risk_control/fwer_control.py``, ``"fst_ascending"``)
controls the family-wise error at ``delta`` without splitting it over the cuts, provided the order is
fixed in advance and the sequence stops at the first cut that fails. The order here depends on the scores
only, never on whether a row was right, so each test is exact given the scores.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta, binom

from classifiers.calibration import (
    DELTA,
    GLOBAL,
    ThresholdFit,
    Thresholds,
    fit_threshold,
)

__all__ = [
    "BACKOFF_DELTA_SHARE",
    "BACKOFF_GRID",
    "BackoffGrid",
    "Carried",
    "CutSequence",
    "SequenceFit",
    "backoff_start",
    "best_cut_share",
    "fit_backoff_threshold",
    "fit_thresholds",
    "fixed_sequence_test",
    "information_gain",
    "provably_below",
    "rows_to_prove",
]

#: Share of the error budget ``delta`` the back-off tier spends; the leaf tier keeps the rest.
BACKOFF_DELTA_SHARE = 0.4


@dataclass(frozen=True)
class CutSequence:
    """The accepted-row counts to test, most confident first, fixed before any label is read.

    The first cut holds enough rows to pass at all: as many as a proof needs when the observed precision
    is ``start_margin`` above the target (1,148 rows for 0.95 at delta 0.05: the very top of a
    ranking is noisy, and a sequence that starts there stops at once), but at least ``min_start_rows``
    and at most ``max_start_share`` of the rows (small catalogs). Each further cut accepts
    ``step_share`` more of the rows, down to all of them.
    """

    start_margin: float = 0.01
    min_start_rows: int = 300
    max_start_share: float = 0.5
    step_share: float = 0.01

    def start_rows(self, n: int, *, target_precision: float) -> int:
        """The first cut's row count for ``n`` rows (n and the target only; read at the whole budget
        `DELTA`, so splitting delta between rankings or tiers does not move the start)."""
        need = rows_to_prove(min(1.0, target_precision + self.start_margin), target_precision, DELTA)
        cap = max(1, math.ceil(self.max_start_share * n))
        return int(min(n, max(self.min_start_rows, min(need, cap))))

    def sizes(self, n: int, *, target_precision: float = 0.95) -> np.ndarray:
        """Accepted-row counts of the cuts, in test order (increasing), for ``n`` rows.

        >>> CutSequence().sizes(617)[:2].tolist(), CutSequence().sizes(20_000)[:2].tolist()
        ([309, 316], [1148, 1348])
        """
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        start = self.start_rows(n, target_precision=target_precision)
        step = max(1, math.ceil(self.step_share * n))
        return np.unique(np.r_[np.arange(start, n, step), n]).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_margin": self.start_margin,
            "min_start_rows": self.min_start_rows,
            "max_start_share": self.max_start_share,
            "step_share": self.step_share,
        }


@functools.lru_cache(maxsize=64)
def rows_to_prove(observed: float, target: float, delta: float, *, most: int = 100_000) -> int:
    """The fewest accepted rows at an ``observed`` precision that prove ``target`` at ``delta`` (exact
    binomial test); ``most`` when none up to it does (e.g. observed == target).

    >>> rows_to_prove(1.0, 0.95, 0.05)
    59
    """
    m = np.arange(1, most + 1)
    errors = np.floor((1.0 - observed) * m + 1e-9)
    ok = np.flatnonzero(_p_values(m - errors, m, target) <= delta)
    return int(m[ok[0]]) if len(ok) else most


@dataclass(frozen=True)
class SequenceFit:
    """The cut a fixed sequence deployed (``fit``; ``threshold = inf``: none passed) and how it got there."""

    fit: ThresholdFit
    delta: float
    tested: int  # cuts tested, the failing one included
    passed: int  # cuts that passed before the first failure
    first_failure: dict[str, Any] | None  # accepted / correct / p_value of the cut that stopped it
    sequence: CutSequence | None = field(default_factory=CutSequence)  # None: the back-off grid
    start: dict[str, Any] | None = None  # the back-off tier's first cut and what predicted it

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.fit.to_dict(),
            "procedure": "fixed sequence (Learn-then-Test), exact binomial p-values",
            "delta": round(self.delta, 6),
            "cuts_tested": self.tested,
            "cuts_passed": self.passed,
            "first_failure": self.first_failure,
        }
        if self.sequence is not None:
            out["sequence"] = self.sequence.to_dict()
        if self.start is not None:
            out["start"] = self.start
        return out


def _p_values(correct: np.ndarray, accepted: np.ndarray, target: float) -> np.ndarray:
    """Exact p-values of H0 "precision < target" for ``correct`` right out of ``accepted``: the chance
    of at most the observed errors when each accepted row is wrong with probability ``1 - target``
    (p <= delta exactly when the one-sided Clopper-Pearson lower bound is >= target)."""
    errors = np.asarray(accepted) - np.asarray(correct)
    return np.asarray(binom.cdf(errors, np.asarray(accepted), 1.0 - target), dtype=np.float64)


def _lower_bound(k: int, m: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson lower bound of k / m: the delta quantile of
    Beta(k, m - k + 1), as `classifiers.calibration.precision_lower_bound` (which goes through
    ``binomtest``, slower inside a loop); 0 when nothing is right."""
    return float(beta.ppf(delta, k, m - k + 1)) if k > 0 and m > 0 else 0.0


def _check(scores: Any, correct: Any, target_precision: float) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if s.shape != ok.shape:
        raise ValueError(f"scores and correct differ in length: {s.shape} vs {ok.shape}")
    return s, ok


def fixed_sequence_test(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float = DELTA,
    sequence: CutSequence | None = None,
) -> SequenceFit:
    """Test the cuts of ``sequence`` from high to low; deploy the lowest that passed before the first
    failure (``threshold = inf`` when the first fails).

    A cut never splits equal scores: it accepts every row scoring at least the score of its last row.
    """
    seq = sequence or CutSequence()
    s, ok = _check(scores, correct, target_precision)
    n = len(s)
    none = ThresholdFit(math.inf, n, 0, 0, 0.0)
    if n == 0:
        return SequenceFit(none, delta, 0, 0, None, seq)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    hits = np.cumsum(ok[order])
    cuts = s_sorted[seq.sizes(n, target_precision=target_precision) - 1]
    accepted = np.unique(np.searchsorted(-s_sorted, -cuts, side="right"))  # ties join their cut
    correct_at = hits[accepted - 1]
    passed = _p_values(correct_at, accepted, target_precision) <= delta
    fails = np.flatnonzero(~passed)
    stop = int(fails[0]) if len(fails) else len(accepted)
    first_failure = None
    if len(fails):
        m, k = int(accepted[stop]), int(correct_at[stop])
        p = float(_p_values(np.array([k]), np.array([m]), target_precision)[0])
        first_failure = {"accepted": m, "correct": k, "p_value": round(p, 6)}
    tested = min(stop + 1, len(accepted))
    if stop == 0:
        return SequenceFit(none, delta, tested, 0, first_failure, seq)
    m, k = int(accepted[stop - 1]), int(correct_at[stop - 1])
    fit = ThresholdFit(float(s_sorted[m - 1]), n, m, k, _lower_bound(k, m, delta))
    return SequenceFit(fit, delta, tested, stop, first_failure, seq)


def provably_below(
    labels: Sequence[str] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    cut: float,
    *,
    target_precision: float = 0.95,
    delta: float = DELTA,
    min_rows: int = 10,
) -> dict[str, ThresholdFit]:
    """The labels whose rows at or above ``cut`` (at least ``min_rows``) are provably below the target:
    their one-sided (1 - delta) Clopper-Pearson upper bound of precision is under it. Each with its
    evidence. Removing such rows from an accepted set can only raise its precision."""
    s, ok = _check(scores, correct, target_precision)
    lab = np.asarray([str(x) for x in labels], dtype=object)
    if len(lab) != len(s):
        raise ValueError(f"labels and scores differ in length: {len(lab)} vs {len(s)}")
    if len(s) == 0 or math.isinf(cut):
        return {}
    names, inv = np.unique(lab, return_inverse=True)
    above = s >= cut
    m = np.bincount(inv[above], minlength=len(names))
    k = np.bincount(inv[above], weights=ok[above].astype(np.float64), minlength=len(names))
    rows = np.bincount(inv, minlength=len(names))
    upper = np.ones(len(names))
    some_wrong = (m >= min_rows) & (k < m)
    upper[some_wrong] = beta.ppf(1.0 - delta, k[some_wrong] + 1.0, m[some_wrong] - k[some_wrong])
    bad = np.flatnonzero(some_wrong & (upper < target_precision))
    return {
        str(names[i]): ThresholdFit(math.inf, int(rows[i]), int(m[i]), int(k[i]), float(upper[i]))
        for i in bad
    }


def fit_thresholds(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    predicted_ids: Sequence[str] | np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float = DELTA,
    sequence: CutSequence | None = None,
    min_exclusion_rows: int = 10,
) -> Thresholds:
    """One cut for every category, proven on all out-of-fold rows together (`fixed_sequence_test`),
    then every category whose rows above that cut are provably below the target gets ``inf``.

    ``groups`` holds the evidence: ``"*"`` the proven cut (with the sequence's record), and one
    ``"<label> (excluded)"`` entry per excluded category (its ``upper_bound`` under the cut).
    """
    conf, ok = _check(confidence, correct, target_precision)
    ids = np.asarray([str(i) for i in predicted_ids], dtype=object)
    if len(ids) != len(conf):
        raise ValueError(
            f"confidence, correct and predicted_ids differ in length: {len(conf)}, {len(ok)}, {len(ids)}"
        )
    seq = fixed_sequence_test(conf, ok, target_precision=target_precision, delta=delta, sequence=sequence)
    cut = seq.fit.threshold
    excluded = provably_below(
        ids, conf, ok, cut, target_precision=target_precision, delta=DELTA, min_rows=min_exclusion_rows
    )
    labels = sorted(set(ids.tolist()))
    per_node = {lab: (math.inf if lab in excluded else cut) for lab in labels}
    groups: dict[str, dict[str, Any]] = {GLOBAL: seq.to_dict()}
    for lab, ev in excluded.items():
        groups[f"{lab} (excluded)"] = {
            "threshold": "inf",
            "oof_precision": round(ev.correct / ev.accepted, 4),
            "upper_bound": round(ev.lower_bound, 4),
            "support": ev.rows,
            "accepted": ev.accepted,
            "excluded_from": GLOBAL,
        }
    return Thresholds(
        global_=cut,
        per_node=per_node,
        target_precision=target_precision,
        support={GLOBAL: len(ids)},
        delta=delta,
        groups=groups,
        group_of=dict.fromkeys(labels, GLOBAL),
    )


def _backoff_answers(sc: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(has an answer, depth index of the deepest ancestor clearing ``t``) per row."""
    clears = sc >= t
    anyc = np.asarray(clears.any(axis=1), dtype=bool)
    return anyc, np.where(anyc, clears.argmax(axis=1), -1)


#: The back-off tier's cuts on the tree-summed probability, high to low, fixed in advance.
BACKOFF_GRID = np.round(np.arange(0.995, 0.5 - 1e-9, -0.005), 3)


@dataclass(frozen=True)
class BackoffGrid:
    """Per cut of `BACKOFF_GRID`: answers (``m``, the carried rows included) and right among them
    (``k``; read by the tests only), and the depth index each row's answer takes (-1: none)."""

    m: np.ndarray
    k: np.ndarray
    choice: list[np.ndarray]


@dataclass(frozen=True)
class Carried:
    """Rows every back-off answer set holds whatever its cut: the rows whose label is accepted (their
    `confident_*` answer is the label itself). How many, and how many are right."""

    rows: int = 0
    correct: int = 0


def _backoff_grid(sc: np.ndarray, cor: np.ndarray, carried: Carried) -> BackoffGrid:
    m, k, choice = [], [], []
    for t in BACKOFF_GRID:
        anyc, j = _backoff_answers(sc, float(t))
        rows = np.flatnonzero(anyc)
        m.append(len(rows) + carried.rows)
        k.append(int(cor[rows, j[rows]].sum()) + carried.correct)
        choice.append(j)
    return BackoffGrid(np.array(m), np.array(k), choice)


def backoff_start(answered: np.ndarray, total: int, *, min_start_rows: int = 300) -> int:
    """Where the back-off sequence starts (an index into `BACKOFF_GRID`; -1: no cut answers enough):
    the first cut whose answer set holds at least ``min_start_rows`` rows, or half of ``total`` when
    fewer (a count, no label). With the accepted labels carried, that is the top of the grid wherever
    the leaf proved a cut of 300 rows."""
    ok = np.flatnonzero(np.asarray(answered) >= min(min_start_rows, math.ceil(0.5 * total)))
    return int(ok[0]) if len(ok) and total > 0 else -1


def fit_backoff_threshold(
    ancestor_scores: np.ndarray,
    ancestor_correct: np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float = DELTA * BACKOFF_DELTA_SHARE,
    min_start_rows: int = 300,
    carried: Carried | None = None,
) -> tuple[SequenceFit, np.ndarray]:
    """The back-off tier's cut t: a row's answer is the first ancestor, climbing from its label, whose
    tree-summed probability is >= t.

    ``ancestor_scores`` / ``ancestor_correct`` are (n, d): each row's ancestors, deepest first (padded
    with ``-inf``), and whether the truth lies under each. The cuts are `BACKOFF_GRID` (probabilities
    0.995, 0.990, ..., 0.5), tested high to low like the leaf cut, on this tier's own ``delta``,
    stopping at the first failure; the sequence starts at `backoff_start` (a row count, no label).
    Each test is over the whole answer set a cut gives: these rows' answers plus the ``carried`` rows
    (the accepted labels, which `confident_*` answers as they are), since the promise is about that
    column as a whole. Returns the fit (``accepted`` counts the carried rows too; its ``start`` records
    the first cut) and the depth index chosen per row (-1: none).
    """
    sc = np.asarray(ancestor_scores, dtype=np.float64)
    cor = np.asarray(ancestor_correct, dtype=bool)
    n = sc.shape[0]
    carry = carried or Carried()
    none = np.full(n, -1)
    nothing = ThresholdFit(math.inf, n + carry.rows, 0, 0, 0.0)
    if n == 0 or sc.ndim != 2 or sc.shape[1] == 0:
        return SequenceFit(nothing, delta, 0, 0, None, None), none
    grid = _backoff_grid(sc, cor, carry)
    begin = backoff_start(grid.m, n + carry.rows, min_start_rows=min_start_rows)
    start = None
    if begin >= 0:
        start = {
            "cut": float(BACKOFF_GRID[begin]),
            "answered": int(grid.m[begin]),
            "rule": f"first cut answering {min_start_rows} rows (or half of them), carried rows included",
        }
    best: tuple[ThresholdFit, np.ndarray] = (nothing, none)
    tested = passed = 0
    failure = None
    for i in range(begin, len(BACKOFF_GRID)) if begin >= 0 else []:
        m, k = int(grid.m[i]), int(grid.k[i])
        tested += 1
        p = float(_p_values(np.array([k]), np.array([m]), target_precision)[0])
        if p > delta:
            failure = {"accepted": m, "correct": k, "p_value": round(p, 6), "cut": float(BACKOFF_GRID[i])}
            break
        passed += 1
        fit = ThresholdFit(float(BACKOFF_GRID[i]), n + carry.rows, m, k, _lower_bound(k, m, delta))
        best = (fit, grid.choice[i])
    return SequenceFit(best[0], delta, tested, passed, failure, None, start), best[1]


def best_cut_share(
    scores: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, precision: float
) -> float:
    """The largest share of rows one cut on ``scores`` accepts at an observed precision >= ``precision``,
    the cut chosen with the labels (an oracle: a reference for what a ranking can carry, not a proof).

    >>> best_cut_share([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], 0.75)
    1.0
    """
    fit = fit_threshold(scores, correct, target_precision=precision, delta=None)
    return fit.coverage


def information_gain(leaves_under: np.ndarray, total_leaves: int) -> np.ndarray:
    """Normalised information gain of answering a node with ``leaves_under`` leaves below it (itself
    when a leaf): ``1 - log(leaves_under) / log(total_leaves)``; 1 for a leaf, 0 for the whole tree
    (Goren, Galil & El-Yaniv, *Hierarchical Selective Classification*, 2024)."""
    under = np.maximum(np.asarray(leaves_under, dtype=np.float64), 1.0)
    if total_leaves <= 1:
        return np.ones_like(under)
    return np.asarray(1.0 - np.log(under) / math.log(total_leaves), dtype=np.float64)
