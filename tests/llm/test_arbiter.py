"""The LLM arbiter against a real HTTP server on 127.0.0.1 speaking the OpenAI protocol
(tests/llm/fake_openai.py), on real Amazon UK products and the real Amazon UK taxonomy."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
from fake_openai import FakeOpenAI, free_port, options_of, prompt_of

from classifiers.llm import LLMArbiter, LLMSettings, gate
from shelfwise.errors import ConfigError

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 2}


def settings(fake: FakeOpenAI | None, **kw: Any) -> LLMSettings:
    base = {"model": "test-model", **FAST, **kw}
    if fake is not None:
        base["base_url"] = fake.base_url
    return LLMSettings(**base)


def by_sku(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["sku_id"]: r for r in frame.iter_rows(named=True)}


# --------------------------------------------------------------------------------------------------
# happy path and the exact request
# --------------------------------------------------------------------------------------------------
def test_good_answers_are_accepted_and_requests_are_exact(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(6)
    arb = LLMArbiter(settings(fake), amazon_tax, store_path=store)
    out = by_sku(arb.decide(items.drop("true_id")))

    assert len(out) == 6
    for row in items.iter_rows(named=True):
        got = out[row["sku_id"]]
        assert got["llm_status"] == "accepted"
        assert got["llm_category_id"] == row["true_id"]
        assert got["llm_category_path"] == amazon_tax.get(row["true_id"]).path
        assert got["llm_model"] == "test-model"
        assert got["llm_cached"] is False
        # no logprobs from this server: agreement with the classifier's top candidate -> high confidence
        assert got["llm_confidence_source"] == "agreement" and got["llm_confidence"] == pytest.approx(0.9)

    assert len(fake.chat_requests) == 6
    for req in fake.chat_requests:
        body = req.body
        assert body["model"] == "test-model"
        assert body["temperature"] == 0
        assert body["logprobs"] is True and body["top_logprobs"] == 5
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
        assert rf["json_schema"]["schema"]["properties"]["choice"]["enum"] == [0, 1, 2, 3]
        opts = options_of(body)
        assert set(opts) == {0, 1, 2, 3} and opts[0].startswith("None of these")
        assert req.headers["authorization"] == "Bearer sk-no-key-needed"  # local servers need no key
    # the prompt shows the product and full candidate paths
    first = items.row(0, named=True)
    prompts = [prompt_of(r.body) for r in fake.chat_requests]
    mine = next(p for p in prompts if first["title"].split()[0] in p)
    assert f"1. {first['candidates'][0]['category_path']}" in mine
    assert f"Brand: {first['brand']}" in mine

    st = arb.stats
    assert (st.calls, st.questions, st.retries, st.cache_hits, st.failed) == (6, 6, 0, 0, 0)
    assert st.tokens_in > 0 and st.tokens_out > 0 and st.statuses == {"accepted": 6}
    json.dumps(dataclasses.asdict(st))  # the run summary can embed it

    log = arb.decisions_frame()
    assert log.height == 6 and log["is_final"].all()
    assert set(log["status"]) == {"accepted"} and log["prompt_hash"].str.len_chars().to_list() == [64] * 6
    assert log["raw_answer"].str.contains('"choice"').all() and (log["mode"] == "json_schema").all()


def test_prompt_truncates_description_and_reviews(fake, amazon_tax, amazon_items, store):
    row = (
        amazon_items.head(1)
        .drop("true_id")
        .with_columns(
            pl.lit("waterproof " * 400).alias("description"), pl.lit("great toy! " * 400).alias("review_text")
        )
    )
    arb = LLMArbiter(
        settings(fake, max_description_chars=200, max_review_chars=100), amazon_tax, store_path=store
    )
    arb.decide(row)
    prompt = prompt_of(fake.chat_requests[0].body)
    desc = next(line for line in prompt.splitlines() if line.startswith("Description: "))
    rev = next(line for line in prompt.splitlines() if line.startswith("Customer reviews (excerpt): "))
    assert len(desc) - len("Description: ") == 200 and desc.endswith("...")
    assert len(rev) - len("Customer reviews (excerpt): ") == 100


# --------------------------------------------------------------------------------------------------
# invalid answers never accepted
# --------------------------------------------------------------------------------------------------
def test_unknown_category_and_broken_json_go_to_review(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(4).drop("true_id")
    skus = items["sku_id"].to_list()
    answers = {
        skus[0]: {"answer": {"choice": 7, "reason": "seven"}},
        skus[1]: {"answer": {"category_id": "p-000000000000", "reason": "made up"}},
        skus[2]: {"content": '{"choice": 1, "reason": "cut off'},
        skus[3]: {"content": "I think it is a toy."},
    }
    title_to_sku = {r["title"]: r["sku_id"] for r in items.iter_rows(named=True)}

    def responder(body: dict[str, Any]) -> dict[str, Any]:
        prompt = prompt_of(body)
        sku = next(s for t, s in title_to_sku.items() if f"Title: {' '.join(t.split())}" in prompt)
        return answers[sku]

    fake.responder = responder
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = by_sku(arb.decide(items))
    assert out[skus[0]]["llm_status"] == "unknown_category"
    assert "choice 7 is not one of the options 0..3" in out[skus[0]]["llm_reason"]
    assert out[skus[1]]["llm_status"] == "unknown_category"
    assert "p-000000000000" in out[skus[1]]["llm_reason"]
    assert out[skus[2]]["llm_status"] == "invalid_answer"
    assert (
        out[skus[3]]["llm_status"] == "invalid_answer" and "not a JSON object" in out[skus[3]]["llm_reason"]
    )
    for s in skus:
        assert out[s]["llm_category_id"] is None and out[s]["llm_confidence"] is None
    assert arb.stats.invalid == 4 and arb.stats.retries == 0 and len(fake.chat_requests) == 4
    log = arb.decisions_frame(final_only=True)
    assert (
        dict(zip(log["sku_id"], log["raw_answer"], strict=True))[skus[2]]
        == '{"choice": 1, "reason": "cut off'
    )


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
# cache, confidence, budget
# --------------------------------------------------------------------------------------------------
def test_second_run_is_served_from_the_cache(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(6).drop("true_id")
    first = LLMArbiter(settings(fake), amazon_tax, store_path=store).decide(items)
    assert len(fake.chat_requests) == 6
    first_arb_requests = len(fake.requests)

    again = LLMArbiter(settings(fake), amazon_tax, store_path=store, run_id="run-2")
    second = again.decide(items)
    assert len(fake.requests) == first_arb_requests  # zero HTTP requests reached the server
    assert second["llm_cached"].all() and again.stats.cache_hits == 6 and again.stats.calls == 0
    assert again.stats.tokens_in == 0 and again.stats.cost_usd == 0
    assert second.drop("llm_cached").equals(first.drop("llm_cached"))
    assert again.decisions_frame(run_id="run-2")["cached"].all()

    # a changed product is asked again; another model is a different cache key
    changed = items.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("New title"))
        .otherwise(pl.col("title"))
        .alias("title")
    )
    LLMArbiter(settings(fake), amazon_tax, store_path=store).decide(changed)
    assert len(fake.chat_requests) == 7
    LLMArbiter(settings(fake, model="other-model"), amazon_tax, store_path=store).decide(items.head(1))
    assert len(fake.chat_requests) == 8


def test_confidence_from_logprobs(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(2).drop("true_id")
    fake.script(
        {"answer": {"choice": 1, "reason": "sure"}, "p": 0.8},
        {"answer": {"choice": 2, "reason": "meh"}, "p": 0.35},
    )
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = arb.decide(items).to_dicts()
    assert (
        out[0]["llm_confidence"] == pytest.approx(0.8, abs=1e-6)
        and out[0]["llm_confidence_source"] == "logprobs"
    )
    assert out[1]["llm_confidence"] == pytest.approx(0.35, abs=1e-6)
    assert out[1]["llm_category_id"] == items["candidates"][1][1]["category_id"]
    # the probability survives the cache
    again = LLMArbiter(settings(fake), amazon_tax, store_path=store).decide(items).to_dicts()
    assert again[0]["llm_confidence"] == pytest.approx(0.8, abs=1e-6) and again[0]["llm_cached"]


def test_agreement_confidence_without_logprobs(fake, amazon_tax, amazon_items, store):
    fake.script({"answer": {"choice": 1, "reason": "a"}}, {"answer": {"choice": 3, "reason": "b"}})
    arb = LLMArbiter(settings(fake, max_concurrency=1, logprobs=False), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(2).drop("true_id"))["llm_confidence"].to_list()
    assert out == [pytest.approx(0.9), pytest.approx(0.6)]  # agrees with the classifier -> higher
    assert "logprobs" not in fake.chat_requests[0].body


def test_budget_exhaustion_skips_the_rest(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(6).drop("true_id")
    arb = LLMArbiter(settings(fake, budget_calls=3), amazon_tax, store_path=store)
    out = arb.decide(items)
    assert sorted(out["llm_status"].to_list()) == ["accepted"] * 3 + ["skipped_budget"] * 3
    assert len(fake.chat_requests) == 3 and arb.stats.skipped == 3
    assert "budget_calls=3 used up" in out.filter(pl.col("llm_status") == "skipped_budget")["llm_reason"][0]

    # dollars: priced model, budget smaller than two calls
    price = {"test-model": {"input": 1000.0, "output": 1000.0}}
    arb2 = LLMArbiter(
        settings(fake, prices=price, budget_usd=0.01, max_concurrency=1), amazon_tax, store_path=store
    )
    out2 = arb2.decide(amazon_items.slice(6, 4).drop("true_id"))
    assert out2["llm_status"].to_list() == ["accepted", "skipped_budget", "skipped_budget", "skipped_budget"]
    assert arb2.stats.cost_usd > 0.01


# --------------------------------------------------------------------------------------------------
# none of these -> walk the tree
# --------------------------------------------------------------------------------------------------
def walker(target_path: str):
    """A model that rejects the candidates, then walks towards target_path and stops there."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        opts = options_of(body)
        if "Candidate categories:" in prompt_of(body):
            return {"answer": {"choice": 0, "reason": "none fits"}}
        for n, path in opts.items():
            if n and (target_path == path or target_path.startswith(path + " > ")):
                return {"answer": {"choice": n, "reason": f"towards {path}"}}
        return {"answer": {"choice": 0, "reason": "stop"}}

    return respond


