"""Pure parts of the LLM arbiter: Retry-After, answer-token probability, answer validation, concurrency."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_openai import FakeOpenAI

from classifiers.llm import LLMArbiter, LLMSettings
from classifiers.llm._prompt import (
    Option,
    RawAnswer,
    answer_token_probability,
    candidate_question,
    parse_answer,
)
from classifiers.llm._transport import parse_retry_after


def test_parse_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 27, 8, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("Fri, 27 Nov 2026 08:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Fri, 27 Nov 2026 07:59:00 GMT", now=now) == 0.0  # in the past: no wait
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def _tok(text: str, p: float) -> dict[str, Any]:
    return {"token": text, "logprob": math.log(p), "top_logprobs": []}


def test_answer_token_probability_covers_multi_token_numbers():
    tokens = [
        _tok('{"', 0.99),
        _tok("choice", 0.99),
        _tok('":', 0.99),
        _tok(" 1", 0.5),
        _tok("2", 0.8),
        _tok(', "reason": "x"}', 0.99),
    ]
    assert answer_token_probability(tokens) == pytest.approx(0.5 * 0.8)
    assert answer_token_probability([_tok("no json here", 0.9)]) is None


QUESTION = candidate_question(
    "Product:\nTitle: x",
    [Option(1, "a", "Toys > A"), Option(2, "b", "Toys > B")],
)
KNOWN = {"a", "b", "c"}


@pytest.mark.parametrize(
    ("text", "ok", "error", "choice"),
    [
        ('{"choice": 2, "reason": "fits"}', True, None, 2),
        ('```json\n{"choice": "1", "reason": "fits"}\n```', True, None, 1),
        ('{"choice": 0, "reason": "none"}', True, None, 0),
        ('{"choice": 3, "reason": "x"}', False, "unknown_category", None),
        ('{"category_id": "c", "reason": "x"}', False, "unknown_category", None),  # real id, not offered
        ('{"category_id": "Toys > B", "reason": "x"}', True, None, 2),
        ('{"choice": true}', False, "invalid_answer", None),
        ('{"choice": "two"}', False, "invalid_answer", None),
        ('{"reason": "forgot"}', False, "invalid_answer", None),
        ('{"choice": 1, "reason": ', False, "invalid_answer", None),
        ("", False, "invalid_answer", None),
        ("[1]", False, "invalid_answer", None),
    ],
)
def test_parse_answer_accepts_only_offered_options(text, ok, error, choice):
    parsed = parse_answer(RawAnswer(text, None), QUESTION, known_ids=KNOWN)
    assert (parsed.ok, parsed.error) == (ok, error)
    if ok:
        assert parsed.choice == choice


def test_concurrency_is_limited(amazon_tax, amazon_items, tmp_path):
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(body: dict[str, Any]) -> dict[str, Any]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return {"answer": {"choice": 1, "reason": "ok"}}

    with FakeOpenAI(responder=slow) as fake:
        s = LLMSettings(base_url=fake.base_url, model="m", max_concurrency=3)
        out = LLMArbiter(s, amazon_tax, store_path=tmp_path / "l.sqlite").decide(
            amazon_items.head(9).drop("true_id")
        )
    assert out["llm_status"].to_list() == ["accepted"] * 9
    assert state["max"] == 3

    # two shards decided at the same time share the limit
    state["max"] = 0
    with FakeOpenAI(responder=slow) as fake:
        s = LLMSettings(base_url=fake.base_url, model="m", max_concurrency=2)
        arb = LLMArbiter(s, amazon_tax, store_path=tmp_path / "l2.sqlite")
        shards = [amazon_items.slice(0, 6).drop("true_id"), amazon_items.slice(6, 6).drop("true_id")]
        threads = [threading.Thread(target=arb.decide, args=(shard,)) for shard in shards]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert state["max"] == 2 and arb.stats.statuses == {"accepted": 12}


def test_refused_logprobs_are_dropped_and_remembered(amazon_tax, amazon_items, tmp_path):
    with FakeOpenAI() as fake:
        fake.script(
            {"status": 400, "json": {"error": {"message": "logprobs are not supported by this model"}}}
        )
        s = LLMSettings(base_url=fake.base_url, model="m", max_concurrency=1)
        arb = LLMArbiter(s, amazon_tax, store_path=tmp_path / "l.sqlite")
        out = arb.decide(amazon_items.head(2).drop("true_id"))
        assert out["llm_status"].to_list() == ["accepted"] * 2
        sent = [r.body.get("logprobs") for r in fake.chat_requests]
    assert sent == [True, None, None]
    assert out["llm_confidence_source"].to_list() == ["agreement"] * 2
    assert any("refused logprobs" in n for n in arb.stats.notes)


def test_max_tokens_renamed_when_the_server_asks_for_max_completion_tokens(
    amazon_tax, amazon_items, tmp_path
):
    refusal = (
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'."
    )
    with FakeOpenAI() as fake:
        fake.script({"status": 400, "json": {"error": {"message": refusal}}})
        s = LLMSettings(base_url=fake.base_url, model="m", max_concurrency=1)
        out = LLMArbiter(s, amazon_tax, store_path=tmp_path / "l.sqlite").decide(
            amazon_items.head(2).drop("true_id")
        )
        bodies = [r.body for r in fake.chat_requests]
    assert out["llm_status"].to_list() == ["accepted"] * 2
    assert "max_tokens" in bodies[0] and all(
        "max_completion_tokens" in b and "max_tokens" not in b for b in bodies[1:]
    )
