"""What `CategoryModel` learns after its base scorers: stacker choice, calibration, thresholds, back-off.

    fit_stackers            weighted stacker and/or reranker on out-of-fold scores; keep the better one
    fit_calibrator          isotonic / temperature / none on the stacker's out-of-fold output
    cross_fitted_calibration  each row calibrated by a calibrator fit on the other folds
    fit_model_thresholds    leaf thresholds per node group + the back-off bar (precision guarantee)
    confident_nodes         per row, the deepest node on the label's path that clears its bar

Functions of a fitted-in-progress model (``model`` is the `CategoryModel`), split out of model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from classifiers._model_rerank import WeightedStacker, candidate_features, make_reranker, to_distribution
from classifiers.calibration import (
    IsotonicCalibrator,
    TemperatureScaler,
    fit_backoff_threshold,
    fit_thresholds,
)

__all__ = [
    "Prediction",
    "ancestor_matrix",
    "calibrate_top",
    "confident_nodes",
    "cross_fitted_calibration",
    "fit_calibrator",
    "fit_model_thresholds",
    "fit_stackers",
]


@dataclass
class Prediction:
    """Output of `CategoryModel.predict` for n rows (arrays aligned with the input frame).

    ``category_ids``/``scores``: the top-k label nodes, calibrated probabilities, best first.
    ``leaf_ids``/``leaf_confidence``/``leaf_threshold``: the top label (the most specific node the model
    predicts), the calibrated probability that exactly it is right, and its auto-accept bar.
    ``confident_ids``/``confident_confidence``/``confident_threshold``: the deepest node on the top
    label's path that clears its bar (the label itself when it clears its own; ``None`` when no node
    does), its probability (tree-summed for an ancestor) and that bar.
    ``predicted_ids``/``confidence``/``threshold``/``predicted_depth``: the answer of the requested
    level: the label (``hierarchy="leaf"``), or the confident node where there is one (``"backoff"``).
    """

    category_ids: np.ndarray  # (n, k) str
    scores: np.ndarray  # (n, k) float
    confidence: np.ndarray  # (n,)
    margin: np.ndarray  # (n,) top-1 minus top-2 label probability
    predicted_ids: np.ndarray  # (n,) str
    predicted_depth: np.ndarray  # (n,) int
    backed_off: np.ndarray  # (n,) bool: predicted_ids is an ancestor of the label
    leaf_ids: np.ndarray  # (n,) str: best label node
    leaf_confidence: np.ndarray  # (n,)
    zero_shot: np.ndarray  # (n,) bool: the best label had no training rows
    threshold: np.ndarray  # (n,) auto-accept bar of predicted_ids
    leaf_threshold: np.ndarray  # (n,)
    confident_ids: np.ndarray  # (n,) str or None
    confident_confidence: np.ndarray  # (n,) nan where None
    confident_depth: np.ndarray  # (n,) int, -1 where None
    confident_threshold: np.ndarray  # (n,) inf where None

    def __len__(self) -> int:
        return int(self.confidence.shape[0])


def fit_stackers(model: Any, oof: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """Fit the weighted stacker and/or the reranker; keep the one right more often out of fold.

    Returns the chosen stacker's out-of-fold label distribution (n, K).
    """
    n = len(y)
    inner = list(KFold(n_splits=3, shuffle=True, random_state=int(model.random_state)).split(np.arange(n)))
    outputs: dict[str, np.ndarray] = {}
    model.weighted_ = None
    model.reranker_ = None
    if model.stacker in ("auto", "weighted"):
        F = WeightedStacker.features(oof, model.scorer_names_, model.label_info_)
        w_oof = np.zeros((n, F.shape[1]))
        for tr, va in inner:
            w_oof[va] = WeightedStacker().fit(F[tr], y[tr]).predict_proba(F[va])
        model.weighted_ = WeightedStacker().fit(F, y)
        outputs["weighted"] = w_oof
    cand, feats, fused = candidate_features(
        oof, model.scorer_names_, model.label_info_, n_candidates=int(model.n_candidates)
    )
    target = cand == y[:, None]
    if model.stacker in ("auto", "rerank") and 0 < target.sum() < target.size:
        s_oof = np.zeros(target.shape)
        width = feats.shape[-1]
        for tr, va in inner:
            t_tr = target[tr].ravel()
            if t_tr.all() or not t_tr.any():
                s_oof[va] = np.take_along_axis(fused, cand[va], 1)
                continue
            rr = make_reranker(int(model.random_state)).fit(feats[tr].reshape(-1, width), t_tr)
            s_oof[va] = rr.predict_proba(feats[va].reshape(-1, width))[:, 1].reshape(len(va), -1)
        model.reranker_ = make_reranker(int(model.random_state)).fit(feats.reshape(-1, width), target.ravel())
        outputs["rerank"] = to_distribution(s_oof, cand, fused)
    if not outputs:  # "mean", or a reranker without both outcomes to learn from
        outputs["mean"] = fused
    accuracy = {k: round(float((v.argmax(axis=1) == y).mean()), 4) for k, v in outputs.items()}
    chosen = max(accuracy, key=lambda k: (accuracy[k], k == "weighted"))
    model.stacker_ = chosen
    if chosen != "weighted":
        model.weighted_ = None
    if chosen != "rerank":
        model.reranker_ = None
    model.fit_report_["stacker"] = {"chosen": chosen, "out_of_fold_accuracy": accuracy}
    return outputs[chosen]


def fit_calibrator(
    model: Any, p_raw: np.ndarray, y: np.ndarray
) -> TemperatureScaler | IsotonicCalibrator | None:
    if model.calibration == "temperature":
        return TemperatureScaler().fit(np.log(np.clip(p_raw, 1e-12, 1)), y)
    if model.calibration == "isotonic":
        return IsotonicCalibrator().fit(p_raw.max(axis=1), p_raw.argmax(axis=1) == y)
    return None


def cross_fitted_calibration(
    model: Any, p_raw: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Each row calibrated by a calibrator fit on the other folds' out-of-fold scores (never its own)."""
    if model.calibration == "none":
        return p_raw
    out = np.zeros_like(p_raw)
    final = model.calibrator_
    try:
        for tr, va in folds:
            model.calibrator_ = fit_calibrator(model, p_raw[tr], y[tr])
            out[va] = model._calibrate(p_raw[va])
    finally:
        model.calibrator_ = final
    return out


