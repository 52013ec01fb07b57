"""LLM arbitration of uncertain classifications, through any OpenAI-compatible chat endpoint.

Flow per gated item (see `gate`): ask the model to pick one of the classifier's top-k candidate paths or
"none of these"; on "none", walk the taxonomy from the roots, one question per level among the current
node's children plus "stop here" (the one job state machine in classifiers/llm/_jobs.py, for live calls
and the Batch API alike). Answers are JSON (json_schema, llama.cpp-style json_object+schema, a forced tool
call, or plain text), validated against the question's options and the taxonomy: anything else is never
accepted and goes to review with its reason. Answers that parsed and validated are cached by
sha256(endpoint + model + full prompt + mode), so re-runs cost nothing; a broken answer is logged, never
cached, so it is asked again next time. Every question is logged; budgets are kept in a ledger per run
id in the same database, so all workers of a run share them (classifiers/llm/_store.py).

    settings = LLMSettings(base_url="http://127.0.0.1:8080/v1", model="gpt-4o-mini")
    with LLMArbiter(settings, taxonomy, store_path=".shelfwise/llm/llm.sqlite") as arbiter:
        decided = arbiter.decide(items, run_id="20260101-...")  # sku_id, title, ..., candidates
        arbiter.stats                                           # calls, cache_hits, retries, tokens, ...

In a worker process, `arbiter_for(settings, model_dir, taxonomy)` builds the arbiter once per process
from plain data; the arbiter itself never crosses a task boundary (it refuses to pickle).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self

import numpy as np
import polars as pl

from classifiers.llm._ask import Asker
from classifiers.llm._calibrate import apply_calibration, fit_calibration, truth_map
from classifiers.llm._jobs import Job, JobMachine, KnownIds, Refusal, Step
from classifiers.llm._local import LlamaServer, llama_server_available
from classifiers.llm._prompt import OutputMode, Question
from classifiers.llm._settings import (
    ASK_AGAIN_STATUSES,
    Call,
    LLMSettings,
    LLMStats,
    LLMStatus,
    ModelPrice,
    gate,
)
from classifiers.llm._store import Store, read_llm_log
from shelfwise.errors import ConfigError

__all__ = [
    "ASK_AGAIN_STATUSES",
    "DECISION_COLUMNS",
    "LLMArbiter",
    "LLMSettings",
    "LLMStats",
    "LLMStatus",
    "LlamaServer",
    "ModelPrice",
    "OutputMode",
    "arbiter_for",
    "close_arbiters",
    "gate",
    "llama_server_available",
    "read_llm_log",
]

#: Confidence used when the server returns no logprobs (before calibration).
AGREE_CONFIDENCE = 0.9  # the LLM picked the classifier's top candidate
DISAGREE_CONFIDENCE = 0.6  # the LLM picked another candidate
WALKED_CONFIDENCE = 0.5  # the LLM rejected every candidate and walked the tree

DECISION_COLUMNS = (
    "sku_id",
    "llm_status",
    "llm_category_id",
    "llm_category_path",
    "llm_confidence",
    "llm_confidence_raw",
    "llm_confidence_source",
    "llm_reason",
    "llm_model",
    "llm_cached",
)
_OUT_SCHEMA: dict[str, Any] = {
    "sku_id": pl.String,
    "llm_status": pl.String,
    "llm_category_id": pl.String,
    "llm_category_path": pl.String,
    "llm_confidence": pl.Float64,
    "llm_confidence_raw": pl.Float64,
    "llm_confidence_source": pl.String,
    "llm_reason": pl.String,
    "llm_model": pl.String,
    "llm_cached": pl.Boolean,
}


class LLMArbiter:
    """Decides uncertain items with an LLM. Thread-safe ``decide``; a context manager.

    ``store_path`` (a SQLite file or a database URL) defaults to ``settings.store_location()``; the
    arbiter opens that store and closes it in `close`. A ``store`` passed in stays the caller's to close.
    """

    def __init__(
        self,
        settings: LLMSettings,
        taxonomy: Any,
        *,
        client: Any | None = None,
        store_path: str | Path | None = None,
        store: Store | None = None,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.taxonomy = taxonomy
        self.run_id = run_id or f"llm-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self._owns_store = store is None
        self.store = store if store is not None else Store(store_path or settings.store_location())
        self.enabled = client is not None or settings.base_url is not None
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self.asker = Asker(settings, self.store, client=client)
        self.stats = LLMStats(enabled=self.enabled, model=settings.model, mode=str(self.asker.mode))
        self.calibration_: dict[str, Any] | None = self.store.state_get(f"calibration:{settings.model}")
        self._known = KnownIds(taxonomy)
        self._machine = JobMachine(settings, taxonomy, self._known)

    # limiter and breaker live in the asker; kept reachable here for tests and callers
    @property
    def limiter(self) -> Any:
        return self.asker.limiter

    @limiter.setter
    def limiter(self, value: Any) -> None:
        self.asker.limiter = value

    @property
    def breaker(self) -> Any:
        return self.asker.breaker

    # ------------------------------------------------------------------------------------------------
    # public
    # ------------------------------------------------------------------------------------------------
    def decide(self, items: pl.DataFrame, *, run_id: str | None = None) -> pl.DataFrame:
        """Arbitrate each row of ``items``; returns one row per item (see `DECISION_COLUMNS`).

        ``run_id`` names the run in the decision log and the budget ledger (default: the arbiter's own);
        calls with the same run id share the budgets, in this process and in any other.
        """
        return self.decide_counted(items, run_id=run_id)[0]

    def decide_counted(
        self, items: pl.DataFrame, *, run_id: str | None = None
    ) -> tuple[pl.DataFrame, LLMStats]:
        """`decide`, plus this call's own counters (plain data a shard task can return; add them up with
        `LLMStats.add`). `stats` keeps the sum over the arbiter's life."""
        t0 = time.perf_counter()
        if "sku_id" not in items.columns:
            raise ConfigError(f"LLMArbiter.decide: items need a 'sku_id' column; got {items.columns}")
        call = Call(run_id or self.run_id, LLMStats(enabled=self.enabled, model=self.settings.model))
        self.asker.begin_run(call.run_id)
        jobs = [self._machine.new(row) for row in items.iter_rows(named=True)]
        if not self.enabled:
            self._machine.finish_all(
                jobs,
                LLMStatus.SKIPPED_NO_ENDPOINT,
                "LLM step off: no endpoint configured (llm.base_url / OPENAI_BASE_URL)",
            )
        elif self.settings.use_batch_api:
            self._drive(jobs, call, batch=True)
        else:
            workers = min(self.settings.max_concurrency, max(1, len(jobs)))
            if workers == 1:
                for job in jobs:
                    self._drive([job], call, batch=False)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shelfwise-llm") as pool:
                    list(pool.map(lambda job: self._drive([job], call, batch=False), jobs))
        self._record(jobs, call)
        self._close_call(call, jobs, time.perf_counter() - t0)
        return pl.DataFrame([self._row(job) for job in jobs], schema=_OUT_SCHEMA), call.stats

    def decisions_frame(self, *, run_id: str | None = None, final_only: bool = False) -> pl.DataFrame:
        """Logged decisions (one row per question, `is_final` marks the item's outcome) for reports."""
        return self.store.decisions_frame(run_id=run_id, final_only=final_only)

    def calibrate(
        self, decisions: pl.DataFrame, truth: pl.DataFrame | Mapping[str, str], *, method: str = "isotonic"
    ) -> dict[str, Any]:
        """Fit a map raw LLM confidence -> P(correct) on labelled items and keep it for this model.

        ``decisions``: output of `decide`; ``truth``: frame with sku_id and category_id (or category_path),
        or a mapping sku_id -> category_id. ``method``: isotonic | platt. Stored in the arbiter's
        database state, so later arbiters for the same model apply it.
        """
        cal = fit_calibration(decisions, truth_map(truth, self.taxonomy), method=method)
        self.calibration_ = cal
        self.store.state_put(f"calibration:{self.settings.model}", cal)
        return dict(cal)

    def close(self) -> None:
        """Close the HTTP client and, if this arbiter opened it, the store."""
        self.asker.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "LLMArbiter holds a database engine, an HTTP client and locks and does not cross task "
            "boundaries; pass settings and the model folder instead and build it in the worker with "
            "classifiers.llm.arbiter_for(settings.llm, model_dir, taxonomy, state_dir=...)"
        )

    # ------------------------------------------------------------------------------------------------
    # driving jobs: one state machine, two ways to send
    # ------------------------------------------------------------------------------------------------
    def _drive(self, jobs: Sequence[Job], call: Call, *, batch: bool) -> None:
        asker = self.asker

        def lookup(q: Question) -> Step | None:
            return asker.cached(q, call, self._known)

        def admit(q: Question) -> Refusal | None:
            return asker.admit(call)

        def send(questions: Sequence[Question]) -> list[Step | Refusal]:
            if batch:
                return asker.send_batch(questions, call, self._known)
            return [asker.send_live(q, call, self._known) for q in questions]

        self._machine.drive(jobs, lookup=lookup, admit=admit, send=send, unsent=asker.unsent)

    # ------------------------------------------------------------------------------------------------
    # bookkeeping
    # ------------------------------------------------------------------------------------------------
    def _close_call(self, call: Call, jobs: Sequence[Job], wall_s: float) -> None:
        st = call.stats
        st.items = len(jobs)
        for job in jobs:
            status = LLMStatus(job.status or LLMStatus.FAILED_TRANSIENT)
            st.statuses[status] = st.statuses.get(status, 0) + 1
            if status is LLMStatus.FAILED_TRANSIENT:
                st.failed += 1
            elif status in (LLMStatus.SKIPPED_BUDGET, LLMStatus.SKIPPED_NO_ENDPOINT):
                st.skipped += 1
            elif status in (LLMStatus.INVALID_ANSWER, LLMStatus.UNKNOWN_CATEGORY):
                st.invalid += 1
        st.statuses = {str(k): v for k, v in st.statuses.items()}
        st.wall_s = wall_s
        st.mode = str(self.asker.mode)
        st.breaker_open = self.breaker.open
        st.cost_usd = round(st.cost_usd, 8)
        st.retry_wait_s = round(st.retry_wait_s, 3)
        st.rate_limit_wait_s = round(st.rate_limit_wait_s, 3)
        _percentiles(st, call.latencies)
        if self.enabled and self.settings.price_for(self.settings.model) is None:
            call.note(
                f"no price for model {self.settings.model!r} in llm.prices: cost_usd counts 0 and "
                "budget_usd cannot stop it"
            )
        if self.breaker.open:
            call.note(self.asker.breaker_reason())
        with self._lock:
            self._latencies.extend(call.latencies)
            self.stats.add(st)
            self.stats.breaker_open = st.breaker_open
            _percentiles(self.stats, self._latencies)

    def _record(self, jobs: Sequence[Job], call: Call) -> None:
        rows: list[dict[str, Any]] = []
        model = self.settings.model
        for job in jobs:
            conf, _raw, _src = self._confidence(job)
            if not job.steps:
                rows.append(
                    {
                        "run_id": call.run_id,
                        "sku_id": job.sku_id,
                        "step": "none",
                        "is_final": True,
                        "model": model,
                        "mode": str(self.asker.mode),
                        "status": job.status,
                        "reason": job.reason,
                        "cached": False,
                    }
                )
                continue
            for i, st in enumerate(job.steps):
                final = i == len(job.steps) - 1
                picked = st.parsed.option.category_id if st.parsed and st.parsed.option else None
                rows.append(
                    {
                        "run_id": call.run_id,
                        "sku_id": job.sku_id,
                        "step": st.question.kind,
                        "is_final": final,
                        "prompt_hash": st.key,
                        "model": model,
                        "mode": st.mode,
                        "raw_answer": st.raw.text if st.raw else None,
                        "parsed_answer": st.parsed.as_json() if st.parsed else None,
                        "status": job.status if final else st.status,
                        "category_id": job.category_id if final else picked,
                        "confidence": conf if final else (st.raw.answer_p if st.raw else None),
                        "reason": job.reason if final else (st.parsed.reason if st.parsed else None),
                        "tokens_in": 0 if st.cached or st.raw is None else st.raw.tokens_in,
                        "tokens_out": 0 if st.cached or st.raw is None else st.raw.tokens_out,
                        "cost_usd": st.cost,
                        "latency_ms": st.latency_ms,
                        "cached": st.cached,
                    }
                )
        self.store.record(rows)

    def _confidence(self, job: Job) -> tuple[float | None, float | None, str | None]:
        if job.category_id is None or job.status not in (LLMStatus.ACCEPTED, LLMStatus.NONE_OF_THESE_WALKED):
            return None, None, None
        if job.probs and all(p is not None for p in job.probs):
            raw = float(np.prod([p for p in job.probs if p is not None]))
            source = "logprobs"
        else:
            if job.category_id == job.top_id:
                raw = AGREE_CONFIDENCE
            elif job.status == LLMStatus.ACCEPTED:
                raw = DISAGREE_CONFIDENCE
            else:
                raw = WALKED_CONFIDENCE
            source = "agreement"
        cal = apply_calibration(self.calibration_, raw) if self.calibration_ else raw
        return float(cal), raw, source + ("+calibrated" if self.calibration_ else "")

    def _row(self, job: Job) -> dict[str, Any]:
        conf, raw, source = self._confidence(job)
        path = self.taxonomy.get(job.category_id).path if job.category_id else None
        return {
            "sku_id": job.sku_id,
            "llm_status": job.status,
            "llm_category_id": job.category_id,
            "llm_category_path": path,
            "llm_confidence": conf,
            "llm_confidence_raw": raw,
            "llm_confidence_source": source,
            "llm_reason": job.reason or None,
            "llm_model": self.settings.model,
            "llm_cached": bool(job.steps) and all(s.cached for s in job.steps),
        }


