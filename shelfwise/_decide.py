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
from verification.routing import MAX_CURRENT_SUPPORT, SUSPECT_MIN_CONFIDENCE, QueueName, paths_agree, route

__all__ = [
    "AcceptLevel",
    "CurrentCategories",
    "DecideOptions",
    "Decisions",
    "LLMAnswer",
    "Lock",
    "ModelAnswers",
    "decide",
]

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
class CurrentCategories:
    """Each item's current category in the catalog (arrays/lists of the items' length)."""

    paths: Sequence[str | None]
    known: Sequence[bool]  # the path is a node of the taxonomy (True where there is none)
    support: np.ndarray  # the model's probability for the current category's branch


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


@dataclass
class _Draft:
    """The per-item answer as it is built step by step (model, then LLM, then lock)."""

    cat_ids: list[str]
    cat_paths: list[str]
    depth: np.ndarray
    confidence: np.ndarray
    thr: np.ndarray
    source: list[str]


@dataclass
class _Routing:
    routes: list[str]
    queues: list[str | None]
    reasons: list[str]


def _check_level(options: DecideOptions) -> None:
    if options.level not in tuple(AcceptLevel):
        raise ConfigError(
            f"auto_accept_level={options.level!r} is not valid; use 'leaf' or 'backoff' (set it in "
            f"shelfwise.toml)"
        )


def _model_step(model: ModelAnswers, options: DecideOptions) -> _Draft:
    """1. the model's answer at the configured level, with its bar."""
    n = len(model.leaf_ids)
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
    return _Draft(cat_ids, cat_paths, depth, confidence, thr, ["model"] * n)


def _llm_step(
    draft: _Draft, llm: Sequence[LLMAnswer | None], options: DecideOptions
) -> tuple[_Draft, list[str | None], np.ndarray]:
    """2. the LLM's answer replaces the model's where it gave one; returns the draft, statuses, failures."""
    n = len(draft.cat_ids)
    llm_status: list[str | None] = [None] * n
    llm_failed = np.zeros(n, dtype=bool)
    for i, ans in enumerate(llm):
        if ans is None:
            continue
        llm_status[i] = ans.status
        if ans.status in LLM_ANSWERED and ans.category_id:
            draft.cat_ids[i] = ans.category_id
            draft.cat_paths[i] = str(ans.category_path)
            draft.depth[i] = (
                int(ans.depth) if ans.depth is not None else len(str(ans.category_path).split(" > "))
            )
            draft.confidence[i] = float(ans.confidence) if ans.confidence is not None else 0.0
            draft.source[i] = "llm"
            provable = ans.calibrated and (ans.at_label_level or options.level == AcceptLevel.BACKOFF)
            bar = max(options.target_precision, options.auto_threshold or 0.0)
            draft.thr[i] = bar if provable else np.inf
        elif ans.status not in LLM_NOT_ASKED:
            llm_failed[i] = True
    return draft, llm_status, llm_failed


def _route_step(
    draft: _Draft,
    model: ModelAnswers,
    current: CurrentCategories,
    options: DecideOptions,
) -> _Routing:
    """3. auto / review / suspect against the draft's bar (already raised by the audit floors)."""

    current_paths, current_known, current_support = current.paths, current.known, current.support
    n = len(draft.cat_ids)
    # the suspect rule is its own (verification.routing), not the auto-accept bar; an LLM answer that
    # cannot be auto-accepted (uncalibrated) cannot call the current category suspect either
    sus_t = (
        np.full(n, float(options.suspect_threshold))
        if options.suspect_threshold is not None
        else np.where(
            np.isfinite(draft.thr) | (np.asarray(draft.source) == "model"), SUSPECT_MIN_CONFIDENCE, np.inf
        )
    )
    routing = route(
        draft.confidence,
        draft.thr,
        draft.cat_paths,
        current_paths,
        suspect_thresholds=sus_t,
        current_known=current_known,
        current_support=current_support,
        max_current_support=options.max_current_support,
    )
    out = _Routing(
        routes=[str(r) for r in routing.route],
        queues=[str(q) if q else None for q in routing.queue],
        reasons=list(routing.reason),
    )
    # a proven back-off answer on another branch than the current category also flags it as suspect
    support = np.asarray(current_support, dtype=float)
    for i in range(n):
        cp, cur = model.confident_paths[i], current_paths[i]
        if (
            out.routes[i] == "review"
            and draft.source[i] == "model"
            and cp
            and cur
            and options.suspect_threshold is None
            and not paths_agree(cp, cur)
            and support[i] <= options.max_current_support
        ):
            out.routes[i], out.queues[i] = "suspect", QueueName.SUSPECT
            out.reasons[i] = (
                "current_category_unknown" if not current_known[i] else "current_category_disagrees"
            )
    return out


