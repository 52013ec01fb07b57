"""Classifying one canonical shard: model scores -> LLM arbitration -> routing -> human locks -> audit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from classifiers.llm import gate
from shelfwise._decide import (
    LLM_ANSWERED,
    CurrentCategories,
    DecideOptions,
    Decisions,
    LLMAnswer,
    Lock,
    ModelAnswers,
    decide,
)
from shelfwise._scores import predict_distinct, score_keys
from shelfwise.pipeline._resources import Resources
from shelfwise.predictions import CANDIDATE_TYPE, PRODUCT_COLUMNS, empty_predictions
from verification.routing import audit_sample, paths_agree

__all__ = ["RunStats", "classify_frame"]


@dataclass
class RunStats:
    seen: int = 0
    classified: int = 0
    human_locked: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    llm: Counter[str] = field(default_factory=Counter)
    llm_gated: int = 0
    distinct_scored: int = 0

    def add(self, other: RunStats) -> None:
        self.seen += other.seen
        self.classified += other.classified
        self.human_locked += other.human_locked
        self.routes.update(other.routes)
        self.llm.update(other.llm)
        self.llm_gated += other.llm_gated
        self.distinct_scored += other.distinct_scored


def _candidates(ids: np.ndarray, scores: np.ndarray, tax: Any) -> list[list[dict[str, Any]]]:
    out = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        row = []
        for cid, s in zip(row_ids, row_scores, strict=True):
            if cid is None or cid == "":
                continue
            row.append({"category_id": str(cid), "category_path": tax.get(str(cid)).path, "score": float(s)})
        out.append(row)
    return out


def classify_frame(
    shard: pl.DataFrame, res: Resources, *, run_id: str, cache: Any = None, stored: Sequence[str] = ()
) -> tuple[pl.DataFrame, RunStats]:
    """Classify one canonical shard: returns prediction rows (contract columns + product columns).

    ``cache``: the embedding cache to use (default ``res.cache``); a worker passes one per task, so the
    hit/miss counters it reports are this shard's own. ``stored``: the night's score parts
    (`shelfwise._scores`), where the model scores of tonight's contents already are.

    Rows with the same content (`score_keys`) and the same current category get the same decision unless
    a reviewer's lock or tonight's audit sample singles them out: those rows are decided once (one
    representative per group, LLM asked once) and the decision is copied to the group's other SKUs; locked
    and audit-sampled rows are decided on their own.
    """
    stats = RunStats(seen=shard.height)
    if shard.is_empty():
        return empty_predictions(), stats
    n = shard.height
    skus = shard.get_column("sku_id").to_list()
    # The audit sample is drawn per night (the run id starts with the UTC date), so re-running the same
    # night picks the same items and the queue is not inflated.
    audit = audit_sample(skus, run_id[:8], rate=res.settings.audit_rate)
    locks = _human_locks(skus, shard.get_column("content_hash").to_list(), res)
    special = audit | np.array([lock is not None for lock in locks], dtype=bool)
    current = shard.get_column("category_path").fill_null("\x00").to_numpy().astype(str)
    group = np.char.add(np.char.add(score_keys(shard, res.model).astype(str), "\x1f"), current)
    normal = np.flatnonzero(~special)
    _, first, inverse = np.unique(group[normal], return_index=True, return_inverse=True)
    reps = normal[first]
    sub_idx = np.sort(np.concatenate([reps, np.flatnonzero(special)]))
    if len(sub_idx) == n:
        frame, stats, gated, answered = _classify_rows(
            shard, res, run_id=run_id, cache=cache, stored=stored, audit=audit, locks=locks
        )
        src = np.arange(n)
    else:
        sub, stats, gated, answered = _classify_rows(
            shard[sub_idx],
            res,
            run_id=run_id,
            cache=cache,
            stored=stored,
            audit=audit[sub_idx],
            locks=[locks[i] for i in sub_idx.tolist()],
        )
        pos = np.empty(n, dtype=np.int64)
        pos[sub_idx] = np.arange(len(sub_idx))
        src = pos.copy()
        src[normal] = pos[reps][inverse.reshape(-1)]
        per_sku = ["sku_id", "content_hash", *(c for c in PRODUCT_COLUMNS if c in shard.columns)]
        frame = sub[src].with_columns(shard.get_column(c) for c in per_sku)
    stats.seen = stats.classified = n
    stats.routes = Counter(frame.get_column("route").to_list())
    gated_rows = gated[src]
    stats.llm_gated = int(gated_rows.sum())
    stats.llm = Counter(answered[i] for i in src[gated_rows].tolist() if answered[i] is not None)
    return frame, stats


def _human_locks(skus: list[str], hashes: list[str], res: Resources) -> list[Any]:
    """A reviewer's category for each row whose content has not changed since the decision (else None):
    human decisions are kept until the product's content changes."""
    locks: list[Lock | None] = [None] * len(skus)
    if not res.locked:
        return locks
    for i, (sku, h) in enumerate(zip(skus, hashes, strict=True)):
        lock = res.locked.get(sku)
        if lock and lock[2] == h:
            node = res.taxonomy.find_path(lock[1])
            locks[i] = Lock(lock[0], lock[1], node.depth if node is not None else len(lock[1].split(" > ")))
    return locks


