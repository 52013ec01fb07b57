"""From `CategoryModel`'s scores to its `Prediction`, split out of model.py.

    empty_prediction      the `Prediction` of zero rows
    concat_predictions    chunked predictions joined back in row order
    assemble_prediction   per row: the top-k labels, the leaf, the confident (back-off) node and the
                          answer at the requested level (``"leaf"`` or ``"backoff"``)

``model`` is a fitted `CategoryModel`; its scores come from ``CategoryModel._scored``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from classifiers._model.accept import Prediction
from classifiers._model.proof import confident_nodes

__all__ = ["assemble_prediction", "concat_predictions", "empty_prediction"]


def empty_prediction(top_k: int) -> Prediction:
    """The prediction for a frame of zero rows (every array empty, ``category_ids`` shaped (0, top_k))."""
    e = np.zeros(0)
    ids0 = np.zeros(0, dtype=object)
    i0 = np.zeros(0, dtype=np.int64)
    b0 = np.zeros(0, dtype=bool)
    return Prediction(
        np.zeros((0, top_k), dtype=object),
        np.zeros((0, top_k)),
        e,
        e,
        ids0,
        i0,
        b0,
        ids0,
        e,
        b0,
        e,
        e,
        ids0,
        e,
        i0,
        e,
    )


def concat_predictions(parts: list[Prediction]) -> Prediction:
    """The predictions of consecutive row chunks as one, in row order."""
    return Prediction(
        **{
            f.name: np.concatenate([getattr(p, f.name) for p in parts], axis=0)
            for f in dataclasses.fields(Prediction)
        }
    )


def assemble_prediction(
    model: Any,
    probs: np.ndarray,
    col_pos: np.ndarray,
    node_scores: np.ndarray,
    *,
    top_k: int,
    mode: str,
    correctness: np.ndarray | None = None,
) -> Prediction:
    """The `Prediction` of n rows from ``model._scored``'s (label probabilities incl. the zero-shot
    column, their node positions, tree-summed node scores, and the correctness score of the top trained
    label where the model's leaf cut is on that score, else None).

    With the correctness ranking, the proven cut is on the correctness score's scale, not the
    confidence's: a row's leaf bar is then its own confidence where its correctness score clears the
    cut (so ``confidence >= bar`` holds, and an audit floor still raises it) and ``inf`` where it does
    not; the confidence keeps its meaning."""
    n = probs.shape[0]
    rows = np.arange(n)
    order = np.argsort(-probs, axis=1, kind="stable")
    kk = min(top_k, probs.shape[1])
    top_cols = order[:, :kk]
    top_pos = np.take_along_axis(col_pos, top_cols, 1)
    ids = np.array(model.index_.ids, dtype=object)
    category_ids = ids[top_pos]
    scores = np.take_along_axis(probs, top_cols, 1)
    if kk < top_k:  # fewer labels than top_k: pad with the best id and 0 score
        pad = top_k - kk
        category_ids = np.column_stack([category_ids, np.repeat(category_ids[:, :1], pad, 1)])
        scores = np.column_stack([scores, np.zeros((n, pad))])
    best_pos = top_pos[:, 0]
    zs_mask = probs.shape[1] > len(model.label_pos_)
    zero_shot = (top_cols[:, 0] == len(model.label_pos_)) if zs_mask else np.zeros(n, dtype=bool)
    leaf_conf = probs[rows, top_cols[:, 0]]  # exactly this node (not summed with labels below it)
    leaf_thr = model.thresholds_.for_nodes(ids[best_pos])
    if correctness is not None:
        leaf_thr = np.where(correctness >= leaf_thr, leaf_conf, np.inf)
    conf_pos, conf_conf, conf_thr = confident_nodes(
        model.index_, float(model.thresholds_.backoff), node_scores, best_pos, (leaf_conf, leaf_thr)
    )
    has = conf_pos >= 0
    depths = np.array(model.index_.depths, dtype=np.int64)
    if mode == "backoff":
        chosen = np.where(has, conf_pos, best_pos)
        confidence = np.where(has, conf_conf, leaf_conf)
        threshold = np.where(has, conf_thr, leaf_thr)
    else:
        chosen, confidence, threshold = best_pos, leaf_conf, leaf_thr
    second = scores[:, 1] if scores.shape[1] > 1 else np.zeros(n)
    return Prediction(
        category_ids=category_ids,
        scores=scores,
        confidence=confidence,
        margin=scores[:, 0] - second,
        predicted_ids=ids[chosen],
        predicted_depth=depths[chosen],
        backed_off=chosen != best_pos,
        leaf_ids=ids[best_pos],
        leaf_confidence=leaf_conf,
        zero_shot=np.asarray(zero_shot, dtype=bool),
        threshold=threshold,
        leaf_threshold=leaf_thr,
        confident_ids=np.asarray(np.where(has, ids[np.maximum(conf_pos, 0)], None), dtype=object),
        confident_confidence=conf_conf,
        confident_depth=np.where(has, depths[np.maximum(conf_pos, 0)], -1),
        confident_threshold=conf_thr,
    )