def calibrate_top(model: Any, top: np.ndarray) -> np.ndarray:
    """The calibrated probability of a top score (isotonic or none: a monotone map of it alone)."""
    if isinstance(model.calibrator_, IsotonicCalibrator):
        return model.calibrator_.transform(top)
    return np.asarray(top, dtype=np.float64)


def fit_model_thresholds(model: Any, p_raw: np.ndarray, p_cal_cf: np.ndarray, y: np.ndarray) -> None:
    """Leaf thresholds per node group, then the back-off bar (see `fit_thresholds`).

    Isotonic (or no) calibration is a monotone map of the top score, so leaf thresholds are chosen on
    the out-of-fold raw scores and mapped through it: a new row clears the mapped bar exactly when
    its raw score clears the one proven out of fold. Temperature scaling is not such a map; then the
    cross-fitted calibrated scores are used. The back-off bar is chosen on cross-fitted tree sums.
    """
    tp = float(model.target_precision)
    top = p_raw.argmax(axis=1)
    correct = top == y
    ids = model.index_.ids
    parent_of = {ids[i]: (ids[p] if p >= 0 else None) for i, p in enumerate(model.index_.parents)}
    kw: dict[str, Any] = {
        "target_precision": tp,
        "parent_of": parent_of,
        "min_node_support": int(model.min_node_support),
    }
    labels = model.classes_[top]
    if model.calibration == "temperature":
        leaf_scores = p_cal_cf[np.arange(len(y)), top]
    else:
        leaf_scores = p_raw.max(axis=1)
    thresholds = fit_thresholds(leaf_scores, correct, labels, **kw)
    leaf_ok = leaf_scores >= thresholds.for_nodes(labels)
    if model.calibration != "temperature":
        thresholds = thresholds.mapped(lambda x: calibrate_top(model, x))
    thresholds.unlisted = math.inf  # zero-shot nodes: no held-out row proves them
    # back-off bar on the rows whose leaf was not accepted
    node_scores = model.index_.aggregate(p_cal_cf, model.label_pos_)
    rest = np.flatnonzero(~leaf_ok)
    sc, cor = ancestor_matrix(
        model, node_scores[rest], model.label_pos_[top[rest]], model.label_pos_[y[rest]]
    )
    t, fit, _ = fit_backoff_threshold(sc, cor, target_precision=tp)
    thresholds.backoff = t
    thresholds.backoff_fit = fit.to_dict()
    model.thresholds_ = thresholds


def ancestor_matrix(
    model: Any, node_scores: np.ndarray, best: np.ndarray, truth: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, truth lies under) of each row's proper ancestors of ``best``, deepest first, -inf padded."""
    n = len(best)
    chains = {int(b): model.index_.ancestor_positions(int(b), include_self=False) for b in np.unique(best)}
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
                truth_anc[t] = set(model.index_.ancestor_positions(t))
            cor[r, : len(ch)] = [c in truth_anc[t] for c in ch]
    return sc, cor


def confident_nodes(
    model: Any, node_scores: np.ndarray, best_pos: np.ndarray, leaf_conf: np.ndarray, leaf_thr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, probability, bar) of the deepest node on each row's label path clearing its bar."""
    n = len(best_pos)
    pos = np.full(n, -1, dtype=np.int64)
    conf = np.full(n, np.nan)
    thr = np.full(n, np.inf)
    leaf_ok = leaf_conf >= leaf_thr
    pos[leaf_ok], conf[leaf_ok], thr[leaf_ok] = best_pos[leaf_ok], leaf_conf[leaf_ok], leaf_thr[leaf_ok]
    bar = float(model.thresholds_.backoff)
    rest = np.flatnonzero(~leaf_ok)
    if len(rest) and np.isfinite(bar):
        sc, _ = ancestor_matrix(model, node_scores[rest], best_pos[rest], None)
        clears = sc >= bar
        anyc = clears.any(axis=1)
        j = clears.argmax(axis=1)
        for r, jj, ok in zip(rest, j, np.asarray(anyc).tolist(), strict=True):
            if ok:
                p = model.index_.ancestor_positions(int(best_pos[r]), include_self=False)[int(jj)]
                pos[r], conf[r], thr[r] = p, node_scores[r, p], bar
    return pos, conf, thr
