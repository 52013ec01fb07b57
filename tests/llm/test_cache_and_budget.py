"""What the LLM cache keeps, whose it is, and budgets that hold across processes.

Real HTTP servers on 127.0.0.1 speaking the OpenAI protocol (tests/llm/fake_openai.py), real SQLite
files, a real PostgreSQL, real worker processes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fake_openai import FakeOpenAI

from classifiers.llm import LLMArbiter, LLMSettings, LLMStats, arbiter_for, close_arbiters, read_llm_log
from shelfwise.settings import Settings

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 2}
HERE = Path(__file__).resolve().parent


def _night(
    base_url: str, state_dir: Path, tax: Any, items: pl.DataFrame, **kw: Any
) -> tuple[pl.DataFrame, Any]:
    """One night's LLM step as the pipeline runs it: settings from the state folder, a fresh arbiter."""
    settings = Settings(state_dir=state_dir, llm={"base_url": base_url, "model": "night-model", **FAST, **kw})
    with LLMArbiter(settings.llm, tax, store_path=settings.llm.store_location(state_dir)) as arb:
        out = arb.decide(items, run_id=f"night-{uuid.uuid4().hex[:6]}")
        return out, arb.stats


def test_broken_answers_are_asked_again_every_night_until_one_validates(
    fake, amazon_tax, amazon_items, tmp_path
):
    """Issue 14: prose -> unknown ids -> 429 with Retry-After -> a good server, one state folder, one
    endpoint (so only what is cached decides whether a night asks)."""
    items = amazon_items.head(4).drop("true_id")
    state = tmp_path / "state"

    fake.responder = lambda body: {"content": "I think this is a lovely toy for children."}
    out, st = _night(fake.base_url, state, amazon_tax, items)
    assert out["llm_status"].to_list() == ["invalid_answer"] * 4 and st.calls == 4

    fake.responder = lambda body: {"answer": {"choice": 9, "reason": "made up"}}
    out, st = _night(fake.base_url, state, amazon_tax, items)
    assert out["llm_status"].to_list() == ["unknown_category"] * 4
    assert st.calls == 4 and st.cache_hits == 0 and len(fake.chat_requests) == 8

    fake.responder = lambda body: {"status": 429, "headers": {"Retry-After": "600"}}
    out, st = _night(fake.base_url, state, amazon_tax, items, breaker_failures=10)
    assert out["llm_status"].to_list() == ["failed_transient"] * 4
    assert "Retry-After 600s exceeds max_retry_after_s" in out["llm_reason"][0]
    assert st.calls == 4 and st.cache_hits == 0

    fake.responder = lambda body: {"answer": {"choice": 1, "reason": "fits"}}
    out, st = _night(fake.base_url, state, amazon_tax, items)
    assert out["llm_status"].to_list() == ["accepted"] * 4 and st.calls == 4
    assert out["llm_category_id"].to_list() == [c[0]["category_id"] for c in items["candidates"]]

    # the good answers are the only ones kept: the fifth night is served from the cache
    out, st = _night(fake.base_url, state, amazon_tax, items)
    assert out["llm_cached"].all() and st.calls == 0 and len(fake.chat_requests) == 16

    # every broken answer was logged (not cached), in the state folder's own log
    log = read_llm_log(state / "llm" / "llm.sqlite")
    assert (
        log.filter(pl.col("status") == "invalid_answer")["raw_answer"].str.contains("lovely toy").sum() == 4
    )
    assert (log["status"] == "unknown_category").sum() == 4
    assert log.filter(pl.col("cached"))["status"].unique().to_list() == ["accepted"]


def test_cache_key_includes_the_endpoint(amazon_tax, amazon_items, store):
    items = amazon_items.head(3).drop("true_id")
    with FakeOpenAI() as one, FakeOpenAI() as two:
        s1 = LLMSettings(base_url=one.base_url, model="same-name", **FAST)
        s2 = LLMSettings(base_url=two.base_url, model="same-name", **FAST)
        with LLMArbiter(s1, amazon_tax, store_path=store) as arb:
            arb.decide(items)
        with LLMArbiter(s2, amazon_tax, store_path=store) as arb:
            out = arb.decide(items)  # same model name, another server: asked, not served from one's answers
        assert len(two.chat_requests) == 3 and not out["llm_cached"].any()
        with LLMArbiter(s1, amazon_tax, store_path=store) as arb:
            assert arb.decide(items)["llm_cached"].all()
        assert len(one.chat_requests) == 3


