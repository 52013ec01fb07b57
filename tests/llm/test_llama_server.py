"""End to end against a real llama.cpp server (llama-cpp-python[server]) running SmolLM2-135M on 127.0.0.1.

Checks the protocol only: mode detection, constrained JSON output (json_object + schema), logprobs-based
confidence, caching. SmolLM2-135M is far too small to judge categories: nothing here measures accuracy.
Needs the optional extra `llm-server`; skipped without it unless SHELFWISE_REQUIRE_LLAMA=1.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from classifiers.llm import LlamaServer, LLMArbiter, LLMSettings, llama_server_available
from shelfwise.errors import TransientServiceError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

DECIDED = {"accepted", "none_of_these_walked"}


LOG_TAIL = 4000  # characters of the server's output attached to a failure


def _tail(log: Path) -> str:
    text = log.read_text(errors="replace") if log.is_file() else "(no log)"
    return text[-LOG_TAIL:]


# What a signal that killed the server has meant here (docs/development.md, "llama.cpp crashes").
_HINTS = {
    signal.SIGILL: (
        " (an instruction this CPU lacks: a llama-cpp-python wheel built for another machine's CPU, e.g."
        " one reused from pip's cache; rebuild it here with .ci/run)"
    ),
    signal.SIGSEGV: (
        " (measured on a CPU with AMX: llama.cpp's AMX int8 matmul segfaults on the first prompt of more"
        " than one token; .ci/run builds llama-cpp-python without AMX: rebuild it with .ci/run)"
    ),
}


def _death(server: LlamaServer, when: str) -> str:
    """Why the server is gone, in words: exit code or signal, and the tail of its own output."""
    assert server.proc is not None
    code = server.proc.returncode
    how = f"exited with code {code}"
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
        how += _HINTS.get(-code, "")
    tail = _tail(_log(server))
    return f"llama.cpp server (pid {server.proc.pid}) {how} {when}\n--- server log tail ---\n{tail}"


def _log(server: LlamaServer) -> Path:
    assert server.log_path is not None
    return server.log_path


# A chat prompt of a few dozen tokens: llama.cpp evaluates a prompt of more than one token as a batch,
# through other kernels than the one-token steps of generation (an AMX build answered a one-token prompt
# and died on the first real question: SIGSEGV), so readiness covers both.
WARM_UP = {
    "messages": [{"role": "user", "content": "Answer with one word. Is a kettle a kitchen appliance?"}],
    "max_tokens": 2,
    "temperature": 0,
}


def _warm_up(server: LlamaServer) -> None:
    """Ready means it computes, not only that it listens: a short chat prompt through the model."""
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(WARM_UP).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            assert resp.status == 200
    except OSError as exc:
        time.sleep(1)  # let a dying server finish dying, so its exit code is known
        if server.proc is not None and server.proc.poll() is not None:
            pytest.fail(_death(server, "on its first prompt"))
        pytest.fail(f"llama.cpp server did not complete one token: {exc}\n{_tail(_log(server))}")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama.cpp server for the module, ready before the first test: it answers GET /v1/models
    (LlamaServer.start) and has answered a short chat prompt."""
    why = llama_server_available()
    if why:
        if os.environ.get("SHELFWISE_REQUIRE_LLAMA") == "1":
            pytest.fail(f"SHELFWISE_REQUIRE_LLAMA=1 but {why}")
        pytest.skip(f"real llama.cpp test needs the 'llm-server' extra: {why}")
    log = tmp_path_factory.mktemp("llama") / "server.log"
    server = LlamaServer(log=log, n_threads=1)
    try:
        server.start(timeout_s=300)
    except (TransientServiceError, OSError) as exc:
        pytest.fail(f"llama.cpp server did not start: {exc}\n--- server log tail ({log}) ---\n{_tail(log)}")
    try:
        _warm_up(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def llama_alive(llama: LlamaServer, request: pytest.FixtureRequest) -> Iterator[None]:
    """The server is alive before each test; its output's tail goes with any failure of the test
    (tests/conftest.py: service_log), and a server that died during the test fails it with the reason."""
    assert llama.proc is not None
    if llama.proc.poll() is not None:
        pytest.fail(_death(llama, "before this test"))
    request.node.user_properties.append(("service_log", f"llama.cpp server={_log(llama)}"))
    yield
    if llama.proc.poll() is not None:
        pytest.fail(_death(llama, "during this test"))


# One question takes ~15-30 s with logits_all on an idle core, but measured 210 s on 2 cores shared with
# the other xdist worker and a loaded machine: a shorter client timeout turns load into a retry (and a
# failed `retries == 0`), so the request timeout is generous and the tests' own timeout above it.
REQUEST_TIMEOUT_S = 600


def _settings(llama: LlamaServer, **kw: Any) -> LLMSettings:
    # bounded work: SmolLM2 sometimes answers "none of these"; one walk level is enough to test the protocol
    base = {"base_url": llama.base_url, "model": "smollm2", "timeout_s": REQUEST_TIMEOUT_S}
    base["max_concurrency"] = 1
    return LLMSettings(**{**base, "max_tokens": 60, "walk_max_depth": 1, **kw})


def test_arbiter_end_to_end_on_llama_cpp(
    llama: LlamaServer, amazon_tax: Any, amazon_items: Any, tmp_path: Path
):
    items = amazon_items.head(1).drop("true_id")  # ~20 s per question with logits_all on 2 shared cores
    arb = LLMArbiter(_settings(llama), amazon_tax, store_path=tmp_path / "llm.sqlite")
    out = arb.decide(items)
    st = arb.stats
    print(out.to_dicts(), st)

    # mode detection: llama.cpp refuses response_format json_schema (HTTP 500), json_object + schema works
    assert st.mode == "json_object", st.notes
    assert any("output mode json_schema refused" in n for n in st.notes)
    # protocol: every item got an answer, no transport failures
    assert st.failed == 0 and not st.breaker_open and st.retries == 0
    # constrained output: the grammar makes every answer valid JSON with an offered option number
    assert set(out["llm_status"]) <= DECIDED, out["llm_reason"].to_list()
    for cid in out["llm_category_id"]:
        assert cid in amazon_tax
    # logprobs: the confidence comes from the answer token's probability
    assert (out["llm_confidence_source"] == "logprobs").all()
    assert all(0.0 < c <= 1.0 for c in out["llm_confidence"].to_list())
    assert st.tokens_in > 0 and st.tokens_out > 0 and st.latency_ms_p50 is not None

    log = arb.decisions_frame()
    assert log["raw_answer"].str.contains('"choice"').all() and (log["mode"] == "json_object").all()

    # the next run costs nothing
    again = LLMArbiter(_settings(llama), amazon_tax, store_path=tmp_path / "llm.sqlite")
    out2 = again.decide(items)
    assert again.stats.calls == 0 and out2["llm_cached"].all()
    assert out2["llm_category_id"].to_list() == out["llm_category_id"].to_list()


def test_forced_tool_call_on_llama_cpp(
    llama: LlamaServer, amazon_tax: Any, amazon_items: Any, tmp_path: Path
):
    arb = LLMArbiter(
        _settings(llama, output_mode="tools", logprobs=False), amazon_tax, store_path=tmp_path / "llm.sqlite"
    )
    out = arb.decide(amazon_items.slice(2, 1).drop("true_id"))
    assert set(out["llm_status"]) <= DECIDED, out["llm_reason"].to_list()
    assert arb.stats.mode == "tools" and arb.stats.failed == 0
    assert out["llm_confidence_source"][0] == "agreement"
