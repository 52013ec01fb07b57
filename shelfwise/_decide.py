"""The nightly decision for each classified product, as one pure function (tested on hand-written values).

Order, for every item of a shard:

1. **model**: the answer of the configured level: the top label (``auto_accept_level="leaf"``, the
   default) or the back-off node (``"backoff"``: the deepest node on the label's path clearing its bar),
   with its bar; the back-off answer is always carried in the ``confident_*`` columns;
2. **LLM**: an item the gate sent to the LLM takes the LLM's answer when it gave one; that answer can be
   auto-accepted only when its confidence is calibrated (an exact-match probability) and clears the
   target, and in leaf mode only when it is at label level (never a parent);
3. **routing** (`verification.routing.route`): auto / review against the bar, raised by the audit's
   per-scope floors (`verification.audit_bar`); suspect by its own rule (a prediction more likely
   right than wrong on another branch, the current category's branch at most 1%), not the auto bar;
   an item whose proven back-off answer lies on another branch than its current category is suspect
   too;
4. **human lock**: a reviewer's category stays until the product's content changes;
5. **audit sampling**: a random share of the auto-accepted model answers goes to the audit queue.

``classify_frame`` (shelfwise/pipeline/_classify.py) gathers the inputs (model, LLM calls, locks) and calls
`decide`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from shelfwise.errors import ConfigError
from verification.routing import MAX_CURRENT_SUPPORT, SUSPECT_MIN_CONFIDENCE

__all__ = ["AcceptLevel", "DecideOptions", "Decisions", "LLMAnswer", "Lock", "ModelAnswers", "decide"]

#: LLM statuses whose answer replaces the model's.
LLM_ANSWERED = ("accepted", "none_of_these_walked")
#: LLM statuses that are not a failure (the LLM was not asked).
LLM_NOT_ASKED = ("skipped_no_endpoint", "skipped_budget")


class AcceptLevel(StrEnum):
    LEAF = "leaf"
    BACKOFF = "backoff"


@dataclass(frozen=True)
class ModelAnswers:
    """The model's two answers per item (arrays/lists of equal length)."""

    leaf_ids: Sequence[str]
    leaf_paths: Sequence[str]
    leaf_depth: np.ndarray
    leaf_confidence: np.ndarray
    leaf_threshold: np.ndarray
    confident_ids: Sequence[str | None]
    confident_paths: Sequence[str | None]
    confident_depth: np.ndarray
    confident_confidence: np.ndarray
    confident_threshold: np.ndarray


@dataclass(frozen=True)
class LLMAnswer:
    """What the LLM step returned for one gated item."""

    status: str
    category_id: str | None = None
    category_path: str | None = None
    depth: int | None = None
    confidence: float | None = None
    calibrated: bool = False  # confidence is a calibrated probability that exactly this node is right
    at_label_level: bool = True  # the node is a label node of the model (or a taxonomy leaf)


@dataclass(frozen=True)
class Lock:
    """A reviewer's category for an item whose content has not changed since."""

    category_id: str
    category_path: str
    depth: int


@dataclass(frozen=True)
class DecideOptions:
    level: str = AcceptLevel.LEAF
    target_precision: float = 0.95
    auto_threshold: float | None = None
    suspect_threshold: float | None = None
    max_current_support: float = MAX_CURRENT_SUPPORT


@dataclass
class Decisions:
    category_id: list[str]
    category_path: list[str]
    confidence: np.ndarray
    predicted_depth: np.ndarray
    threshold: np.ndarray  # the bar the item was judged against (after audit floors)
    source: list[str]
    route: list[str]
    queue: list[str | None]
    reason: list[str]
    llm_status: list[str | None]
    confident_category_id: list[str | None]
    confident_category_path: list[str | None]
    confident_confidence: np.ndarray


