"""Routing: decide what happens to each classified SKU, as two small pure steps.

1. :func:`route` gives every item a ``route`` (``auto`` | ``review`` | ``suspect``), a ``queue`` and a
   ``reason`` from its confidence, the threshold of its predicted node and its current category.
   The suspect rule is its own, not tied to the auto-accept cut: the prediction is more likely right
   than wrong (calibrated confidence >= `SUSPECT_MIN_CONFIDENCE`), it lies on another branch than the
   current category, and the model gives the current category's branch at most
   `MAX_CURRENT_SUPPORT` (measured on planted misfilings against cleanlab: docs/quality.md).
2. :func:`select_for_queues` scores the items headed for human queues by expected impact and keeps,
   per queue, the highest-priority ones up to the nightly capacity.

Both work on numpy arrays / lists so they are tested on hand-written values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = [
    "MAX_CURRENT_SUPPORT",
    "SUSPECT_MIN_CONFIDENCE",
    "QueueName",
    "Route",
    "Routing",
    "audit_sample",
    "paths_agree",
    "priority",
    "route",
    "select_for_queues",
]

SEP = " > "

#: A suspect's prediction must be more likely right than wrong (calibrated probability).
SUSPECT_MIN_CONFIDENCE = 0.5
#: ... and the current category's branch may keep at most this probability (best candidate on it).
MAX_CURRENT_SUPPORT = 0.01


class Route(StrEnum):
    AUTO = "auto"
    REVIEW = "review"
    SUSPECT = "suspect"


class QueueName(StrEnum):
    LOW_CONFIDENCE = "low_confidence"
    SUSPECT = "suspect"
    LLM_FAILED = "llm_failed"
    AUDIT = "audit"


@dataclass(frozen=True)
class Routing:
    route: list[str]
    queue: list[str | None]
    reason: list[str]


def paths_agree(predicted: str | None, current: str | None) -> bool:
    """True when two category paths lie on one branch (equal, or one is an ancestor of the other).

    A backed-off prediction (``A > B``) agrees with a deeper current category (``A > B > C``), and a
    deeper prediction refines a shallower current category.
    """
    if not predicted or not current:
        return True
    p = [s.strip().casefold() for s in predicted.split(">")]
    c = [s.strip().casefold() for s in current.split(">")]
    n = min(len(p), len(c))
    return p[:n] == c[:n]


def route(
    confidence: np.ndarray,
    thresholds: np.ndarray,
    predicted_paths: Sequence[str | None],
    current_paths: Sequence[str | None],
    *,
    suspect_thresholds: np.ndarray | None = None,
    current_known: Sequence[bool] | None = None,
    current_support: np.ndarray | None = None,
    max_current_support: float = MAX_CURRENT_SUPPORT,
) -> Routing:
    """Route each item.

    - ``suspect``: a current category exists, the prediction is confident (``>= suspect_thresholds``,
      by default `SUSPECT_MIN_CONFIDENCE`, whatever the auto-accept bar) and the two are on different
      branches (or the current category is not in the taxonomy at all), and the model gives the current
      category almost no support (``current_support <= max_current_support``: the best score among
      candidates on the current category's branch).
    - ``auto``: confident (``>= thresholds``) and on the same branch as the current category (if any).
    - ``review``: everything else, queue ``low_confidence`` (a prediction that disagrees with the current
      category but is below the suspect threshold is never auto-accepted over it).
    """
    confidence = np.asarray(confidence, dtype=float)
    thresholds = np.broadcast_to(np.asarray(thresholds, dtype=float), confidence.shape)
    sus_t = np.broadcast_to(
        np.asarray(SUSPECT_MIN_CONFIDENCE if suspect_thresholds is None else suspect_thresholds, dtype=float),
        confidence.shape,
    )
    routes: list[str] = []
    queues: list[str | None] = []
    reasons: list[str] = []
    for i, conf in enumerate(confidence):
        pred = predicted_paths[i]
        cur = current_paths[i]
        known = True if current_known is None else bool(current_known[i])
        if pred is None:
            routes.append(Route.REVIEW)
            queues.append(QueueName.LOW_CONFIDENCE)
            reasons.append("no_prediction")
            continue
        disagrees = bool(cur) and (not known or not paths_agree(pred, cur))
        support = 0.0 if current_support is None else float(current_support[i])
        if disagrees and conf >= sus_t[i] and support <= max_current_support:
            routes.append(Route.SUSPECT)
            queues.append(QueueName.SUSPECT)
            reasons.append("current_category_unknown" if not known else "current_category_disagrees")
        elif conf >= thresholds[i] and not disagrees:
            routes.append(Route.AUTO)
            queues.append(None)
            reasons.append("confident")
        else:
            routes.append(Route.REVIEW)
            queues.append(QueueName.LOW_CONFIDENCE)
            reasons.append("low_confidence_disagrees" if disagrees else "low_confidence")
    return Routing(routes, queues, reasons)


def audit_sample(sku_ids: Sequence[str], run_id: str, *, rate: float) -> np.ndarray:
    """Deterministic pseudo-random sample (by hash of run and SKU) of about ``rate`` of the items."""
    if rate <= 0:
        return np.zeros(len(sku_ids), dtype=bool)
    cut = int(rate * 2**32)
    out = np.empty(len(sku_ids), dtype=bool)
    for i, sku in enumerate(sku_ids):
        h = hashlib.blake2b(f"{run_id}\x1f{sku}".encode(), digest_size=4).digest()
        out[i] = int.from_bytes(h, "big") < cut
    return out


def priority(
    queue: Sequence[str | None],
    confidence: np.ndarray,
    *,
    price: np.ndarray | None = None,
    traffic: np.ndarray | None = None,
) -> np.ndarray:
    """Expected impact of a human look at each item (higher first).

    Low-confidence and LLM-failed items: the uncertainty ``1 - confidence``. Suspect items: the
    confidence that the current category is wrong. Audit items: a flat 0.5 (they are a random sample).
    Price and traffic, where the catalog has them, scale the impact by ``1 + log1p(x)`` so an expensive or
    popular SKU in the wrong place is looked at first.
    """
    confidence = np.asarray(confidence, dtype=float)
    base = np.where(
        np.asarray([q == QueueName.SUSPECT for q in queue]),
        confidence,
        np.where(np.asarray([q == QueueName.AUDIT for q in queue]), 0.5, 1.0 - confidence),
    )
    for extra in (price, traffic):
        if extra is not None:
            x = np.nan_to_num(np.asarray(extra, dtype=float), nan=0.0)
            base = base * (1.0 + np.log1p(np.clip(x, 0.0, None)))
    return base


def select_for_queues(
    queue: Sequence[str | None], scores: np.ndarray, *, capacity: Mapping[str, int]
) -> np.ndarray:
    """Boolean mask of the items to enqueue: per queue, the ``capacity[queue]`` highest scores."""
    scores = np.asarray(scores, dtype=float)
    keep = np.zeros(len(queue), dtype=bool)
    qarr = np.asarray([q or "" for q in queue], dtype=object)
    for name in set(qarr) - {""}:
        idx = np.flatnonzero(qarr == name)
        cap = capacity.get(name, len(idx))
        if cap <= 0:
            continue
        order = idx[np.argsort(-scores[idx], kind="stable")]
        keep[order[:cap]] = True
    return keep
