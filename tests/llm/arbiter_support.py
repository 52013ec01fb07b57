"""Helpers shared by the LLM arbiter tests (test_arbiter.py, test_arbiter_endpoint.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
from fake_openai import FakeOpenAI, options_of, prompt_of

from classifiers.llm import LLMSettings

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_concurrency": 2}


def settings(fake: FakeOpenAI | None, **kw: Any) -> LLMSettings:
    base = {"model": "test-model", **FAST, **kw}
    if fake is not None:
        base["base_url"] = fake.base_url
    return LLMSettings(**base)


def by_sku(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["sku_id"]: r for r in frame.iter_rows(named=True)}


def walker(target_path: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
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
