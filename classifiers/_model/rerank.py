"""The stacker of `CategoryModel`: a candidate reranker trained on out-of-fold base scores.

For each row the top ``n_candidates`` labels of a simple fused score become candidates; each
(row, candidate) pair gets features from every base scorer (its score, its gap to that scorer's best,
its rank), the label prior, depth and sibling mass; a gradient-boosted binary classifier predicts
"this candidate is the right label". Its outputs become a label distribution (candidates keep their
probability, the remainder is spread over the other labels by the fused score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax
from sklearn.ensemble import HistGradientBoostingClassifier

from classifiers.hierarchy import NodeIndex

__all__ = ["LabelInfo", "candidate_features", "fused_probs", "make_reranker", "to_distribution"]


@dataclass
class LabelInfo:
    """Per label column: log training count, depth, and a group id for its parent (siblings share it)."""

    log_count: np.ndarray
    depth: np.ndarray
    parent_group: np.ndarray

    @classmethod
    def of_labels(cls, index: NodeIndex, label_pos: np.ndarray, y: np.ndarray, k: int) -> LabelInfo:
        """The reranker's per-label features of a model's labels (node positions ``label_pos`` in
        ``index``) trained on label ids ``y`` (k labels)."""
        depths = np.array([index.depths[p] for p in label_pos])
        parents = [index.parents[p] for p in label_pos]
        group_ids = {p: g for g, p in enumerate(sorted(set(parents)))}
        return cls(
            log_count=np.log1p(np.bincount(y, minlength=k).astype(np.float64)),
            depth=depths,
            parent_group=np.array([group_ids[p] for p in parents], dtype=np.int64),
        )


_PROB_SCORERS = ("sem", "knn_sem", "knn_lex", "img")


def fused_probs(scores: dict[str, np.ndarray], *, lex_scale: float = 5.0) -> np.ndarray:
    """Equal-weight mean of the base scorers' probabilities (the candidate generator and a feature)."""
    parts = []
    if "lex" in scores:
        parts.append(softmax(lex_scale * scores["lex"], axis=1))
    for name in _PROB_SCORERS:
        if name in scores:
            parts.append(np.exp(scores[name]))
    if not parts:
        raise ValueError("no base scorer produced scores (enable use_tfidf or use_embeddings)")
    return np.asarray(np.mean(parts, axis=0))


def _ranks(matrix: np.ndarray, cand: np.ndarray) -> np.ndarray:
    vals = np.take_along_axis(matrix, cand, 1)
    return np.asarray((matrix[:, None, :] > vals[:, :, None]).sum(axis=2), dtype=np.float64)


def candidate_features(
    scores: dict[str, np.ndarray],
    names: Sequence[str],
    info: LabelInfo,
    *,
    n_candidates: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates (n, N), features (n, N, F), fused (n, K)). ``names`` fixes the scorer order."""
    fused = fused_probs(scores)
    n, k = fused.shape
    nc = min(n_candidates, k)
    cand = np.argsort(-fused, axis=1, kind="stable")[:, :nc]
    cols: list[np.ndarray] = []
    for name in names:
        m = scores.get(name)
        if m is None:
            m = np.zeros((n, k))
        v = np.take_along_axis(m, cand, 1)
        cols += [v, v - m.max(axis=1, keepdims=True), _ranks(m, cand)]
    fv = np.take_along_axis(fused, cand, 1)
    groups = info.parent_group
    n_groups = int(groups.max()) + 1 if len(groups) else 1
    group_mass = np.zeros((n, n_groups))
    for g in range(n_groups):
        sel = groups == g
        if sel.any():
            group_mass[:, g] = fused[:, sel].sum(axis=1)
    cand_group_mass = np.take_along_axis(group_mass, groups[cand], 1)
    cols += [
        fv,
        fv - fused.max(axis=1, keepdims=True),
        np.broadcast_to(np.arange(nc, dtype=np.float64), (n, nc)),
        info.log_count[cand],
        info.depth[cand].astype(np.float64),
        cand_group_mass,
        fv / np.maximum(cand_group_mass, 1e-12),
    ]
    return cand, np.stack(cols, axis=-1), fused


def make_reranker(random_state: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=random_state,
    )


def to_distribution(cand_probs: np.ndarray, cand: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """Label distribution (n, K): candidates keep their probabilities (scaled down if they sum past 1),
    the remaining mass goes to the other labels in proportion to the fused score."""
    s = np.clip(cand_probs, 1e-6, 1.0)
    total = s.sum(axis=1, keepdims=True)
    s = np.where(total > 1.0, s / total, s)
    rest = np.clip(1.0 - s.sum(axis=1), 0.0, 1.0)
    other = fused.copy()
    np.put_along_axis(other, cand, 0.0, axis=1)
    osum = other.sum(axis=1, keepdims=True)
    other = np.where(osum > 0, other / np.where(osum > 0, osum, 1.0), 0.0) * rest[:, None]
    np.put_along_axis(other, cand, s, axis=1)
    return np.asarray(other / other.sum(axis=1, keepdims=True))


class WeightedStacker:
    """Softmax over labels of a weighted sum of the base scorers' per-label scores (+ log label count).

    One weight per scorer, shared by all labels, fitted by minimising the log-loss of out-of-fold
    labels (L2-regularised). Few parameters, so it suits small training sets where the reranker overfits.
    """

    def __init__(self, *, l2: float = 1e-3) -> None:
        self.l2 = l2

    @staticmethod
    def features(scores: dict[str, np.ndarray], names: Sequence[str], info: LabelInfo) -> np.ndarray:
        first = next(iter(scores.values()))
        cols = []
        for name in names:
            m = scores.get(name)
            if m is None:
                m = np.zeros_like(first)
            cols.append(m if name in ("lex", "zs", "maxsim") else np.clip(m, -10.0, None))
        cols.append(np.broadcast_to(info.log_count, first.shape))
        return np.stack(cols, axis=-1)

    def fit(self, F: np.ndarray, y: np.ndarray) -> WeightedStacker:
        from scipy.optimize import minimize
        from scipy.special import log_softmax

        rows = np.arange(len(y))
        l2 = float(self.l2)

        def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
            ls = log_softmax(F @ w, axis=1)
            p = np.exp(ls)
            p[rows, y] -= 1.0
            grad = np.einsum("nk,nkm->m", p, F) / len(y) + 2 * l2 * w
            return float(-ls[rows, y].mean() + l2 * w @ w), grad

        self.coef_ = minimize(loss, np.full(F.shape[-1], 0.5), jac=True, method="L-BFGS-B").x
        return self

    def predict_proba(self, F: np.ndarray) -> np.ndarray:
        return np.asarray(softmax(F @ self.coef_, axis=1))
