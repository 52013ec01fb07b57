"""What the LLM arbiter decides: answers accepted or sent to review, the prompt, the cache, confidence,
budgets, the walk down the taxonomy, the gate and calibration. Against a real HTTP server on 127.0.0.1
speaking the OpenAI protocol (tests/llm/fake_openai.py), on real Amazon UK products and the real Amazon
UK taxonomy. How it talks to the endpoint (retries, output modes, outages, Batch API, rate limits):
test_arbiter_endpoint.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import polars as pl
import pytest
from arbiter_support import by_sku, settings, walker
from fake_openai import options_of, prompt_of

from classifiers.llm import LLMArbiter, LLMSettings, gate
from shelfwise.errors import ConfigError


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
# gate, calibration, stale candidates
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
