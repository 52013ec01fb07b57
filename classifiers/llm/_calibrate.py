"""Calibration of the LLM's raw confidence on labelled items (internal): fit, apply, read the truth."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from shelfwise.errors import ConfigError

__all__: list[str] = []


def apply_calibration(cal: Mapping[str, Any] | None, raw: float) -> float:
    if not cal:
        return raw
    method = cal.get("method")
    if method == "constant":
        return float(cal["value"])
    if method == "isotonic":
        return float(np.interp(raw, cal["x"], cal["y"]))
    if method == "platt":
        return float(1.0 / (1.0 + math.exp(-(cal["a"] * raw + cal["b"]))))
    return raw


def truth_map(truth: pl.DataFrame | Mapping[str, str], taxonomy: Any) -> dict[str, str]:
    """sku_id -> category id from a frame (category_id or category_path) or a mapping."""
    if isinstance(truth, Mapping):
        return {str(k): str(v) for k, v in truth.items()}
    if "category_id" in truth.columns:
        return {
            str(r["sku_id"]): str(r["category_id"]) for r in truth.iter_rows(named=True) if r["category_id"]
        }
    if "category_path" in truth.columns:
        out = {}
        for r in truth.iter_rows(named=True):
            node = taxonomy.find_path(r["category_path"]) if r["category_path"] else None
            if node is not None:
                out[str(r["sku_id"])] = node.id
        return out
    raise ConfigError(
        f"calibrate: truth needs columns sku_id and category_id (or category_path); got {truth.columns}"
    )


def fit_calibration(decisions: pl.DataFrame, truth: Mapping[str, str], *, method: str) -> dict[str, Any]:
    """A map raw LLM confidence -> P(correct), fitted on the decided items that have a label."""
    if method not in ("isotonic", "platt"):
        raise ConfigError(f"calibrate: method {method!r} is not known; use 'isotonic' or 'platt'")
    col = "llm_confidence_raw" if "llm_confidence_raw" in decisions.columns else "llm_confidence"
    rows = [
        r
        for r in decisions.iter_rows(named=True)
        if r.get("llm_category_id") is not None and r.get(col) is not None and str(r["sku_id"]) in truth
    ]
    if len(rows) < 2:
        raise ConfigError(
            f"calibrate: only {len(rows)} decided items have a label; label at least 2 (better 50+) items"
        )
    x = np.array([float(r[col]) for r in rows])
    y = np.array([1.0 if r["llm_category_id"] == truth[str(r["sku_id"])] else 0.0 for r in rows])
    if y.min() == y.max():
        cal: dict[str, Any] = {"method": "constant", "value": float(y.mean())}
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
        cal = {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    else:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6).fit(x.reshape(-1, 1), y.astype(int))
        cal = {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
    cal["n"] = len(y)
    cal["accuracy"] = float(y.mean())
    after = np.array([apply_calibration(cal, v) for v in x])
    cal["brier_before"] = float(np.mean((x - y) ** 2))
    cal["brier_after"] = float(np.mean((after - y) ** 2))
    return cal