def test_none_of_these_walks_the_tree_level_by_level(fake, amazon_tax, amazon_items, store):
    leaf = next(n for n in amazon_tax.leaves() if n.depth == 4)
    fake.responder = walker(leaf.path)
    arb = LLMArbiter(settings(fake), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id")).row(0, named=True)
    assert out["llm_status"] == "none_of_these_walked"
    assert out["llm_category_id"] == leaf.id and out["llm_category_path"] == leaf.path
    assert out["llm_confidence"] == pytest.approx(0.5)

    reqs = fake.chat_requests
    assert (
        len(reqs) == 1 + 4
    )  # candidates, then the roots and the children at depths 2, 3, 4 (a leaf ends it)
    chain = amazon_tax.ancestors(leaf.id)  # root first
    expected_levels = [amazon_tax.roots()] + [amazon_tax.children(a.id) for a in chain]
    for req, level in zip(reqs[1:], expected_levels, strict=True):
        opts = options_of(req.body)
        assert [opts[i] for i in range(1, len(opts))] == [n.path for n in level]
        assert req.body["temperature"] == 0
    assert "Stop here" in options_of(reqs[2].body)[0]
    assert arb.stats.walk_questions == 4
    log = arb.decisions_frame()
    assert log["step"].to_list() == ["candidates", "walk:1", "walk:2", "walk:3", "walk:4"]
    assert log["status"].to_list() == [
        "none_of_these",
        "walk_step",
        "walk_step",
        "walk_step",
        "none_of_these_walked",
    ]


def test_walk_stops_at_an_inner_node_and_is_bounded(fake, amazon_tax, amazon_items, store):
    inner = next(n for n in amazon_tax if n.depth == 2 and not n.is_leaf)
    fake.responder = walker(inner.path)
    arb = LLMArbiter(settings(fake), amazon_tax, store_path=store)
    out = arb.decide(amazon_items.head(1).drop("true_id")).row(0, named=True)
    assert (out["llm_status"], out["llm_category_id"]) == ("none_of_these_walked", inner.id)
    assert len(fake.chat_requests) == 4  # candidates, roots, children of root, "stop here" at inner

    deep = next(n for n in amazon_tax.leaves() if n.depth >= 4)
    fake.responder = walker(deep.path)
    arb2 = LLMArbiter(settings(fake, walk_max_depth=2), amazon_tax, store_path=store)
    out2 = arb2.decide(amazon_items.slice(1, 1).drop("true_id")).row(0, named=True)
    assert out2["llm_category_id"] == amazon_tax.ancestors(deep.id)[1].id  # stopped at depth 2


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
# gate, calibration, rate limit
# --------------------------------------------------------------------------------------------------
def test_gate_selects_low_confidence_or_low_margin():
    s = LLMSettings(confidence_below=0.6, margin_below=0.1)
    conf = np.array([0.95, 0.55, 0.9, 0.7, np.nan, 0.6])
    margin = np.array([0.5, 0.5, 0.05, 0.1, 0.5, 0.3])
    mask = gate(conf, margin, settings=s)
    assert mask.tolist() == [False, True, True, False, True, False]
    assert mask.mean() == pytest.approx(0.5)


def test_calibrate_on_labelled_items_is_stored_and_reused(fake, amazon_tax, amazon_items, store):
    items = amazon_items.head(12)
    # the model is right (choice 1) with p=0.9 on 8 items, wrong (choice 2) with p=0.9 on 4
    fake.script(*[{"answer": {"choice": 1 if i % 3 else 2, "reason": "x"}, "p": 0.9} for i in range(12)])
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    decided = arb.decide(items.drop("true_id"))
    truth = items.select("sku_id", pl.col("true_id").alias("category_id"))
    cal = arb.calibrate(decided, truth)
    assert cal["n"] == 12 and cal["accuracy"] == pytest.approx(8 / 12)
    assert cal["brier_after"] < cal["brier_before"]
    fresh = LLMArbiter(
        settings(fake), amazon_tax, store_path=store
    )  # new run, same model: calibration applies
    again = fresh.decide(items.drop("true_id"))
    assert again["llm_confidence"].to_list() == pytest.approx([8 / 12] * 12)
    assert again["llm_confidence_raw"].to_list() == pytest.approx([0.9] * 12)
    assert again["llm_confidence_source"][0] == "logprobs+calibrated"
    # Platt scaling instead; a bad method name is refused with the allowed values
    platt = fresh.calibrate(again, truth, method="platt")
    assert platt["method"] in ("platt", "constant") and platt["brier_after"] <= platt["brier_before"] + 1e-9
    with pytest.raises(ConfigError, match="use .isotonic. or .platt."):
        fresh.calibrate(again, truth, method="beta")


def test_requests_per_minute_limit_waits(fake, amazon_tax, amazon_items, store):
    # 2 requests per minute: the third waits for the window to move; a fake clock keeps the test fast
    from classifiers._llm_transport import RateLimiter

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


def test_stale_candidates_are_never_offered_and_no_candidates_means_walk(
    fake, amazon_tax, amazon_items, store
):
    row = amazon_items.head(1).drop("true_id").row(0, named=True)
    stale = {"category_id": "p-deadbeef0000", "category_path": "Old > Gone", "score": 0.5}
    items = pl.DataFrame(
        [
            {**row, "sku_id": "stale", "candidates": [stale, *row["candidates"]]},
            {**row, "sku_id": "empty", "title": "Something else", "candidates": []},
        ]
    )
    arb = LLMArbiter(settings(fake, max_concurrency=1), amazon_tax, store_path=store)
    out = by_sku(arb.decide(items))
    first = options_of(fake.chat_requests[0].body)
    assert "Old > Gone" not in first.values() and first[1] == row["candidates"][0]["category_path"]
    assert out["stale"]["llm_category_id"] == row["candidates"][0]["category_id"]
    # no usable candidates: the first question is already the walk from the roots
    assert [o for n, o in options_of(fake.chat_requests[1].body).items() if n] == [
        r.path for r in amazon_tax.roots()
    ]
    assert out["empty"]["llm_status"] == "none_of_these_walked"


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
