"""The out-of-fold figures `CategoryModel.fit` records (``fit_report_["heldout"]``) and `train` prints.

Every figure here is out of fold: each row was scored by base scorers and a stacker that never saw it,
and calibrated by a calibrator fit on the other folds (cross-fitted). Threshold evidence comes from
`Thresholds.groups` (chosen on those rows, see `classifiers.selective.fit_thresholds`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from classifiers._model.proof import AcceptFit
from classifiers.calibration import precision_lower_bound
from classifiers.metrics import expected_calibration_error

__all__ = ["out_of_fold_report"]


def out_of_fold_report(
    p_raw: np.ndarray,
    p_cal_cf: np.ndarray,
    y: np.ndarray,
    accept: AcceptFit,
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Out-of-fold accuracy, calibration error, the proven leaf cut against the best cuts chosen with the
    labels, and the back-off tier (``accept.report``, see `classifiers._model.proof`)."""
    top = p_raw.argmax(axis=1)
    ok = top == y
    n = len(y)
    thresholds = accept.thresholds
    figures = accept.report
    k, m = int(ok[accept.leaf_accepted].sum()), int(accept.leaf_accepted.sum())
    return {
        "what": "out of fold (scorers and stacker never saw the row; calibrator cross-fitted)",
        "rows": n,
        "leaf_accuracy": round(float(ok.mean()), 4),
        "ece_uncalibrated": round(expected_calibration_error(p_raw.max(axis=1), ok), 4),
        "ece_calibrated_cross_fitted": round(expected_calibration_error(p_cal_cf[np.arange(n), top], ok), 4),
        "temperature": temperature,
        "target_precision": thresholds.target_precision,
        "threshold_global": thresholds.to_dict()["global"],
        "nodes_with_own_threshold": 0,
        "auto_share": figures["proven_share"],
        "auto_precision": figures["proven_precision"],
        # the one-sided 95% bound `train` prints (the proof itself ran at the leaf's smaller delta)
        "auto_precision_lower_bound": round(precision_lower_bound(k, m), 4) if m else None,
        **{k: v for k, v in figures.items() if k != "backoff"},
        "backoff": dict(figures["backoff"], threshold=thresholds.to_dict()["backoff"]),
    }


def manifest_of(model: Any, format_version: int) -> dict[str, Any]:
    """What a fitted `CategoryModel` writes to ``manifest.json``: versions, embedder, creation time,
    label counts, out-of-fold figures (``fit_report.heldout``) and every threshold with its evidence
    (``thresholds.groups``: out-of-fold precision, lower bound, support, coverage)."""
    path_of = dict(zip(model.index_.ids, model.index_.paths, strict=True))
    return {
        "format": format_version,
        "version": model.version_,
        "taxonomy_version": model.taxonomy_version_,
        "taxonomy_source": model.taxonomy_source_,
        "embedder": model.embedder_id_,
        "image_embedder": model.image_embedder_id_ or None,
        "created_at": model.created_at_,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.get_params().items()},
        "n_classes": len(model.classes_),
        "label_counts": {path_of[c]: n for c, n in model.label_counts_.items()},  # ids in label_ids
        "label_ids": {path_of[c]: c for c in model.label_counts_},
        "thresholds": model.thresholds_.to_dict(),
        "fit_report": model.fit_report_,
    }
