"""Login, roles, CSRF and basic auth of the review app, through real HTTP requests (TestClient)."""

from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_app_support import PASSWORD, SECRET, Env, csrf_from, login

from shelfwise.errors import ConfigError
from verification import QueueStore
from verification.app._factory import SECRET_ENV, resolve_secret_key


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_anonymous_pages_redirect_to_login_and_api_says_401(client: TestClient, env: Env) -> None:
    item_id = env.item_ids["55b85ea15a1536d46b7190ad6fff8ce7"]
    for url in ("/", "/queues?queue=suspect", f"/items/{item_id}", f"/items/{item_id}/image", "/admin/users"):
        resp = client.get(url, follow_redirects=False)
        assert resp.status_code == 303, url
        assert resp.headers["location"].startswith("/login?next=/"), url
    for url in (
        "/api/items",
        f"/api/items/{item_id}",
        "/api/queues",
        "/api/taxonomy/search?q=curtain",
        "/api/export",
    ):
        resp = client.get(url)
        assert resp.status_code == 401, url
        assert "log in" in resp.json()["detail"]
        assert (
            "basic" not in resp.headers.get("www-authenticate", "").lower()
        )  # browsers must never cache basic creds
    resp = client.post(f"/api/items/{item_id}/decision", json={"kind": "accept"})
    assert resp.status_code == 401
    assert client.get(f"/api/items/{item_id}", headers=basic("alice")).json()["status"] == "open"


def test_login_page_then_queue_page_then_logout(client: TestClient) -> None:
    resp = client.get("/queues?queue=suspect")  # follows the redirect to the login form
    assert resp.url.path == "/login"
    assert 'name="next" value="/queues?queue=suspect"' in resp.text
    resp = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf_token": csrf_from(resp.text),
            "next": "/queues?queue=suspect",
        },
    )
    assert resp.status_code == 200
    assert resp.url.path == "/queues" and resp.url.params["queue"] == "suspect"
    assert "alice · reviewer" in resp.text
    token = csrf_from(resp.text)
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403  # no CSRF token
    assert client.get("/api/me").status_code == 200
    resp = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert client.get("/api/me").status_code == 401


def test_wrong_password_and_unknown_user_are_refused_alike(client: TestClient) -> None:
    for username, password in (("alice", "wrong password!"), ("mallory", PASSWORD)):
        page = client.get("/login")
        resp = client.post(
            "/login", data={"username": username, "password": password, "csrf_token": csrf_from(page.text)}
        )
        assert resp.status_code == 401
        assert "Wrong user name or password." in resp.text
        assert client.get("/api/me").status_code == 401


def test_login_without_csrf_token_is_refused(client: TestClient) -> None:
    client.get("/login")
    resp = client.post("/login", data={"username": "alice", "password": PASSWORD}, follow_redirects=False)
    assert resp.status_code == 403
    assert "CSRF" in resp.text
    assert client.get("/api/me").status_code == 401


def test_login_never_redirects_off_site(client: TestClient) -> None:
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        page = client.get("/login")
        resp = client.post(
            "/login",
            data={
                "username": "alice",
                "password": PASSWORD,
                "csrf_token": csrf_from(page.text),
                "next": evil,
            },
            follow_redirects=False,
        )
        assert resp.status_code == 303
        assert resp.headers["location"] == "/queues", evil
        client.cookies.clear()


def test_session_is_renewed_at_login(client: TestClient) -> None:
    page = client.get("/login")
    anonymous_token = csrf_from(page.text)
    fresh_token = login(client, "alice")
    assert fresh_token != anonymous_token


def test_forged_session_cookie_is_anonymous(client: TestClient) -> None:
    login(client, "alice")
    cookie = client.cookies.get("shelfwise_review")
    assert cookie and cookie.count(".") == 2  # itsdangerous: payload.timestamp.signature
    _, stamp, signature = cookie.split(".")
    forged = base64.b64encode(b'{"user": "root", "csrf": "x"}').decode() + "." + stamp + "." + signature
    client.cookies.clear()
    client.cookies.set("shelfwise_review", forged)
    assert client.get("/api/me").status_code == 401
    assert client.get("/admin/users", follow_redirects=False).status_code == 303


def test_reviewer_is_blocked_from_admin_pages_and_calls(client: TestClient, env: Env) -> None:
    token = login(client, "alice")
    headers = {"X-CSRF-Token": token}
    resp = client.get("/admin/users")
    assert resp.status_code == 403
    assert "needs an admin" in resp.text
    resp = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "eve", "password": "password123", "role": "admin"},
    )
    assert resp.status_code == 403
    assert client.get("/bulk-accept?queue=suspect").status_code == 403
    assert client.get("/api/export?fmt=csv").status_code == 403
    resp = client.post("/api/bulk-accept", json={"filters": {"queue": "suspect"}}, headers=headers)
    assert resp.status_code == 403
    store = QueueStore(env.db_url)
    assert store.get_user("eve") is None
    assert store.queue_counts()["suspect"]["decided"] == 0
    assert "Users" not in client.get("/queues").text.split("<main>")[0]  # no admin link in the top bar


