"""Small, pure statistics used by the report (tested on hand-written values)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

__all__ = [
    "cohen_kappa",
    "expected_calibration_error",
    "jensen_shannon",
    "psi",
    "reliability_bins",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, *, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default). ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels on the same items (``nan`` without items).

    When both raters used one single identical label throughout, agreement is perfect and kappa is 1.
    """
    if len(first) != len(second):
        raise ValueError(
            f"cohen_kappa: {len(first)} labels vs {len(second)}; both raters must label the same items"
        )
    n = len(first)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    ca, cb = Counter(first), Counter(second)
    expected = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def _aligned(p: Mapping[str, float], q: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(p) | set(q))
    a = np.array([float(p.get(k, 0.0)) for k in keys])
    b = np.array([float(q.get(k, 0.0)) for k in keys])
    a = a / a.sum() if a.sum() > 0 else a
    b = b / b.sum() if b.sum() > 0 else b
    return a, b


def jensen_shannon(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, so 0 = same distribution, 1 = disjoint) of two count maps."""
    a, b = _aligned(p, q)
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    m = 0.5 * (a + b)

    def kl(x: np.ndarray, y: np.ndarray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    return max(0.0, 0.5 * kl(a, m) + 0.5 * kl(b, m))


def psi(expected: Mapping[str, float], actual: Mapping[str, float], *, floor: float = 1e-4) -> float:
    """Population stability index of ``actual`` against ``expected`` (< 0.1 stable, > 0.25 a big shift)."""
    a, b = _aligned(expected, actual)
    if a.sum() == 0 or b.sum() == 0:
        return math.nan
    a = np.clip(a, floor, None)
    b = np.clip(b, floor, None)
    return float(np.sum((b - a) * np.log(b / a)))


def reliability_bins(
    confidence: Sequence[float], correct: Sequence[bool], *, bins: int = 10
) -> list[dict[str, float]]:
    """Equal-width confidence bins: ``lo, hi, n, mean_confidence, accuracy`` (empty bins left out)."""
    conf = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        if n:
            out.append(
                {
                    "lo": float(edges[b]),
                    "hi": float(edges[b + 1]),
                    "n": n,
                    "mean_confidence": float(conf[mask].mean()),
                    "accuracy": float(ok[mask].mean()),
                }
            )
    return out


def expected_calibration_error(bins: Sequence[Mapping[str, float]]) -> float:
    """Count-weighted mean gap between confidence and accuracy over reliability bins."""
    total = sum(b["n"] for b in bins)
    if not total:
        return math.nan
    return float(sum(b["n"] * abs(b["mean_confidence"] - b["accuracy"]) for b in bins) / total)