def test_decide_keeps_the_arbiters_run_id_and_counts_per_call(fake, amazon_tax, amazon_items, store):
    with LLMArbiter(
        LLMSettings(base_url=fake.base_url, model="m", **FAST),
        amazon_tax,
        store_path=store,
        run_id="arbiter-run",
    ) as arb:
        _a, sa = arb.decide_counted(amazon_items.head(3).drop("true_id"), run_id="night-a")
        b, sb = arb.decide_counted(amazon_items.slice(3, 2).drop("true_id"), run_id="night-b")
        assert arb.run_id == "arbiter-run"
        assert (sa.calls, sa.items, sb.calls, sb.items) == (3, 3, 2, 2)
        total = LLMStats().add(sa).add(sb)
        assert (total.calls, total.items, total.statuses) == (arb.stats.calls, 5, {"accepted": 5})
        assert total.tokens_in == arb.stats.tokens_in > 0
        assert set(arb.decisions_frame()["run_id"]) == {"night-a", "night-b"}
    log = read_llm_log(store, run_id="night-b", final_only=True)
    assert log.height == 2 and set(log["sku_id"]) == set(b["sku_id"])


def test_read_llm_log_only_reads(tmp_path):
    missing = tmp_path / "nowhere" / "llm.sqlite"
    frame = read_llm_log(missing)
    assert frame.is_empty() and "raw_answer" in frame.columns and not missing.parent.exists()


def test_cache_path_setting_is_where_the_pipeline_keeps_it(amazon_tax, tmp_path):
    from shelfwise.pipeline import llm_arbiter

    tax = amazon_tax
    elsewhere = tmp_path / "elsewhere" / "answers.sqlite"
    settings = Settings(
        state_dir=tmp_path / "state", llm={"base_url": "http://127.0.0.1:9/v1", "cache_path": elsewhere}
    )
    arbiter, _note = llm_arbiter(settings, tax)
    try:
        assert arbiter.store.location == str(elsewhere) and elsewhere.is_file()
        assert not (tmp_path / "state" / "llm").exists()
    finally:
        arbiter.close()
    default = Settings(state_dir=tmp_path / "s2", llm={"base_url": "http://127.0.0.1:9/v1"})
    assert default.llm.store_location(default.state_dir) == str(tmp_path / "s2" / "llm" / "llm.sqlite")


def test_arbiter_is_built_per_process_and_never_pickled(fake, amazon_tax, tmp_path):
    settings = {"base_url": fake.base_url, "model": "m", "cache_path": str(tmp_path / "l.sqlite")}
    first = arbiter_for(settings, tmp_path / "model", amazon_tax)
    assert first is not None and arbiter_for(LLMSettings(**settings), tmp_path / "model", amazon_tax) is first
    with pytest.raises(TypeError, match="arbiter_for"):
        pickle.dumps(first)
    assert arbiter_for({"model": "m"}, tmp_path / "model", amazon_tax) is None  # LLM step off
    close_arbiters()
    assert arbiter_for(settings, tmp_path / "model", amazon_tax) is not first
    close_arbiters()


def _two_workers(
    tmp_path: Path,
    repo_root: Path,
    base_url: str,
    store: str,
    tax_path: Path,
    items: pl.DataFrame,
    budget: int,
) -> list[dict[str, Any]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    run_id = f"shared-{uuid.uuid4().hex[:8]}"
    go = tmp_path / "go"
    procs, specs = [], []
    for i, part in enumerate((items.head(items.height // 2), items.tail(items.height - items.height // 2))):
        part.write_parquet(tmp_path / f"items{i}.parquet")
        spec = {
            "base_url": base_url,
            "store": store,
            "run_id": run_id,
            "taxonomy": str(tax_path),
            "items": str(tmp_path / f"items{i}.parquet"),
            "model_dir": str(tmp_path / "model"),
            "budget_calls": budget,
            "ready": str(tmp_path / f"ready{i}"),
            "go": str(go),
            "out": str(tmp_path / f"out{i}.json"),
        }
        (tmp_path / f"spec{i}.json").write_text(json.dumps(spec))
        specs.append(spec)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "budget_worker.py"), str(tmp_path / f"spec{i}.json")],
                cwd=repo_root,
            )
        )
    deadline = time.monotonic() + 120
    while not all(Path(s["ready"]).exists() for s in specs):
        assert all(p.poll() is None for p in procs), "a worker died during start-up"
        assert time.monotonic() < deadline, "workers did not start within 120 s"
        time.sleep(0.05)
    go.write_text("go")  # both ask at the same moment
    for p in procs:
        assert p.wait(timeout=120) == 0
    return [json.loads(Path(s["out"]).read_text()) for s in specs]


def _slow_first_option(body: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.2)  # keeps both workers' requests in flight together
    return {"answer": {"choice": 1, "reason": "first"}}


