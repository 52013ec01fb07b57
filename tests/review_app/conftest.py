"""Fixtures of the review-app tests (helpers live in review_app_support.py, importable from the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from review_app_support import Env, make_env


@pytest.fixture()
def env(tmp_path: Path, shared_data: Path) -> Env:
    """A fresh SQLite queue DB with the seeded items, users alice/bob (reviewers) and root (admin)."""
    return make_env(f"sqlite:///{tmp_path / 'queue.db'}", shared_data)


@pytest.fixture()
def client(env: Env):  # type: ignore[no-untyped-def]
    with TestClient(env.app, base_url="http://127.0.0.1") as c:
        yield c
