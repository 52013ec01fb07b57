"""LLM figures in the report: a night with the LLM step on, against a scripted OpenAI-protocol server on
127.0.0.1 (the only faked part: the LLM provider)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest

from shelfwise.reports import read_history, write_report
from shelfwise.settings import Settings

pytestmark = pytest.mark.slow


def _fake_openai(repo_root: Path) -> ModuleType:
    """The LLM tests' fake server (tests/llm/fake_openai.py), loaded by path."""
    if "fake_openai" in sys.modules:
        return sys.modules["fake_openai"]
    spec = importlib.util.spec_from_file_location(
        "fake_openai", repo_root / "tests" / "llm" / "fake_openai.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_openai"] = module
    spec.loader.exec_module(module)
    return module


def test_llm_calls_tokens_and_cost_are_reported(
    nights: Any, repo_root: Path, shared_data: Path, tmp_path: Path
) -> None:
    from shelfwise import night

    server = _fake_openai(repo_root).FakeOpenAI()
    try:
        settings = Settings(
            state_dir=tmp_path / "state", llm={"base_url": server.base_url, "api_key": "test"}
        )
        summary = night.classify_catalog(
            night.CatalogSource(catalog=str(nights.work / "night1.csv"), images_root=str(shared_data)),
            model_dir=nights.work / "model",
            out=tmp_path / "pred.parquet",
            settings=settings,
        )
        html_path = write_report(summary["run_id"], settings=settings)
    finally:
        server.close()
    llm = summary["llm"]
    pred = pl.read_parquet(tmp_path / "pred.parquet")
    asked = pred.filter(pl.col("llm_status").is_not_null())
    assert llm["calls"] == len(server.chat_requests) > 0
    row = read_history(settings).row(0, named=True)
    assert row["llm_calls"] == llm["calls"]
    assert row["llm_tokens"] == llm["tokens_in"] + llm["tokens_out"] > 0
    assert row["llm_cost_usd"] == pytest.approx(llm["cost_usd"]) and llm["cost_usd"] > 0
    outcomes = pl.read_parquet(html_path.parent / "llm_outcomes.parquet")
    assert dict(outcomes.select("status", "answers").iter_rows()) == dict(
        asked.group_by("llm_status").agg(pl.len()).iter_rows()
    )
    html = html_path.read_text()
    assert f"The LLM looked at {asked.height} uncertain products ({llm['calls']} calls" in html
    assert f"${llm['cost_usd']:.4f}" in html
