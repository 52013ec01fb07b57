"""`CategoryModel`'s correctness score: a small logistic model of P(the top label is exactly right).

    RANKINGS            the leaf rankings a model may compete (``"confidence"`` always does)
    check_rankings      the ``rankings`` option, validated (message names the allowed values and the fix)
    CorrectnessModel    the fitted score: logistic regression + each label's shrunk out-of-fold precision
    fit_correctness     cross-fitted out-of-fold scores (each row scored by a model that never saw it) and
                        the final model, fit on all out-of-fold rows
    correctness_features  the features of one row set, from the stacker's raw label distribution and the
                        base scorers' scores

The features (measured in ``benchmarks/_quality_correctness.py``, "with per-scorer agreement"; figures in
docs/quality.md, section "The correctness score"): the top two scores of the stacker's distribution,
their margin, its entropy, the top label's depth and log training support; for each base scorer, whether
its own top label is the stacker's and its margin for it (its score there minus its best other label's),
with the number of scorers that agree; and the top label's out-of-fold precision shrunk towards its
parent's and the global one (computed only from rows the scored row is not among).

It competes with the confidence in `classifiers._model.proof.fit_model_thresholds` on its share of delta;
its cut is on its own scale (`classifiers._model.predict.assemble_prediction` applies it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from classifiers._model.rerank import LabelInfo
from shelfwise.errors import ConfigError

__all__ = [
    "CONFIDENCE",
    "CORRECTNESS",
    "RANKINGS",
    "CorrectnessModel",
    "agreement_features",
    "check_rankings",
    "correctness_features",
    "fit_correctness",
    "shrunk_precision",
]

CONFIDENCE = "confidence"
CORRECTNESS = "correctness"
RANKINGS = (CONFIDENCE, CORRECTNESS)
_SHRINK = 20.0  # prior rows of the parent's precision in a label's shrunk precision
_FOLDS = 5
_MIN_ROWS = 50  # fewer out-of-fold rows: a constant score (nothing could be proven on them anyway)


def check_rankings(rankings: Sequence[str]) -> tuple[str, ...]:
    """``rankings`` as a tuple in the canonical order; a `ConfigError` naming the fix when not valid."""
    got = tuple(str(r) for r in rankings)
    bad = [r for r in got if r not in RANKINGS]
    if bad or CONFIDENCE not in got or len(set(got)) != len(got):
        raise ConfigError(
            f"rankings={list(got)!r} is not valid: each must be one of {', '.join(RANKINGS)}, once, and "
            f"'{CONFIDENCE}' always competes; use ['confidence'] (default) or ['confidence', 'correctness'] "
            "(setting 'rankings' in shelfwise.toml, SHELFWISE_RANKINGS, or train's --ranking)"
        )
    return tuple(r for r in RANKINGS if r in got)


def correctness_features(
    p_raw: np.ndarray, scores: dict[str, np.ndarray], names: Sequence[str], info: LabelInfo
) -> np.ndarray:
    """(n, 7 + 2 * len(names)) features of the module docstring, without the shrunk precision."""
    n = len(p_raw)
    top = p_raw.argmax(axis=1)
    srt = np.sort(p_raw, axis=1)
    second = srt[:, -2] if p_raw.shape[1] > 1 else np.zeros(n)
    entropy = -(p_raw * np.log(np.clip(p_raw, 1e-12, 1.0))).sum(axis=1)
    cols = [srt[:, -1], second, srt[:, -1] - second, entropy, info.depth[top], info.log_count[top]]
    return np.column_stack([*cols, agreement_features(scores, names, top)])


def agreement_features(scores: Mapping[str, np.ndarray], names: Sequence[str], top: np.ndarray) -> np.ndarray:
    """(n, 2 * len(names) + 1): per base scorer (sorted by name), whether its own top label is ``top``
    and its own margin for ``top`` (its score there minus its best other label's); then how many agree."""
    n = len(top)
    rows = np.arange(n)
    cols: list[np.ndarray] = []
    agree = np.zeros(n)
    for name in sorted(names):
        s = np.asarray(scores[name], dtype=np.float64)
        at_top = s[rows, top]
        other = s.copy()
        other[rows, top] = -np.inf
        same = s.argmax(axis=1) == top
        agree += same
        best_other = other.max(axis=1) if s.shape[1] > 1 else np.zeros(n)
        cols += [same.astype(float), at_top - best_other]
    return np.column_stack([*cols, agree])


def shrunk_precision(top: np.ndarray, ok: np.ndarray, parent: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per label: its precision on ``rows``, shrunk to its parent group's, shrunk to the global one."""
    k = len(parent)
    right = np.bincount(top[rows], weights=ok[rows].astype(float), minlength=k)
    seen = np.bincount(top[rows], minlength=k).astype(float)
    groups, inv = np.unique(parent, return_inverse=True)
    g_right = np.bincount(inv, weights=right, minlength=len(groups))
    g_seen = np.bincount(inv, weights=seen, minlength=len(groups))
    glob = float(ok[rows].mean()) if len(rows) else 0.0
    par = (g_right + _SHRINK * glob) / (g_seen + _SHRINK)
    return np.asarray((right + _SHRINK * par[inv]) / (seen + _SHRINK))


def _inner_precision(
    top: np.ndarray, ok: np.ndarray, parent: np.ndarray, rows: np.ndarray, seed: int
) -> np.ndarray:
    """Each of ``rows``' shrunk precision of its top label, from the other rows of ``rows`` only."""
    out = np.zeros(len(rows))
    for itr, iva in KFold(_FOLDS, shuffle=True, random_state=seed + 1).split(rows):
        out[iva] = shrunk_precision(top, ok, parent, rows[itr])[top[rows[iva]]]
    return out


def _fit_lr(x: np.ndarray, ok: np.ndarray) -> LogisticRegression | float:
    """The logistic model, or the constant rate where the rows hold one outcome only."""
    if ok.all() or not ok.any():
        return float(ok.mean())
    return LogisticRegression(max_iter=2000).fit(x, ok)


def _proba(lr: LogisticRegression | float, x: np.ndarray) -> np.ndarray:
    if isinstance(lr, float):
        return np.full(len(x), lr)
    return np.asarray(lr.predict_proba(x)[:, 1])


@dataclass
class CorrectnessModel:
    """P(top label exactly right) from `correctness_features` plus the top label's shrunk precision."""

    scorer_names: tuple[str, ...]
    precision: np.ndarray  # (K,) each label's shrunk out-of-fold precision, from all rows
    model: LogisticRegression | float

    def score(self, p_raw: np.ndarray, scores: dict[str, np.ndarray], info: LabelInfo) -> np.ndarray:
        """The correctness score of rows (the stacker's raw distribution, the base scorers' scores)."""
        x = correctness_features(p_raw, scores, self.scorer_names, info)
        return _proba(self.model, np.column_stack([x, self.precision[p_raw.argmax(axis=1)]]))


def fit_correctness(
    p_raw: np.ndarray,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    *,
    scorer_names: Sequence[str],
    info: LabelInfo,
    random_state: int = 0,
) -> tuple[np.ndarray, CorrectnessModel]:
    """(out-of-fold correctness scores, the final model) on out-of-fold rows: stacker output ``p_raw``,
    labels ``y``, base scorers' out-of-fold ``scores``. Each row's score comes from a model fit on the
    other folds, its precision feature from those folds too; the final model sees every row."""
    top = p_raw.argmax(axis=1)
    ok = top == y
    parent = info.parent_group
    names = tuple(sorted(scorer_names))
    if len(y) < _MIN_ROWS:
        rate = float(ok.mean()) if len(y) else 0.0
        return np.full(len(y), rate), CorrectnessModel(names, np.full(len(parent), rate), rate)
    x = correctness_features(p_raw, scores, names, info)
    seed = int(random_state)
    oof = np.zeros(len(y))
    for tr, va in KFold(_FOLDS, shuffle=True, random_state=seed).split(x):
        x_tr = np.column_stack([x[tr], _inner_precision(top, ok, parent, tr, seed)])
        x_va = np.column_stack([x[va], shrunk_precision(top, ok, parent, tr)[top[va]]])
        oof[va] = _proba(_fit_lr(x_tr, ok[tr]), x_va)
    every = np.arange(len(y))
    final = _fit_lr(np.column_stack([x, _inner_precision(top, ok, parent, every, seed)]), ok)
    precision = shrunk_precision(top, ok, parent, every)
    return oof, CorrectnessModel(names, precision, final)
