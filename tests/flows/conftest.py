"""Fixtures of the flow tests: a model trained once on real Amazon UK products, a night's catalog,
and helpers to run `shelfwise run` as a user does (a subprocess, own state folder)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

SHELFWISE = str(Path(sys.executable).with_name("shelfwise"))


def run_cli(state: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(state / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run(
        [SHELFWISE, "run", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"shelfwise run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="session")
def amazon_night(real_data: Path, build_once: Callable[..., Path]) -> dict[str, Path]:
    """A model trained on 1,000 real Amazon UK products, and a catalog of 600 others (150 of them repeat
    another product's content under a new SKU id). The night's titles are embedded once here, so the
    runs of the tests read them from the cache (``fresh_state`` copies it). Built once per test run and
    read by the tests of both xdist workers (``build_once``)."""
    taxonomy = real_data / "taxonomies" / "amazon_uk_categories.txt"

    def build(work: Path) -> None:
        from shelfwise import night, pipeline
        from shelfwise.settings import Settings

        df = pl.read_parquet(real_data / "catalogs" / "amazon_uk.parquet").sample(
            fraction=1.0, shuffle=True, seed=11
        )
        df.head(1000).write_parquet(work / "labelled.parquet")
        tonight = df.slice(1000, 450)
        repeats = tonight.head(150).with_columns(pl.col("sku_id") + "-bis")
        pl.concat([tonight, repeats]).write_parquet(work / "night.parquet")
        settings = Settings(state_dir=work / "train-state")
        pipeline.train(
            taxonomy_path=taxonomy,
            catalog=work / "labelled.parquet",
            model_dir=work / "model",
            settings=settings,
        )
        night.classify_catalog(
            model_dir=work / "model",
            catalog=work / "night.parquet",
            out=work / "warm.parquet",
            settings=settings,
            enqueue=False,
        )

    work = build_once("amazon-night", build)
    return {
        "work": work,
        "model": work / "model",
        "night": work / "night.parquet",
        "taxonomy": taxonomy,
        "cache": work / "train-state" / "cache",
    }


def fresh_state(amazon_night: dict[str, Path], dest: Path) -> Path:
    """A state folder holding a copy of the trained model (as its default model) and of the warm cache."""
    state = dest / "state"
    shutil.copytree(amazon_night["model"], state / "models" / "default")
    shutil.copytree(amazon_night["cache"], state / "cache")
    return state


@pytest.fixture(scope="session")
def threads_night(amazon_night: dict[str, Path], build_once: Callable[..., Path]) -> Path:
    """The summary.json of the `amazon_night` night run once by `shelfwise run --shard-size 150 --workers 2`
    (the thread runner): the reference the Dask tests compare their nights with. Built once per test run
    and read by the tests of both xdist workers (``build_once``), instead of once per test."""

    def build(work: Path) -> None:
        state = fresh_state(amazon_night, work)
        run_cli(state, "--catalog", str(amazon_night["night"]), "--shard-size", "150", "--workers", "2")

    work = build_once("threads-night", build)
    return next((work / "state" / "runs").glob("*/summary.json"))


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_cli(state, *args)`: `shelfwise run --state-dir state *args` as a subprocess (asserts success)."""
    return run_cli


@pytest.fixture
def new_state(amazon_night: dict[str, Path]) -> Callable[[Path], Path]:
    """`new_state(folder)`: a fresh state folder whose default model is the trained one."""
    return lambda dest: fresh_state(amazon_night, dest)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, log: Path, *, timeout: float = 60) -> None:
    """Block until a server accepts connections on ``port``; fail with its ``log`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)


@pytest.fixture
def server_ports() -> tuple[Callable[[], int], Callable[[int, Path], None]]:
    """`(free_port, wait_for_port)` for tests that start their own servers (Dask, moto S3)."""
    return free_port, wait_for_port
