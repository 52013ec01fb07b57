"""Catalogs that arrive in many files: a folder, a glob, an s3:// prefix; formats mixed; a sku_id repeated
in a later part is quarantined naming the file and row that kept it; parts are read one at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from shelfwise.catalog import (
    Quarantine,
    catalog_fingerprint,
    catalog_parts,
    iter_catalog,
    read_catalog,
    row_ranges,
)
from shelfwise.errors import CatalogError


def _rows(flipkart_tidy: pl.DataFrame, start: int, n: int) -> pl.DataFrame:
    return flipkart_tidy.select("sku_id", "title", "category_path").slice(start, n)


@pytest.fixture
def parts_folder(tmp_path: Path, flipkart_tidy: pl.DataFrame) -> Path:
    """Three parts in three formats (CSV, Parquet, JSONL) plus files a folder listing must skip. Part 1
    repeats an id of part 0 (its row 7), part 2 an id of part 1 (its row 3)."""
    folder = tmp_path / "tonight"
    (folder / "sub").mkdir(parents=True)
    p0, p1, p2 = _rows(flipkart_tidy, 0, 40), _rows(flipkart_tidy, 40, 30), _rows(flipkart_tidy, 70, 20)
    p1 = pl.concat([p1, p0[6:7].with_columns(pl.col("title") + " (seller 2)")])  # part 1 row 31
    p2 = pl.concat([p1[2:3], p2])  # part 2 row 1 repeats part 1 row 3
    p0.write_csv(folder / "part-00000.csv")
    p1.write_parquet(folder / "part-00001.parquet")
    (folder / "sub" / "part-00002.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in p2.to_dicts()), encoding="utf-8"
    )
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00003.csv.crc").write_text("junk")
    (folder / "README.md").write_text("not a catalog")
    return folder


def test_a_folder_of_mixed_parts_reads_as_one_catalog(
    parts_folder: Path, flipkart_tidy: pl.DataFrame
) -> None:
    parts = [Path(p.name).relative_to(parts_folder).as_posix() for p in catalog_parts(parts_folder)]
    assert parts == ["part-00000.csv", "part-00001.parquet", "sub/part-00002.jsonl"]
    q = Quarantine(None)
    frame = read_catalog(parts_folder, quarantine=q, shard_size=25)
    expected = _rows(flipkart_tidy, 0, 90)
    expected.write_parquet(parts_folder.parent / "one.parquet")
    one_file = read_catalog(parts_folder.parent / "one.parquet")
    assert frame.drop("row_number").equals(one_file.drop("row_number")), "the parts read as the one file"
    dups = [(Path(r["file"]).name, r["row_number"], r["reason"], r["sku_id"]) for r in q.records]
    first0, first1 = expected["sku_id"][6], expected["sku_id"][42]
    assert dups == [
        ("part-00001.parquet", 31, "duplicate_sku_id", first0),
        ("part-00002.jsonl", 1, "duplicate_sku_id", first1),
    ]
    rec = q.records[0]
    assert rec["value"] == {"file": str(parts_folder / "part-00000.csv"), "row_number": 7}
    assert "already used on row 7 of" in rec["fix"] and "part-00000.csv" in rec["fix"]
    assert rec["raw"]["title"].endswith("(seller 2)")  # the dropped row, verbatim


def test_a_glob_picks_its_parts_and_a_missing_match_says_so(parts_folder: Path, tmp_path: Path) -> None:
    frame = read_catalog(str(parts_folder / "part-*"))
    assert frame.height == 40 + 30  # CSV and Parquet parts; the duplicate of part 0 quarantined
    with pytest.raises(CatalogError, match=r"no catalog files found there; fix: point --catalog at"):
        read_catalog(str(tmp_path / "nothing-*.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no catalog files found"):
        read_catalog(tmp_path / "empty")


def test_parts_are_read_one_after_the_other(parts_folder: Path) -> None:
    """The first shards come out before a later part is opened: a broken last part fails only when the
    reader reaches it, and the error names that part."""
    broken = parts_folder / "sub" / "part-00002.jsonl"
    broken.unlink()
    (parts_folder / "sub" / "part-00002.parquet").write_bytes(b"PAR1 not really parquet")
    shards = iter_catalog(parts_folder, shard_size=20)
    assert next(shards).height == 20
    assert next(shards).height == 20
    with pytest.raises(CatalogError, match=r"part-00002\.parquet"):
        list(shards)


def test_fingerprint_follows_the_parts(parts_folder: Path) -> None:
    before = catalog_fingerprint(parts_folder)
    assert catalog_fingerprint(parts_folder) == before
    part = parts_folder / "part-00000.csv"
    part.write_text(part.read_text() + "extra-1,New brass lamp,\n")
    assert catalog_fingerprint(parts_folder) != before


def test_a_big_parquet_file_is_read_in_row_group_ranges_with_the_files_row_numbers(
    tmp_path: Path, flipkart_tidy: pl.DataFrame
) -> None:
    """Ranges of whole row groups cover the file once; read range by range, the rows, their row numbers
    and the quarantine are the whole file's (a blank title on row 101, in the second range, is named by
    its row in the file)."""
    rows = _rows(flipkart_tidy, 0, 230).with_columns(
        pl.when(pl.int_range(pl.len()) == 100).then(None).otherwise(pl.col("title")).alias("title")
    )
    path = tmp_path / "big.parquet"
    rows.write_parquet(path, row_group_size=40)  # 6 row groups: 40 x 5 + 30
    ranges = row_ranges(catalog_parts(path)[0], min_rows=70)
    assert [(r.first_row, r.rows) for r in ranges] == [(0, 80), (80, 80), (160, 70)]
    assert row_ranges(catalog_parts(path)[0], min_rows=500) == []  # too small to cut: read whole
    whole_q, range_q = Quarantine(None), Quarantine(None)
    whole = read_catalog(path, quarantine=whole_q, shard_size=25)
    pieces = [read_catalog(path, quarantine=range_q, shard_size=25, rows=r) for r in ranges]
    assert [p.height for p in pieces] == [80, 79, 70]
    assert pl.concat(pieces).equals(whole)
    assert pieces[1]["row_number"].to_list()[:3] == [81, 82, 83]
    assert [(r["row_number"], r["field"]) for r in range_q.records] == [(101, "title")]
    assert range_q.records == whole_q.records
    csv = tmp_path / "big.csv"
    rows.write_csv(csv)
    assert row_ranges(catalog_parts(csv)[0], min_rows=70) == []  # CSV: read whole by one task
    with pytest.raises(CatalogError, match="row range is read from Parquet files only"):
        read_catalog(csv, rows=ranges[0])


# ---------------------------------------------------------------------------------------------- S3
BUCKET = "shelfwise-catalogs"


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on a free 127.0.0.1 port, and the AWS variables that point s3fs at it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with (tmp_path / "moto.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
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
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "moto.log").read_text()
                time.sleep(0.3)
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(BUCKET)
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def test_an_s3_prefix_reads_like_the_local_folder(parts_folder: Path, s3_endpoint: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    for part in catalog_parts(parts_folder):
        rel = Path(part.name).relative_to(parts_folder).as_posix()
        fs.put_file(part.name, f"{BUCKET}/tonight/{rel}")
    fs.pipe_file(f"{BUCKET}/tonight/_SUCCESS", b"")
    prefix = f"s3://{BUCKET}/tonight/"
    assert [p.name for p in catalog_parts(prefix)] == [
        f"s3://{BUCKET}/tonight/part-00000.csv",
        f"s3://{BUCKET}/tonight/part-00001.parquet",
        f"s3://{BUCKET}/tonight/sub/part-00002.jsonl",
    ]
    local_q, s3_q = Quarantine(None), Quarantine(None)
    local = read_catalog(parts_folder, quarantine=local_q)
    remote = read_catalog(prefix, quarantine=s3_q, shard_size=25)
    assert remote.equals(local)
    assert [(r["file"], r["row_number"], r["reason"]) for r in s3_q.records] == [
        (f"s3://{BUCKET}/tonight/part-00001.parquet", 31, "duplicate_sku_id"),
        (f"s3://{BUCKET}/tonight/sub/part-00002.jsonl", 1, "duplicate_sku_id"),
    ]
    assert s3_q.records[0]["value"] == {"file": f"s3://{BUCKET}/tonight/part-00000.csv", "row_number": 7}
    # a glob on the store, and a fingerprint that changes when a part is replaced
    assert read_catalog(f"s3://{BUCKET}/tonight/*.parquet").height == 31
    before = catalog_fingerprint(prefix)
    fs.pipe_file(f"{BUCKET}/tonight/part-00000.csv", b"sku_id,title\nonly-1,Brass lamp\n")
    assert catalog_fingerprint(prefix) != before
    # no downloaded part is left behind in the temp folder, even by a reader that stops half-way
    import tempfile
    import threading

    assert not list(Path(tempfile.gettempdir()).glob("shelfwise-part-*"))
    shards = iter_catalog(prefix, shard_size=10)
    assert next(shards).height == 10
    shards.close()
    assert not list(Path(tempfile.gettempdir()).glob("shelfwise-part-*"))
    assert not [t for t in threading.enumerate() if t.name == "shelfwise-catalog-read-ahead"]


def test_an_unreachable_store_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("s3fs")
    import socket

    import s3fs

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    with pytest.raises(
        CatalogError, match=r"catalog s3://nowhere/tonight/: cannot list it .*fix: check the URL"
    ):
        read_catalog("s3://nowhere/tonight/")
    s3fs.S3FileSystem.clear_instance_cache()
