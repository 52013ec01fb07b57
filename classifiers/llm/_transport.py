"""Calling the chat endpoint for the LLM arbiter (internal): retry loop, Retry-After, rate limits,
circuit breaker, and detection of the structured-output mode the server accepts.

The openai client is used with ``max_retries=0``; this module retries by itself so every retry is
counted. Only timeouts, connection errors, HTTP 429 and HTTP 5xx are retried (as
`TransientServiceError`); any other 4xx is final for the item.
"""

from __future__ import annotations

import collections
import email.utils
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import openai

from shelfwise.errors import TransientServiceError

__all__: list[str] = []


class Tally(Protocol):
    """Where a request's counters go (the `decide` call that sent it): ``add(calls=1, retries=1, ...)``."""

    def add(self, **counts: float) -> None: ...


class CircuitOpenError(TransientServiceError):
    """Too many consecutive failures: the endpoint is treated as down for the rest of the run."""


class RequestRejectedError(Exception):
    """The endpoint answered a 4xx other than 429: not retried (the message says why)."""

    def __init__(self, message: str, *, status_code: int, body_text: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body_text = body_text


class UnsupportedOutputModeError(Exception):
    """The endpoint rejected the structured-output options (response_format / tools / logprobs)."""

    def __init__(self, message: str, *, feature: str) -> None:
        super().__init__(message)
        self.feature = feature


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: either delta-seconds or an HTTP-date. None if absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ref = now or datetime.now(UTC)
    return max(0.0, (when - ref).total_seconds())


def _retry_after_of(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    return parse_retry_after(headers.get("retry-after"))


def _body_text(exc: openai.APIStatusError) -> str:
    try:
        return exc.response.text[:2000]
    except (AttributeError, RuntimeError, UnicodeDecodeError):  # pragma: no cover - a streamed/closed body
        return str(exc.body)[:2000]


def unsupported_feature(status_code: int, body_text: str, sent: dict[str, Any]) -> str | None:
    """Which structured-output feature a 400/422/500 complains about, if any (mode detection in `auto`)."""
    if status_code not in (400, 422, 500, 501):
        return None
    low = body_text.lower()
    if "max_tokens" in sent and "max_completion_tokens" in low:
        return "max_tokens"
    if "response_format" in sent and any(
        w in low for w in ("response_format", "json_schema", "json schema", "json_object", "schema")
    ):
        return "response_format"
    if "tools" in sent and any(w in low for w in ("tool", "function")):
        return "tools"
    if sent.get("logprobs") and "logprob" in low:
        return "logprobs"
    return None


class RateLimiter:
    """Sliding one-minute window over requests and (estimated) tokens. ``None`` limits disable it."""

    def __init__(
        self,
        *,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def acquire(self, tokens: int, *, deadline_check: Callable[[], bool] | None = None) -> float:
        """Wait until the request fits the limits; returns the seconds waited."""
        if not self.rpm and not self.tpm:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                while self._events and now - self._events[0][0] >= 60.0:
                    self._events.popleft()
                used_req = len(self._events)
                used_tok = sum(t for _, t in self._events)
                ok_req = not self.rpm or used_req < self.rpm
                ok_tok = not self.tpm or used_tok + tokens <= self.tpm or used_req == 0
                if ok_req and ok_tok:
                    self._events.append((now, tokens))
                    return waited
                wait = 60.0 - (now - self._events[0][0]) + 0.01
            wait = min(max(wait, 0.01), 1.0)
            self.waited_s += wait
            waited += wait
            if deadline_check is not None and deadline_check():
                return waited
            self.sleep(wait)


@dataclass
class CallResult:
    completion: Any
    latency_ms: float
    attempts: int


class Breaker:
    """Opens after ``threshold`` consecutive failed attempts; stays open for the rest of the run
    (`reset` when a new run starts)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = max(1, threshold)
        self.consecutive = 0
        self.open = False
        self.last_error = ""
        self._lock = threading.Lock()

    def success(self) -> None:
        with self._lock:
            self.consecutive = 0

    def reset(self) -> None:
        with self._lock:
            self.consecutive = 0
            self.open = False
            self.last_error = ""

    def failure(self, message: str, *, trip: bool = False) -> None:
        with self._lock:
            self.consecutive += 1
            self.last_error = message
            if trip or self.consecutive >= self.threshold:
                self.open = True

    def check(self) -> None:
        if self.open:
            raise CircuitOpenError(
                f"LLM endpoint treated as down after {self.consecutive} consecutive failures "
                f"(last: {self.last_error}); remaining items were not sent"
            )


class Caller:
    """One chat-completion request with the retry loop. Counters go to the ``tally`` of each request."""

    def __init__(
        self,
        client: Any,
        *,
        max_retries: int,
        backoff_base_s: float,
        backoff_max_s: float,
        max_retry_after_s: float,
        limiter: RateLimiter,
        breaker: Breaker,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.limiter = limiter
        self.breaker = breaker
        self.sleep = sleep

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(cap / 2.0, cap)  # "equal jitter": never zero, never above the cap

    def create(self, body: dict[str, Any], *, est_tokens: int, tally: Tally) -> CallResult:
        """Send one chat completion. Raises TransientServiceError (after retries), CircuitOpenError,
        RequestRejectedError (4xx) or UnsupportedOutputModeError (for `auto` detection)."""
        attempt = 0
        while True:
            self.breaker.check()
            waited = self.limiter.acquire(est_tokens, deadline_check=lambda: self.breaker.open)
            if waited:
                tally.add(rate_limit_wait_s=waited)
            self.breaker.check()
            tally.add(calls=1, retries=int(attempt > 0))
            t0 = time.perf_counter()
            wait: float | None = None
            try:
                completion = self.client.chat.completions.create(**body)
            except openai.APIStatusError as exc:
                code = exc.status_code
                text = _body_text(exc)
                feature = unsupported_feature(code, text, body)
                if feature is not None:
                    self.breaker.success()  # the server is alive; it only dislikes an option
                    raise UnsupportedOutputModeError(
                        f"endpoint rejected {feature} (HTTP {code}): {text[:200]}", feature=feature
                    ) from exc
                if code == 429 or code >= 500:
                    message = f"HTTP {code}: {text[:200]}"
                    retry_after = _retry_after_of(exc)
                    if retry_after is not None and retry_after > self.max_retry_after_s:
                        self.breaker.failure(message)
                        raise TransientServiceError(
                            f"{message}; Retry-After {retry_after:.0f}s exceeds max_retry_after_s="
                            f"{self.max_retry_after_s:.0f}s, item left for the next run"
                        ) from exc
                    wait = retry_after
                    err: Exception = exc
                else:
                    self.breaker.success()
                    hint = {
                        401: "check OPENAI_API_KEY / SHELFWISE_LLM__API_KEY",
                        403: "the key may not access this model",
                        404: "check the base_url and model name",
                    }.get(code, "the request was rejected as invalid and is not retried")
                    if code in (401, 403, 404):
                        self.breaker.failure(f"HTTP {code}", trip=True)
                    raise RequestRejectedError(
                        f"endpoint answered HTTP {code} ({hint}): {text[:200]}",
                        status_code=code,
                        body_text=text,
                    ) from exc
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                message = "timeout" if isinstance(exc, openai.APITimeoutError) else f"connection error: {exc}"
                err = exc
            else:
                self.breaker.success()
                return CallResult(completion, (time.perf_counter() - t0) * 1000.0, attempt + 1)
            # transient failure
            self.breaker.failure(message if isinstance(err, openai.APIError) else str(err))
            if attempt >= self.max_retries or self.breaker.open:
                if self.breaker.open:
                    self.breaker.check()
                raise TransientServiceError(f"{message} (gave up after {attempt + 1} attempts)") from err
            delay = wait if wait is not None else self._backoff(attempt)
            tally.add(retry_wait_s=delay)
            self.sleep(delay)
            attempt += 1