def _percentiles(stats: LLMStats, latencies: list[float]) -> None:
    if latencies:
        lat = np.asarray(latencies)
        stats.latency_ms_p50 = round(float(np.percentile(lat, 50)), 1)
        stats.latency_ms_p95 = round(float(np.percentile(lat, 95)), 1)
        stats.latency_ms_max = round(float(lat.max()), 1)


# --------------------------------------------------------------------------------------------------
# one arbiter per worker process
# --------------------------------------------------------------------------------------------------
_PER_PROCESS: dict[tuple[int, str, str, str, str], LLMArbiter] = {}
_PER_PROCESS_LOCK = threading.Lock()


def arbiter_for(
    settings: LLMSettings | Mapping[str, Any],
    model_dir: str | Path,
    taxonomy: Any,
    *,
    state_dir: str | Path | None = None,
) -> LLMArbiter | None:
    """The LLM arbiter of this process for (settings, model folder, taxonomy), built on first use.

    Everything that defines it is plain data (settings as a model or a dict, a folder, the taxonomy the
    worker loaded from that folder), so a shard task builds it where it runs instead of receiving one.
    Memoised per process id (a forked child builds its own); closed by `close_arbiters` or at exit.
    Returns None when the LLM step is off (no ``base_url``). The cache, log and budget ledger are at
    ``settings.store_location(state_dir)``: shared by every process that points there.
    """
    s = settings if isinstance(settings, LLMSettings) else LLMSettings.model_validate(dict(settings))
    if s.base_url is None:
        return None
    location = s.store_location(state_dir)
    key = (
        os.getpid(),
        json.dumps(s.model_dump(mode="json"), sort_keys=True, default=str),
        str(Path(model_dir).resolve()),
        str(getattr(taxonomy, "version", id(taxonomy))),
        location,
    )
    with _PER_PROCESS_LOCK:
        arbiter = _PER_PROCESS.get(key)
        if arbiter is None:
            arbiter = LLMArbiter(s, taxonomy, store_path=location)
            _PER_PROCESS[key] = arbiter
        return arbiter


def close_arbiters() -> None:
    """Close every arbiter `arbiter_for` built in this process."""
    with _PER_PROCESS_LOCK:
        mine = [k for k in _PER_PROCESS if k[0] == os.getpid()]
        for key in mine:
            _PER_PROCESS.pop(key).close()


atexit.register(close_arbiters)
