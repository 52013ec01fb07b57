"""Every bad input of issue 14's probe list gets a 4xx (or a page that says what was ignored), never a 500.

Replayed through HTTP (TestClient, which re-raises any server exception) on SQLite and on the real
PostgreSQL, where NUL bytes and 64-bit numbers used to reach the database.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_app_support import PASSWORD, Env, csrf_from, login, make_env, pg_database

from verification import QueueStore

NUL = "a\x00b"
BIG = 2**31
KOREAN_25 = "가나다라마바사아자차카타파하가나다라마바사아자차카"  # 25 characters, 75 bytes in UTF-8


def basic(username: str, password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


ROOT = basic("root")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_env(request: pytest.FixtureRequest, tmp_path: Path, real_data: Path) -> Iterator[Env]:
    if request.param == "sqlite":
        env = make_env(f"sqlite:///{tmp_path / 'queue.db'}", real_data)
        yield env
        env.app.state.review.store.close()
        return
    with pg_database(request.getfixturevalue("pg_url")) as url:
        env = make_env(url, real_data)
        yield env
        env.app.state.review.store.close()


@pytest.fixture()
def api(db_env: Env) -> Iterator[TestClient]:
    with TestClient(db_env.app, base_url="http://127.0.0.1") as c:
        yield c


def _detail(resp) -> str:  # type: ignore[no-untyped-def]
    return str(resp.json()["detail"])


def test_nul_bytes_in_filters_notes_and_claims_are_refused(api: TestClient, db_env: Env) -> None:
    for field in ("text", "category", "reason"):
        resp = api.get("/api/items", params={field: NUL}, headers=ROOT)
        assert resp.status_code == 422, (field, resp.text)
        assert "NUL byte" in _detail(resp)
    item = db_env.item_ids["55b85ea15a1536d46b7190ad6fff8ce7"]
    resp = api.post(f"/api/items/{item}/decision", json={"kind": "accept", "note": NUL}, headers=ROOT)
    assert resp.status_code == 422 and "NUL byte" in _detail(resp)
    resp = api.post("/api/queues/suspect/claim", json={"filters": {"text": NUL}}, headers=ROOT)
    assert resp.status_code == 422 and "NUL byte" in _detail(resp)
    resp = api.post("/api/bulk-accept", json={"filters": {"reason": NUL}}, headers=ROOT)
    assert resp.status_code == 422
    assert api.get("/api/items", params={"text": "Curtain"}, headers=ROOT).json()["total"] >= 1  # still fine
    # a basic-auth user name with a NUL byte is nobody (no database lookup)
    assert api.get("/api/me", headers=basic("root\x00x")).status_code == 401
    # the pages: the filter is dropped with a message, the page still renders
    login(api, "alice")
    page = api.get("/queues", params={"text": NUL, "category": NUL})
    assert page.status_code == 200 and "filter text ignored: it contains a NUL byte" in page.text


def test_huge_ids_durations_offsets_and_pages(api: TestClient, db_env: Env) -> None:
    for url in (f"/api/items/{BIG}", f"/api/items/{10**30}", "/api/items/0"):
        resp = api.get(url, headers=ROOT)
        assert resp.status_code == 422, url
        assert "less than or equal to 2147483647" in resp.text or "greater than or equal to 1" in resp.text
        assert str(10**30) not in resp.text  # the 422 does not echo the submitted value
    resp = api.post(f"/api/items/{BIG}/decision", json={"kind": "accept"}, headers=ROOT)
    assert resp.status_code == 422
    item = db_env.item_ids["7b72c92c2f6c40268628ec5f14c6d590"]
    resp = api.post(f"/api/items/{item}/decision", json={"kind": "accept", "duration_ms": BIG}, headers=ROOT)
    assert resp.status_code == 422 and "duration_ms" in resp.text
    resp = api.get("/api/items", params={"offset": 2**63}, headers=ROOT)
    assert resp.status_code == 422 and "offset" in resp.text
    login(api, "alice")
    page = api.get("/queues", params={"page": str(10**20)})
    assert page.status_code == 200 and "page 1 of 1" in page.text  # past the end shows the last page
    assert api.get(f"/items/{BIG}").status_code == 404
    assert api.get(f"/items/{10**30}/image").status_code == 404


def test_lone_surrogate_in_a_json_note_gets_a_readable_422(api: TestClient, db_env: Env) -> None:
    item = db_env.item_ids["64d5d4a258243731dc7bbb1eef49ad74"]
    headers = {**ROOT, "Content-Type": "application/json"}
    body = b'{"kind": "accept", "note": "bad \\ud800 note"}'  # JSON escapes: valid JSON, invalid text
    resp = api.post(f"/api/items/{item}/decision", content=body, headers=headers)
    assert resp.status_code == 422 and "unicode string" in _detail(resp)  # pydantic refuses it
    # the 422 handler itself copes when the bad value sits next to another error
    body = b'{"kind": "\\udfff", "note": "\\ud800", "duration_ms": -1}'
    resp = api.post(f"/api/items/{item}/decision", content=body, headers=headers)
    assert resp.status_code == 422
    assert {tuple(e["loc"]) for e in resp.json()["detail"]} >= {("body", "kind"), ("body", "duration_ms")}
    assert QueueStore(db_env.db_url).get_item(item).status == "open"  # type: ignore[union-attr]


def test_unicode_digits_in_form_fields_are_not_numbers(api: TestClient, db_env: Env) -> None:
    token = login(api, "root")
    item = db_env.item_ids["6325b6870c54cd47be6ebfbffa620ec7"]
    resp = api.post(
        f"/items/{item}/decide",
        data={"decision": "not_product", "duration_ms": "²", "csrf_token": token, "queue": "suspect"},
    )
    assert resp.status_code == 200 and "Marked" in resp.text
    decided = QueueStore(db_env.db_url).get_item(item)
    assert decided is not None and decided.status == "decided"
    assert QueueStore(db_env.db_url).decisions_for_item(item)[0]["duration_ms"] is None
    resp = api.post("/queues/next", data={"after": "١٢", "csrf_token": token, "queue": "suspect"})
    assert resp.status_code == 200
    resp = api.post("/bulk-accept", data={"queue": "suspect", "expected": "³", "csrf_token": token})
    assert resp.status_code == 200 and "The list changed" in resp.text


def test_passwords_over_72_bytes_are_refused_with_the_reason(api: TestClient, db_env: Env) -> None:
    login(api, "bob")
    page = api.get("/account")
    resp = api.post(
        "/account/password",
        data={"current": PASSWORD, "new": KOREAN_25, "repeat": KOREAN_25, "csrf_token": csrf_from(page.text)},
    )
    assert resp.status_code == 200 and "75 bytes long in UTF-8" in resp.text
    assert QueueStore(db_env.db_url, bcrypt_rounds=4).authenticate("bob", PASSWORD) is not None
    api.cookies.clear()
    token = login(api, "root")
    resp = api.post(
        "/admin/users",
        data={"csrf_token": token, "username": "kim", "password": KOREAN_25, "role": "reviewer"},
    )
    assert resp.status_code == 200 and "at most 72 bytes" in resp.text
    assert QueueStore(db_env.db_url).get_user("kim") is None
    page = api.get("/login")  # a long password at login is just wrong, not an error
    api.cookies.clear()
    page = api.get("/login")
    resp = api.post(
        "/login", data={"username": "bob", "password": "x" * 500, "csrf_token": csrf_from(page.text)}
    )
    assert resp.status_code == 401


def test_bulk_accept_with_only_blank_filters_is_refused(api: TestClient, db_env: Env) -> None:
    for filters in ({"text": " "}, {"text": "\t", "category": "  ", "reason": ""}):
        resp = api.post("/api/bulk-accept", json={"filters": filters}, headers=ROOT)
        assert resp.status_code == 422 and "at least one filter" in _detail(resp)
    counts = QueueStore(db_env.db_url).queue_counts()
    assert sum(c.get("decided", 0) for c in counts.values()) == 0


def test_unknown_category_422_does_not_echo_the_whole_id(api: TestClient, db_env: Env) -> None:
    item = db_env.item_ids["f355cc1ccb08bd0d283ed979b7ee7515"]
    long_id = "gid://evil/" + "A" * 240
    resp = api.post(
        f"/api/items/{item}/decision", json={"kind": "choose", "category_id": long_id}, headers=ROOT
    )
    assert resp.status_code == 422 and "is not in taxonomy" in _detail(resp)
    assert "A" * 60 not in resp.text
    resp = api.post(
        f"/api/items/{item}/decision", json={"kind": "choose", "category_id": "B" * 100_00}, headers=ROOT
    )
    assert resp.status_code == 422 and "B" * 60 not in resp.text


def test_api_shows_image_paths_relative_to_the_image_root_only(api: TestClient, db_env: Env) -> None:
    items = {
        i["sku_id"]: i for i in api.get("/api/items", params={"limit": 50}, headers=ROOT).json()["items"]
    }
    evil = items["evil-1"]  # its catalog row said ../../../../etc/passwd
    assert evil["image_path"] is None and evil["image_url"] is None
    real = items["55b85ea15a1536d46b7190ad6fff8ce7"]
    assert real["image_path"].startswith("images/flipkart/") and not real["image_path"].startswith("/")
    assert real["image_url"] == f"/items/{real['id']}/image"
    assert all(not (i["image_path"] or "").startswith("/") for i in items.values())
    login(api, "alice")
    photo = api.get(real["image_url"])
    assert photo.status_code == 200 and photo.headers["content-type"].startswith("image/")
    assert api.get(f"/items/{evil['id']}/image").status_code == 404
