"""How the LLM arbiter talks to its endpoint: retries, the output modes a server accepts, an endpoint
that dies, refuses or is not configured, the Batch API, rate limits and an injected client. Against a
real HTTP server on 127.0.0.1 speaking the OpenAI protocol (tests/llm/fake_openai.py), on real Amazon UK
products and the real Amazon UK taxonomy."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from arbiter_support import FAST, by_sku, settings, walker
from fake_openai import FakeOpenAI, free_port, prompt_of

from classifiers.llm import LLMArbiter, LLMSettings


# --------------------------------------------------------------------------------------------------
# retries
# --------------------------------------------------------------------------------------------------
def test_429_retry_after_is_honoured_and_counted(fake, amazon_tax, amazon_items, store):
    fake.script({"status": 429, "headers": {"Retry-After": "1"}, "json": {"error": {"message": "slow down"}}})
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    t0 = time.monotonic()
    out = arb.decide(amazon_items.head(1).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"]
    reqs = fake.chat_requests
    assert len(reqs) == 2 and reqs[1].at - reqs[0].at >= 0.99  # waited the full Retry-After
    assert time.monotonic() - t0 >= 1.0
    assert arb.stats.retries == 1 and arb.stats.calls == 2 and arb.stats.retry_wait_s == pytest.approx(1.0)


def test_429_retry_after_http_date_is_honoured(fake, amazon_tax, amazon_items, store):
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    target = datetime.now(UTC) + timedelta(seconds=2)
    named = time.monotonic() + 2.0 - target.microsecond / 1e6  # the whole second the header names
    when = format_datetime(target, usegmt=True)
    fake.script({"status": 429, "headers": {"Retry-After": when}})
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"]
    reqs = fake.chat_requests
    assert reqs[1].at >= named - 0.05  # not before the date (a busy machine may send the first one late)
    assert arb.stats.retries == 1


def test_500_then_success_is_retried(fake, amazon_tax, amazon_items, store):
    fake.script(
        {"status": 500, "json": {"error": {"message": "upstream hiccup"}}},
        {"status": 503, "json": {"error": {"message": "overloaded"}}},
    )
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"]
    assert arb.stats.retries == 2 and len(fake.chat_requests) == 3


def test_timeouts_are_retried_then_given_up(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(2).drop("true_id")
    fake.script({"delay": 1.0, "answer": {"choice": 1, "reason": "late"}})
    arb = LLMArbiter(settings(fake, max_concurrency=1, timeout_s=0.3), amazon_tax, store_path=store)
    out = arb.decide(items.head(1))
    assert out["llm_status"].to_list() == ["accepted"] and arb.stats.retries == 1

    # every attempt times out: failed_transient after max_retries, reason says why
    fake.script(*[{"delay": 1.0, "answer": {"choice": 1, "reason": "late"}}] * 3)
    arb2 = LLMArbiter(
        settings(fake, max_concurrency=1, timeout_s=0.3, max_retries=2), amazon_tax, store_path=store
    )
    out2 = arb2.decide(items.tail(1))
    assert out2["llm_status"].to_list() == ["failed_transient"]
    assert "timeout" in out2["llm_reason"][0] and "3 attempts" in out2["llm_reason"][0]
    assert arb2.stats.retries == 2 and arb2.stats.failed == 1


def test_4xx_validation_error_is_not_retried(fake, amazon_tax, amazon_items, store):
    fake.script({"status": 400, "json": {"error": {"message": "max_tokens is too large"}}})
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id"))
    assert out["llm_status"].to_list() == ["failed_transient"]
    assert "HTTP 400" in out["llm_reason"][0] and "max_tokens is too large" in out["llm_reason"][0]
    assert len(fake.chat_requests) == 1 and arb.stats.retries == 0


# --------------------------------------------------------------------------------------------------
# output modes
# --------------------------------------------------------------------------------------------------
LLAMA_CPP_REJECT = {
    "status": 500,
    "json": {
        "error": {
            "code": 500,
            "message": "response_format type json_schema is not supported",
            "type": "server_error",
        }
    },
}


def test_json_schema_rejected_falls_back_to_json_object_and_is_remembered(
    fake, amazon_tax, amazon_items, store
):
    fake.script(LLAMA_CPP_REJECT)
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(3).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"] * 3
    kinds = [r.body["response_format"]["type"] for r in fake.chat_requests]
    assert kinds == ["json_schema", "json_object", "json_object", "json_object"]
    rf = fake.chat_requests[1].body["response_format"]
    assert rf["schema"]["required"] == ["choice", "reason"]  # llama.cpp-style json_object + schema
    assert arb.stats.mode == "json_object" and arb.stats.retries == 0
    assert any("falling back to json_object" in n for n in arb.stats.notes)
    # a new arbiter (next run) starts with the mode that worked
    arb2 = LLMArbiter(settings(fake), amazon_tax, store_path=store)
    arb2.decide(amazon_items.slice(3, 1).drop("true_id"))
    assert fake.chat_requests[-1].body["response_format"]["type"] == "json_object"


def test_forced_tool_call_mode(fake, amazon_tax, amazon_items, store):
    arb = LLMArbiter(settings(fake, output_mode="tools"), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(2).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"] * 2
    body = fake.chat_requests[0].body
    assert "response_format" not in body
    assert body["tool_choice"] == {"type": "function", "function": {"name": "choose_category"}}
    assert body["tools"][0]["function"]["parameters"]["required"] == ["choice", "reason"]


def test_fixed_mode_the_server_rejects_fails_items_with_the_fix(fake, amazon_tax, amazon_items, store):
    fake.script(LLAMA_CPP_REJECT)
    arb = LLMArbiter(
        settings(fake, output_mode="json_schema", max_concurrency=1), amazon_tax, store_path=store
    )
    out = arb.decide(amazon_items.head(3).drop("true_id"))
    assert out["llm_status"].to_list() == ["failed_transient"] * 3
    assert "llm.output_mode=auto" in out["llm_reason"][0]
    assert len(fake.chat_requests) == 1  # the breaker stops sending after a configuration error


# --------------------------------------------------------------------------------------------------
# endpoint down, endpoint off
# --------------------------------------------------------------------------------------------------
def test_server_dying_mid_run_finishes_the_run_and_keeps_answers(amazon_tax, amazon_items, store):
    items = amazon_items.head(10).drop("true_id")
    with FakeOpenAI(die_after=3) as dying:
        arb = LLMArbiter(
            settings(dying, max_concurrency=1, max_retries=2, breaker_failures=3),
            amazon_tax,
            store_path=store,
        )
        t0 = time.monotonic()
        out = arb.decide(items)
        assert time.monotonic() - t0 < 10
    statuses = out["llm_status"].to_list()
    assert out.height == 10 and statuses[:3] == ["accepted"] * 3
    assert statuses[3:] == ["failed_transient"] * 7
    assert out["llm_reason"][9].startswith("not sent: LLM endpoint treated as down after 3 consecutive")
    st = arb.stats
    assert st.breaker_open and st.failed == 7 and st.calls == 3 + 3  # 3 answered + 3 refused attempts
    assert any("treated as down" in n for n in st.notes)
    log = arb.decisions_frame(final_only=True)
    assert log.height == 10 and (log["status"] == "failed_transient").sum() == 7

    # nothing lost: the endpoint comes back (same address: the cache key includes the endpoint) and the
    # next run re-uses the 3 answers and asks only for the 7 others
    with FakeOpenAI(port=dying.port) as back:
        arb2 = LLMArbiter(settings(back), amazon_tax, store_path=store)
        out2 = arb2.decide(items)
        assert out2["llm_status"].to_list() == ["accepted"] * 10
        assert len(back.chat_requests) == 7 and arb2.stats.cache_hits == 3


def test_connection_refused_trips_the_breaker_quickly(amazon_tax, amazon_items, store):
    s = LLMSettings(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", breaker_failures=4, **FAST)
    arb = LLMArbiter(s, amazon_tax, store_path=store)
    t0 = time.monotonic()
    out = arb.decide(amazon_items.head(8).drop("true_id"))
    assert time.monotonic() - t0 < 10
    assert out["llm_status"].to_list() == ["failed_transient"] * 8
    assert arb.stats.breaker_open and arb.stats.calls <= 4 + 2  # threshold + requests already in flight
    assert "connection error" in arb.stats.notes[-1]


def test_no_endpoint_means_llm_step_off(amazon_tax, amazon_items, store, monkeypatch):
    s = LLMSettings()
    assert s.base_url is None
    arb = LLMArbiter(s, amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(5).drop("true_id"))
    assert out["llm_status"].to_list() == ["skipped_no_endpoint"] * 5
    assert out["llm_category_id"].null_count() == 5
    assert not arb.stats.enabled and arb.stats.skipped == 5 and arb.stats.calls == 0
    assert "no endpoint configured" in out["llm_reason"][0]
    # the standard OpenAI variables switch it on
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    s2 = LLMSettings()
    assert s2.base_url == "http://127.0.0.1:9/v1" and s2.api_key.get_secret_value() == "sk-test"
    with pytest.raises(ValueError, match="is not an http"):
        LLMSettings(base_url="127.0.0.1:8080")


# --------------------------------------------------------------------------------------------------
# Batch API
# --------------------------------------------------------------------------------------------------
def test_batch_api_round_trip(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(4).drop("true_id")
    leaf = next(n for n in amazon_tax.leaves() if n.depth == 3)
    walk_sku = items["sku_id"][3]
    walk_title = " ".join(items["title"][3].split())

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if f"Title: {walk_title}" in prompt_of(body):
            return walker(leaf.path)(body)
        return {"answer": {"choice": 1, "reason": "first"}, "p": 0.7}

    fake.responder = respond
    arb = LLMArbiter(settings(fake, use_batch_api=True, batch_poll_s=0.02), amazon_tax, store_path=store)
    out = by_sku(arb.decide(items))
    assert [out[s]["llm_status"] for s in items["sku_id"][:3]] == ["accepted"] * 3
    assert out[items["sku_id"][0]]["llm_confidence"] == pytest.approx(0.7, abs=1e-6)
    assert (out[walk_sku]["llm_status"], out[walk_sku]["llm_category_id"]) == (
        "none_of_these_walked",
        leaf.id,
    )
    assert not fake.chat_requests  # nothing went through the live endpoint

    uploads = [r for r in fake.requests if r.path.endswith("/files")]
    creates = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/batches")]
    assert len(uploads) == len(creates) == 4 == arb.stats.batches  # candidates round + 3 walk rounds
    assert all(u.body["purpose"] == "batch" for u in uploads)
    assert (
        creates[0].body["endpoint"] == "/v1/chat/completions"
        and creates[0].body["completion_window"] == "24h"
    )
    lines = [json.loads(x) for x in uploads[0].body["content"].splitlines()]
    assert len(lines) == 4 and all(
        x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines
    )
    assert all(x["body"]["temperature"] == 0 and x["body"]["model"] == "test-model" for x in lines)
    assert len({x["custom_id"] for x in lines}) == 4
    assert len(json.loads(uploads[1].body["content"].splitlines()[0])["body"]["messages"]) == 2
    polls = [r for r in fake.requests if r.method == "GET" and "/batches/" in r.path]
    assert len(polls) >= 4

    # a re-run is all cache
    before = len(fake.requests)
    again = LLMArbiter(settings(fake, use_batch_api=True, batch_poll_s=0.02), amazon_tax, store_path=store)
    assert again.decide(items)["llm_cached"].all() and len(fake.requests) == before


def test_batch_that_never_finishes_times_out(fake, amazon_tax, amazon_items, store):
    fake.batch_polls = None  # stays in_progress forever
    arb = LLMArbiter(
        settings(fake, use_batch_api=True, batch_poll_s=0.05, batch_timeout_s=0.3),
        amazon_tax,
        store_path=store,
    )
    out = arb.decide(amazon_items.head(2).drop("true_id"))
    assert out["llm_status"].to_list() == ["failed_transient"] * 2
    assert "still 'in_progress' after 0s" in out["llm_reason"][0] or "after 0s" in out["llm_reason"][0]
    assert any(r.path.endswith("/cancel") for r in fake.requests)


# --------------------------------------------------------------------------------------------------
# rate limit, injected client
# --------------------------------------------------------------------------------------------------
def test_requests_per_minute_limit_waits(fake, amazon_tax, amazon_items, store):
    # 2 requests per minute: the third waits for the window to move; a fake clock keeps the test fast
    from classifiers.llm._transport import RateLimiter

    clock = {"t": 1000.0}
    arb = LLMArbiter(settings(fake, requests_per_minute=2, max_concurrency=1), amazon_tax, store_path=store)
    arb.limiter = RateLimiter(
        requests_per_minute=2,
        tokens_per_minute=None,
        clock=lambda: clock["t"],
        sleep=lambda s: clock.__setitem__("t", clock["t"] + s),
    )
    out = arb.decide(amazon_items.head(3).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"] * 3
    assert 59.0 <= arb.stats.rate_limit_wait_s <= 61.0
    assert len(fake.chat_requests) == 3


def test_injected_client_is_used_with_our_own_retry_loop(fake, amazon_tax, amazon_items, store):
    import openai

    client = openai.OpenAI(base_url=fake.base_url, api_key="sk-injected", max_retries=5)
    fake.script({"status": 503, "json": {"error": {"message": "busy"}}})
    s = LLMSettings(
        model="test-model", max_concurrency=1, **{k: v for k, v in FAST.items() if k != "max_concurrency"}
    )
    assert s.base_url is None
    arb = LLMArbiter(s, amazon_tax, client=client, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id"))
    assert out["llm_status"].to_list() == ["accepted"]
    # the client's own retries are off: one retry, counted by us
    assert len(fake.chat_requests) == 2 and arb.stats.retries == 1
    assert fake.chat_requests[0].headers["authorization"] == "Bearer sk-injected"
