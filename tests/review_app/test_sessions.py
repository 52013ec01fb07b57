"""Sessions end when they should: logout, password change, deactivation (for good), role change, and an
absolute lifetime that activity does not extend. Remembered basic-auth logins end with them.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from pathlib import Path

import bcrypt
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from review_app_support import PASSWORD, Env, csrf_from, login

from verification import QueueStore
from verification._db import MIGRATIONS_DIR, head_revision


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def _copy(client: TestClient, app) -> TestClient:  # type: ignore[no-untyped-def]
    """A second client holding a copy of ``client``'s session cookie (a stolen or second-tab cookie)."""
    other = TestClient(app, base_url="http://127.0.0.1")
    other.cookies.set("shelfwise_review", client.cookies["shelfwise_review"])
    return other


def test_logout_ends_the_old_cookie_everywhere(env: Env) -> None:
    with TestClient(env.app, base_url="http://127.0.0.1") as bob:
        token = login(bob, "bob")
        stolen = _copy(bob, env.app)
        other_tab = TestClient(env.app, base_url="http://127.0.0.1")
        login(other_tab, "bob")
        assert stolen.get("/api/me").status_code == 200
        assert bob.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
        assert stolen.get("/api/me").status_code == 401  # the copy made before logout is dead
        resp = stolen.post("/api/queues/suspect/claim", json={"limit": 1}, headers={"X-CSRF-Token": token})
        assert resp.status_code == 401
        assert other_tab.get("/api/me").status_code == 401  # logout signs out every session of bob
        login(bob, "bob")  # a new login works
        assert bob.get("/api/me").json()["username"] == "bob"
        stolen.close()
        other_tab.close()


def test_password_change_ends_other_sessions_and_remembered_basic_auth(env: Env) -> None:
    with TestClient(env.app, base_url="http://127.0.0.1") as bob, TestClient(env.app) as script:
        login(bob, "bob")
        other = TestClient(env.app, base_url="http://127.0.0.1")
        login(other, "bob")
        assert script.get("/api/me", headers=basic("bob")).status_code == 200  # remembered now
        page = bob.get("/account")
        resp = bob.post(
            "/account/password",
            data={
                "current": PASSWORD,
                "new": "fresh password 9",
                "repeat": "fresh password 9",
                "csrf_token": csrf_from(page.text),
            },
        )
        assert "other sessions were signed out" in resp.text
        assert bob.get("/api/me").status_code == 200  # this session goes on
        assert other.get("/api/me").status_code == 401
        assert script.get("/api/me", headers=basic("bob")).status_code == 401  # old password: at once
        assert script.get("/api/me", headers=basic("bob", "fresh password 9")).status_code == 200
        other.close()


def test_deactivation_ends_the_cookie_and_reactivation_does_not_revive_it(env: Env) -> None:
    with TestClient(env.app, base_url="http://127.0.0.1") as admin, TestClient(env.app) as bob:
        login(bob, "bob")
        old_cookie = bob.cookies["shelfwise_review"]
        token = login(admin, "root")
        admin.post("/admin/users/bob/active", data={"csrf_token": token, "active": "0"})
        assert bob.get("/api/me").status_code == 401
        admin.post("/admin/users/bob/active", data={"csrf_token": token, "active": "1"})
        bob.cookies.set("shelfwise_review", old_cookie)
        assert bob.get("/api/me").status_code == 401  # the old cookie stays dead
        bob.cookies.clear()
        login(bob, "bob")
        assert bob.get("/api/me").status_code == 200


def test_role_change_ends_the_session(env: Env) -> None:
    with TestClient(env.app, base_url="http://127.0.0.1") as bob:
        login(bob, "bob")
        QueueStore(env.db_url, bcrypt_rounds=4).set_password(
            "bob", PASSWORD, role="admin"
        )  # CLI add-user --reset
        assert bob.get("/api/me").status_code == 401
        login(bob, "bob")
        assert bob.get("/api/me").json()["role"] == "admin"


def test_session_lifetime_is_absolute_not_sliding(env: Env) -> None:
    # 4 s sessions, busy for the first 2 s: a request sent in the busy window has 2 s to be answered before
    # its session expires, so a slow request on a loaded machine does not read as an expired session.
    env.app.state.review = dataclasses.replace(env.app.state.review, session_lifetime=4.0)
    with TestClient(env.app, base_url="http://127.0.0.1") as bob:
        before = time.monotonic()  # the session is issued between these two instants
        login(bob, "bob")
        after = time.monotonic()
        while time.monotonic() - before < 2.0:  # busy all the time: every page re-writes the cookie
            assert bob.get("/queues").status_code == 200
            time.sleep(0.2)
        time.sleep(max(0.0, 4.3 - (time.monotonic() - after)))  # past the 4 s however late it was issued
        assert bob.get("/api/me").status_code == 401
        assert bob.get("/queues", follow_redirects=False).status_code == 303


def test_users_of_a_0001_database_keep_working_after_the_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001_initial")
        conn.execute(
            sa.text(
                "INSERT INTO review_users (username, password_hash, role, is_active, created_at) "
                "VALUES ('old', :h, 'reviewer', 1, '2026-01-01 00:00:00')"
            ),
            {"h": bcrypt.hashpw(b"old password 1", bcrypt.gensalt(4)).decode()},
        )
    engine.dispose()
    with QueueStore(url) as store:
        store.upgrade()
        assert store.schema_revision() == head_revision()
        user = store.authenticate("old", "old password 1")
        assert user is not None and user.session_epoch == 0
        store.end_sessions("old")
        assert store.get_user("old").session_epoch == 1  # type: ignore[union-attr]