def _classify_rows(
    shard: pl.DataFrame,
    res: Resources,
    *,
    run_id: str,
    cache: Any,
    stored: Sequence[str],
    audit: np.ndarray,
    locks: list[Any],
) -> tuple[pl.DataFrame, RunStats, np.ndarray, list[str | None]]:
    """`classify_frame` for every row on its own, given each row's audit draw and human lock: also
    returns which rows the LLM gate picked and the LLM step's status for each of them (None elsewhere)."""
    s, tax = res.settings, res.taxonomy
    stats = RunStats(seen=shard.height, classified=shard.height)
    pred, stats.distinct_scored = predict_distinct(
        shard, res, res.cache if cache is None else cache, stored=stored
    )
    answers = _model_answers(pred, tax)
    current = shard.get_column("category_path").to_list()
    candidates = _candidates(pred.category_ids, pred.scores, tax)
    level = str(getattr(s, "auto_accept_level", "leaf"))
    contract_conf = np.where(
        (level == "backoff") & np.array([c is not None for c in answers.confident_ids], dtype=bool),
        answers.confident_confidence,
        answers.leaf_confidence,
    )
    # LLM arbitration of the uncertain items (the step's answers are judged in `decide`).
    gated = np.asarray(gate(contract_conf, np.asarray(pred.margin, dtype=float), settings=s.llm), dtype=bool)
    llm = _ask_llm(shard[np.flatnonzero(gated)], res, candidates, gated, contract_conf, run_id, stats)
    stats.human_locked = sum(lock is not None for lock in locks)
    bars = res.audit_bars
    d = decide(
        answers,
        current=CurrentCategories(
            paths=current,
            known=[c is None or tax.find_path(c) is not None for c in current],
            support=_current_support(candidates, current),
        ),
        llm=llm,
        locks=locks,
        audit=audit,
        options=DecideOptions(
            level=level,
            target_precision=s.target_precision,
            auto_threshold=s.auto_threshold,
            suspect_threshold=s.suspect_threshold,
            max_current_support=s.max_current_support,
        ),
        floor_for=bars.floor_for if bars is not None else None,
    )
    stats.routes.update(d.route)
    out = _prediction_rows(shard, d, candidates, np.asarray(pred.margin, dtype=float), res, run_id)
    answered = [None if a is None else str(a.status) for a in llm]
    return out, stats, gated, answered


def _ask_llm(
    items: pl.DataFrame,
    res: Resources,
    candidates: list[list[dict[str, Any]]],
    gated: np.ndarray,
    confidence: np.ndarray,
    run_id: str,
    stats: RunStats,
) -> list[LLMAnswer | None]:
    """The LLM step's answer for each gated row (``items``: the gated rows, in order); None elsewhere."""
    llm: list[LLMAnswer | None] = [None] * len(gated)
    idx = np.flatnonzero(gated)
    stats.llm_gated = len(idx)
    if not len(idx):
        return llm
    if res.arbiter is None:
        for j in idx:
            llm[j] = LLMAnswer("skipped_no_endpoint")
        stats.llm["skipped_no_endpoint"] += len(idx)
        return llm
    asked = items.with_columns(
        pl.Series("candidates", [candidates[i] for i in idx], dtype=CANDIDATE_TYPE),
        pl.Series("confidence", confidence[idx]),
    )
    decided = res.arbiter.decide(asked, run_id=run_id)
    by_sku = {r["sku_id"]: r for r in decided.iter_rows(named=True)}
    labels = {str(c) for c in getattr(res.model, "classes_", [])}
    for j, sku in zip(idx, items.get_column("sku_id").to_list(), strict=True):
        answer = _llm_answer(by_sku.get(sku), res.taxonomy, labels)
        llm[j] = answer
        stats.llm[answer.status] += 1
    return llm


