"""The out-of-fold figures `CategoryModel.fit` records (``fit_report_["heldout"]``) and `train` prints.

Every figure here is out of fold: each row was scored by base scorers and a stacker that never saw it,
and calibrated by a calibrator fit on the other folds (cross-fitted). Threshold evidence comes from
`Thresholds.groups` (chosen on those rows, see `classifiers.calibration.fit_thresholds`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from classifiers.calibration import GLOBAL, Thresholds, precision_lower_bound

__all__ = ["out_of_fold_report"]


def out_of_fold_report(
    p_raw: np.ndarray,
    p_cal_cf: np.ndarray,
    y: np.ndarray,
    thresholds: Thresholds,
    *,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Out-of-fold accuracy, calibration error and, per threshold group, its evidence."""
    from classifiers.metrics import expected_calibration_error

    top = p_raw.argmax(axis=1)
    ok = top == y
    accepted = sum(int(g["accepted"]) for g in thresholds.groups.values())
    right = sum(round(float(g["oof_precision"] or 0.0) * int(g["accepted"])) for g in thresholds.groups.values())
    n = len(y)
    return {
        "what": "out of fold (scorers and stacker never saw the row; calibrator cross-fitted)",
        "rows": n,
        "leaf_accuracy": round(float(ok.mean()), 4),
        "ece_uncalibrated": round(expected_calibration_error(p_raw.max(axis=1), ok), 4),
        "ece_calibrated_cross_fitted": round(
            expected_calibration_error(p_cal_cf[np.arange(n), top], ok), 4
        ),
        "temperature": temperature,
        "target_precision": thresholds.target_precision,
        "threshold_global": thresholds.to_dict()["global"],
        "nodes_with_own_threshold": len([g for g in thresholds.groups if g != GLOBAL]),
        "auto_share": round(accepted / n, 4) if n else 0.0,
        "auto_precision": round(right / accepted, 4) if accepted else None,
        "auto_precision_lower_bound": round(precision_lower_bound(right, accepted), 4) if accepted else None,
        "backoff": dict(thresholds.backoff_fit, threshold=thresholds.to_dict()["backoff"]),
    }