def _mark_llm_outcome(out: _Routing, llm_status: list[str | None], llm_failed: np.ndarray) -> _Routing:
    """3b. an item in review whose LLM call failed goes to the LLM-failed queue; note an LLM that is off."""

    for i in (int(x) for x in np.flatnonzero(llm_failed)):
        if out.routes[i] == "review":
            out.queues[i] = QueueName.LLM_FAILED
            out.reasons[i] = f"llm_{llm_status[i]}"
    for i, st in enumerate(llm_status):
        if st == "skipped_no_endpoint" and out.routes[i] == "review":
            out.reasons[i] = out.reasons[i] + "; llm_off"
    return out


def _apply_locks(draft: _Draft, out: _Routing, locks: Sequence[Lock | None]) -> tuple[_Draft, _Routing]:
    """4. a reviewer's category stays until the product's content changes."""
    for i, lock in enumerate(locks):
        if lock is None:
            continue
        draft.cat_ids[i], draft.cat_paths[i] = lock.category_id, lock.category_path
        draft.depth[i] = lock.depth
        draft.confidence[i] = 1.0
        draft.source[i] = "human"
        out.routes[i], out.queues[i], out.reasons[i] = "auto", None, "human_decision"
    return draft, out


def _sample_audit(draft: _Draft, out: _Routing, audit: np.ndarray) -> _Routing:
    """5. a sampled share of auto-accepted machine answers goes to the audit queue."""

    for i in (int(x) for x in np.flatnonzero(np.asarray(audit, dtype=bool))):
        if out.routes[i] == "auto" and draft.source[i] != "human":
            out.queues[i] = QueueName.AUDIT
    return out


def decide(
    model: ModelAnswers,
    *,
    current: CurrentCategories,
    llm: Sequence[LLMAnswer | None],
    locks: Sequence[Lock | None],
    audit: np.ndarray,
    options: DecideOptions,
    floor_for: Callable[[Sequence[str | None]], np.ndarray] | None = None,
) -> Decisions:
    """Model -> LLM -> routing -> human lock -> audit sampling (see the module docstring)."""
    _check_level(options)
    draft = _model_step(model, options)
    draft, llm_status, llm_failed = _llm_step(draft, llm, options)
    # 3. routing, against the bar raised by the audit where it proved a scope below target
    if floor_for is not None:
        draft.thr = np.maximum(draft.thr, floor_for(draft.cat_paths))
    out = _route_step(draft, model, current, options)
    out = _mark_llm_outcome(out, llm_status, llm_failed)
    draft, out = _apply_locks(draft, out, locks)
    out = _sample_audit(draft, out, audit)
    return Decisions(
        category_id=draft.cat_ids,
        category_path=draft.cat_paths,
        confidence=np.clip(draft.confidence, 0.0, 1.0),
        predicted_depth=draft.depth,
        threshold=draft.thr,
        source=draft.source,
        route=out.routes,
        queue=[str(q) if q else None for q in out.queues],
        reason=out.reasons,
        llm_status=llm_status,
        confident_category_id=[None if c is None else str(c) for c in model.confident_ids],
        confident_category_path=list(model.confident_paths),
        confident_confidence=np.asarray(model.confident_confidence, dtype=np.float64),
    )
