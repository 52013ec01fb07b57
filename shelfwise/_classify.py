"""Classifying one canonical shard: model scores -> LLM arbitration -> routing -> human locks -> audit."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shelfwise._scores import predict_distinct, score_keys
from shelfwise._train import MODEL_TAXONOMY_DIR, _image_embedder, _queue_store, load_model_taxonomy
from shelfwise.errors import ModelError
from shelfwise.settings import Settings

__all__ = [
    "CANDIDATE_TYPE",
    "PREDICTION_COLUMNS",
    "PRODUCT_COLUMNS",
    "Resources",
    "RunStats",
    "classify_frame",
    "load_resources",
]

#: The predictions contract (extend, never rename or drop).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "sku_id",
    "category_id",
    "category_path",
    "confidence",
    "route",
    "candidates",
    "current_category_path",
    "taxonomy_version",
    "model_version",
    "run_id",
    # extensions
    "predicted_depth",
    "margin",
    "source",
    "reason",
    "queue",
    "llm_status",
    "content_hash",
    "title",
    "scored_run_id",  # the run that scored this row (earlier than run_id when the row was carried)
    "confident_category_id",  # the back-off answer: deepest node on the path clearing its bar (or null)
    "confident_category_path",
    "confident_confidence",
)

CANDIDATE_TYPE = pl.List(
    pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64})
)

#: Product columns carried from the catalog into the queue (not into predictions.parquet).
PRODUCT_COLUMNS = ("title", "description", "brand", "attributes", "image_path", "review_text", "price")


@dataclass
class Resources:
    """Everything expensive a run needs, built once (lazily, never at import)."""

    settings: Settings
    model_dir: Path
    model: Any
    taxonomy: Any
    embedder: Any
    cache: Any
    image_embedder: Any = None
    arbiter: Any = None
    locked: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    llm_note: str = ""
    audit_bars: Any = None  # verification.audit_bar.AuditBars: bars the audit raised for this model


def load_resources(
    model_dir: str | Path, settings: Settings, *, with_queue: bool = True, with_llm: bool = True
) -> Resources:
    """Load what classifying needs (``with_llm=False``: no arbiter; a shard task builds its own)."""
    from classifiers import make_embedder, open_embedding_cache
    from classifiers.model import CategoryModel

    model_dir = Path(model_dir)
    if not (model_dir / MODEL_TAXONOMY_DIR).exists():
        raise ModelError(
            f"no trained model in {model_dir}; run: shelfwise train --taxonomy T --catalog LABELLED "
            f"--model-dir {model_dir}"
        )
    tax = load_model_taxonomy(model_dir)
    model = CategoryModel.load(model_dir)
    embedder = make_embedder(settings.embedder)
    cache = open_embedding_cache(settings.embedding_cache)
    image_embedder = _image_embedder(settings) if getattr(model, "use_images", False) else None
    arbiter, note = _llm_arbiter(settings, tax) if with_llm else (None, llm_note(settings))
    locked: dict[str, tuple[str, str, str]] = {}
    decisions = None
    if with_queue:
        store = _queue_store(settings, create=False)
        if store is not None:
            try:
                locked = store.locked()
                decisions = store.decisions_frame()
            finally:
                store.close()
    bars = _audit_bars(settings, model.version, decisions)
    return Resources(
        settings, model_dir, model, tax, embedder, cache, image_embedder, arbiter, locked, note, bars
    )


def _audit_bars(settings: Settings, model_version: str, decisions: pl.DataFrame | None) -> Any:
    """The audit-raised bars for this run: last run's state, raised where the audit answers so far
    prove the model's auto-accepts below target (idempotent: the same answers give the same bars)."""
    from verification.audit_bar import STATE_FILE, audit_answers, load_bars, next_bars, save_bars

    path = settings.state_dir / STATE_FILE
    bars = load_bars(path, model_version)
    if decisions is None:
        return bars
    answers = audit_answers(decisions, model_version=model_version)
    bars = next_bars(bars, answers, target=settings.target_precision, model_version=model_version)
    if bars.floors or path.exists():
        save_bars(path, bars)
    return bars


def llm_note(settings: Settings) -> str:
    """One line on whether the LLM step is on, for the run summary."""
    llm = settings.llm
    if not llm.base_url:
        return (
            "LLM step off: no endpoint configured (set OPENAI_BASE_URL or --llm-base-url); gated items "
            "go to review"
        )
    return f"LLM step on: {llm.model} at {llm.base_url}"


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return dict(obj.model_dump())
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    return dict(vars(obj))


