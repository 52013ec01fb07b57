"""Fixtures of the review-app tests (helpers live in review_app_support.py, importable from the tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from review_app_support import Env, make_env


@pytest.fixture(scope="session")
def shared_data(real_data: Path) -> Path:
    """Tests here read the bundled excerpt (tests/data, see SOURCES.md): it holds every file they use.

    Kept under the old name so the test bodies need no change; new code should ask for `real_data`.
    """
    return real_data


@pytest.fixture()
def env(tmp_path: Path, real_data: Path) -> Env:
    """A fresh SQLite queue DB with the seeded items, users alice/bob (reviewers) and root (admin)."""
    return make_env(f"sqlite:///{tmp_path / 'queue.db'}", real_data)


@pytest.fixture()
def client(env: Env):  # type: ignore[no-untyped-def]
    with TestClient(env.app, base_url="http://127.0.0.1") as c:
        yield c
