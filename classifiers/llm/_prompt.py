"""Prompts, output schemas, request payloads and answer parsing for the LLM arbiter (internal).

Every question the arbiter asks is a numbered list of taxonomy paths plus option 0 ("none of these" on
the candidate step, "stop here" on a tree-walk step). The model answers
``{"choice": <int>, "reason": <str>}``; ``choice`` comes first so the number is an early, single token
whose log-probability gives a confidence.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__: list[str] = []

SYSTEM_PROMPT = (
    "You classify products of an online shop into the shop's category taxonomy. "
    "Read the product, then pick the single best category from the numbered options. "
    'Answer only with a JSON object: {"choice": <option number>, "reason": "<one short sentence>"}.'
)
TOOL_NAME = "choose_category"


class OutputMode(StrEnum):
    """How the model is made to answer in JSON (`auto` tries them in this order)."""

    AUTO = "auto"
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TOOLS = "tools"
    NONE = "none"


AUTO_ORDER: tuple[OutputMode, ...] = (
    OutputMode.JSON_SCHEMA,
    OutputMode.JSON_OBJECT,
    OutputMode.TOOLS,
    OutputMode.NONE,
)


@dataclass(frozen=True)
class Option:
    number: int
    category_id: str
    category_path: str


@dataclass(frozen=True)
class Question:
    """One question to the model: the messages plus what each option number means."""

    kind: str  # "candidates" or "walk:<depth>"
    messages: list[dict[str, str]]
    options: tuple[Option, ...]
    zero_label: str  # meaning of option 0
    current_id: str | None = None  # walk: the node we stand on (None = above the roots)

    @property
    def max_choice(self) -> int:
        return len(self.options)

    def schema(self) -> dict[str, Any]:
        return answer_schema(self.max_choice)

    def option(self, number: int) -> Option | None:
        if 1 <= number <= len(self.options):
            return self.options[number - 1]
        return None


def answer_schema(max_choice: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "choice": {"type": "integer", "enum": list(range(max_choice + 1))},
            "reason": {"type": "string"},
        },
        "required": ["choice", "reason"],
        "additionalProperties": False,
    }


def _clip(text: Any, limit: int) -> str:
    if text is None:
        return ""
    s = " ".join(str(text).split())
    if limit <= 0 or len(s) <= limit:
        return s
    return s[: max(0, limit - 3)].rstrip() + "..."


def product_block(item: dict[str, Any], *, description_chars: int, review_chars: int) -> str:
    lines = ["Product:"]
    lines.append(f"Title: {_clip(item.get('title'), 300) or '(none)'}")
    brand = _clip(item.get("brand"), 100)
    if brand:
        lines.append(f"Brand: {brand}")
    desc = _clip(item.get("description"), description_chars)
    if desc:
        lines.append(f"Description: {desc}")
    attrs = _clip(item.get("attributes"), 400)
    if attrs:
        lines.append(f"Attributes: {attrs}")
    reviews = _clip(item.get("review_text"), review_chars)
    if reviews:
        lines.append(f"Customer reviews (excerpt): {reviews}")
    return "\n".join(lines)


def candidate_question(product: str, options: Sequence[Option]) -> Question:
    body = [product, "", "Candidate categories:"]
    body += [f"{o.number}. {o.category_path}" for o in options]
    body.append("0. None of these fits the product")
    body.append("")
    body.append(
        'Which category fits the product best? Answer with its number as "choice" '
        "(0 if none of the candidates fits)."
    )
    return Question(
        kind="candidates",
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(body)}],
        options=tuple(options),
        zero_label="none of these",
    )


def walk_question(
    product: str, options: Sequence[Option], *, current_id: str | None, current_path: str | None, depth: int
) -> Question:
    if current_path is None:
        head = "None of the suggested categories fits. Choose the top-level category that fits the product:"
        zero = "0. None of these top-level categories fits the product"
        zero_label = "none at top level"
    else:
        head = (
            f'The product belongs under "{current_path}". Choose the sub-category that fits it, '
            "or stop here if none of them fits better:"
        )
        zero = f'0. Stop here: "{current_path}" is the most specific fitting category'
        zero_label = "stop here"
    body = [product, "", head]
    body += [f"{o.number}. {o.category_path}" for o in options]
    body.append(zero)
    body.append("")
    body.append('Answer with the number of your choice as "choice".')
    return Question(
        kind=f"walk:{depth}",
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(body)}],
        options=tuple(options),
        zero_label=zero_label,
        current_id=current_id,
    )


def prompt_hash(model: str, question: Question, mode: OutputMode, *, endpoint: str) -> str:
    """sha256 over endpoint + model + the full prompt (messages and schema) + output mode: the cache key.

    The endpoint is part of it: the same model name behind another server is another model."""
    payload = json.dumps(
        {
            "endpoint": endpoint,
            "model": model,
            "messages": question.messages,
            "schema": question.schema(),
            "mode": str(mode),
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def request_body(
    question: Question,
    *,
    model: str,
    mode: OutputMode,
    max_tokens: int,
    logprobs: bool,
    max_tokens_key: str = "max_tokens",
) -> dict[str, Any]:
    """Keyword arguments for ``chat.completions.create`` (also the body of a Batch API line)."""
    schema = question.schema()
    body: dict[str, Any] = {
        "model": model,
        "messages": question.messages,
        "temperature": 0,
        max_tokens_key: max_tokens,
    }
    if logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = 5
    if mode is OutputMode.JSON_SCHEMA:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "category_choice", "strict": True, "schema": schema},
        }
    elif mode is OutputMode.JSON_OBJECT:
        body["response_format"] = {"type": "json_object", "schema": schema}
    elif mode is OutputMode.TOOLS:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": TOOL_NAME,
                    "description": "Report the chosen category option.",
                    "parameters": schema,
                },
            }
        ]
        body["tool_choice"] = {"type": "function", "function": {"name": TOOL_NAME}}
    return body


@dataclass
class RawAnswer:
    """What came back for one question (from HTTP or from the cache)."""

    text: str | None  # message content, or the forced tool call's arguments
    answer_p: float | None  # probability of the answer token(s) from logprobs, if the server sent them
    tokens_in: int = 0
    tokens_out: int = 0
    finish_reason: str | None = None


def raw_from_completion(completion: Any, mode: OutputMode) -> RawAnswer:
    """Pull the answer text, usage and answer-token probability out of a chat completion (object or dict)."""
    data = completion if isinstance(completion, dict) else completion.model_dump()
    choices = data.get("choices") or []
    usage = data.get("usage") or {}
    tin = int(usage.get("prompt_tokens") or 0)
    tout = int(usage.get("completion_tokens") or 0)
    if not choices:
        return RawAnswer(None, None, tin, tout, None)
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content")
    tool_calls = message.get("tool_calls") or []
    if (mode is OutputMode.TOOLS or not text) and tool_calls:
        fn = (tool_calls[0] or {}).get("function") or {}
        text = fn.get("arguments")
    p = None
    lp = choice.get("logprobs") or {}
    content = lp.get("content") if isinstance(lp, dict) else None
    if content:
        p = answer_token_probability(content)
    return RawAnswer(text, p, tin, tout, choice.get("finish_reason"))


_CHOICE_VALUE = re.compile(r'"choice"\s*:\s*"?(\d+)')


def answer_token_probability(tokens: Sequence[dict[str, Any]]) -> float | None:
    """Probability the model gave to the digits of the ``choice`` value (product over its tokens)."""
    texts = [str(t.get("token", "")) for t in tokens]
    joined = "".join(texts)
    m = _CHOICE_VALUE.search(joined)
    if not m:
        return None
    start, end = m.span(1)
    logp = 0.0
    pos = 0
    used = False
    for tok, text in zip(tokens, texts, strict=True):
        t0, t1 = pos, pos + len(text)
        pos = t1
        if t1 <= start or t0 >= end:
            continue
        value = tok.get("logprob")
        if value is None:
            return None
        logp += float(value)
        used = True
    if not used:
        return None
    return float(min(1.0, max(0.0, math.exp(logp))))


@dataclass
class Parsed:
    """The validated meaning of one answer."""

    ok: bool
    choice: int | None = None  # 0 = none/stop, else option number
    option: Option | None = None
    reason: str = ""
    error: str | None = None  # "invalid_answer" or "unknown_category" when not ok
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "choice": self.choice,
                "category_id": self.option.category_id if self.option else None,
                "reason": self.reason,
                "error": self.error,
                "detail": self.detail,
            },
            ensure_ascii=False,
        )


def _json_object(text: str) -> dict[str, Any] | None:
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`")
        if s.lower().startswith("json"):
            s = s[4:]
    try:
        value = json.loads(s)
    except json.JSONDecodeError:
        start, end = s.find("{"), s.rfind("}")
        if start < 0 or end <= start:
            return None
        try:
            value = json.loads(s[start : end + 1])
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, dict) else None


def parse_answer(raw: RawAnswer, question: Question, *, known_ids: Any) -> Parsed:
    """Validate an answer against the question's options and the taxonomy. Never guesses."""
    text = raw.text
    if text is None or not str(text).strip():
        return Parsed(
            False, error="invalid_answer", detail=f"empty answer (finish_reason={raw.finish_reason})"
        )
    data = _json_object(str(text))
    if data is None:
        return Parsed(
            False, error="invalid_answer", detail=f"answer is not a JSON object: {_clip(text, 120)!r}"
        )
    reason = _clip(data.get("reason"), 300)
    value = data.get("choice")
    if value is None:
        # Tolerate an answer naming a category directly, but only if it is one of the offered options.
        named = data.get("category_id") or data.get("category")
        if isinstance(named, str) and named.strip():
            for opt in question.options:
                if named.strip() in (opt.category_id, opt.category_path):
                    return Parsed(True, opt.number, opt, reason, data=data)
            where = "in the taxonomy" if named.strip() not in known_ids else "among the offered options"
            return Parsed(
                False,
                error="unknown_category",
                reason=reason,
                data=data,
                detail=f"answer names category {named!r}, which is not {where}",
            )
        return Parsed(
            False, error="invalid_answer", reason=reason, data=data, detail='answer has no "choice" field'
        )
    if isinstance(value, bool) or not (
        isinstance(value, int)
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and value.strip().isdigit())
    ):
        return Parsed(
            False,
            error="invalid_answer",
            reason=reason,
            data=data,
            detail=f'"choice" is not a number: {value!r}',
        )
    number = int(value) if not isinstance(value, str) else int(value.strip())
    if number == 0:
        return Parsed(True, 0, None, reason, data=data)
    picked = question.option(number)
    if picked is None:
        return Parsed(
            False,
            error="unknown_category",
            reason=reason,
            data=data,
            detail=f"choice {number} is not one of the options 0..{question.max_choice}",
        )
    opt = picked
    if opt.category_id not in known_ids:  # defensive: options come from the taxonomy
        return Parsed(
            False, error="unknown_category", reason=reason, data=data, detail=f"{opt.category_id!r} unknown"
        )
    return Parsed(True, number, opt, reason, data=data)
