"""Calibration on held-out data and auto-accept thresholds for selective classification.

    TemperatureScaler     one temperature for a matrix of logits (keeps the ranking, fixes over- or
                          under-confidence)
    IsotonicCalibrator    monotone map of the top score to the observed accuracy
    precision_lower_bound one-sided Clopper-Pearson lower bound of a precision k/n
    select_threshold      lowest confidence whose accepted set provably reaches the target precision
    Thresholds            per-node thresholds (the proven cut, ``inf`` for excluded and zero-shot nodes)
    fit_thresholds_per_category  the earlier per-group procedure (a reference; the model uses
                          `classifiers.selective.fit_thresholds`)

Both calibrators follow scikit-learn conventions (``fit`` returns self, learned state ends in ``_``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import beta, binomtest
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "DELTA",
    "GLOBAL",
    "IsotonicCalibrator",
    "TemperatureScaler",
    "ThresholdFit",
    "Thresholds",
    "fit_threshold",
    "fit_thresholds_per_category",
    "precision_lower_bound",
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
        # Never claim certainty: a top step that was right on every held-out row still leaves room for an
        # error the sample did not show, so the map stays below 1 (by half a row's weight), and the
        # tie-break below keeps distinct inputs in order inside that step (a threshold mapped through
        # this calibrator then separates the same rows as on the raw score).
        self.ceiling_ = 1.0 - 0.5 / (len(c) + 1)
        self.iso_ = IsotonicRegression(
            y_min=0.0, y_max=self.ceiling_, out_of_bounds="clip", increasing=True
        ).fit(c, ok)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "iso_")
        s = np.asarray(scores, dtype=np.float64)
        out = self.iso_.predict(s.ravel()).reshape(s.shape)
        # keep strict order between distinct inputs inside a flat isotonic step (tiny tie-break that can
        # never lift a value to 1); models saved before the ceiling existed keep their old behaviour
        ceiling = float(getattr(self, "ceiling_", 1.0))
        eps = min(1e-6, (1.0 - ceiling) / 2) if ceiling < 1.0 else 1e-6
        return np.asarray(np.clip(out + eps * np.clip(s, 0.0, 1.0), 0.0, 1.0))


#: Error rate of the precision promise: thresholds hold the target with 95% confidence (one-sided).
DELTA = 0.05


def precision_lower_bound(k: int, n: int, *, delta: float = DELTA) -> float:
    """One-sided (1 - delta) Clopper-Pearson lower bound of a precision of ``k`` right out of ``n``.

    The low end of scipy's two-sided exact interval at confidence ``1 - 2 delta``; 0 when ``n == 0``.

    >>> round(precision_lower_bound(59, 59), 3)
    0.95
    """
    if n <= 0:
        return 0.0
    ci = binomtest(int(k), int(n)).proportion_ci(method="exact", confidence_level=1.0 - 2.0 * delta)
    return float(ci.low)


def _upper_bound(k: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) Clopper-Pearson upper bound of k / n."""
    ci = binomtest(int(k), int(n)).proportion_ci(method="exact", confidence_level=1.0 - 2.0 * delta)
    return float(ci.high)