def test_admin_adds_a_reviewer_who_can_then_log_in(client: TestClient, env: Env) -> None:
    token = login(client, "root")
    page = client.get("/admin/users")
    assert page.status_code == 200 and "alice" in page.text and "root" in page.text
    resp = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "carol", "password": "short", "role": "reviewer"},
    )
    assert "too short" in resp.text
    resp = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "carol", "password": "long enough pw", "role": "reviewer"},
    )
    assert "Added reviewer" in resp.text and "carol" in resp.text
    resp = client.post(
        "/admin/users",
        data={"csrf_token": token, "username": "carol", "password": "long enough pw", "role": "admin"},
    )
    assert "already exists" in resp.text
    client.cookies.clear()
    login(client, "carol", "long enough pw")
    assert client.get("/api/me").json()["role"] == "reviewer"


def _post_routes() -> list[str]:
    """Every POST route of the app's two routers (the app itself adds only the OpenAPI/docs GETs)."""
    from verification.app import _api, _pages

    routes = [*_pages.router.routes, *_api.router.routes]
    return sorted(
        route.path
        for route in routes
        if "POST" in getattr(route, "methods", set()) and route.path != "/login"
    )


def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(
    client: TestClient, env: Env
) -> None:
    routes = _post_routes()
    # The ones that change state: all must be protected, and none may be forgotten here.
    assert set(routes) >= {
        "/logout",
        "/queues/next",
        "/items/{item_id}/decide",
        "/bulk-accept",
        "/admin/users",
        "/admin/users/{username}/active",
        "/api/queues/{queue}/claim",
        "/api/items/{item_id}/decision",
        "/api/bulk-accept",
    }
    login(client, "root")  # an admin, so a 403 can only come from the CSRF check
    item_id = env.item_ids["6325b6870c54cd47be6ebfbffa620ec7"]
    for path in routes:
        url = (
            path.replace("{item_id}", str(item_id)).replace("{queue}", "suspect").replace("{username}", "bob")
        )
        form = {
            "decision": "accept",
            "queue": "suspect",
            "expected": "2",
            "username": "x1",
            "password": "password123",
        }
        for extra in ({}, {"csrf_token": "forged-token-forged-token-forged-token"}):
            resp = client.post(url, data={**form, **extra}, follow_redirects=False)
            assert resp.status_code == 403, (url, extra, resp.status_code)
        resp = client.post(
            url, json={"kind": "accept", "filters": {"queue": "suspect"}}, headers={"X-CSRF-Token": "nope"}
        )
        assert resp.status_code == 403, url
    store = QueueStore(env.db_url)
    assert store.queue_counts()["suspect"] == {"open": 2, "claimed": 0, "decided": 0}
    assert store.get_user("x1") is None
    assert store.get_user("bob").is_active  # type: ignore[union-attr]
    assert client.get("/api/me").status_code == 200  # still logged in: logout was refused too


def test_cross_site_request_is_refused_even_with_the_token(client: TestClient, env: Env) -> None:
    token = login(client, "alice")
    item_id = env.item_ids["55b85ea15a1536d46b7190ad6fff8ce7"]
    resp = client.post(
        f"/api/items/{item_id}/decision",
        json={"kind": "accept"},
        headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "cross-site"},
    )
    assert resp.status_code == 403 and "cross-site" in resp.json()["detail"]
    resp = client.post(
        f"/api/items/{item_id}/decision",
        json={"kind": "accept"},
        headers={"X-CSRF-Token": token, "Sec-Fetch-Site": "same-origin"},
    )
    assert resp.status_code == 200 and resp.json()["final"] is True


