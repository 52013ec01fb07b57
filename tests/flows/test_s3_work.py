"""Staged shards and prediction parts on S3 (`work_url = s3://...`), against moto's S3 server on 127.0.0.1:
workers on other machines read and write them there; the night gives the same predictions as local."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from shelfwise import night as nights
from shelfwise import pipeline
from shelfwise.settings import Settings

pytest.importorskip("s3fs")
pytest.importorskip("moto")
BUCKET = "shelfwise-nights"


@pytest.fixture
def s3_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server_ports: tuple[Any, Any]
) -> Iterator[str]:
    free_port, wait_for_port = server_ports
    port = free_port()
    moto = str(Path(sys.executable).with_name("moto_server"))
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        wait_for_port(port, tmp_path / "moto.log")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(BUCKET)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_a_night_staged_on_s3_equals_the_local_night(
    amazon_night: dict[str, Path], tmp_path: Path, s3_server: str
) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    local = nights.classify_catalog(
        model_dir=amazon_night["model"],
        catalog=amazon_night["night"],
        out=tmp_path / "local.parquet",
        settings=Settings(state_dir=tmp_path / "local", shard_size=200),
        enqueue=False,
    )

    settings = Settings(state_dir=tmp_path / "s3", shard_size=200, work_url=f"s3://{BUCKET}/nights")
    staged = pipeline.stage_night(amazon_night["night"], settings=settings, model_dir=amazon_night["model"])
    assert staged.shards and all(u.startswith(f"s3://{BUCKET}/nights/") for u in staged.shards)
    assert len(fs.ls(f"{BUCKET}/nights/{staged.night_key}/shards")) == 3
    run_id = "20260101T000000Z-s3test"
    # the night's steps as the flow runs them: score each distinct content once (parts on S3), then shards
    scored = [
        pipeline.score_distinct(t, settings)
        for t in pipeline.distinct_tasks(staged, model_dir=amazon_night["model"], run_id=run_id)
    ]
    assert scored and all(r.predictions_url.startswith(f"s3://{BUCKET}/nights/") for r in scored)
    assert fs.ls(f"{BUCKET}/nights/{staged.night_key}/scores")
    tasks = pipeline.shard_tasks(staged, model_dir=amazon_night["model"], run_id=run_id)
    results = [pipeline.run_shard(t, settings) for t in tasks]
    assert len(fs.ls(f"{BUCKET}/nights/{staged.night_key}/predictions")) == 6  # parts + their counters
    again = pipeline.run_shard(tasks[0], settings)  # a retried task returns the finished result
    assert again == results[0]
    request = nights.NightRequest(
        source=nights.CatalogSource(catalog=str(amazon_night["night"])),
        model_dir=str(amazon_night["model"]),
        out=str(tmp_path / "s3.parquet"),
        enqueue=False,
        report=False,
        may_train=False,
    )
    night = nights.begin_night(request, settings, run_id=run_id)
    summary = nights.finish_night(night, settings, staged, results, scored=scored)
    assert not fs.exists(f"{BUCKET}/nights/{staged.night_key}"), "the night's S3 prefix is removed at the end"
    cols = ["sku_id", "category_id", "confidence", "route", "candidates"]
    a = pl.read_parquet(tmp_path / "local.parquet").sort("sku_id").select(cols)
    b = pl.read_parquet(tmp_path / "s3.parquet").sort("sku_id").select(cols)
    assert a.equals(b) and summary.counts.classified == local.counts.classified == 600
