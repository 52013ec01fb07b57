"""Reports on runs whose sources are missing or empty; the CLI; the small statistics."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score

from shelfwise.errors import ConfigError
from shelfwise.reports import cohen_kappa, jensen_shannon, psi, read_history, wilson_interval, write_report
from shelfwise.settings import Settings

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _copy_run(nights: Any, dest: Path, *, index: int = 0, **changes: Any) -> tuple[Settings, str]:
    """A copy of a real run in a fresh state folder (no queue DB, no history), with summary changes."""
    src = nights.runs[index]
    settings = Settings(state_dir=dest)
    run_dir = settings.runs_dir / src["run_id"]
    run_dir.mkdir(parents=True)
    pred = run_dir / "predictions.parquet"
    shutil.copy(src["predictions_path"], pred)
    summary = {**src, "predictions_path": str(pred), "previous_run_id": None, **changes}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return settings, src["run_id"]


@pytest.mark.slow
def test_every_section_renders_without_queue_taxonomy_or_previous_run(nights: Any, tmp_path: Path) -> None:
    settings, run_id = _copy_run(nights, tmp_path / "state", model_dir=str(tmp_path / "no-model"))
    html = write_report(run_id, settings=settings).read_text()
    assert "No audit answers yet" in html and "no audit answers yet" in html
    assert "no review queue database yet" in html
    assert "could not be loaded" in html  # the taxonomy
    assert "first run" in html
    assert html.count('class="note"') >= 4  # "What is missing" in most sections
    assert not (tmp_path / "state" / "queue.db").exists(), "reading a report never creates the queue DB"
    assert read_history(settings).height == 1


@pytest.mark.slow
def test_a_run_with_no_products_still_gets_a_report(nights: Any, tmp_path: Path) -> None:
    from shelfwise.pipeline import PredictionWriter

    settings, run_id = _copy_run(nights, tmp_path / "state")
    run_dir = settings.runs_dir / run_id
    PredictionWriter(run_dir / "predictions.parquet").close()  # a valid, empty predictions file
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["counts"] = {"seen": 0, "classified": 0, "quarantined": 0, "queued": {}}
    summary["quarantine_path"] = None
    (run_dir / "summary.json").write_text(json.dumps(summary))
    html = write_report(run_id, settings=settings).read_text()
    assert "Tonight 0 products were classified" in html
    (run_dir / "predictions.parquet").unlink()  # and with the file gone
    html = write_report(run_id, settings=settings).read_text()
    assert "predictions file" in html and "is missing" in html


@pytest.mark.slow
def test_cli_writes_the_latest_report_where_asked(nights: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            SHELFWISE,
            "report",
            "--run",
            "latest",
            "--out",
            str(out),
            "--state-dir",
            str(nights.settings.state_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "report.html").is_file() and (out / "churn.parquet").is_file()
    assert nights.runs[-1]["run_id"] in (out / "report.html").read_text()
    # re-reporting a run replaces its history row instead of adding one
    assert read_history(nights.settings)["run_id"].to_list() == [r["run_id"] for r in nights.runs]


def test_unknown_run_names_the_missing_file_and_the_fix(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"no finished run in .*runs.*shelfwise run"):
        write_report("latest", settings=settings)
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"nope/summary.json does not exist; recent runs: r1"):
        write_report("nope", settings=settings)
    (tmp_path / "runs" / "r1" / "summary.json").write_text('{"run_id": ')
    with pytest.raises(ConfigError, match=r"r1/summary.json line 1: not valid JSON"):
        write_report("r1", settings=settings)
    summary = {
        "run_id": "r1",
        "started_at": "a",
        "finished_at": "b",
        "catalog": "c.csv",
        "taxonomy_version": "t",
        "model_version": "m",
        "model_dir": "models/m",
    }  # no predictions_path
    (tmp_path / "runs" / "r1" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"r1/summary.json: field 'predictions_path': Field required"):
        write_report("r1", settings=settings)


def test_statistics_agree_with_scipy_and_sklearn() -> None:
    for k, n in ((0, 10), (7, 10), (10, 10), (96, 100), (1, 3)):
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high))
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    a = ["x", "x", "y", "z", "y", "x", "z", "z"]
    b = ["x", "y", "y", "z", "y", "x", "x", "z"]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa(["x"] * 4, ["x"] * 4) == 1.0
    p, q = {"a": 10, "b": 30, "c": 60}, {"a": 20, "b": 30, "c": 40, "d": 10}
    keys = ["a", "b", "c", "d"]
    expected = jensenshannon([p.get(k, 0) for k in keys], [q.get(k, 0) for k in keys], base=2) ** 2
    assert jensen_shannon(p, q) == pytest.approx(expected)
    assert jensen_shannon(p, p) == pytest.approx(0.0) and jensen_shannon({"a": 1}, {"b": 1}) == pytest.approx(
        1.0
    )
    assert psi(p, p) == pytest.approx(0.0) and psi(p, q) > 0.1
    # PSI by hand for two bins: sum((a - e) * ln(a / e))
    assert psi({"a": 50, "b": 50}, {"a": 60, "b": 40}) == pytest.approx(
        (0.6 - 0.5) * math.log(0.6 / 0.5) + (0.4 - 0.5) * math.log(0.4 / 0.5)
    )


def test_trend_runs_must_allow_a_trend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="trend_runs=1"):
        write_report("latest", settings=Settings(state_dir=tmp_path), trend_runs=1)
