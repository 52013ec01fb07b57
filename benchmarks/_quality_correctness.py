"""``benchmarks/quality.py --disjoint``: does a correctness score earn its place as the leaf ranking?

On the out-of-fold rows `train` proves its cut on (``oof.npz``, dumped during training), a small model of
P(top-1 exactly right) is cross-fitted (5 folds: each row scored by a model that never saw it) from what
only the model knows: the top two scores and their margin, the entropy of the label distribution, the
predicted category's depth and training support, and its out-of-fold precision shrunk towards its
parent's (computed inside each training fold); and, where training dumped the base scorers' out-of-fold
scores (``oof_scorers.npz``), the per-scorer agreement: for each scorer (lexical, semantic, their kNNs,
max-sim, brand, zero-shot) whether its own top label is the stacker's, and its own margin for that label
(its score there minus its best other label), with the number of scorers that agree. Each competes with
the model's own confidence (the top score): the best-cut share at 96% (chosen with the labels), and the
share the fixed sequence proves with the whole leaf delta (0.03) and with it split between two rankings
(Bonferroni, 0.015).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from classifiers.calibration import DELTA
from classifiers.model import CategoryModel, agreement_features, shrunk_precision
from classifiers.selective import BACKOFF_DELTA_SHARE, best_cut_share, fixed_sequence_test

_LEAF_DELTA = DELTA * (1.0 - BACKOFF_DELTA_SHARE)


def _agreement(path: Path, top: np.ndarray) -> np.ndarray | None:
    """Per row, for each base scorer: whether its own top label is ``top`` and its own margin for
    ``top`` (its score there minus its best other label's); then how many scorers agree."""
    if not path.exists():
        return None
    d = np.load(path)
    return agreement_features({name: d[name] for name in d.files}, d.files, top)


def _cross_fit(
    x: np.ndarray, prec: tuple[np.ndarray, np.ndarray, np.ndarray], ok: np.ndarray
) -> dict[str, np.ndarray]:
    """Out-of-fold P(right) of a logistic regression and of boosted trees on ``x`` plus the predicted
    category's shrunk precision (``prec``: top label, right, parent per label; computed inside folds)."""
    top, _, parent = prec
    out = {"boosted trees": np.zeros(len(ok)), "logistic": np.zeros(len(ok))}
    for tr, va in KFold(5, shuffle=True, random_state=0).split(x):
        prec_tr = np.zeros(len(tr))
        for itr, iva in KFold(5, shuffle=True, random_state=1).split(tr):
            prec_tr[iva] = shrunk_precision(top, ok, parent, tr[itr])[top[tr[iva]]]
        x_tr = np.column_stack([x[tr], prec_tr])
        x_va = np.column_stack([x[va], shrunk_precision(top, ok, parent, tr)[top[va]]])
        gbm = HistGradientBoostingClassifier(
            max_iter=150, learning_rate=0.05, min_samples_leaf=40, random_state=0
        )
        out["boosted trees"][va] = gbm.fit(x_tr, ok[tr]).predict_proba(x_va)[:, 1]
        lr = LogisticRegression(max_iter=2000).fit(x_tr, ok[tr])
        out["logistic"][va] = lr.predict_proba(x_va)[:, 1]
    return out


def confidence_only_auto(state: Path) -> np.ndarray:
    """Per row of ``predictions.parquet``: auto under the default setting (the confidence alone, on the
    whole leaf delta), from the same trained model: its cut proven again on the out-of-fold rows training
    dumped (``oof.npz``), exactly as `train` proves it by default. The test catalog has no current
    category, the LLM is off and the audit has no floor, so a row is auto when its confidence clears its
    label's bar (`tests` of `_decide` pin that rule)."""
    import classifiers.model as cm

    d = np.load(state / "oof.npz")
    model = CategoryModel.load(state / "model")
    fit = cm.fit_model_thresholds(  # type: ignore[attr-defined]
        cm.OutOfFold(d["p_raw"], d["p_cal_cf"], d["y"]),  # type: ignore[attr-defined]
        index=model.index_,
        label_pos=d["label_pos"],
        calibrator=model.calibrator_,
        target_precision=float(model.target_precision),
    )
    pred = pl.read_parquet(state / "predictions.parquet")
    bar = fit.thresholds.for_nodes(np.asarray(pred["category_id"].to_list(), dtype=object))
    return np.asarray(pred["confidence"].to_numpy() >= bar)


def kept_ranking_scores(state: Path, confidence: np.ndarray) -> np.ndarray:
    """Per row of ``predictions.parquet``: the score the model's leaf cut is on: its correctness score
    where training kept that ranking, else ``confidence`` (the predictions' own column)."""
    from classifiers import EmbeddingCache, make_embedder

    model = CategoryModel.load(state / "model")
    if model.thresholds_.ranking != "correctness":
        return confidence
    test = pl.read_parquet(state / "test.parquet")
    with EmbeddingCache(state / "cache" / "embeddings.sqlite") as cache:
        score = model.predict_correctness(test, embedder=make_embedder("minilm"), cache=cache)
    assert score is not None
    of = dict(zip(test["sku_id"].to_list(), score.tolist(), strict=True))
    return np.asarray([of[s] for s in pl.read_parquet(state / "predictions.parquet")["sku_id"].to_list()])


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
    scores = {"confidence (top score)": srt[:, -1]}
    for kind, s in _cross_fit(base, (top, ok, parent), ok).items():
        scores[f"correctness, {kind}"] = s
    agree = _agreement(state / "oof_scorers.npz", top)
    if agree is not None:
        for kind, s in _cross_fit(np.column_stack([base, agree]), (top, ok, parent), ok).items():
            scores[f"correctness with per-scorer agreement, {kind}"] = s
    out: dict[str, Any] = {"rows": len(y), "leaf_delta": _LEAF_DELTA}
    for name, s in scores.items():
        out[name] = {
            "best_cut_share_at_96": round(best_cut_share(s, ok, target + 0.01), 4),
            "proven_share_whole_leaf_delta": round(
                fixed_sequence_test(s, ok, target_precision=target, delta=_LEAF_DELTA).fit.coverage, 4
            ),
            "proven_share_delta_split_in_two": round(
                fixed_sequence_test(s, ok, target_precision=target, delta=_LEAF_DELTA / 2).fit.coverage, 4
            ),
        }
    return out