def _lower_bounds(k: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray:
    """Vectorised `precision_lower_bound`: the delta quantile of Beta(k, n - k + 1) (Clopper-Pearson)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(k)
    ok = (k > 0) & (n > 0)
    out[ok] = beta.ppf(delta, k[ok], n[ok] - k[ok] + 1.0)
    return out


@dataclass(frozen=True)
class ThresholdFit:
    """One threshold and the held-out evidence behind it (``threshold = inf``: never auto-accept)."""

    threshold: float
    rows: int  # held-out rows the threshold was chosen on
    accepted: int  # of them, rows at or above the threshold
    correct: int  # of the accepted, rows that were right
    lower_bound: float  # one-sided Clopper-Pearson bound of correct / accepted (0 when none accepted)

    @property
    def precision(self) -> float | None:
        return self.correct / self.accepted if self.accepted else None

    @property
    def coverage(self) -> float:
        return self.accepted / self.rows if self.rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        p = self.precision
        return {
            "threshold": _enc(self.threshold),
            "oof_precision": None if p is None else round(p, 4),
            "lower_bound": round(self.lower_bound, 4),
            "support": self.rows,
            "accepted": self.accepted,
            "coverage": round(self.coverage, 4),
        }


def _enc(x: float) -> float | str:
    return "inf" if math.isinf(x) else round(float(x), 6)


def _dec(x: Any) -> float:
    return math.inf if x == "inf" else float(x)


def fit_threshold(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float | None = DELTA,
    min_support: int = 1,
) -> ThresholdFit:
    """The lowest threshold t whose accepted set {scores >= t} reaches ``target_precision``.

    With ``delta`` (default 0.05) "reaches" means its one-sided Clopper-Pearson lower bound is >= the
    target, so a small set must be (nearly) perfect; ``delta=None`` compares the plain precision.
    Only cuts accepting at least ``min_support`` rows count, and a cut never splits equal scores.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if s.shape != ok.shape:
        raise ValueError(f"scores and correct differ in length: {s.shape} vs {ok.shape}")
    if len(s) == 0:
        return ThresholdFit(math.inf, 0, 0, 0, 0.0)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    hits = np.cumsum(ok[order])
    count = np.arange(1, len(s) + 1)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    if delta is None:
        bound = hits / count
    else:
        bound = _lower_bounds(hits, count, float(delta))
    good = last_of_tie & (count >= min_support) & (bound >= target_precision - 1e-12)
    if not good.any():
        return ThresholdFit(math.inf, len(s), 0, 0, 0.0)
    j = int(np.flatnonzero(good).max())
    k, m = int(hits[j]), int(count[j])
    lb = k / m if delta is None else precision_lower_bound(k, m, delta=float(delta))
    return ThresholdFit(float(s_sorted[j]), len(s), m, k, lb)


def select_threshold(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    target_precision: float = 0.95,
    delta: float | None = DELTA,
    min_support: int = 1,
) -> float:
    """`fit_threshold`'s threshold only (``math.inf`` when no cut reaches the target).

    >>> select_threshold([0.9, 0.8, 0.7, 0.6], [1, 1, 1, 0], target_precision=0.75, delta=None)
    0.6
    """
    return fit_threshold(
        scores, correct, target_precision=target_precision, delta=delta, min_support=min_support
    ).threshold


#: Group key of the rows no node took for itself (the global threshold).
GLOBAL = "*"


@dataclass
class Thresholds:
    """Auto-accept thresholds of label nodes: a node's own where its held-out support allowed it,
    else the one of its nearest ancestor with enough pooled support, else the global one.

    ``groups`` holds the evidence of each threshold (`ThresholdFit.to_dict`, plus ``score_threshold``,
    the cut on the uncalibrated score it was chosen on); ``group_of`` maps a label node to its group.
    ``backoff`` is the bar of an ancestor's tree-summed score (the back-off answer), ``unlisted`` the
    bar of nodes that were never a label (zero-shot nodes: ``inf``, nothing proves them).
    """

    global_: float
    per_node: dict[str, float] = field(default_factory=dict)
    target_precision: float = 0.95
    support: dict[str, int] = field(default_factory=dict)
    delta: float | None = DELTA
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)
    backoff: float = math.inf
    backoff_fit: dict[str, Any] = field(default_factory=dict)
    unlisted: float | None = None
    ranking: str = "confidence"  # the score the leaf cut is on (`CategoryModel`'s leaf confidence)

    def for_nodes(self, ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Threshold of each node id (float array, ``inf`` = never auto)."""
        default = self.global_ if self.unlisted is None else self.unlisted
        return np.array([self.per_node.get(str(i), default) for i in ids], dtype=np.float64)

    def mapped(self, fn: Callable[[np.ndarray], np.ndarray]) -> Thresholds:
        """The same cuts expressed on another (monotone increasing) scale, e.g. after calibration.

        A row's score clears a mapped threshold exactly when its unmapped score cleared the original.
        """

        def m(x: float) -> float:
            return x if math.isinf(x) else float(np.asarray(fn(np.array([x], dtype=np.float64)))[0])

        groups = {}
        for g, fit in self.groups.items():
            raw = _dec(fit["threshold"])
            groups[g] = {
                **fit,
                "threshold": _enc(m(raw)),
                "score_threshold": fit.get("score_threshold", fit["threshold"]),
            }
        return dataclasses.replace(
            self,
            global_=m(self.global_),
            per_node={k: m(v) for k, v in self.per_node.items()},
            groups=groups,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_precision": self.target_precision,
            "delta": self.delta,
            "global": _enc(self.global_),
            "per_node": {k: _enc(v) for k, v in self.per_node.items()},
            "support": dict(self.support),
            "groups": {k: dict(v) for k, v in self.groups.items()},
            "group_of": dict(self.group_of),
            "backoff": _enc(self.backoff),
            "backoff_fit": dict(self.backoff_fit),
            "unlisted": None if self.unlisted is None else _enc(self.unlisted),
            "ranking": self.ranking,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        unlisted = data.get("unlisted")
        return cls(
            global_=_dec(data["global"]),
            per_node={k: _dec(v) for k, v in dict(data.get("per_node", {})).items()},
            target_precision=float(data.get("target_precision", 0.95)),
            support={k: int(v) for k, v in dict(data.get("support", {})).items()},
            delta=data.get("delta", DELTA),
            groups={k: dict(v) for k, v in dict(data.get("groups", {})).items()},
            group_of={str(k): str(v) for k, v in dict(data.get("group_of", {})).items()},
            backoff=_dec(data.get("backoff", "inf")),
            backoff_fit=dict(data.get("backoff_fit", {})),
            unlisted=None if unlisted is None else _dec(unlisted),
            ranking=str(data.get("ranking", "confidence")),
        )


def _chain(node: str, parent_of: Mapping[str, str | None]) -> list[str]:
    out = [node]
    seen = {node}
    p = parent_of.get(node)
    while p is not None and p not in seen:
        out.append(p)
        seen.add(p)
        p = parent_of.get(p)
    return out


@dataclass(frozen=True)
class _HeldOut:
    """Held-out rows of `fit_thresholds_per_category`: confidence, correctness, label index, label counts."""

    conf: np.ndarray
    ok: np.ndarray
    inv: np.ndarray
    counts: np.ndarray


def _node_members(
    labels: np.ndarray, parents: Mapping[str, str | None]
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """(node -> indices of the labels at or below it, node -> depth) over the labels' ancestry."""
    chains = {str(lab): _chain(str(lab), parents) for lab in labels}
    depth_of: dict[str, int] = {}
    for ch in chains.values():
        for d, node in enumerate(reversed(ch)):
            depth_of[node] = max(depth_of.get(node, 0), d)
    members: dict[str, list[int]] = {}
    for li, lab in enumerate(labels):
        for node in chains[str(lab)]:
            members.setdefault(node, []).append(li)
    return members, depth_of


def _take_groups(
    held: _HeldOut,
    members: Mapping[str, list[int]],
    depth_of: Mapping[str, int],
    min_node_support: int,
    fit_kw: Mapping[str, Any],
) -> tuple[dict[int, str], dict[str, dict[str, Any]], dict[str, float]]:
    """Deepest first, each node that proves the target on its free rows takes them: (owner, groups, bars)."""
    owner: dict[int, str] = {}
    groups: dict[str, dict[str, Any]] = {}
    group_thr: dict[str, float] = {}
    for node in sorted(members, key=lambda x: (-depth_of[x], x)):
        free = [li for li in members[node] if li not in owner]
        if not free or int(held.counts[free].sum()) < min_node_support:
            continue
        rows = np.isin(held.inv, free)
        fit = fit_threshold(held.conf[rows], held.ok[rows], **fit_kw)
        if math.isinf(fit.threshold):
            continue  # its rows cannot prove the target alone: they are pooled with the parent's
        groups[node], group_thr[node] = fit.to_dict(), fit.threshold
        for li in free:
            owner[li] = node
    return owner, groups, group_thr


def _excluded_below_target(
    held: _HeldOut,
    labels: np.ndarray,
    per_node: Mapping[str, float],
    group_of: Mapping[str, str],
    min_node_support: int,
    fit_kw: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Labels measured below target under the bar they inherited -> their own fit (never auto-accepted).

    A category with enough rows of its own that is measured below target under the bar it inherited
    is never auto-accepted (taking bad rows out of a pool can only raise the pool's precision).
    """
    delta, target_precision = fit_kw["delta"], fit_kw["target_precision"]
    out: dict[str, dict[str, Any]] = {}
    for li, lab in enumerate(labels):
        t = per_node[str(lab)]
        if held.counts[li] < min_node_support or math.isinf(t):
            continue
        above = (held.inv == li) & (held.conf >= t)
        m = int(above.sum())
        if (
            m >= 10
            and _upper_bound(int(held.ok[above].sum()), m, DELTA if delta is None else delta)
            < target_precision
        ):
            mine = held.inv == li
            out[str(lab)] = {
                **fit_threshold(held.conf[mine], held.ok[mine], **fit_kw).to_dict(),
                "excluded_from": group_of[str(lab)],
            }
    return out


def fit_thresholds_per_category(
    confidence: np.ndarray,
    correct: np.ndarray,
    predicted_ids: Sequence[str] | np.ndarray,
    *,
    target_precision: float = 0.95,
    parent_of: Mapping[str, str | None] | None = None,
    delta: float | None = DELTA,
    min_support: int = 1,
    min_node_support: int = 100,
) -> Thresholds:
    """The earlier procedure, kept as a reference for tests and benchmarks: a threshold per node group.

    The model now proves one cut over all rows (`classifiers.selective.fit_thresholds`): here every group
    spends the whole ``delta`` again and the groups left behind by the easy ones prove nothing.

    Nodes are visited deepest first. A node whose held-out rows (its own and those of descendants not
    already taken by a deeper node) number at least ``min_node_support`` and prove a threshold on
    their own takes them as one group; otherwise they are pooled upwards (``parent_of``: node ->
    parent, ``None`` at the top) and whatever no node takes forms the global group. Every group's
    threshold is chosen on its rows alone (`fit_threshold`), so each group, and hence their union,
    keeps the target's lower bound; a group that cannot prove the target gets ``inf`` (fewer
    auto-accepts, never a weaker promise). A label with ``min_node_support`` rows whose precision above
    its inherited bar is provably below the target (one-sided upper bound) gets ``inf``.
    """
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    ids = np.asarray([str(i) for i in predicted_ids], dtype=object)
    if not (len(conf) == len(ok) == len(ids)):
        raise ValueError(
            f"confidence, correct and predicted_ids differ in length: {len(conf)}, {len(ok)}, {len(ids)}"
        )
    parents = dict(parent_of or {})
    labels, inv = (
        np.unique(ids, return_inverse=True) if len(ids) else (np.zeros(0, dtype=object), np.zeros(0, int))
    )
    rows_of = _HeldOut(conf, ok, inv, np.bincount(inv, minlength=len(labels)))
    members, depth_of = _node_members(labels, parents)
    fit_kw: dict[str, Any] = {
        "target_precision": target_precision,
        "delta": delta,
        "min_support": min_support,
    }
    owner, groups, group_thr = _take_groups(rows_of, members, depth_of, min_node_support, fit_kw)
    rest = [li for li in range(len(labels)) if li not in owner]
    rows = np.isin(inv, rest) if rest else np.ones(len(ids), dtype=bool)
    fit = fit_threshold(conf[rows], ok[rows], **fit_kw)
    groups[GLOBAL], group_thr[GLOBAL] = fit.to_dict(), fit.threshold
    group_of = {str(lab): owner.get(li, GLOBAL) for li, lab in enumerate(labels)}
    per_node = {lab: group_thr[g] for lab, g in group_of.items()}
    excluded = _excluded_below_target(rows_of, labels, per_node, group_of, min_node_support, fit_kw)
    for lab, detail in excluded.items():
        per_node[lab] = math.inf
        groups[f"{lab} (excluded)"] = detail
    return Thresholds(
        global_=group_thr[GLOBAL],
        per_node=per_node,
        target_precision=target_precision,
        support={g: int(v["support"]) for g, v in groups.items()},
        delta=delta,
        groups=groups,
        group_of=group_of,
    )
