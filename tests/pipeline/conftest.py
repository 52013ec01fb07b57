"""Fixtures of the pipeline tests: the bundled real excerpt (tests/data) stands in for ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data(real_data: Path) -> Path:
    """Tests here read the bundled excerpt (tests/data, see SOURCES.md): it holds every file they use.

    Kept under the old name so the test bodies need no change; new code should ask for `real_data`.
    """
    return real_data
