"""Calibration on held-out data and auto-accept thresholds for selective classification.

    TemperatureScaler     one temperature for a matrix of logits (keeps the ranking, fixes over/under-confidence)
    IsotonicCalibrator    monotone map of the top score to the observed accuracy
    select_threshold      lowest confidence whose accepted set reaches the target precision
    Thresholds            a global threshold plus per-node thresholds where a node has enough held-out items

Both calibrators follow scikit-learn conventions (``fit`` returns self, learned state ends in ``_``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "IsotonicCalibrator",
    "TemperatureScaler",
    "Thresholds",
    "fit_thresholds",
    "select_threshold",
]


class TemperatureScaler(BaseEstimator):
    """Softmax(logits / T) with the T that minimises the negative log-likelihood of held-out labels.

    ``fit(logits, y)`` takes logits (n, k) and integer column indices ``y``; ``transform`` returns
    probabilities. Rows of ``-inf`` logits are allowed (those classes get probability 0).
    """

    def __init__(self, *, bounds: tuple[float, float] = (0.02, 50.0)) -> None:
        self.bounds = bounds

    def fit(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaler:
        z = np.asarray(logits, dtype=np.float64)
        yy = np.asarray(y, dtype=np.int64)
        if z.ndim != 2 or z.shape[0] != yy.shape[0]:
            raise ValueError(f"logits must be (n, k) with n = len(y); got {z.shape} and {yy.shape}")
        if z.shape[0] == 0:
            raise ValueError("TemperatureScaler needs at least one held-out row")
        lo, hi = self.bounds
        z = np.where(np.isfinite(z), z, -1e9)
        rows = np.arange(len(yy))

        def nll(log_t: float) -> float:
            return float(-log_softmax(z / math.exp(log_t), axis=1)[rows, yy].mean())

        res = minimize_scalar(nll, bounds=(math.log(lo), math.log(hi)), method="bounded")
        self.temperature_ = float(math.exp(res.x))
        self.nll_ = float(res.fun)
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "temperature_")
        z = np.asarray(logits, dtype=np.float64)
        z = np.where(np.isfinite(z), z, -1e9)
        return np.asarray(softmax(z / self.temperature_, axis=1))


class IsotonicCalibrator(BaseEstimator):
    """Monotone map from a confidence score to the probability that the prediction is right.

    ``fit(confidence, correct)`` on held-out rows; ``transform`` maps any score array (used on the top
    score, and on the other candidates' scores so the ranking is unchanged).
    """

    def __init__(self, *, min_rows: int = 20) -> None:
        self.min_rows = min_rows

    def fit(self, confidence: np.ndarray, correct: np.ndarray) -> IsotonicCalibrator:
        c = np.asarray(confidence, dtype=np.float64).ravel()
        ok = np.asarray(correct, dtype=np.float64).ravel()
        if c.shape != ok.shape:
            raise ValueError(f"confidence and correct differ in length: {c.shape} vs {ok.shape}")
        if len(c) < self.min_rows:
            raise ValueError(
                f"IsotonicCalibrator needs >= {self.min_rows} held-out rows, got {len(c)}; "
                "use calibration='temperature' or more labelled data"
            )
        self.iso_ = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(c, ok)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "iso_")
        s = np.asarray(scores, dtype=np.float64)
        out = self.iso_.predict(s.ravel()).reshape(s.shape)
        # keep strict order between distinct inputs inside a flat isotonic step (tiny tie-break)
        return np.asarray(np.clip(out + 1e-6 * s, 0.0, 1.0))


def select_threshold(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    target_precision: float = 0.95,
    min_support: int = 20,
) -> float:
    """The lowest confidence threshold t whose accepted set {scores >= t} has precision >= target.

    Only thresholds accepting at least ``min_support`` rows count. Returns ``math.inf`` (accept
    nothing) when no threshold reaches the target.

    >>> select_threshold([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 0], target_precision=0.75, min_support=1)
    0.6
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != ok.shape:
        raise ValueError(f"scores and correct differ in length: {s.shape} vs {ok.shape}")
    if len(s) == 0:
        return math.inf
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    hits = np.cumsum(ok[order])
    count = np.arange(1, len(s) + 1)
    # only cut after the last row of a run of equal scores (a threshold accepts all ties)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    precision = hits / count
    good = last_of_tie & (count >= min_support) & (precision >= target_precision - 1e-12)
    if not good.any():
        return math.inf
    return float(s_sorted[np.flatnonzero(good).max()])


@dataclass
class Thresholds:
    """Auto-accept thresholds: per node where held-out data allowed it, else the global one.

    A threshold of ``inf`` means "never auto-accept" (the target precision was not reachable).
    """

    global_: float
    per_node: dict[str, float] = field(default_factory=dict)
    target_precision: float = 0.95
    support: dict[str, int] = field(default_factory=dict)

    def for_nodes(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Threshold of each node id (float array, ``inf`` = never auto)."""
        return np.array([self.per_node.get(str(i), self.global_) for i in ids], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        def enc(x: float) -> float | str:
            return "inf" if math.isinf(x) else round(float(x), 6)

        return {
            "target_precision": self.target_precision,
            "global": enc(self.global_),
            "per_node": {k: enc(v) for k, v in self.per_node.items()},
            "support": dict(self.support),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        def dec(x: Any) -> float:
            return math.inf if x == "inf" else float(x)

        return cls(
            global_=dec(data["global"]),
            per_node={k: dec(v) for k, v in dict(data.get("per_node", {})).items()},
            target_precision=float(data.get("target_precision", 0.95)),
            support={k: int(v) for k, v in dict(data.get("support", {})).items()},
        )


def fit_thresholds(
    confidence: np.ndarray,
    correct: np.ndarray,
    predicted_ids: Sequence[str] | np.ndarray,
    *,
    target_precision: float = 0.95,
    min_support: int = 20,
    min_node_support: int = 40,
) -> Thresholds:
    """Global threshold on all held-out rows; a node's own threshold when it was predicted for at least
    ``min_node_support`` held-out rows (``inf`` if that node cannot reach the target)."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    ids = np.asarray([str(i) for i in predicted_ids], dtype=object)
    glob = select_threshold(conf, ok, target_precision=target_precision, min_support=min_support)
    per_node: dict[str, float] = {}
    support: dict[str, int] = {}
    for node in np.unique(ids):
        mask = ids == node
        n = int(mask.sum())
        if n < min_node_support:
            continue
        support[str(node)] = n
        per_node[str(node)] = select_threshold(
            conf[mask], ok[mask], target_precision=target_precision, min_support=max(5, min_support // 4)
        )
    return Thresholds(global_=glob, per_node=per_node, target_precision=target_precision, support=support)