def test_two_processes_share_one_budget_on_sqlite(amazon_tax_path, amazon_items, tmp_path, repo_root):
    items = amazon_items.head(16).drop("true_id")
    with FakeOpenAI(responder=_slow_first_option) as fake:
        results = _two_workers(
            tmp_path,
            repo_root,
            fake.base_url,
            str(tmp_path / "state" / "llm.sqlite"),
            amazon_tax_path,
            items,
            budget=5,
        )
        sent = len(fake.chat_requests)
    statuses = [s for r in results for s in r["statuses"]]
    # each worker alone would send 5 (10 together): the budget holds for both workers together
    assert sent == 5 == sum(r["calls"] for r in results)
    assert statuses.count("accepted") == 5 and statuses.count("skipped_budget") == 11


@pytest.mark.postgres
def test_two_processes_share_one_budget_and_cache_on_postgresql(
    amazon_tax, amazon_tax_path, amazon_items, tmp_path, repo_root, pg_url
):
    items = amazon_items.head(12).drop("true_id")
    with FakeOpenAI(responder=_slow_first_option) as fake:
        results = _two_workers(tmp_path, repo_root, fake.base_url, pg_url, amazon_tax_path, items, budget=4)
        assert len(fake.chat_requests) == 4 == sum(r["calls"] for r in results)
        answered = [s for r in results for s in r["statuses"]]
        assert answered.count("accepted") == 4 and answered.count("skipped_budget") == 8
        # the next run (its own run id and budget) finds the workers' 4 answers in the shared cache
        s = LLMSettings(base_url=fake.base_url, model="budget-model", cache_url=pg_url, **FAST)
        with LLMArbiter(s, amazon_tax, store_path=s.store_location()) as arb:
            run = f"next-{uuid.uuid4().hex[:6]}"
            out, st = arb.decide_counted(items, run_id=run)
        assert len(fake.chat_requests) == 4 + 8 and st.cache_hits == 4
    assert out["llm_status"].to_list() == ["accepted"] * 12
    log = read_llm_log(pg_url, run_id=run, final_only=True)  # the plain reader, on PostgreSQL
    assert log.height == 12 and log["cached"].sum() == 4


def test_an_incremental_night_asks_the_llm_again_for_what_it_could_not_settle(tmp_path):
    """An unchanged SKU keeps last night's prediction, except when the LLM left it unsettled."""
    from shelfwise.pipeline import CarryMode, plan_carry
    from shelfwise.predictions import PREDICTION_COLUMNS

    statuses = [
        "accepted",
        "invalid_answer",
        "unknown_category",
        "failed_transient",
        "skipped_budget",
        None,
    ]
    skus = [f"sku-{i}" for i in range(len(statuses))]
    last = pl.DataFrame({c: pl.Series(c, [None] * len(skus), dtype=pl.String) for c in PREDICTION_COLUMNS})
    last = last.with_columns(
        pl.Series("sku_id", skus),
        pl.Series("content_hash", [f"h{i}" for i in range(len(skus))]),
        pl.Series("current_category_path", ["Toys"] * len(skus)),
        pl.Series("source", ["llm", "model", "model", "model", "model", "model"]),
        pl.Series("llm_status", statuses, dtype=pl.String),
    )
    # last night's state of this bucket, read as the stage-bucket task reads it
    mode = CarryMode("incremental", "same model, taxonomy and routing", "night-1")
    plan = plan_carry(mode, last.lazy(), locked={})
    tonight = pl.DataFrame(
        {
            "sku_id": skus,
            "content_hash": [f"h{i}" for i in range(len(skus))],
            "category_path": ["Toys"] * len(skus),
        }
    )
    to_score, carried = plan.split(tonight)
    assert plan.mode == "incremental"
    assert sorted(carried["sku_id"]) == ["sku-0", "sku-5"]  # settled by the LLM, or never gated
    assert sorted(to_score["sku_id"]) == ["sku-1", "sku-2", "sku-3", "sku-4"]


def test_a_long_lived_arbiter_tries_a_down_endpoint_again_on_the_next_run(
    fake, amazon_tax, amazon_items, store
):
    """A worker's memoised arbiter outlives a night: the breaker opened last night closes on a new run id."""
    items = amazon_items.head(3).drop("true_id")
    s = LLMSettings(base_url=fake.base_url, model="m", breaker_failures=2, max_retries=0, **FAST)
    with LLMArbiter(s, amazon_tax, store_path=store) as arb:
        fake.responder = lambda body: {"status": 503, "json": {"error": {"message": "down"}}}
        night1 = arb.decide(items, run_id="night-1")
        assert night1["llm_status"].to_list() == ["failed_transient"] * 3 and arb.breaker.open
        fake.responder = lambda body: {"answer": {"choice": 1, "reason": "back"}}
        later = arb.decide(items, run_id="night-1")  # same run: the endpoint stays marked down
        assert later["llm_reason"].str.starts_with("not sent").all()
        night2 = arb.decide(items, run_id="night-2")
        assert night2["llm_status"].to_list() == ["accepted"] * 3 and not arb.breaker.open
