"""LLM arbitration of uncertain classifications, through any OpenAI-compatible chat endpoint.

Flow per gated item (see `gate`): ask the model to pick one of the classifier's top-k candidate paths or
"none of these"; on "none", walk the taxonomy from the roots, one question per level among the current
node's children plus "stop here". Answers are JSON (json_schema, llama.cpp-style json_object+schema, a
forced tool call, or plain text), validated against the question's options and the taxonomy: anything
else is never accepted and goes to review with its reason. Every answer is cached in SQLite by
sha256(model + full prompt + mode), so re-runs cost nothing; every decision is logged in the same file.

    settings = LLMSettings(base_url="http://127.0.0.1:8080/v1", model="gpt-4o-mini")
    arbiter = LLMArbiter(settings, taxonomy, store_path=".shelfwise/llm/llm.sqlite")
    decided = arbiter.decide(items)          # items: sku_id, title, ..., candidates, confidence
    arbiter.stats                            # calls, cache_hits, retries, tokens, cost, ...
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import openai
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from classifiers._llm_batch import run_batch
from classifiers._llm_prompt import (
    AUTO_ORDER,
    Option,
    OutputMode,
    Parsed,
    Question,
    RawAnswer,
    candidate_question,
    parse_answer,
    product_block,
    prompt_hash,
    raw_from_completion,
    request_body,
    walk_question,
)
from classifiers._llm_store import Store
from classifiers._llm_transport import (
    Breaker,
    Caller,
    CircuitOpenError,
    RateLimiter,
    RequestRejectedError,
    UnsupportedOutputModeError,
)
from shelfwise.errors import ConfigError, TransientServiceError

__all__ = [
    "DECISION_COLUMNS",
    "LLMArbiter",
    "LLMSettings",
    "LLMStats",
    "LLMStatus",
    "ModelPrice",
    "OutputMode",
    "gate",
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


class LLMStatus(StrEnum):
    """Outcome of arbitration for one item."""

    ACCEPTED = "accepted"  # the model chose one of the candidates
    NONE_OF_THESE_WALKED = "none_of_these_walked"  # the model rejected them and walked the tree
    INVALID_ANSWER = "invalid_answer"  # broken JSON / no choice: item goes to review
    UNKNOWN_CATEGORY = "unknown_category"  # answer names no offered category: item goes to review
    SKIPPED_NO_ENDPOINT = "skipped_no_endpoint"  # LLM step off (no base_url)
    SKIPPED_BUDGET = "skipped_budget"  # budget_calls / budget_tokens / budget_usd used up
    FAILED_TRANSIENT = "failed_transient"  # timeouts, 429/5xx after retries, endpoint down, 4xx


class ModelPrice(BaseModel):
    """US dollars per 1M tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(..., ge=0.0)
    output: float = Field(..., ge=0.0)


def _default_prices() -> dict[str, ModelPrice]:
    # List prices (USD / 1M tokens) as published by OpenAI; check your provider and override in settings.
    return {
        "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
        "gpt-4o": ModelPrice(input=2.50, output=10.00),
        "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40),
        "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
        "gpt-4.1": ModelPrice(input=2.00, output=8.00),
    }


