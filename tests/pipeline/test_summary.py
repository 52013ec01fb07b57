"""The typed run summary: one rendering for the CLI and the artifact, old readers' keys kept on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shelfwise.errors import ConfigError
from shelfwise.summary import RunSummary


def _summary() -> RunSummary:
    return RunSummary.model_validate(
        {
            "run_id": "20260101T020000Z-abc123",
            "started_at": "2026-01-01T02:00:00+00:00",
            "finished_at": "2026-01-01T02:04:00+00:00",
            "catalog": "night.parquet",
            "taxonomy_version": "sha256:t",
            "model_version": "m1",
            "model_dir": "models/default",
            "predictions_path": "runs/x/predictions.parquet",
            "counts": {
                "seen": 1003,
                "new": 10,
                "changed": 5,
                "unchanged": 985,
                "classified": 1000,
                "quarantined": 3,
                "quarantine_reasons": {"missing_title": 3},
                "auto": 900,
                "review": 80,
                "suspect": 20,
                "queued": {"low_confidence": 15, "suspect": 7, "llm_failed": 0, "audit": 2},
                "carried": 985,
                "rescored": 15,
                "distinct_scored": 12,
            },
            "enqueue": {"superseded": {"suspect": 4}, "dropped_over_capacity": {"low_confidence": 65}},
            "incremental": {
                "mode": "incremental",
                "reason": "same model",
                "carried": 985,
                "rescored": 15,
                "new": 10,
            },
            "engine": {"runner": "dask", "address": "tcp://10.0.0.5:8786"},
            "shards": 1,
            "seconds": 12.5,
        }
    )


def test_rows_say_what_a_reader_needs_once() -> None:
    s = _summary()
    rows = dict(s.rows())
    assert rows["new / changed / unchanged"] == "10 / 5 / 985"
    assert rows["re-scored / distinct contents scored"] == "15 / 12"
    assert rows["queued: low_confidence / suspect / llm_failed / audit"] == "15 / 7 / 0 / 2"
    assert rows["not queued (over nightly capacity)"] == "65"
    assert rows["stale queue items closed (now auto-accepted)"] == "4"
    assert rows["engine"] == "Dask at tcp://10.0.0.5:8786, 1 shards"
    md = s.markdown()
    assert all(f"| {name} | {value} |" in md for name, value in s.rows())
    assert "quarantine reasons: missing_title: 3" in md


def test_written_once_read_back_typed_with_the_old_keys(tmp_path: Path) -> None:
    s = _summary()
    path = s.write(tmp_path / "run")
    raw = json.loads(path.read_text())
    for key in (
        "run_id",
        "counts",
        "llm",
        "embedding",
        "enqueue",
        "thresholds",
        "predictions_path",
        "quarantine_path",
        "previous_run_id",
        "model_dir",
        "started_at",
        "finished_at",
    ):
        assert key in raw
    assert raw["counts"]["queued"]["audit"] == 2 and raw["embedding"] == {
        "hits": 0,
        "misses": 0,
        "seconds": 0.0,
        "distinct_contents": 0,
        "score_step_seconds": 0.0,
    }
    back = RunSummary.load(path)
    assert back == s and back["counts"]["carried"] == 985
    (tmp_path / "bad.json").write_text('{"run_id": 1')
    with pytest.raises(ConfigError, match="bad.json: not a valid run summary"):
        RunSummary.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        RunSummary.load(tmp_path / "missing.json")
