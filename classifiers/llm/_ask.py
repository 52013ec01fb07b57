"""Asking the endpoint for the LLM arbiter (internal): cache look-up, budget admission, live requests
with output-mode detection, Batch API rounds, and what is cached.

Only answers that parsed and validated against the question and the taxonomy are cached; a broken one
(prose, an unknown category, a truncated JSON) is returned to the job, logged by the arbiter and asked
again on a later run. Budgets are reserved in the store's ledger under the call's run id, so all workers
of one run share them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import openai

from classifiers.llm._batch import run_batch
from classifiers.llm._jobs import KnownIds, Refusal, Step
from classifiers.llm._prompt import (
    AUTO_ORDER,
    OutputMode,
    Question,
    RawAnswer,
    parse_answer,
    prompt_hash,
    raw_from_completion,
    request_body,
)
from classifiers.llm._settings import Call, LLMSettings, LLMStatus
from classifiers.llm._store import Store
from classifiers.llm._transport import (
    Breaker,
    Caller,
    CircuitOpenError,
    RateLimiter,
    RequestRejectedError,
    UnsupportedOutputModeError,
)
from shelfwise.errors import TransientServiceError

__all__: list[str] = []


class Asker:
    """Everything between a question and its answer; shared by the threads of one arbiter."""

    def __init__(self, settings: LLMSettings, store: Store, *, client: Any | None = None) -> None:
        self.settings = settings
        self.store = store
        self._client_arg = client
        self._client: Any | None = None
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._logprobs = settings.logprobs
        self._max_tokens_key = "max_tokens"
        self._mode_saved = False
        self._run_id: str | None = None
        self.endpoint = settings.base_url or _client_url(client)
        self._endpoint_key = f"{self.endpoint}|{settings.model}"
        if settings.output_mode is OutputMode.AUTO:
            remembered = store.state_get(f"mode:{self._endpoint_key}")
            known = {m.value for m in AUTO_ORDER}
            self.mode = OutputMode(remembered) if remembered in known else AUTO_ORDER[0]
        else:
            self.mode = settings.output_mode
        self.limiter = RateLimiter(
            requests_per_minute=settings.requests_per_minute, tokens_per_minute=settings.tokens_per_minute
        )
        self.breaker = Breaker(settings.breaker_failures)
        self._caller: Caller | None = None

    def begin_run(self, run_id: str) -> None:
        """A new run id starts with a closed breaker (an endpoint down last night may be back)."""
        with self._lock:
            if self._run_id is not None and self._run_id != run_id:
                self.breaker.reset()
            self._run_id = run_id

    def close(self) -> None:
        with self._lock:
            client, self._client, self._caller = self._client, None, None
        if client is not None and self._owns_client:
            client.close()

    def breaker_reason(self) -> str:
        return (
            f"LLM endpoint treated as down after {self.breaker.threshold} consecutive failed requests "
            f"(last: {self.breaker.last_error[:200]})"
        )

    # cache ------------------------------------------------------------------------------------------
    def key(self, q: Question, mode: OutputMode) -> str:
        return prompt_hash(self.settings.model, q, mode, endpoint=self.endpoint)

    def cached(self, q: Question, call: Call, known: KnownIds) -> Step | None:
        modes = [self.settings.output_mode]
        if self.settings.output_mode is OutputMode.AUTO:
            first = self.mode
            modes = [first, *[m for m in AUTO_ORDER if m is not first]]
        for mode in modes:
            key = self.key(q, mode)
            hit = self.store.cache_get(key)
            if hit is None:
                continue
            raw = RawAnswer(hit["raw_answer"], hit["answer_p"], 0, 0, hit["finish_reason"])
            parsed = parse_answer(raw, q, known_ids=known)
            if not parsed.ok:  # kept by an older version: never served, asked again
                self.store.cache_drop(key)
                continue
            call.add(cache_hits=1)
            return Step(q, key, str(mode), raw, parsed, True, 0.0, None, "")
        return None

    def unsent(self, q: Question, status: str) -> Step:
        mode = self.mode
        return Step(q, self.key(q, mode), str(mode), None, None, False, 0.0, None, status)

    # budget -----------------------------------------------------------------------------------------
    def admit(self, call: Call) -> Refusal | None:
        """May one more question be sent in this run? Reserves it in the shared ledger if so."""
        if self.breaker.open:
            return Refusal(LLMStatus.FAILED_TRANSIENT, f"not sent: {self.breaker_reason()}")
        s, run = self.settings, call.run_id
        if s.budget_tokens is not None:
            used = self.store.budget_used(run, "tokens")
            if used >= s.budget_tokens:
                why = f"budget_tokens={s.budget_tokens} used up ({used:.0f} tokens)"
                return Refusal(LLMStatus.SKIPPED_BUDGET, f"not sent: {why}")
        if s.budget_usd is not None:
            used = self.store.budget_used(run, "usd")
            if used >= s.budget_usd:
                why = f"budget_usd={s.budget_usd} used up (${used:.4f})"
                return Refusal(LLMStatus.SKIPPED_BUDGET, f"not sent: {why}")
        if s.budget_calls is not None and not self.store.budget_take(run, "calls", 1, s.budget_calls):
            return Refusal(LLMStatus.SKIPPED_BUDGET, f"not sent: budget_calls={s.budget_calls} used up")
        return None

    def _give_back(self, call: Call) -> None:
        if self.settings.budget_calls is not None:
            self.store.budget_add(call.run_id, "calls", -1)

    def _spend(self, call: Call, raw: RawAnswer, cost: float) -> None:
        s = self.settings
        if s.budget_tokens is not None:
            self.store.budget_add(call.run_id, "tokens", raw.tokens_in + raw.tokens_out)
        if s.budget_usd is not None:
            self.store.budget_add(call.run_id, "usd", cost)

    # answers ----------------------------------------------------------------------------------------
    def answered(
        self,
        q: Question,
        completion: Any,
        mode: OutputMode,
        call: Call,
        known: KnownIds,
        *,
        latency_ms: float | None,
        batch: bool = False,
    ) -> Step:
        """A fresh answer (live or from a batch): priced, accounted, parsed, cached only if valid."""
        raw = raw_from_completion(completion, mode)
        key = self.key(q, mode)
        cost = self._cost(raw.tokens_in, raw.tokens_out, batch=batch)
        call.add(
            questions=1,
            walk_questions=int(q.kind != "candidates"),
            tokens_in=raw.tokens_in,
            tokens_out=raw.tokens_out,
            cost_usd=cost,
        )
        if latency_ms is not None:
            with call.lock:
                call.latencies.append(latency_ms)
        self._spend(call, raw, cost)
        parsed = parse_answer(raw, q, known_ids=known)
        if parsed.ok:
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
        return Step(q, key, str(mode), raw, parsed, False, cost, latency_ms, "")

    def _cost(self, tokens_in: int, tokens_out: int, *, batch: bool = False) -> float:
        price = self.settings.price_for(self.settings.model)
        if price is None:
            return 0.0
        usd = (tokens_in * price.input + tokens_out * price.output) / 1e6
        return usd * (self.settings.batch_discount if batch else 1.0)

    # live -------------------------------------------------------------------------------------------
    def _client_obj(self) -> Any:
        with self._lock:
            if self._client is None:
                s = self.settings
                if self._client_arg is not None:
                    self._client = self._client_arg.with_options(max_retries=0, timeout=s.timeout_s)
                else:
                    key = s.api_key.get_secret_value() if s.api_key is not None else "sk-no-key-needed"
                    self._client = openai.OpenAI(
                        base_url=s.base_url, api_key=key, timeout=s.timeout_s, max_retries=0
                    )
            return self._client

    def _caller_obj(self) -> Caller:
        client = self._client_obj()
        with self._lock:
            if self._caller is None:
                s = self.settings
                self._caller = Caller(
                    client,
                    max_retries=s.max_retries,
                    backoff_base_s=s.backoff_base_s,
                    backoff_max_s=s.backoff_max_s,
                    max_retry_after_s=s.max_retry_after_s,
                    limiter=self.limiter,
                    breaker=self.breaker,
                )
            return self._caller

    def send_live(self, q: Question, call: Call, known: KnownIds) -> Step | Refusal:
        """One question over HTTP; transport failures become a Refusal (the item fails this run)."""
        try:
            return self._ask_http(q, call, known)
        except CircuitOpenError:
            self._give_back(call)  # never sent
            return Refusal(LLMStatus.FAILED_TRANSIENT, f"not sent: {self.breaker_reason()}")
        except (TransientServiceError, RequestRejectedError) as exc:
            return Refusal(LLMStatus.FAILED_TRANSIENT, str(exc))

    def _ask_http(self, q: Question, call: Call, known: KnownIds) -> Step:
        caller = self._caller_obj()
        auto = self.settings.output_mode is OutputMode.AUTO
        est = len(json.dumps(q.messages)) // 4 + self.settings.max_tokens
        while True:
            mode = self.mode
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
                    result = caller.create(body, est_tokens=est, tally=call)
            except UnsupportedOutputModeError as exc:
                self._adapt(exc, mode, call, auto=auto)
                continue
            if auto:
                with self._lock:
                    remember = not self._mode_saved
                    self._mode_saved = True
                if remember:
                    self.store.state_put(f"mode:{self._endpoint_key}", str(mode))
            return self.answered(q, result.completion, mode, call, known, latency_ms=result.latency_ms)

    def _adapt(self, exc: UnsupportedOutputModeError, mode: OutputMode, call: Call, *, auto: bool) -> None:
        """The endpoint refused an option: drop or rename it, or fall back to the next output mode."""
        if exc.feature == "max_tokens":
            with self._lock:
                self._max_tokens_key = "max_completion_tokens"
            return
        if exc.feature == "logprobs":
            with self._lock:
                dropped, self._logprobs = self._logprobs, False
            if dropped:
                call.note(f"endpoint refused logprobs ({exc}); confidence from agreement")
            return
        if not auto:
            self.breaker.failure(str(exc), trip=True)
            raise RequestRejectedError(
                f"output_mode={mode} is not supported by the endpoint ({exc}); set llm.output_mode=auto "
                "or a mode the server accepts (json_object for llama.cpp)",
                status_code=400,
                body_text=str(exc),
            ) from exc
        with self._lock:
            if self.mode is not mode:
                return  # another thread already moved on
            i = AUTO_ORDER.index(mode)
            if i + 1 >= len(AUTO_ORDER):
                raise RequestRejectedError(str(exc), status_code=400, body_text=str(exc)) from exc
            self.mode = AUTO_ORDER[i + 1]
            self._mode_saved = False
        call.note(f"output mode {mode} refused ({str(exc)[:120]}); falling back to {self.mode}")

    # Batch API --------------------------------------------------------------------------------------
    def send_batch(self, questions: Sequence[Question], call: Call, known: KnownIds) -> list[Step | Refusal]:
        """One Batch API round for all waiting questions."""
        s, mode = self.settings, self.mode
        requests = [
            {
                "custom_id": f"q{i}",
                "body": request_body(
                    q,
                    model=s.model,
                    mode=mode,
                    max_tokens=s.max_tokens,
                    logprobs=self._logprobs,
                    max_tokens_key=self._max_tokens_key,
                ),
            }
            for i, q in enumerate(questions)
        ]
        call.add(batches=1, calls=1)
        try:
            run = run_batch(
                self._client_obj(),
                requests,
                poll_s=s.batch_poll_s,
                timeout_s=s.batch_timeout_s,
                metadata={"run_id": call.run_id, "round": str(call.stats.batches)},
            )
            error = None if run.status == "completed" else f"batch {run.batch_id} ended '{run.status}'"
        except TransientServiceError as exc:
            run, error = None, str(exc)
        except (openai.OpenAIError, OSError, ValueError) as exc:  # files/batches endpoints failed
            run, error = None, f"Batch API request failed: {type(exc).__name__}: {exc}"
        out: list[Step | Refusal] = []
        for i, q in enumerate(questions):
            line = run.results.get(f"q{i}") if run is not None else None
            if line is None or line.body is None:
                why = (
                    (line.error if line is not None else None)
                    or error
                    or "no result line in the batch output"
                )
                out.append(Refusal(LLMStatus.FAILED_TRANSIENT, f"Batch API: {why}"))
                continue
            out.append(self.answered(q, line.body, mode, call, known, latency_ms=None, batch=True))
        return out


def _client_url(client: Any | None) -> str:
    url = getattr(client, "base_url", None) if client is not None else None
    return str(url).rstrip("/") if url is not None else "client"