class LLMSettings(BaseModel):
    """Settings of the LLM step (nested as ``settings.llm``; env ``SHELFWISE_LLM__<NAME>``).

    ``base_url`` and ``api_key`` fall back to the standard ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
    ``base_url=None`` switches the LLM step off: gated items get ``skipped_no_endpoint``.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1; None = LLM step off."
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="Model name sent with every request.")
    api_key: SecretStr | None = Field(
        None, description="API key (default: OPENAI_API_KEY; local servers need none)."
    )
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP request.")
    max_concurrency: int = Field(4, ge=1, le=64, description="Requests in flight at once.")
    requests_per_minute: int | None = Field(None, ge=1, description="Client-side request rate limit.")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Client-side token rate limit (estimated tokens)."
    )
    budget_calls: int | None = Field(
        None, ge=0, description="Most questions sent per run (cache hits are free)."
    )
    budget_tokens: int | None = Field(None, ge=0, description="Most tokens (in + out) per run.")
    budget_usd: float | None = Field(None, ge=0, description="Most spend per run, priced with `prices`.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        description="USD per 1M input/output tokens per model (prefix match).",
    )
    confidence_below: float = Field(
        0.6, ge=0.0, le=1.0, description="Gate: items with confidence below this go to the LLM."
    )
    margin_below: float = Field(
        0.1, ge=0.0, le=1.0, description="Gate: items with top1-top2 margin below this go to the LLM."
    )
    top_k: int = Field(5, ge=1, le=20, description="Candidate paths shown to the model.")
    output_mode: OutputMode = Field(
        OutputMode.AUTO, description="auto | json_schema | json_object | tools | none."
    )
    use_batch_api: bool = Field(
        False, description="Send through the Batch API (files + batches) instead of live calls."
    )
    cache_path: Path | None = Field(
        None, description="SQLite file for cache + decision log (default: <state_dir>/llm/llm.sqlite)."
    )
    max_retries: int = Field(4, ge=0, le=20, description="Retries per request for timeouts, 429 and 5xx.")
    logprobs: bool = Field(
        True, description="Ask for token logprobs (confidence); dropped automatically if refused."
    )
    max_tokens: int = Field(150, ge=16, description="Answer length limit.")
    walk_max_depth: int = Field(6, ge=1, le=20, description="Most levels walked after 'none of these'.")
    max_walk_options: int = Field(150, ge=2, description="Most children listed in one walk step.")
    max_description_chars: int = Field(
        800, ge=0, description="Description truncated to this many characters."
    )
    max_review_chars: int = Field(600, ge=0, description="Review text truncated to this many characters.")
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failed requests that mark the endpoint down."
    )
    backoff_base_s: float = Field(
        0.5, gt=0, description="First retry waits about this long (doubles per retry, with jitter)."
    )
    backoff_max_s: float = Field(30.0, gt=0, description="Longest backoff between retries.")
    max_retry_after_s: float = Field(
        120.0, ge=0, description="Longest Retry-After honoured; longer means give up for this run."
    )
    batch_poll_s: float = Field(10.0, gt=0, description="Batch API: seconds between status polls.")
    batch_timeout_s: float = Field(
        86_400.0, gt=0, description="Batch API: give up on a batch after this long."
    )
    batch_discount: float = Field(0.5, ge=0.0, le=1.0, description="Batch API price factor.")

    @model_validator(mode="before")
    @classmethod
    def _openai_env(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if not data.get("base_url"):
            data["base_url"] = os.environ.get("OPENAI_BASE_URL") or None
        if not data.get("api_key") and os.environ.get("OPENAI_API_KEY"):
            data["api_key"] = os.environ["OPENAI_API_KEY"]
        return data

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        v = value.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(
                f"llm.base_url {value!r} is not an http(s) URL; use e.g. http://127.0.0.1:8080/v1 "
                "(SHELFWISE_LLM__BASE_URL or OPENAI_BASE_URL), or leave it unset to switch the LLM step off"
            )
        return v

    def price_for(self, model: str) -> ModelPrice | None:
        if model in self.prices:
            return self.prices[model]
        best = None
        for name, price in self.prices.items():
            if model.startswith(name) and (best is None or len(name) > len(best[0])):
                best = (name, price)
        return best[1] if best else None


def gate(confidence: Any, margin: Any, *, settings: LLMSettings) -> np.ndarray:
    """Which items go to the LLM: confidence below ``confidence_below`` or margin below ``margin_below``.

    NaN confidence or margin counts as uncertain. Returns a bool array; ``mask.mean()`` is the gated share.
    """
    conf = np.asarray(confidence, dtype=float).reshape(-1)
    marg = np.asarray(margin, dtype=float).reshape(-1)
    if conf.shape != marg.shape:
        raise ConfigError(
            f"gate: confidence has {conf.size} values but margin has {marg.size}; pass one per item"
        )
    with np.errstate(invalid="ignore"):
        out = (conf < settings.confidence_below) | (marg < settings.margin_below)
    mask: np.ndarray = out | np.isnan(conf) | np.isnan(marg)
    return mask


@dataclass
class LLMStats:
    """Counters of one arbiter (one run). Serialisable with `dataclasses.asdict`."""

    enabled: bool = False
    model: str = ""
    mode: str = ""
    items: int = 0
    calls: int = 0  # HTTP requests sent (including retries and mode probes)
    questions: int = 0  # questions answered by the endpoint (candidate step + walk steps)
    walk_questions: int = 0
    cache_hits: int = 0
    retries: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    failed: int = 0  # items with failed_transient
    skipped: int = 0  # items with skipped_no_endpoint / skipped_budget
    invalid: int = 0  # items with invalid_answer / unknown_category
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_max: float | None = None
    wall_s: float = 0.0
    retry_wait_s: float = 0.0
    rate_limit_wait_s: float = 0.0
    breaker_open: bool = False
    batches: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Step:
    question: Question
    key: str
    mode: str
    raw: RawAnswer | None
    parsed: Parsed | None
    cached: bool
    cost: float
    latency_ms: float | None
    status: str


@dataclass
class _Job:
    sku_id: str
    product: str
    candidates: list[Option]
    top_id: str | None
    stage: str = "candidates"  # candidates | walk | done
    node: str | None = None
    depth: int = 0
    steps: list[_Step] = field(default_factory=list)
    probs: list[float | None] = field(default_factory=list)
    status: str | None = None
    category_id: str | None = None
    reason: str = ""
    pending: Question | None = None


class LLMArbiter:
    """Decides uncertain items with an LLM. Build once per run; thread-safe ``decide``."""

    def __init__(
        self,
        settings: LLMSettings,
        taxonomy: Any,
        *,
        client: Any | None = None,
        store_path: str | Path | None = None,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.taxonomy = taxonomy
        self.run_id = run_id or f"llm-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        path = store_path or settings.cache_path or Path(".shelfwise") / "llm" / "llm.sqlite"
        self.store = Store(path)
        self._client_arg = client
        self._client: Any | None = None
        self.enabled = client is not None or settings.base_url is not None
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self._reserved = 0
        self._logprobs = settings.logprobs
        self._max_tokens_key = "max_tokens"
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._mode_saved = False
        self._endpoint_key = f"{settings.base_url or 'client'}|{settings.model}"
        fixed = settings.output_mode
        if fixed is OutputMode.AUTO:
            remembered = self.store.state_get(f"mode:{self._endpoint_key}")
            self._mode = (
                OutputMode(remembered) if remembered in {m.value for m in AUTO_ORDER} else AUTO_ORDER[0]
            )
        else:
            self._mode = fixed
        self.stats = LLMStats(enabled=self.enabled, model=settings.model, mode=str(self._mode))
        self.limiter = RateLimiter(
            requests_per_minute=settings.requests_per_minute, tokens_per_minute=settings.tokens_per_minute
        )
        self.breaker = Breaker(settings.breaker_failures)
        self._caller: Caller | None = None
        self.calibration_: dict[str, Any] | None = self.store.state_get(f"calibration:{settings.model}")
        self._known = _KnownIds(taxonomy)

    # ------------------------------------------------------------------------------------------------
    # public
    # ------------------------------------------------------------------------------------------------
    def decide(self, items: pl.DataFrame, *, run_id: str | None = None) -> pl.DataFrame:
        """Arbitrate each row of ``items``; returns one row per item (see `DECISION_COLUMNS`)."""
        if run_id is not None:
            self.run_id = run_id
        t0 = time.perf_counter()
        if "sku_id" not in items.columns:
            raise ConfigError(f"LLMArbiter.decide: items need a 'sku_id' column; got {items.columns}")
        jobs = [self._job(row) for row in items.iter_rows(named=True)]
        with self._lock:
            self.stats.items += len(jobs)
        if not self.enabled:
            for job in jobs:
                self._finish(
                    job,
                    LLMStatus.SKIPPED_NO_ENDPOINT,
                    "LLM step off: no endpoint configured (llm.base_url / OPENAI_BASE_URL)",
                )
        elif self.settings.use_batch_api:
            self._run_batch(jobs)
        else:
            workers = min(self.settings.max_concurrency, max(1, len(jobs)))
            if workers == 1:
                for job in jobs:
                    self._run_job(job)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shelfwise-llm") as pool:
                    list(pool.map(self._run_job, jobs))
        self._record(jobs)
        with self._lock:
            self.stats.wall_s += time.perf_counter() - t0
            self._sync_counters()
        return pl.DataFrame([self._row(job) for job in jobs], schema=_OUT_SCHEMA)

    def decisions_frame(self, *, run_id: str | None = None, final_only: bool = False) -> pl.DataFrame:
        """Logged decisions (one row per question, `is_final` marks the item's outcome) for reports."""
        return self.store.decisions_frame(run_id=run_id, final_only=final_only)

    def calibrate(
        self, decisions: pl.DataFrame, truth: pl.DataFrame | Mapping[str, str], *, method: str = "isotonic"
    ) -> dict[str, Any]:
        """Fit a map raw LLM confidence -> P(correct) on labelled items and keep it for this model.

        ``decisions``: output of `decide`; ``truth``: frame with sku_id and category_id (or category_path),
        or a mapping sku_id -> category_id. ``method``: isotonic | platt. Stored in the arbiter's SQLite
        state, so later arbiters for the same model apply it.
        """
        if method not in ("isotonic", "platt"):
            raise ConfigError(f"calibrate: method {method!r} is not known; use 'isotonic' or 'platt'")
        truth_map = self._truth_map(truth)
        col = "llm_confidence_raw" if "llm_confidence_raw" in decisions.columns else "llm_confidence"
        rows = [
            r
            for r in decisions.iter_rows(named=True)
            if r.get("llm_category_id") is not None
            and r.get(col) is not None
            and str(r["sku_id"]) in truth_map
        ]
        if len(rows) < 2:
            raise ConfigError(
                f"calibrate: only {len(rows)} decided items have a label; label at least 2 (better 50+) items"
            )
        x = np.array([float(r[col]) for r in rows])
        y = np.array([1.0 if r["llm_category_id"] == truth_map[str(r["sku_id"])] else 0.0 for r in rows])
        if y.min() == y.max():
            cal: dict[str, Any] = {"method": "constant", "value": float(y.mean())}
        elif method == "isotonic":
            from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
            cal = {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
        else:
            from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

            lr = LogisticRegression(C=1e6).fit(x.reshape(-1, 1), y.astype(int))
            cal = {"method": "platt", "a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
        cal["n"] = len(y)
        cal["accuracy"] = float(y.mean())
        after = np.array([_apply_calibration(cal, v) for v in x])
        cal["brier_before"] = float(np.mean((x - y) ** 2))
        cal["brier_after"] = float(np.mean((after - y) ** 2))
        self.calibration_ = cal
        self.store.state_put(f"calibration:{self.settings.model}", cal)
        return dict(cal)

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------------------------
    # jobs
    # ------------------------------------------------------------------------------------------------
    def _job(self, row: dict[str, Any]) -> _Job:
        s = self.settings
        product = product_block(
            row, description_chars=s.max_description_chars, review_chars=s.max_review_chars
        )
        options: list[Option] = []
        seen: set[str] = set()
        for cand in row.get("candidates") or []:
            cid = cand.get("category_id") if isinstance(cand, dict) else None
            if cid is None or str(cid) in seen:
                continue
            node = self._known.node(str(cid))
            if node is None:
                continue  # a stale candidate: never shown, never accepted
            seen.add(str(cid))
            options.append(Option(len(options) + 1, node.id, node.path))
            if len(options) >= s.top_k:
                break
        job = _Job(str(row["sku_id"]), product, options, options[0].category_id if options else None)
        if not options:
            job.stage, job.node, job.depth = "walk", None, 1
        return job

    def _question(self, job: _Job) -> Question | None:
        if job.stage == "candidates":
            return candidate_question(job.product, job.candidates)
        if job.stage != "walk":
            return None
        children = list(self.taxonomy.roots() if job.node is None else self.taxonomy.children(job.node))
        children = children[: self.settings.max_walk_options]
        if not children:
            return None
        options = [Option(i + 1, c.id, c.path) for i, c in enumerate(children)]
        current_path = None if job.node is None else self.taxonomy.get(job.node).path
        return walk_question(
            job.product, options, current_id=job.node, current_path=current_path, depth=job.depth
        )

    def _apply(self, job: _Job, step: _Step) -> None:
        """Move a job on after one answered question."""
        job.steps.append(step)
        parsed = step.parsed
        assert parsed is not None
        q = step.question
        if not parsed.ok:
            where = "" if q.kind == "candidates" else f" (tree walk, {q.kind})"
            status = LLMStatus(parsed.error or "invalid_answer")
            step.status = str(status)
            self._finish(job, status, f"{parsed.detail}{where}")
            return
        job.probs.append(step.raw.answer_p if step.raw else None)
        if job.reason == "" or parsed.reason:
            job.reason = parsed.reason or job.reason
        if q.kind == "candidates":
            if parsed.option is not None:
                step.status = "accepted"
                job.category_id = parsed.option.category_id
                self._finish(job, LLMStatus.ACCEPTED, parsed.reason)
            else:
                step.status = "none_of_these"
                job.stage, job.node, job.depth = "walk", None, 1
            return
        # walk step
        if parsed.option is None:  # stop here
            step.status = "walk_stop"
            if job.node is None:
                self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, "model found no fitting top-level category")
            else:
                job.category_id = job.node
                self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, parsed.reason)
            return
        step.status = "walk_step"
        job.node = parsed.option.category_id
        job.depth += 1
        node = self.taxonomy.get(job.node)
        if node.is_leaf or job.depth > self.settings.walk_max_depth:
            job.category_id = job.node
            self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, parsed.reason)

    def _finish(self, job: _Job, status: LLMStatus, reason: str) -> None:
        job.stage = "done"
        job.status = str(status)
        if reason:
            job.reason = reason
        with self._lock:
            self.stats.statuses[job.status] = self.stats.statuses.get(job.status, 0) + 1
            if status is LLMStatus.FAILED_TRANSIENT:
                self.stats.failed += 1
            elif status in (LLMStatus.SKIPPED_BUDGET, LLMStatus.SKIPPED_NO_ENDPOINT):
                self.stats.skipped += 1
            elif status in (LLMStatus.INVALID_ANSWER, LLMStatus.UNKNOWN_CATEGORY):
                self.stats.invalid += 1

    def _confidence(self, job: _Job) -> tuple[float | None, float | None, str | None]:
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
        cal = _apply_calibration(self.calibration_, raw) if self.calibration_ else raw
        return float(cal), raw, source + ("+calibrated" if self.calibration_ else "")

    def _row(self, job: _Job) -> dict[str, Any]:
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

    # ------------------------------------------------------------------------------------------------
    # asking
    # ------------------------------------------------------------------------------------------------
    def _caller_(self) -> Caller:
        with self._lock:
            if self._caller is None:
                self._caller = Caller(
                    self._client_obj(),
                    max_retries=self.settings.max_retries,
                    backoff_base_s=self.settings.backoff_base_s,
                    backoff_max_s=self.settings.backoff_max_s,
                    max_retry_after_s=self.settings.max_retry_after_s,
                    limiter=self.limiter,
                    breaker=self.breaker,
                )
            return self._caller

    def _client_obj(self) -> Any:
        if self._client is None:
            s = self.settings
            if self._client_arg is not None:
                self._client = self._client_arg.with_options(max_retries=0, timeout=s.timeout_s)
            else:
                import openai

                key = s.api_key.get_secret_value() if s.api_key is not None else "sk-no-key-needed"
                self._client = openai.OpenAI(
                    base_url=s.base_url, api_key=key, timeout=s.timeout_s, max_retries=0
                )
        return self._client

    def _modes_for_cache(self) -> list[OutputMode]:
        if self.settings.output_mode is not OutputMode.AUTO:
            return [self.settings.output_mode]
        first = self._mode
        return [first, *[m for m in AUTO_ORDER if m is not first]]

    def _cached(self, q: Question) -> _Step | None:
        for mode in self._modes_for_cache():
            key = prompt_hash(self.settings.model, q, mode)
            hit = self.store.cache_get(key)
            if hit is None:
                continue
            raw = RawAnswer(hit["raw_answer"], hit["answer_p"], 0, 0, hit["finish_reason"])
            parsed = parse_answer(raw, q, known_ids=self._known)
            with self._lock:
                self.stats.cache_hits += 1
            return _Step(q, key, str(mode), raw, parsed, True, 0.0, None, "")
        return None

    def _budget_left(self) -> str | None:
        """Reserve one question against the budgets; returns why not, or None when it may be sent."""
        s = self.settings
        with self._lock:
            st = self.stats
            if s.budget_calls is not None and self._reserved >= s.budget_calls:
                return f"budget_calls={s.budget_calls} used up"
            if s.budget_tokens is not None and st.tokens_in + st.tokens_out >= s.budget_tokens:
                return f"budget_tokens={s.budget_tokens} used up ({st.tokens_in + st.tokens_out} tokens)"
            if s.budget_usd is not None and st.cost_usd >= s.budget_usd:
                return f"budget_usd={s.budget_usd} used up (${st.cost_usd:.4f})"
            self._reserved += 1
        return None

    def _cost(self, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
        price = self.settings.price_for(self.settings.model)
        if price is None:
            return 0.0
        usd = (tokens_in * price.input + tokens_out * price.output) / 1e6
        return usd * (self.settings.batch_discount if batch else 1.0)

    def _account(self, raw: RawAnswer, cost: float, latency_ms: float | None, q: Question) -> None:
        with self._lock:
            self.stats.questions += 1
            if q.kind != "candidates":
                self.stats.walk_questions += 1
            self.stats.tokens_in += raw.tokens_in
            self.stats.tokens_out += raw.tokens_out
            self.stats.cost_usd += cost
            if latency_ms is not None:
                self._latencies.append(latency_ms)

    def _ask_http(self, q: Question) -> _Step:
        """Send one question live (mode detection for `auto`). Raises the transport errors."""
        caller = self._caller_()
        auto = self.settings.output_mode is OutputMode.AUTO
        est = len(json.dumps(q.messages)) // 4 + self.settings.max_tokens
        while True:
            mode = self._mode
            body = request_body(
                q,
                model=self.settings.model,
                mode=mode,
                max_tokens=self.settings.max_tokens,
                logprobs=self._logprobs,
                max_tokens_key=self._max_tokens_key,
            )
            try:
                with self._slots:  # across concurrent decide() calls too (shards classified in parallel)
                    result = caller.create(body, est_tokens=est)
            except UnsupportedOutputModeError as exc:
                if exc.feature == "max_tokens":
                    with self._lock:
                        self._max_tokens_key = "max_completion_tokens"
                    continue
                if exc.feature == "logprobs":
                    with self._lock:
                        if self._logprobs:
                            self._logprobs = False
                            self.stats.notes.append(
                                f"endpoint refused logprobs ({exc}); confidence from agreement"
                            )
                    continue
                if not auto:
                    self.breaker.failure(str(exc), trip=True)
                    raise RequestRejectedError(
                        f"output_mode={mode} is not supported by the endpoint ({exc}); set llm.output_mode=auto "
                        "or a mode the server accepts (json_object for llama.cpp)",
                        status_code=400,
                        body_text=str(exc),
                    ) from exc
                with self._lock:
                    if self._mode is mode:
                        i = AUTO_ORDER.index(mode)
                        if i + 1 >= len(AUTO_ORDER):
                            raise RequestRejectedError(str(exc), status_code=400, body_text=str(exc)) from exc
                        self._mode = AUTO_ORDER[i + 1]
                        self.stats.mode = str(self._mode)
                        self.stats.notes.append(
                            f"output mode {mode} refused ({str(exc)[:120]}); falling back to {self._mode}"
                        )
                continue
            if auto:
                with self._lock:
                    remember = self.stats.mode != str(mode) or not self._mode_saved
                    self.stats.mode = str(mode)
                    self._mode_saved = True
                if remember:
                    self.store.state_put(f"mode:{self._endpoint_key}", str(mode))
            return self._answered_step(q, result.completion, mode, latency_ms=result.latency_ms)

    def _answered_step(
        self, q: Question, completion: Any, mode: Any, *, latency_ms: float | None, batch: bool = False
    ) -> _Step:
        """A fresh answer (live or from a batch): priced, accounted, cached, parsed."""
        raw = raw_from_completion(completion, mode)
        key = prompt_hash(self.settings.model, q, mode)
        cost = self._cost(raw.tokens_in, raw.tokens_out, batch=batch)
        self._account(raw, cost, latency_ms, q)
        self.store.cache_put(
            key,
            model=self.settings.model,
            mode=str(mode),
            raw_answer=raw.text,
            answer_p=raw.answer_p,
            tokens_in=raw.tokens_in,
            tokens_out=raw.tokens_out,
            finish_reason=raw.finish_reason,
        )
        parsed = parse_answer(raw, q, known_ids=self._known)
        return _Step(q, key, str(mode), raw, parsed, False, cost, latency_ms, "")

    def _unsent_step(self, q: Question, status: str) -> _Step:
        mode = self._mode
        return _Step(
            q, prompt_hash(self.settings.model, q, mode), str(mode), None, None, False, 0.0, None, status
        )

    def _run_job(self, job: _Job) -> None:
        while job.stage != "done":
            q = self._question(job)
            if q is None:
                self._no_question(job)
                break
            step = self._cached(q)
            if step is None:
                if self.breaker.open:
                    job.steps.append(self._unsent_step(q, "failed_transient"))
                    self._finish(job, LLMStatus.FAILED_TRANSIENT, f"not sent: {self._breaker_reason()}")
                    break
                why = self._budget_left()
                if why is not None:
                    job.steps.append(self._unsent_step(q, "skipped_budget"))
                    self._finish(job, LLMStatus.SKIPPED_BUDGET, f"not sent: {why}" + self._walk_note(job))
                    break
                try:
                    step = self._ask_http(q)
                except CircuitOpenError:
                    job.steps.append(self._unsent_step(q, "failed_transient"))
                    self._finish(job, LLMStatus.FAILED_TRANSIENT, f"not sent: {self._breaker_reason()}")
                    break
                except TransientServiceError as exc:
                    job.steps.append(self._unsent_step(q, "failed_transient"))
                    self._finish(job, LLMStatus.FAILED_TRANSIENT, str(exc))
                    break
                except RequestRejectedError as exc:
                    job.steps.append(self._unsent_step(q, "failed_transient"))
                    self._finish(job, LLMStatus.FAILED_TRANSIENT, str(exc))
                    break
            self._apply(job, step)

    def _no_question(self, job: _Job) -> None:
        # Walk reached a node without children (or an empty taxonomy): the current node is the answer.
        job.category_id = job.node
        status = LLMStatus.NONE_OF_THESE_WALKED
        self._finish(job, status, job.reason or "walked to a leaf")

    @staticmethod
    def _walk_note(job: _Job) -> str:
        return " (during the tree walk after 'none of these')" if job.steps else ""

    def _breaker_reason(self) -> str:
        return (
            f"LLM endpoint treated as down after {self.breaker.threshold} consecutive failed requests "
            f"(last: {self.breaker.last_error[:200]})"
        )

    # ------------------------------------------------------------------------------------------------
    # Batch API
    # ------------------------------------------------------------------------------------------------
    def _run_batch(self, jobs: list[_Job]) -> None:
        s = self.settings
        mode = self._mode
        client = self._client_obj()
        active = list(jobs)
        round_no = 0
        while active:
            round_no += 1
            waiting: dict[str, tuple[_Job, Question]] = {}
            for job in active:
                while job.stage != "done":
                    q = self._question(job)
                    if q is None:
                        self._no_question(job)
                        break
                    step = self._cached(q)
                    if step is not None:
                        self._apply(job, step)
                        continue
                    why = self._budget_left()
                    if why is not None:
                        job.steps.append(self._unsent_step(q, "skipped_budget"))
                        self._finish(job, LLMStatus.SKIPPED_BUDGET, f"not sent: {why}" + self._walk_note(job))
                        break
                    waiting[f"{job.sku_id}#{len(job.steps)}#{len(waiting)}"] = (job, q)
                    break
            if not waiting:
                break
            requests = [
                {
                    "custom_id": cid,
                    "body": request_body(
                        q,
                        model=s.model,
                        mode=mode,
                        max_tokens=s.max_tokens,
                        logprobs=self._logprobs,
                        max_tokens_key=self._max_tokens_key,
                    ),
                }
                for cid, (job, q) in waiting.items()
            ]
            try:
                run = run_batch(
                    client,
                    requests,
                    poll_s=s.batch_poll_s,
                    timeout_s=s.batch_timeout_s,
                    metadata={"run_id": self.run_id, "round": str(round_no)},
                )
                error: str | None = (
                    None if run.status == "completed" else f"batch {run.batch_id} ended '{run.status}'"
                )
            except TransientServiceError as exc:
                run, error = None, str(exc)
            except (openai.OpenAIError, OSError, ValueError) as exc:  # files/batches endpoints failed
                run, error = None, f"Batch API request failed: {type(exc).__name__}: {exc}"
            with self._lock:
                self.stats.batches += 1
                self.stats.calls += 1
                self.stats.mode = str(mode)
            for cid, (job, q) in waiting.items():
                line = run.results.get(cid) if run is not None else None
                if line is None or line.body is None:
                    why = (
                        (line.error if line is not None else None)
                        or error
                        or "no result line in the batch output"
                    )
                    job.steps.append(self._unsent_step(q, "failed_transient"))
                    self._finish(job, LLMStatus.FAILED_TRANSIENT, f"Batch API: {why}")
                    continue
                self._apply(job, self._answered_step(q, line.body, mode, latency_ms=None, batch=True))
            active = [j for j, _ in waiting.values() if j.stage != "done"]

    # ------------------------------------------------------------------------------------------------
    # bookkeeping
    # ------------------------------------------------------------------------------------------------
    def _record(self, jobs: Iterable[_Job]) -> None:
        rows: list[dict[str, Any]] = []
        for job in jobs:
            conf, _raw, _src = self._confidence(job)
            if not job.steps:
                rows.append(
                    {
                        "run_id": self.run_id,
                        "sku_id": job.sku_id,
                        "step": "none",
                        "is_final": True,
                        "model": self.settings.model,
                        "mode": str(self._mode),
                        "status": job.status,
                        "reason": job.reason,
                        "cached": False,
                        "tokens_in": 0,
                        "tokens_out": 0,
                        "cost_usd": 0.0,
                    }
                )
                continue
            for i, st in enumerate(job.steps):
                final = i == len(job.steps) - 1
                rows.append(
                    {
                        "run_id": self.run_id,
                        "sku_id": job.sku_id,
                        "step": st.question.kind,
                        "is_final": final,
                        "prompt_hash": st.key,
                        "model": self.settings.model,
                        "mode": st.mode,
                        "raw_answer": st.raw.text if st.raw else None,
                        "parsed_answer": st.parsed.as_json() if st.parsed else None,
                        "status": job.status if final else st.status,
                        "category_id": job.category_id
                        if final
                        else (st.parsed.option.category_id if st.parsed and st.parsed.option else None),
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

    def _sync_counters(self) -> None:
        st = self.stats
        if self._caller is not None:
            st.calls = self._caller.calls + st.batches
            st.retries = self._caller.retries
            st.retry_wait_s = round(self._caller.retry_wait_s, 3)
        st.rate_limit_wait_s = round(self.limiter.waited_s, 3)
        st.breaker_open = self.breaker.open
        st.cost_usd = round(st.cost_usd, 8)
        if self._latencies:
            lat = np.asarray(self._latencies)
            st.latency_ms_p50 = round(float(np.percentile(lat, 50)), 1)
            st.latency_ms_p95 = round(float(np.percentile(lat, 95)), 1)
            st.latency_ms_max = round(float(lat.max()), 1)
        if self.enabled and self.settings.price_for(self.settings.model) is None:
            note = f"no price for model {self.settings.model!r} in llm.prices: cost_usd counts 0 and budget_usd cannot stop it"
            if note not in st.notes:
                st.notes.append(note)
        if self.breaker.open:
            note = self._breaker_reason()
            if not any(n.startswith("LLM endpoint treated as down") for n in st.notes):
                st.notes.append(note)

    def _truth_map(self, truth: pl.DataFrame | Mapping[str, str]) -> dict[str, str]:
        if isinstance(truth, Mapping):
            return {str(k): str(v) for k, v in truth.items()}
        if "category_id" in truth.columns:
            return {
                str(r["sku_id"]): str(r["category_id"])
                for r in truth.iter_rows(named=True)
                if r["category_id"]
            }
        if "category_path" in truth.columns:
            out = {}
            for r in truth.iter_rows(named=True):
                node = self.taxonomy.find_path(r["category_path"]) if r["category_path"] else None
                if node is not None:
                    out[str(r["sku_id"])] = node.id
            return out
        raise ConfigError(
            f"calibrate: truth needs columns sku_id and category_id (or category_path); got {truth.columns}"
        )


class _KnownIds:
    """``in`` test and node lookup against the taxonomy (unknown ids give None, never an exception)."""

    def __init__(self, taxonomy: Any) -> None:
        self.taxonomy = taxonomy

    def node(self, cid: str) -> Any | None:
        if cid not in self.taxonomy:
            return None
        return self.taxonomy.get(cid)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and self.node(cid) is not None


def _apply_calibration(cal: dict[str, Any] | None, raw: float) -> float:
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