def test_basic_auth_for_scripts_needs_no_csrf_token(env: Env) -> None:
    item_id = env.item_ids["f355cc1ccb08bd0d283ed979b7ee7515"]
    with TestClient(env.app, base_url="http://127.0.0.1") as script:
        assert script.get("/api/me", headers=basic("alice", "bad password")).status_code == 401
        me = script.get("/api/me", headers=basic("alice")).json()
        assert me == {"username": "alice", "role": "reviewer", "auth": "basic", "csrf_token": None}
        resp = script.post(f"/api/items/{item_id}/decision", json={"kind": "accept"}, headers=basic("alice"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "decided"
        assert script.get("/api/export", headers=basic("alice")).status_code == 403
        # Basic auth is for the API only: pages still want the login form.
        resp = script.get("/queues", headers=basic("alice"), follow_redirects=False)
        assert resp.status_code == 303
    decided = QueueStore(env.db_url).get_item(item_id)
    assert decided is not None and decided.decided_by == "alice"


def test_remembered_basic_credentials_never_skip_the_account_checks(env: Env) -> None:
    store = QueueStore(env.db_url)
    with TestClient(env.app) as script:
        assert script.get("/api/me", headers=basic("bob")).status_code == 200  # bcrypt-checked, remembered
        assert script.get("/api/me", headers=basic("bob")).status_code == 200  # from memory
        assert script.get("/api/me", headers=basic("bob", PASSWORD + "x")).status_code == 401
        store.set_password("bob", "new password 2", role="admin")
        # the remembered old password is dropped at once, not after the cache's minute
        assert script.get("/api/me", headers=basic("bob")).status_code == 401
        assert script.get("/api/me", headers=basic("bob", "new password 2")).json()["role"] == "admin"
        store.set_active("bob", False)
        for password in (PASSWORD, "new password 2"):
            assert script.get("/api/me", headers=basic("bob", password)).status_code == 401  # at once


def test_pages_carry_security_headers(client: TestClient) -> None:
    login(client, "alice")
    resp = client.get("/queues")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    links = re.findall(r'(?:src|href)="([^"]*)"', resp.text)
    assert links and all(link.startswith("/") and not link.startswith("//") for link in links), (
        links
    )  # no CDN
    cookie = client.get("/login").headers.get("set-cookie", "")
    assert "httponly" in cookie.lower() or cookie == ""


def test_secret_key_is_generated_once_and_persisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("SHELFWISE_STATE_DIR", str(tmp_path / "state"))
    first = resolve_secret_key(None)
    key_file = tmp_path / "state" / "review_secret.key"
    assert key_file.read_text().strip() == first and len(first) >= 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert resolve_secret_key(None) == first  # sessions survive a restart
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert resolve_secret_key(None) == SECRET
    with pytest.raises(ConfigError, match="at least 16"):
        resolve_secret_key("short")


def test_password_guessing_is_slowed_down_for_forms_and_basic_auth(client: TestClient, env: Env) -> None:
    for _ in range(5):
        page = client.get("/login")
        resp = client.post(
            "/login", data={"username": "bob", "password": "guess-guess", "csrf_token": csrf_from(page.text)}
        )
        assert resp.status_code == 401
    page = client.get("/login")
    resp = client.post(
        "/login", data={"username": "bob", "password": PASSWORD, "csrf_token": csrf_from(page.text)}
    )
    assert (
        resp.status_code == 429 and "Too many failed sign-ins" in resp.text
    )  # even the right password waits
    assert client.get("/api/me", headers=basic("bob")).status_code == 401
    login(client, "alice")  # other users are not locked out
    with TestClient(env.app) as script:
        for _ in range(5):
            assert script.get("/api/me", headers=basic("alice", "wrong-wrong")).status_code == 401
        assert script.get("/api/me", headers=basic("alice")).status_code == 401  # basic auth counts too


def test_deactivating_a_user_ends_their_session_at_once(env: Env) -> None:
    with TestClient(env.app) as admin, TestClient(env.app) as bob:
        login(bob, "bob")
        token = login(admin, "root")
        assert "Deactivate" in admin.get("/admin/users").text
        resp = admin.post("/admin/users/bob/active", data={"csrf_token": token, "active": "0"})
        assert "Deactivated &#39;bob&#39;." in resp.text
        assert bob.get("/api/me").status_code == 401  # the old cookie no longer works
        assert bob.get("/queues", follow_redirects=False).status_code == 303
        resp = admin.post("/admin/users/root/active", data={"csrf_token": token, "active": "0"})
        assert "cannot deactivate yourself" in resp.text
        admin.post("/admin/users/bob/active", data={"csrf_token": token, "active": "1"})
        login(bob, "bob")


def test_reviewer_changes_their_own_password(client: TestClient, env: Env) -> None:
    store = QueueStore(env.db_url, bcrypt_rounds=4)
    login(client, "bob")

    def change(current: str, new: str, repeat: str) -> str:
        page = client.get("/account")
        assert page.status_code == 200 and "Change your password" in page.text
        resp = client.post(
            "/account/password",
            data={"current": current, "new": new, "repeat": repeat, "csrf_token": csrf_from(page.text)},
        )
        assert resp.url.path == "/account"
        return resp.text

    assert "not right" in change("wrong guess!", "a brand new pw", "a brand new pw")
    assert "differ" in change(PASSWORD, "a brand new pw", "a brand new px")
    assert "too short" in change(PASSWORD, "short", "short")
    assert store.authenticate("bob", PASSWORD) is not None  # nothing changed so far
    assert "was changed" in change(PASSWORD, "a brand new pw", "a brand new pw")
    assert store.authenticate("bob", PASSWORD) is None
    assert store.authenticate("bob", "a brand new pw") is not None
    assert client.get("/queues").status_code == 200  # still signed in, with a fresh session
    # without the session's CSRF token nothing happens
    resp = client.post(
        "/account/password", data={"current": "a brand new pw", "new": "x" * 12, "repeat": "x" * 12}
    )
    assert resp.status_code == 403
    assert store.authenticate("bob", "a brand new pw") is not None
