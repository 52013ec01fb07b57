"""Work kept across a kill: `shelfwise run` SIGKILLed while it embeds, and again while it scores, keeps
every embedding and every score batch it had written; the clean rerun computes only the rest.

The night's 1,200 distinct contents make one score task (up to 2,000 contents) of three score batches
(500 rows each), so both kills fall inside it and the rerun runs every task itself: its summary counts
exactly what it computed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import psutil
import pytest

from shelfwise.summary import RunSummary

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))
NIGHT = 1_200  # SKUs in the night, each with its own content


def _env(state: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect"), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    return env


@pytest.fixture(scope="module")
def kill_night(real_data: Path, build_once: Callable[..., Path]) -> dict[str, Path]:
    """A model trained on 500 real Amazon UK products, and a night of 1,200 SKUs with 1,200 distinct
    contents (real titles of 400 other products, and pack-size variants of them)."""

    def build(work: Path) -> None:
        df = pl.read_parquet(real_data / "catalogs" / "amazon_uk.parquet").unique("title", keep="first")
        df = df.sample(fraction=1.0, shuffle=True, seed=5)
        df.head(500).write_parquet(work / "labelled.parquet")
        rest = df.slice(500, 400)
        variants = [rest] + [
            rest.with_columns(pl.col("sku_id") + f"-pack{k}", pl.col("title") + f" (pack of {k})")
            for k in (2, 3)
        ]
        pl.concat(variants).drop("category_path").write_parquet(work / "night.parquet")
        subprocess.run(
            [
                SHELFWISE,
                "train",
                "--taxonomy",
                str(real_data / "taxonomies" / "amazon_uk_categories.txt"),
                "--catalog",
                str(work / "labelled.parquet"),
                "--model-dir",
                str(work / "model"),
                "--state-dir",
                str(work / "train-state"),
            ],
            check=True,
            capture_output=True,
            env=_env(work / "train-state"),
            timeout=900,
        )

    work = build_once("kill-keeps-work", build)
    return {"model": work / "model", "night": work / "night.parquet"}


def _args(state: Path, night: dict[str, Path]) -> list[str]:
    return [
        SHELFWISE,
        "run",
        "--state-dir",
        str(state),
        "--model-dir",
        str(night["model"]),
        "--catalog",
        str(night["night"]),
        "--workers",
        "1",
    ]


def _cached(state: Path) -> int:
    """Embeddings in the state's cache file now (read while a run writes: WAL allows a reader)."""
    path = state / "cache" / "embeddings.sqlite"
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def _score_parts(state: Path) -> list[Path]:
    return sorted((state / "work").glob("*/scores/*.parquet"))


def _score_batches(state: Path) -> list[Path]:
    return sorted((state / "work").glob("*/scores/*.parquet.batches/*.parquet"))


def _kill_when(args: list[str], state: Path, ready: Callable[[], bool], timeout: float = 600) -> set[int]:
    """Start the run, SIGKILL it once ``ready()`` holds; the pids it had started then."""
    proc = subprocess.Popen(args, env=_env(state), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.1)
    children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return children


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_killed_night_keeps_its_embeddings_and_score_batches(
    kill_night: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    args = _args(state, kill_night)
    # 1st kill: mid-embedding, once 300 texts are in the cache and no score batch is written yet
    left = _kill_when(args, state, lambda: _cached(state) >= 300 and not _score_batches(state))
    after_first = _cached(state)
    assert after_first >= 300 and not _score_parts(state), (
        "embeddings reach the cache batch by batch, before the task that computes them ends"
    )
    # 2nd kill: once the first score batch of the first task is written, before that task ends
    left |= _kill_when(args, state, lambda: bool(_score_batches(state)))
    kept_batches = len(_score_batches(state))
    after_second = _cached(state)
    assert kept_batches >= 1 and not _score_parts(state)
    assert after_second >= after_first, "the second run kept what the first had written"
    for pid in left:  # no process of a killed run lives on
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, f"process {pid} of a killed run outlived it"
            time.sleep(0.5)

    done = subprocess.run(args, env=_env(state), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = RunSummary.load(next((state / "runs").glob("*/summary.json")))
    final = _cached(state)
    # the clean run encoded exactly the texts no killed run had stored: nothing stored was computed again
    assert summary.embedding.misses == final - after_second
    assert summary.embedding.misses < final - 300
    # and scored only the contents outside the kept score batches
    assert summary.embedding.distinct_contents == NIGHT
    assert summary.counts.distinct_scored == NIGHT - 500 * kept_batches
    pred = pl.read_parquet(summary.predictions_path)
    assert pred.height == NIGHT and pred["sku_id"].n_unique() == NIGHT, "every SKU predicted once"
    assert not _score_batches(state), "finished parts leave no batch files behind"
