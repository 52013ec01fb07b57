"""The review app on the real PostgreSQL (127.0.0.1:5432), in a throw-away database of its own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from review_app_support import Env, login, make_env

pytestmark = pytest.mark.postgres


@pytest.fixture()
def pg_env(pg_url: str, shared_data: Path) -> Iterator[Env]:
    name = f"shelfwise_review_{secrets.token_hex(4)}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    env = make_env(url, shared_data)
    try:
        yield env
    finally:
        env.app.state.review.store.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_reviewers_racing_for_items_on_postgres_never_share_one(pg_env: Env) -> None:
    clients = [TestClient(pg_env.app) for _ in range(3)]
    names = ["alice", "bob", "root"]
    tokens = [login(c, n) for c, n in zip(clients, names)]

    def claim(i: int) -> list[int]:
        resp = clients[i].post(
            "/api/queues/low_confidence/claim", json={"limit": 1}, headers={"X-CSRF-Token": tokens[i]}
        )
        assert resp.status_code == 200, resp.text
        return [item["id"] for item in resp.json()]

    with ThreadPoolExecutor(max_workers=3) as pool:
        claimed = [ids for ids in pool.map(claim, range(3))]
    flat = [i for ids in claimed for i in ids]
    assert len(flat) == 3 and len(set(flat)) == 3  # three reviewers, three different items

    # Each decides their own item through the API; a decision on someone else's is a conflict.
    resp = clients[0].post(
        f"/api/items/{claimed[1][0]}/decision", json={"kind": "accept"}, headers={"X-CSRF-Token": tokens[0]}
    )
    assert resp.status_code == 409
    for i in range(3):
        resp = clients[i].post(
            f"/api/items/{claimed[i][0]}/decision",
            json={"kind": "not_product"},
            headers={"X-CSRF-Token": tokens[i]},
        )
        assert resp.json()["final"] is True
    counts = clients[0].get("/api/queues").json()
    assert counts["low_confidence"] == {"open": 0, "claimed": 0, "decided": 3}
    page = clients[2].get("/queues", params={"queue": "low_confidence", "status": "decided"}).text
    assert "Camerii WM64 Elegance Analog Watch" in page
    for c in clients:
        c.close()