def _llm_arbiter(settings: Settings, tax: Any) -> tuple[Any, str]:
    from classifiers.llm import LLMArbiter

    llm = settings.llm
    if not llm.base_url:
        return None, llm_note(settings)
    arbiter = LLMArbiter(
        llm, tax, store_path=llm.store_location(settings.state_dir)
    )  # cache_url or cache_path
    return arbiter, llm_note(settings)


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
    from verification.routing import audit_sample

    stats = RunStats(seen=shard.height)
    if shard.is_empty():
        return _empty_predictions(), stats
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
    from shelfwise._decide import Lock

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
    from shelfwise._decide import DecideOptions, LLMAnswer, ModelAnswers, decide
    from verification.routing import paths_agree

    s = res.settings
    tax = res.taxonomy
    stats = RunStats(seen=shard.height)
    pred, stats.distinct_scored = predict_distinct(
        shard, res, res.cache if cache is None else cache, stored=stored
    )
    n = shard.height
    answers = _model_answers(pred, tax, ModelAnswers)
    margin = np.asarray(pred.margin, dtype=float)
    current = shard.get_column("category_path").to_list()
    current_known = [c is None or tax.find_path(c) is not None for c in current]
    candidates = _candidates(pred.category_ids, pred.scores, tax)
    level = str(getattr(s, "auto_accept_level", "leaf"))
    contract_conf = np.where(
        (level == "backoff") & np.array([c is not None for c in answers.confident_ids], dtype=bool),
        answers.confident_confidence,
        answers.leaf_confidence,
    )

    # LLM arbitration of the uncertain items (the step's answers are judged in `decide`).
    from classifiers.llm import gate

    gated = gate(contract_conf, margin, settings=s.llm)
    stats.llm_gated = int(gated.sum())
    llm: list[Any] = [None] * n
    skus = shard.get_column("sku_id").to_list()
    if gated.any():
        if res.arbiter is None:
            for j in np.flatnonzero(gated):
                llm[j] = LLMAnswer("skipped_no_endpoint")
            stats.llm["skipped_no_endpoint"] += int(gated.sum())
        else:
            idx = np.flatnonzero(gated)
            items = shard[idx].with_columns(
                pl.Series("candidates", [candidates[i] for i in idx], dtype=CANDIDATE_TYPE),
                pl.Series("confidence", contract_conf[idx]),
            )
            decided = res.arbiter.decide(items, run_id=run_id)
            by_sku = {r["sku_id"]: r for r in decided.iter_rows(named=True)}
            labels = {str(c) for c in getattr(res.model, "classes_", [])}
            for j in idx:
                r = by_sku.get(skus[j])
                llm[j] = _llm_answer(r, tax, labels)
                stats.llm[llm[j].status] += 1

    support = np.array(
        [
            max((c["score"] for c in cands if cur and paths_agree(c["category_path"], cur)), default=0.0)
            for cands, cur in zip(candidates, current, strict=True)
        ]
    )
    stats.human_locked = sum(lock is not None for lock in locks)
    options = DecideOptions(
        level=level,
        target_precision=s.target_precision,
        auto_threshold=s.auto_threshold,
        suspect_threshold=s.suspect_threshold,
        max_current_support=s.max_current_support,
    )
    bars = res.audit_bars
    d = decide(
        answers,
        current_paths=current,
        current_known=current_known,
        current_support=support,
        llm=llm,
        locks=locks,
        audit=audit,
        options=options,
        floor_for=bars.floor_for if bars is not None else None,
    )
    cat_ids, cat_paths, confidence, depth = d.category_id, d.category_path, d.confidence, d.predicted_depth
    source, routes, queues, reasons, llm_status = d.source, d.route, d.queue, d.reason, d.llm_status
    stats.classified = n
    stats.routes.update(routes)

    out = pl.DataFrame(
        {
            "sku_id": skus,
            "category_id": cat_ids,
            "category_path": cat_paths,
            "confidence": np.clip(confidence, 0.0, 1.0),
            "route": routes,
            "candidates": pl.Series(candidates, dtype=CANDIDATE_TYPE),
            "current_category_path": pl.Series(current, dtype=pl.String),
            "taxonomy_version": [tax.version] * n,
            "model_version": [res.model.version] * n,
            "run_id": [run_id] * n,
            "predicted_depth": depth.astype(np.int32),
            "margin": margin,
            "source": source,
            "reason": reasons,
            "queue": pl.Series([str(q) if q else None for q in queues], dtype=pl.String),
            "llm_status": pl.Series(llm_status, dtype=pl.String),
            "content_hash": shard.get_column("content_hash"),
            "scored_run_id": [run_id] * n,
            "confident_category_id": pl.Series(d.confident_category_id, dtype=pl.String),
            "confident_category_path": pl.Series(d.confident_category_path, dtype=pl.String),
            "confident_confidence": pl.Series(d.confident_confidence, dtype=pl.Float64).fill_nan(None),
        }
    )
    products = shard.select([c for c in PRODUCT_COLUMNS if c in shard.columns])
    answered = [None if a is None else str(a.status) for a in llm]
    return pl.concat([out, products], how="horizontal"), stats, np.asarray(gated, dtype=bool), answered


def _model_answers(pred: Any, tax: Any, cls: Any) -> Any:
    """`shelfwise._decide.ModelAnswers` from a `classifiers.model.Prediction` (paths from the taxonomy)."""
    leaf_ids = [str(x) for x in pred.leaf_ids]
    conf_ids = [None if x is None else str(x) for x in pred.confident_ids]
    return cls(
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


def _llm_answer(r: dict[str, Any] | None, tax: Any, labels: set[str]) -> Any:
    """`shelfwise._decide.LLMAnswer` from one row of `LLMArbiter.decide` (None: no row came back)."""
    from shelfwise._decide import LLM_ANSWERED, LLMAnswer

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


def _empty_predictions() -> pl.DataFrame:
    return pl.DataFrame(schema={c: pl.String for c in PREDICTION_COLUMNS})
