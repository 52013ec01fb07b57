"""``benchmarks/quality.py --disjoint``: does a correctness score earn its place as the leaf ranking?

On the out-of-fold rows `train` proves its cut on (``oof.npz``, dumped during training), a small model of
P(top-1 exactly right) is cross-fitted (5 folds: each row scored by a model that never saw it) from what
only the model knows: the top two scores and their margin, the entropy of the label distribution, the
predicted category's depth and training support, and its out-of-fold precision shrunk towards its
parent's (computed inside each training fold). It competes with the model's own confidence (the top
score): the best-cut share at 96% (chosen with the labels), and the share the fixed sequence proves with
the whole leaf delta and with it split between the two (Bonferroni).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from classifiers.model import CategoryModel
from classifiers.selective import best_cut_share, fixed_sequence_test

_SHRINK = 20.0  # prior rows of the parent's precision in a category's shrunk precision


def _shrunk_precision(top: np.ndarray, ok: np.ndarray, parent: np.ndarray, tr: np.ndarray) -> np.ndarray:
    """Per label: its precision on rows ``tr``, shrunk to its parent's, shrunk to the global one."""
    k = len(parent)
    right = np.bincount(top[tr], weights=ok[tr].astype(float), minlength=k)
    seen = np.bincount(top[tr], minlength=k).astype(float)
    groups, inv = np.unique(parent, return_inverse=True)
    g_right = np.bincount(inv, weights=right, minlength=len(groups))
    g_seen = np.bincount(inv, weights=seen, minlength=len(groups))
    glob = float(ok[tr].mean())
    par = (g_right + _SHRINK * glob) / (g_seen + _SHRINK)
    return np.asarray((right + _SHRINK * par[inv]) / (seen + _SHRINK))


def correctness_comparison(state: Path, *, target: float = 0.95) -> dict[str, Any]:
    """The comparison of the module docstring on one disjoint run's folder."""
    d = np.load(state / "oof.npz")
    p_raw, y, label_pos = d["p_raw"], d["y"], d["label_pos"]
    index = CategoryModel.load(state / "model").index_
    top = p_raw.argmax(axis=1)
    ok = top == y
    srt = np.sort(p_raw, axis=1)
    entropy = -(p_raw * np.log(np.clip(p_raw, 1e-12, 1.0))).sum(axis=1)
    depth = np.array([index.depths[p] for p in label_pos])[top]
    parent = np.array([index.parents[p] for p in label_pos])
    support = np.log1p(np.bincount(y, minlength=p_raw.shape[1]))[top]
    base = np.column_stack([srt[:, -1], srt[:, -2], srt[:, -1] - srt[:, -2], entropy, depth, support])
    scores = {"confidence (top score)": srt[:, -1], "correctness, boosted trees": np.zeros(len(y))}
    scores["correctness, logistic"] = np.zeros(len(y))
    for tr, va in KFold(5, shuffle=True, random_state=0).split(base):
        prec_tr = np.zeros(len(tr))
        for itr, iva in KFold(5, shuffle=True, random_state=1).split(tr):
            prec_tr[iva] = _shrunk_precision(top, ok, parent, tr[itr])[top[tr[iva]]]
        x_tr = np.column_stack([base[tr], prec_tr])
        x_va = np.column_stack([base[va], _shrunk_precision(top, ok, parent, tr)[top[va]]])
        gbm = HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, min_samples_leaf=40, random_state=0
        )
        scores["correctness, boosted trees"][va] = gbm.fit(x_tr, ok[tr]).predict_proba(x_va)[:, 1]
        lr = LogisticRegression(max_iter=2000).fit(x_tr, ok[tr])
        scores["correctness, logistic"][va] = lr.predict_proba(x_va)[:, 1]
    out: dict[str, Any] = {"rows": len(y)}
    for name, s in scores.items():
        out[name] = {
            "best_cut_share_at_96": round(best_cut_share(s, ok, target + 0.01), 4),
            "proven_share_whole_leaf_delta": round(
                fixed_sequence_test(s, ok, target_precision=target, delta=0.04).fit.coverage, 4
            ),
            "proven_share_delta_split_in_two": round(
                fixed_sequence_test(s, ok, target_precision=target, delta=0.02).fit.coverage, 4
            ),
        }
    return out
