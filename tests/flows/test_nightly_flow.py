"""The README's demo command, end to end through Prefect's temporary local server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def _run(state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect")}
    proc = subprocess.run(
        [SHELFWISE, "run", "--sample", "--state-dir", str(state), *extra],
        capture_output=True,
        text=True,
        timeout=1200,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"shelfwise run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.mark.slow
def test_nightly_run_on_the_bundled_sample_twice(tmp_path: Path, sample_data: Path) -> None:
    state = tmp_path / "state"
    first = _run(state)
    runs = sorted(p.parent for p in (state / "runs").glob("*/summary.json"))
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    pred = pl.read_parquet(summary["predictions_path"])
    catalog_rows = pl.read_csv(sample_data / "sample" / "catalog.csv", infer_schema=False).height
    c = summary["counts"]
    # every catalog row is either predicted or quarantined, never lost
    assert pred.height + c["quarantined"] == catalog_rows
    assert c["quarantined"] >= 1 and sum(c["quarantine_reasons"].values()) == c["quarantined"]
    assert c["auto"] + c["review"] + c["suspect"] == pred.height
    assert set(pred["route"].unique()) <= {"auto", "review", "suspect"}
    assert c["suspect"] >= 1, "the sample's misfiled products should be flagged"
    assert (state / "models" / "default").is_dir(), "the run trains a model when none exists"
    assert "trained model" in first.stdout + first.stderr
    shown = first.stdout + first.stderr
    assert shown.count("kept human decisions") == 1, "the night's summary is shown once (the CLI's table)"
    report = summary.get("report")
    assert report and Path(report).exists()

    second = _run(state)
    runs = sorted(p.parent for p in (state / "runs").glob("*/summary.json"))
    assert len(runs) == 2
    s2 = json.loads((runs[-1] / "summary.json").read_text())
    assert s2["embedding"]["misses"] == 0, "an unchanged catalog embeds nothing the second time"
    assert s2["counts"]["unchanged"] == pred.height
    assert "trained model" not in second.stdout + second.stderr, "an existing model is reused"
    assert s2["previous_run_id"] == runs[0].name