def _current_support(candidates: list[list[dict[str, Any]]], current: list[str | None]) -> np.ndarray:
    """Each row's best candidate score on its current category's branch (0 without a current category)."""
    return np.array(
        [
            max((c["score"] for c in cands if cur and paths_agree(c["category_path"], cur)), default=0.0)
            for cands, cur in zip(candidates, current, strict=True)
        ]
    )


def _prediction_rows(
    shard: pl.DataFrame,
    d: Decisions,
    candidates: list[list[dict[str, Any]]],
    margin: np.ndarray,
    res: Resources,
    run_id: str,
) -> pl.DataFrame:
    """The shard's prediction rows: the contract columns from the decisions, then the product columns."""
    n = shard.height
    out = pl.DataFrame(
        {
            "sku_id": shard.get_column("sku_id"),
            "category_id": d.category_id,
            "category_path": d.category_path,
            "confidence": np.clip(d.confidence, 0.0, 1.0),
            "route": d.route,
            "candidates": pl.Series(candidates, dtype=CANDIDATE_TYPE),
            "current_category_path": shard.get_column("category_path").cast(pl.String),
            "taxonomy_version": [res.taxonomy.version] * n,
            "model_version": [res.model.version] * n,
            "run_id": [run_id] * n,
            "predicted_depth": d.predicted_depth.astype(np.int32),
            "margin": margin,
            "source": d.source,
            "reason": d.reason,
            "queue": pl.Series([str(q) if q else None for q in d.queue], dtype=pl.String),
            "llm_status": pl.Series(d.llm_status, dtype=pl.String),
            "content_hash": shard.get_column("content_hash"),
            "scored_run_id": [run_id] * n,
            "confident_category_id": pl.Series(d.confident_category_id, dtype=pl.String),
            "confident_category_path": pl.Series(d.confident_category_path, dtype=pl.String),
            "confident_confidence": pl.Series(d.confident_confidence, dtype=pl.Float64).fill_nan(None),
        }
    )
    products = shard.select([c for c in PRODUCT_COLUMNS if c in shard.columns])
    return pl.concat([out, products], how="horizontal")


def _model_answers(pred: Any, tax: Any) -> ModelAnswers:
    """`shelfwise._decide.ModelAnswers` from a `classifiers.model.Prediction` (paths from the taxonomy)."""
    leaf_ids = [str(x) for x in pred.leaf_ids]
    conf_ids = [None if x is None else str(x) for x in pred.confident_ids]
    return ModelAnswers(
        leaf_ids=leaf_ids,
        leaf_paths=[tax.get(c).path for c in leaf_ids],
        leaf_depth=np.array([tax.get(c).depth for c in leaf_ids], dtype=np.int64),
        leaf_confidence=np.asarray(pred.leaf_confidence, dtype=float),
        leaf_threshold=np.asarray(pred.leaf_threshold, dtype=float),
        confident_ids=conf_ids,
        confident_paths=[None if c is None else tax.get(c).path for c in conf_ids],
        confident_depth=np.asarray(pred.confident_depth, dtype=np.int64),
        confident_confidence=np.asarray(pred.confident_confidence, dtype=float),
        confident_threshold=np.asarray(pred.confident_threshold, dtype=float),
    )


def _llm_answer(r: dict[str, Any] | None, tax: Any, labels: set[str]) -> LLMAnswer:
    """`shelfwise._decide.LLMAnswer` from one row of `LLMArbiter.decide` (None: no row came back)."""
    if r is None:
        return LLMAnswer("failed_transient")
    status = str(r["llm_status"])
    cid = r.get("llm_category_id")
    if not cid or status not in LLM_ANSWERED:
        return LLMAnswer(status)
    node = tax.get(str(cid))
    leafish = str(cid) in labels or not list(tax.children(str(cid)))
    calibrated = "calibrated" in str(r.get("llm_confidence_source") or "")
    conf = r.get("llm_confidence")
    return LLMAnswer(
        status,
        str(cid),
        node.path,
        int(node.depth),
        None if conf is None else float(conf),
        calibrated=calibrated,
        at_label_level=leafish,
    )
