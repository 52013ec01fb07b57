"""Fixtures of the fault tests: a PostgreSQL cluster of the test's own, stopped and started at will, and the
review app served on it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from drill import prepare, serve
from pg_cluster import PgCluster, pg_available

from verification.app import ReviewAppConfig, create_app

SECRET = "fault-drill-secret-key-0123456789"


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


@pytest.fixture
def review_app_on_cluster(pg_cluster: PgCluster, real_data: Path) -> Iterator[Callable[[list[str]], str]]:
    """Start the review app on the cluster: ``start(reviewers)`` queues the real products, adds the
    reviewers (password ``drill.PASSWORD``), serves the app on 127.0.0.1 and returns its base URL; the
    server stops when the test ends."""
    servers: list[object] = []

    def start(reviewers: list[str]) -> str:
        prepare(pg_cluster.url, real_data, reviewers)
        tax = real_data / "taxonomies" / "shopify_categories_2025-01.en.txt"
        config = ReviewAppConfig(
            db_url=pg_cluster.url, taxonomy_path=str(tax), secret_key=SECRET, image_root=str(real_data)
        )
        server, base = serve(create_app(config))
        servers.append(server)
        return base

    try:
        yield start
    finally:
        for server in servers:
            server.should_exit = True  # type: ignore[attr-defined]
