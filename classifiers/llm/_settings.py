"""Settings, gate, statuses and counters of the LLM step (internal; public names are re-exported by
classifiers/llm.py)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from classifiers.llm._prompt import OutputMode
from shelfwise.errors import ConfigError

__all__: list[str] = []


class LLMStatus(StrEnum):
    """Outcome of arbitration for one item."""

    ACCEPTED = "accepted"  # the model chose one of the candidates
    NONE_OF_THESE_WALKED = "none_of_these_walked"  # the model rejected them and walked the tree
    INVALID_ANSWER = "invalid_answer"  # broken JSON / no choice: item goes to review
    UNKNOWN_CATEGORY = "unknown_category"  # answer names no offered category: item goes to review
    SKIPPED_NO_ENDPOINT = "skipped_no_endpoint"  # LLM step off (no base_url)
    SKIPPED_BUDGET = "skipped_budget"  # budget_calls / budget_tokens / budget_usd used up
    FAILED_TRANSIENT = "failed_transient"  # timeouts, 429/5xx after retries, endpoint down, 4xx


#: Outcomes that leave an item to a later night: nothing of it was cached, so it is asked again then
#: (an incremental night must re-score such an item even when its content is unchanged).
ASK_AGAIN_STATUSES: frozenset[str] = frozenset(
    {
        LLMStatus.INVALID_ANSWER,
        LLMStatus.UNKNOWN_CATEGORY,
        LLMStatus.SKIPPED_BUDGET,
        LLMStatus.FAILED_TRANSIENT,
    }
)


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
        None,
        description="SQLite file for the answer cache, decision log and budget ledger "
        "(default: <state_dir>/llm/llm.sqlite).",
    )
    cache_url: str | None = Field(
        None,
        description="Database URL for the same tables shared by many workers on many hosts, e.g. "
        "postgresql+psycopg://user@host:5432/db; takes precedence over cache_path.",
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

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        v = value.strip()
        if not v.startswith(("postgresql", "postgres:", "sqlite:")):
            raise ValueError(
                f"llm.cache_url {value!r} is not a database URL; use postgresql+psycopg://user@host:5432/db "
                "(or sqlite:///path.sqlite), or leave it unset to use the SQLite file at llm.cache_path"
            )
        return v

    def store_location(self, state_dir: str | Path | None = None) -> str:
        """Where the cache, decision log and budget ledger live: ``cache_url``, else ``cache_path``, else
        ``<state_dir>/llm/llm.sqlite`` (``.shelfwise/llm/llm.sqlite`` without a state folder)."""
        if self.cache_url:
            return self.cache_url
        if self.cache_path is not None:
            return str(self.cache_path)
        return str(Path(state_dir or ".shelfwise") / "llm" / "llm.sqlite")

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
    """Counters of one `decide` call, or of an arbiter's life (all calls added up).

    Plain data: serialisable with `dataclasses.asdict`, picklable, added up with `add` (so shard tasks in
    other processes return theirs and the flow sums them)."""

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

    def add(self, other: LLMStats) -> LLMStats:
        """Add ``other``'s counters into this one (returns self). Latency p50/p95 of the sum are the
        question-weighted means of the parts' (exact only within one arbiter); the max is exact."""
        mine, theirs = self.questions, other.questions
        for name in ("latency_ms_p50", "latency_ms_p95"):
            a, b = getattr(self, name), getattr(other, name)
            if b is not None:
                merged = b if a is None or mine + theirs == 0 else (a * mine + b * theirs) / (mine + theirs)
                setattr(self, name, round(merged, 1))
        if other.latency_ms_max is not None:
            self.latency_ms_max = max(self.latency_ms_max or 0.0, other.latency_ms_max)
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name.startswith("latency_ms_"):
                continue
            if isinstance(a, bool):
                setattr(self, f.name, a or b)
            elif isinstance(a, int | float):
                setattr(self, f.name, a + b)
            elif isinstance(a, str):
                setattr(self, f.name, b or a)
            elif isinstance(a, dict):
                for k, v in b.items():
                    a[k] = a.get(k, 0) + v
            elif isinstance(a, list):
                a.extend(n for n in b if n not in a)
        self.cost_usd = round(self.cost_usd, 8)
        return self


@dataclass
class Call:
    """One `decide` call: its run id and its own counters (internal)."""

    run_id: str
    stats: LLMStats
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: float) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)

    def note(self, text: str) -> None:
        with self.lock:
            if text not in self.stats.notes:
                self.stats.notes.append(text)
