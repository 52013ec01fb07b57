"""What `CategoryModel` learns after its base scorers: the stacker and the calibrator.

    Prediction              what `CategoryModel.predict` returns
    StackerFit              the stacker kept and its out-of-fold label distribution
    fit_stackers            weighted stacker and/or reranker on out-of-fold scores; keep the better one
    fit_calibrator          isotonic / temperature / none on the stacker's out-of-fold output
    apply_calibrator        calibrated label probabilities from a fitted calibrator
    cross_fitted_calibration  each row calibrated by a calibrator fit on the other folds

Helpers return what they fit; `CategoryModel.fit` assigns it (scikit-learn's idiom). The auto-accept
proof is in `classifiers/_model/proof.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from classifiers._model.rerank import (
    LabelInfo,
    WeightedStacker,
    candidate_features,
    make_reranker,
    to_distribution,
)
from classifiers.calibration import IsotonicCalibrator, TemperatureScaler

__all__ = [
    "Calibrator",
    "Prediction",
    "StackerFit",
    "apply_calibrator",
    "cross_fitted_calibration",
    "fit_calibrator",
    "fit_stackers",
]

Calibrator = TemperatureScaler | IsotonicCalibrator | None


@dataclass
class Prediction:
    """Output of `CategoryModel.predict` for n rows (arrays aligned with the input frame).

    ``category_ids``/``scores``: the top-k label nodes, calibrated probabilities, best first.
    ``leaf_ids``/``leaf_confidence``/``leaf_threshold``: the top label (the most specific node the model
    predicts), the calibrated probability that exactly it is right, and its auto-accept bar.
    ``confident_ids``/``confident_confidence``/``confident_threshold``: climbing from the top label, the
    first node that clears its bar (the label itself when it clears its own; ``None`` when no node
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


@dataclass
class StackerFit:
    """The stacker `fit_stackers` kept (``chosen``), fitted on all rows, and its out-of-fold output."""

    chosen: str
    weighted: WeightedStacker | None
    reranker: Any
    oof: np.ndarray  # (n, K) out-of-fold label distribution of the chosen stacker
    report: dict[str, Any] = field(default_factory=dict)


def _fit_weighted(
    oof: dict[str, np.ndarray], y: np.ndarray, names: list[str], info: LabelInfo, inner: list[Any]
) -> tuple[WeightedStacker, np.ndarray]:
    F = WeightedStacker.features(oof, names, info)
    w_oof = np.zeros((len(y), F.shape[1]))
    for tr, va in inner:
        w_oof[va] = WeightedStacker().fit(F[tr], y[tr]).predict_proba(F[va])
    return WeightedStacker().fit(F, y), w_oof


def _fit_reranker(
    feats: np.ndarray, fused: np.ndarray, cand: np.ndarray, target: np.ndarray, inner: list[Any], seed: int
) -> tuple[Any, np.ndarray]:
    s_oof = np.zeros(target.shape)
    width = feats.shape[-1]
    for tr, va in inner:
        t_tr = target[tr].ravel()
        if t_tr.all() or not t_tr.any():
            s_oof[va] = np.take_along_axis(fused, cand[va], 1)
            continue
        rr = make_reranker(seed).fit(feats[tr].reshape(-1, width), t_tr)
        s_oof[va] = rr.predict_proba(feats[va].reshape(-1, width))[:, 1].reshape(len(va), -1)
    final = make_reranker(seed).fit(feats.reshape(-1, width), target.ravel())
    return final, to_distribution(s_oof, cand, fused)


def fit_stackers(
    oof: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    scorer_names: list[str],
    label_info: LabelInfo,
    stacker: str = "auto",
    n_candidates: int = 10,
    random_state: int = 0,
) -> StackerFit:
    """Fit the weighted stacker and/or the reranker on out-of-fold base scores; keep the one right
    more often out of fold (inner 3-fold), with its out-of-fold label distribution (n, K)."""
    n = len(y)
    inner = list(KFold(n_splits=3, shuffle=True, random_state=int(random_state)).split(np.arange(n)))
    outputs: dict[str, np.ndarray] = {}
    fitted: dict[str, Any] = {}
    if stacker in ("auto", "weighted"):
        fitted["weighted"], outputs["weighted"] = _fit_weighted(oof, y, scorer_names, label_info, inner)
    cand, feats, fused = candidate_features(oof, scorer_names, label_info, n_candidates=int(n_candidates))
    target = cand == y[:, None]
    if stacker in ("auto", "rerank") and 0 < target.sum() < target.size:
        fitted["rerank"], outputs["rerank"] = _fit_reranker(
            feats, fused, cand, target, inner, int(random_state)
        )
    if not outputs:  # "mean", or a reranker without both outcomes to learn from
        outputs["mean"] = fused
    accuracy = {k: round(float((v.argmax(axis=1) == y).mean()), 4) for k, v in outputs.items()}
    chosen = max(accuracy, key=lambda k: (accuracy[k], k == "weighted"))
    return StackerFit(
        chosen=chosen,
        weighted=fitted.get("weighted") if chosen == "weighted" else None,
        reranker=fitted.get("rerank") if chosen == "rerank" else None,
        oof=outputs[chosen],
        report={"chosen": chosen, "out_of_fold_accuracy": accuracy},
    )


def fit_calibrator(calibration: str, p_raw: np.ndarray, y: np.ndarray) -> Calibrator:
    """The calibrator of ``calibration`` (``"temperature"``, ``"isotonic"`` or ``"none"``) fit on
    out-of-fold label distributions ``p_raw`` and their labels."""
    if calibration == "temperature":
        return TemperatureScaler().fit(np.log(np.clip(p_raw, 1e-12, 1)), y)
    if calibration == "isotonic":
        return IsotonicCalibrator().fit(p_raw.max(axis=1), p_raw.argmax(axis=1) == y)
    return None


def apply_calibrator(calibrator: Calibrator, p: np.ndarray) -> np.ndarray:
    """Calibrated label probabilities: temperature scaling of all columns, or the isotonic map of the
    top score with the other columns rescaled to fill the rest (the ranking is unchanged)."""
    if isinstance(calibrator, TemperatureScaler):
        return calibrator.transform(np.log(np.clip(p, 1e-12, 1)))
    if isinstance(calibrator, IsotonicCalibrator):
        top = p.argmax(axis=1)
        rows = np.arange(p.shape[0])
        new_top = calibrator.transform(p[rows, top])
        rest = p.copy()
        rest[rows, top] = 0.0
        rsum = rest.sum(axis=1)
        scale = np.where(rsum > 0, (1.0 - new_top) / np.where(rsum > 0, rsum, 1.0), 0.0)
        out = rest * scale[:, None]
        out[rows, top] = new_top
        return out
    return p


def cross_fitted_calibration(
    calibration: str, p_raw: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Each row calibrated by a calibrator fit on the other folds' out-of-fold scores (never its own)."""
    if calibration == "none":
        return p_raw
    out = np.zeros_like(p_raw)
    for tr, va in folds:
        out[va] = apply_calibrator(fit_calibrator(calibration, p_raw[tr], y[tr]), p_raw[va])
    return out


def calibrate_top(calibrator: Calibrator, top: np.ndarray) -> np.ndarray:
    """The calibrated probability of a top score (isotonic or none: a monotone map of it alone)."""
    if isinstance(calibrator, IsotonicCalibrator):
        return calibrator.transform(top)
    return np.asarray(top, dtype=np.float64)