def decide(
    model: ModelAnswers,
    *,
    current_paths: Sequence[str | None],
    current_known: Sequence[bool],
    current_support: np.ndarray,
    llm: Sequence[LLMAnswer | None],
    locks: Sequence[Lock | None],
    audit: np.ndarray,
    options: DecideOptions,
    floor_for: Callable[[Sequence[str | None]], np.ndarray] | None = None,
) -> Decisions:
    """Model -> LLM -> routing -> human lock -> audit sampling (see the module docstring)."""
    from verification.routing import QueueName, paths_agree, route

    if options.level not in tuple(AcceptLevel):
        raise ConfigError(
            f"auto_accept_level={options.level!r} is not valid; use 'leaf' or 'backoff' (set it in "
            f"shelfwise.toml)"
        )
    n = len(model.leaf_ids)
    # 1. model
    use_conf = (
        np.array([c is not None for c in model.confident_ids], dtype=bool)
        if options.level == AcceptLevel.BACKOFF
        else np.zeros(n, dtype=bool)
    )
    cat_ids = [str(model.confident_ids[i] if use_conf[i] else model.leaf_ids[i]) for i in range(n)]
    cat_paths = [str(model.confident_paths[i] if use_conf[i] else model.leaf_paths[i]) for i in range(n)]
    depth = np.where(use_conf, model.confident_depth, model.leaf_depth).astype(np.int64)
    confidence = np.where(use_conf, model.confident_confidence, model.leaf_confidence).astype(np.float64)
    thr = np.where(use_conf, model.confident_threshold, model.leaf_threshold).astype(np.float64)
    if options.auto_threshold is not None:
        thr = np.full(n, float(options.auto_threshold))
    source = ["model"] * n
    # 2. LLM
    llm_status: list[str | None] = [None] * n
    llm_failed = np.zeros(n, dtype=bool)
    for i, ans in enumerate(llm):
        if ans is None:
            continue
        llm_status[i] = ans.status
        if ans.status in LLM_ANSWERED and ans.category_id:
            cat_ids[i] = ans.category_id
            cat_paths[i] = str(ans.category_path)
            depth[i] = int(ans.depth) if ans.depth is not None else len(str(ans.category_path).split(" > "))
            confidence[i] = float(ans.confidence) if ans.confidence is not None else 0.0
            source[i] = "llm"
            provable = ans.calibrated and (ans.at_label_level or options.level == AcceptLevel.BACKOFF)
            bar = max(options.target_precision, options.auto_threshold or 0.0)
            thr[i] = bar if provable else np.inf
        elif ans.status not in LLM_NOT_ASKED:
            llm_failed[i] = True
    # 3. routing, against the bar raised by the audit where it proved a scope below target
    if floor_for is not None:
        thr = np.maximum(thr, floor_for(cat_paths))
    # the suspect rule is its own (verification.routing), not the auto-accept bar; an LLM answer that
    # cannot be auto-accepted (uncalibrated) cannot call the current category suspect either
    sus_t = (
        np.full(n, float(options.suspect_threshold))
        if options.suspect_threshold is not None
        else np.where(np.isfinite(thr) | (np.asarray(source) == "model"), SUSPECT_MIN_CONFIDENCE, np.inf)
    )
    routing = route(
        confidence,
        thr,
        cat_paths,
        current_paths,
        suspect_thresholds=sus_t,
        current_known=current_known,
        current_support=current_support,
        max_current_support=options.max_current_support,
    )
    routes = [str(r) for r in routing.route]
    queues: list[str | None] = [str(q) if q else None for q in routing.queue]
    reasons = list(routing.reason)
    # a proven back-off answer on another branch than the current category also flags it as suspect
    support = np.asarray(current_support, dtype=float)
    for i in range(n):
        cp, cur = model.confident_paths[i], current_paths[i]
        if (
            routes[i] == "review"
            and source[i] == "model"
            and cp
            and cur
            and options.suspect_threshold is None
            and not paths_agree(cp, cur)
            and support[i] <= options.max_current_support
        ):
            routes[i], queues[i] = "suspect", QueueName.SUSPECT
            reasons[i] = "current_category_unknown" if not current_known[i] else "current_category_disagrees"
    for i in (int(x) for x in np.flatnonzero(llm_failed)):
        if routes[i] == "review":
            queues[i] = QueueName.LLM_FAILED
            reasons[i] = f"llm_{llm_status[i]}"
    for i, st in enumerate(llm_status):
        if st == "skipped_no_endpoint" and routes[i] == "review":
            reasons[i] = reasons[i] + "; llm_off"
    # 4. human lock
    for i, lock in enumerate(locks):
        if lock is None:
            continue
        cat_ids[i], cat_paths[i], depth[i] = lock.category_id, lock.category_path, lock.depth
        confidence[i] = 1.0
        source[i] = "human"
        routes[i], queues[i], reasons[i] = "auto", None, "human_decision"
    # 5. audit sampling of auto-accepted machine answers
    for i in (int(x) for x in np.flatnonzero(np.asarray(audit, dtype=bool))):
        if routes[i] == "auto" and source[i] != "human":
            queues[i] = QueueName.AUDIT
    return Decisions(
        category_id=cat_ids,
        category_path=cat_paths,
        confidence=np.clip(confidence, 0.0, 1.0),
        predicted_depth=depth,
        threshold=thr,
        source=source,
        route=routes,
        queue=[str(q) if q else None for q in queues],
        reason=reasons,
        llm_status=llm_status,
        confident_category_id=[None if c is None else str(c) for c in model.confident_ids],
        confident_category_path=list(model.confident_paths),
        confident_confidence=np.asarray(model.confident_confidence, dtype=np.float64),
    )
