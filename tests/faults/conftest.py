"""Fixtures of the fault tests: a PostgreSQL cluster of the test's own, stopped and started at will."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pg_cluster import PgCluster, pg_available


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A started cluster on a free port (``.url``, ``.stop()``, ``.start()``, ``.restart()``)."""
    problem = pg_available()
    if problem is not None:
        pytest.skip(problem)
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()
