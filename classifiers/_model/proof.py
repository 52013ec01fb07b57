"""`CategoryModel`'s auto-accept proof: the leaf cut, the back-off cut and the out-of-fold figures.

    OutOfFold             the out-of-fold rows a proof reads: raw and cross-fitted label distributions,
                          labels
    AcceptFit             what `fit_model_thresholds` returns: the deployable `Thresholds`, the ranking
                          that won, and the out-of-fold figures `train` prints
    fit_model_thresholds  leaf cut (one fixed sequence over all rows, per candidate ranking on its share
                          of delta; provably bad categories excluded), then the back-off cut on its own
                          share of delta
    ancestor_matrix       each row's proper ancestors' tree-summed scores, deepest first
    confident_nodes       per row, climbing from the label, the first node that clears its bar

Every figure here is out of fold (see classifiers/selective.py for the procedure, docs/quality.md for
the promise). Helpers return; `CategoryModel.fit` assigns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers._model.accept import Calibrator, calibrate_top
from classifiers.calibration import DELTA, TemperatureScaler, Thresholds, precision_lower_bound
from classifiers.hierarchy import NodeIndex
from classifiers.selective import (
    BACKOFF_DELTA_SHARE,
    Carried,
    CutSequence,
    best_cut_share,
    fit_backoff_threshold,
    fit_thresholds,
    fixed_sequence_test,
    information_gain,
)

__all__ = [
    "AcceptFit",
    "OutOfFold",
    "ancestor_matrix",
    "confident_nodes",
    "fit_model_thresholds",
    "leaves_under",
]

#: The ranking every model has: the stacker's top score (calibrated by a monotone map).
CONFIDENCE = "confidence"


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold rows: the stacker's label distribution, its cross-fitted calibrated copy, labels."""

    p_raw: np.ndarray
    p_cal_cf: np.ndarray
    y: np.ndarray


@dataclass
class AcceptFit:
    """The proven thresholds (on the deployed scale), the leaf ranking that won, and the figures."""

    thresholds: Thresholds
    ranking: str
    leaf_accepted: np.ndarray  # (n,) out-of-fold rows the proven leaf cut accepts
    report: dict[str, Any] = field(default_factory=dict)


def leaves_under(index: NodeIndex, label_pos: np.ndarray) -> np.ndarray:
    """Per node position, how many trained labels lie at or under it."""
    out = np.zeros(len(index), dtype=np.int64)
    for p in label_pos:
        for a in index.ancestor_positions(int(p), include_self=True):
            out[a] += 1
    return out


def _oracle(scores: np.ndarray, ok: np.ndarray, target: float) -> dict[str, Any]:
    at = best_cut_share(scores, ok, target)
    plus = best_cut_share(scores, ok, min(1.0, target + 0.01))
    return {"best_cut_share_at_target": round(at, 4), "best_cut_share_at_target_plus_1pt": round(plus, 4)}


def _leaf_scores(oof: OutOfFold, calibrator: Calibrator) -> np.ndarray:
    """The out-of-fold score the confidence ranking is proven on: the raw top score (isotonic and none
    are monotone maps of it, so a new row clears the mapped cut exactly when its raw score clears the
    proven one), or the cross-fitted calibrated top score for temperature scaling (not such a map)."""
    top = oof.p_raw.argmax(axis=1)
    if isinstance(calibrator, TemperatureScaler):
        return np.asarray(oof.p_cal_cf[np.arange(len(top)), top])
    return np.asarray(oof.p_raw.max(axis=1))


def fit_model_thresholds(
    oof: OutOfFold,
    *,
    index: NodeIndex,
    label_pos: np.ndarray,
    calibrator: Calibrator,
    target_precision: float = 0.95,
    rankings: dict[str, np.ndarray] | None = None,
    sequence: CutSequence | None = None,
) -> AcceptFit:
    """The leaf cut, proven once over all out-of-fold rows, then the back-off cut (module docstring).

    ``rankings`` adds candidate leaf rankings (out-of-fold scores, higher = likelier right) to the
    model's confidence; the leaf's share of delta is split evenly between them (Bonferroni) and the
    one that proves the most coverage wins (its cut is on its own scale). Without candidates the
    confidence's cut is mapped through the calibrator onto the calibrated scale.
    """
    tp = float(target_precision)
    y = oof.y
    top = oof.p_raw.argmax(axis=1)
    correct = top == y
    classes_ids = np.array(index.ids, dtype=object)[label_pos]
    labels = classes_ids[top]
    cands = {CONFIDENCE: _leaf_scores(oof, calibrator), **(rankings or {})}
    leaf_delta = DELTA * (1.0 - BACKOFF_DELTA_SHARE)
    each = leaf_delta / len(cands)
    proven = {
        name: fixed_sequence_test(s, correct, target_precision=tp, delta=each, sequence=sequence)
        for name, s in cands.items()
    }
    winner = max(proven, key=lambda k: (proven[k].fit.accepted, k == CONFIDENCE))
    scores = cands[winner]
    thresholds = fit_thresholds(scores, correct, labels, target_precision=tp, delta=each, sequence=sequence)
    leaf_ok = scores >= thresholds.for_nodes(labels)
    if winner == CONFIDENCE and not isinstance(calibrator, TemperatureScaler):
        thresholds = thresholds.mapped(lambda x: calibrate_top(calibrator, x))
    thresholds.unlisted = math.inf  # zero-shot nodes: no held-out row proves them
    thresholds.ranking = winner
    backoff, backoff_report = _fit_backoff(oof, index, label_pos, leaf_ok, tp, sequence)
    thresholds.backoff = backoff["threshold"]
    thresholds.backoff_fit = backoff_report
    n = len(y)
    k, m = int(correct[leaf_ok].sum()), int(leaf_ok.sum())
    oracle = _oracle(scores, correct, tp)
    report = {
        "ranking": winner,
        "rankings_compared": {
            name: {
                "proven_share": round(f.fit.coverage, 4),
                "delta": round(each, 6),
                **_oracle(cands[name], correct, tp),
            }
            for name, f in proven.items()
        },
        "proven_share": round(m / n, 4) if n else 0.0,
        "proven_precision": round(k / m, 4) if m else None,
        "proven_precision_lower_bound": round(precision_lower_bound(k, m, delta=each), 4) if m else None,
        **oracle,
        "proven_over_best_cut_plus_1pt": round(m / n / oracle["best_cut_share_at_target_plus_1pt"], 3)
        if n and oracle["best_cut_share_at_target_plus_1pt"]
        else None,
        "excluded_categories": len([g for g in thresholds.groups if g.endswith("(excluded)")]),
        "backoff": backoff_report,
    }
    return AcceptFit(thresholds=thresholds, ranking=winner, leaf_accepted=leaf_ok, report=report)


