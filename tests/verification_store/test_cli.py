"""`shelfwise review ...` commands (the typer sub-app the lead mounts), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfwise.cli._review import review_app
from verification.store import QueueStore

runner = CliRunner()


def _run(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return runner.invoke(review_app, list(args), env=env, input=input)


def test_add_user_export_import_stats(db_url: str, make_frame, tmp_path: Path) -> None:
    res = _run("upgrade", "--db-url", db_url)
    assert res.exit_code == 0, res.output
    assert "0003_decision_request_id" in res.output  # the head migration

    res = _run("add-user", "alice", "--role", "admin", "--db-url", db_url, input="s3cret-pass\ns3cret-pass\n")
    assert res.exit_code == 0, res.output
    res = _run("add-user", "alice", "--password", "other-pass", "--db-url", db_url)
    assert res.exit_code == 1 and "already exists" in res.output
    res = _run("add-user", "alice", "--password", "other-pass", "--reset", "--db-url", db_url)
    assert res.exit_code == 0, res.output

    store = QueueStore(db_url)
    try:
        assert store.authenticate("alice", "other-pass").is_admin
        store.enqueue(make_frame(12), run_id="r1")
        for item in store.claim("low_confidence", "alice", limit=2):
            store.decide(item.id, "alice", "accept")
        store.claim("suspect", "bob")
    finally:
        store.close()

    res = _run("stats", "--db-url", db_url)
    assert res.exit_code == 0, res.output
    assert "low_confidence" in res.output and "alice" in res.output
    assert "human labels (accept/choose, for training): 2" in res.output

    out = tmp_path / "decisions.json"
    res = _run("export", "--format", "labelstudio", "--out", str(out), "--db-url", db_url)
    assert res.exit_code == 0, res.output
    assert len(json.loads(out.read_text())) == 2

    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = _run("import", str(out), "--format", "labelstudio", "--reviewer", "carol", "--db-url", other)
    assert res.exit_code == 0, res.output
    assert "2 decisions imported" in res.output
    copy = QueueStore(other)
    assert copy.labels().height == 2
    copy.close()


def test_db_url_from_environment_and_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    res = _run("release-expired", env={"SHELFWISE_QUEUE_URL": url})
    assert res.exit_code == 0, res.output
    assert (tmp_path / "env.db").is_file()

    res = _run("export", "--format", "xml", "--out", str(tmp_path / "x"), "--db-url", url)
    assert res.exit_code == 2 and "xml" in res.output
    res = _run("import", str(tmp_path / "missing.csv"), "--db-url", url)
    assert res.exit_code == 1 and "does not exist" in res.output
    res = _run("stats", "--db-url", "mysql://nope/x")
    assert res.exit_code == 1 and "supports sqlite" in res.output


def test_serve_is_wired_to_the_review_app(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` builds the app through verification.app.create_app and hands it to uvicorn."""
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    tax = shared_data / "taxonomies" / "amazon_uk_categories.txt"
    res = _run("serve", "--taxonomy", str(tax), "--port", "8765", "--db-url", url, "--secret-key", "k" * 32)
    assert res.exit_code == 0, res.output
    assert seen["port"] == 8765 and seen["host"] == "127.0.0.1"
    assert hasattr(seen["app"], "router")
