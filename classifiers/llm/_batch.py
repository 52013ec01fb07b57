"""OpenAI Batch API round trip for the LLM arbiter (internal).

Write the requests as JSONL, upload with ``purpose="batch"``, create the batch for
``/v1/chat/completions`` with a 24 h window, poll until it ends (or our own timeout), download the output
(and error) file and return one result per ``custom_id``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from shelfwise.errors import TransientServiceError

__all__: list[str] = []

_DONE = {"completed", "failed", "expired", "cancelled"}


@dataclass
class BatchLineResult:
    custom_id: str
    status_code: int | None
    body: dict[str, Any] | None  # the chat completion when status_code == 200
    error: str | None


@dataclass
class BatchRun:
    batch_id: str
    status: str
    results: dict[str, BatchLineResult]
    wall_s: float
    polls: int


def _text_of(content: Any) -> str:
    for attr in ("text",):
        value = getattr(content, attr, None)
        if isinstance(value, str):
            return value
    read = getattr(content, "read", None)
    if callable(read):
        data = read()
        return data.decode("utf-8") if isinstance(data, bytes) else str(data)
    return str(content)


def run_batch(
    client: Any,
    requests: list[dict[str, Any]],
    *,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
    metadata: dict[str, str] | None = None,
) -> BatchRun:
    """Run one batch of chat-completion bodies (each dict has ``custom_id`` and ``body``)."""
    t0 = time.monotonic()
    lines = [
        json.dumps(
            {"custom_id": r["custom_id"], "method": "POST", "url": "/v1/chat/completions", "body": r["body"]},
            ensure_ascii=False,
        )
        for r in requests
    ]
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    uploaded = client.files.create(file=("shelfwise_llm_requests.jsonl", payload), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        **({"metadata": metadata} if metadata else {}),
    )
    polls = 0
    while batch.status not in _DONE:
        if time.monotonic() - t0 > timeout_s:
            with contextlib.suppress(openai.OpenAIError):  # best effort; the batch is abandoned either way
                client.batches.cancel(batch.id)
            raise TransientServiceError(
                f"Batch {batch.id} still '{batch.status}' after {timeout_s:.0f}s (batch_timeout_s); "
                "its items were left for the next run"
            )
        sleep(poll_s)
        polls += 1
        batch = client.batches.retrieve(batch.id)
    results: dict[str, BatchLineResult] = {}
    for file_id in (getattr(batch, "output_file_id", None), getattr(batch, "error_file_id", None)):
        if not file_id:
            continue
        text = _text_of(client.files.content(file_id))
        for raw in text.splitlines():
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                continue
            cid = str(rec.get("custom_id"))
            resp = rec.get("response") or {}
            err = rec.get("error")
            code = resp.get("status_code")
            body = resp.get("body") if isinstance(resp.get("body"), dict) else None
            message = None
            if err:
                message = err.get("message") if isinstance(err, dict) else str(err)
            elif code != 200:
                message = json.dumps(body)[:300] if body else f"HTTP {code}"
            results[cid] = BatchLineResult(cid, code, body if code == 200 else None, message)
    return BatchRun(batch.id, batch.status, results, time.monotonic() - t0, polls)