def _fit_backoff(
    oof: OutOfFold,
    index: NodeIndex,
    label_pos: np.ndarray,
    leaf_ok: np.ndarray,
    target: float,
    sequence: CutSequence | None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The back-off cut on its own share of delta: the answers of the rows whose leaf was not accepted
    (cross-fitted tree sums), tested together with the accepted leaves they join in `confident_*`;
    its share, precision and information gain (out of fold)."""
    y = oof.y
    top = oof.p_raw.argmax(axis=1)
    node_scores = index.aggregate(oof.p_cal_cf, label_pos)
    rest = np.flatnonzero(~leaf_ok)
    sc, cor = ancestor_matrix(index, node_scores[rest], label_pos[top[rest]], label_pos[y[rest]])
    carried = Carried(int(leaf_ok.sum()), int((top == y)[leaf_ok].sum()))
    fit, j = fit_backoff_threshold(sc, cor, target_precision=target, carried=carried)
    n = len(y)
    under = leaves_under(index, label_pos)
    total = len(label_pos)
    gain = np.zeros(n)
    gain[leaf_ok] = information_gain(under[label_pos[top[leaf_ok]]], total)
    got = np.flatnonzero(j >= 0)
    if len(got):
        chosen = [
            index.ancestor_positions(int(label_pos[top[rest[r]]]), include_self=False)[int(j[r])] for r in got
        ]
        gain[rest[got]] = information_gain(under[np.array(chosen, dtype=np.int64)], total)
    report = {
        **fit.to_dict(),
        "carried_leaf_rows": carried.rows,
        "share_of_all_rows": round(len(got) / n, 4) if n else 0.0,
        "confident_share_of_all_rows": round((carried.rows + len(got)) / n, 4) if n else 0.0,
        "information_gain_of_its_answers": round(float(gain[rest[got]].mean()), 4) if len(got) else None,
        "information_gain_leaf_only": round(float(gain[leaf_ok].sum() / n), 4) if n else 0.0,
        "information_gain_with_backoff": round(float(gain.mean()), 4) if n else 0.0,
    }
    return {"threshold": fit.fit.threshold}, report


def ancestor_matrix(
    index: NodeIndex, node_scores: np.ndarray, best: np.ndarray, truth: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, truth lies under) of each row's proper ancestors of ``best``, deepest first, -inf padded."""
    n = len(best)
    chains = {int(b): index.ancestor_positions(int(b), include_self=False) for b in np.unique(best)}
    d = max((len(c) for c in chains.values()), default=0)
    sc = np.full((n, d), -np.inf)
    cor = np.zeros((n, d), dtype=bool)
    truth_anc: dict[int, set[int]] = {}
    for r in range(n):
        ch = chains[int(best[r])]
        if not ch:
            continue
        sc[r, : len(ch)] = node_scores[r, ch]
        if truth is not None:
            t = int(truth[r])
            if t not in truth_anc:
                truth_anc[t] = set(index.ancestor_positions(t))
            cor[r, : len(ch)] = [c in truth_anc[t] for c in ch]
    return sc, cor


def confident_nodes(
    index: NodeIndex,
    bar: float,
    node_scores: np.ndarray,
    best_pos: np.ndarray,
    leaf: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, probability, bar) per row: the label when its confidence clears its own bar
    (``leaf`` = (confidence, bar)), else, climbing from it, the first ancestor whose tree-summed
    probability clears the back-off ``bar``; -1 / nan / inf where none does."""
    leaf_conf, leaf_thr = leaf
    n = len(best_pos)
    pos = np.full(n, -1, dtype=np.int64)
    conf = np.full(n, np.nan)
    thr = np.full(n, np.inf)
    leaf_ok = leaf_conf >= leaf_thr
    pos[leaf_ok], conf[leaf_ok], thr[leaf_ok] = best_pos[leaf_ok], leaf_conf[leaf_ok], leaf_thr[leaf_ok]
    rest = np.flatnonzero(~leaf_ok)
    if len(rest) and np.isfinite(bar):
        sc, _ = ancestor_matrix(index, node_scores[rest], best_pos[rest], None)
        clears = sc >= bar
        anyc = clears.any(axis=1)
        j = clears.argmax(axis=1)
        for r, jj, ok in zip(rest, j, np.asarray(anyc).tolist(), strict=True):
            if ok:
                p = index.ancestor_positions(int(best_pos[r]), include_self=False)[int(jj)]
                pos[r], conf[r], thr[r] = p, node_scores[r, p], bar
    return pos, conf, thr
