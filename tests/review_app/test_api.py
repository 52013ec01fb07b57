"""The JSON API: claims, decisions, bulk accept, exports and filters, as a script or the page's JS uses it."""

from __future__ import annotations

import csv
import io
import json
import re

from fastapi.testclient import TestClient
from review_app_support import Env, login

from verification import QueueStore

EUROSPA = "64d5d4a258243731dc7bbb1eef49ad74"  # suspect queue, priority 8
JAIPUR = "6325b6870c54cd47be6ebfbffa620ec7"  # suspect queue, priority 7
ELEGANCE = "55b85ea15a1536d46b7190ad6fff8ce7"  # low_confidence, priority 10
WASHCLOTHS = "gid://shopify/TaxonomyCategory/hg-15-4-1-2"


def test_claim_hands_out_each_item_once_highest_priority_first(env: Env) -> None:
    with TestClient(env.app) as alice, TestClient(env.app) as bob:
        a_headers = {"X-CSRF-Token": login(alice, "alice")}
        b_headers = {"X-CSRF-Token": login(bob, "bob")}
        first = alice.post("/api/queues/suspect/claim", json={"limit": 1}, headers=a_headers).json()
        assert [i["sku_id"] for i in first] == [EUROSPA]
        assert first[0]["claimed_by"] == "alice" and first[0]["status"] == "claimed"
        second = bob.post("/api/queues/suspect/claim", headers=b_headers).json()
        assert [i["sku_id"] for i in second] == [JAIPUR]
        assert (
            bob.post("/api/queues/suspect/claim", headers=b_headers).json()[0]["sku_id"] == JAIPUR
        )  # own lease
        resp = bob.post(f"/api/items/{first[0]['id']}/decision", json={"kind": "accept"}, headers=b_headers)
        assert resp.status_code == 409 and "claimed by alice" in resp.json()["detail"]
        resp = alice.post("/api/queues/not_a_queue/claim", headers=a_headers)
        assert resp.status_code == 422


def test_decisions_through_the_api_leave_the_queue_and_reach_the_export(env: Env) -> None:
    with TestClient(env.app) as admin:
        headers = {"X-CSRF-Token": login(admin, "root")}
        found = admin.get("/api/taxonomy/search", params={"q": "세안 타월"}).json()["results"]
        assert found[0]["id"] == WASHCLOTHS
        eurospa = env.item_ids[EUROSPA]
        resp = admin.post(
            f"/api/items/{eurospa}/decision?claim_next=true",
            json={"kind": "choose", "category_id": WASHCLOTHS, "note": "face towels", "duration_ms": 5400},
            headers=headers,
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["final"] is True and body["status"] == "decided"
        assert (
            body["category_path"]
            == "Home & Garden > Linens & Bedding > Towels > Bath Towels & Washcloths > Washcloths"
        )
        assert body["next_item"]["sku_id"] == JAIPUR  # the next suspect item, now leased to root
        assert body["next_item"]["claimed_by"] == "root"

        elegance = env.item_ids[ELEGANCE]
        assert admin.post(f"/api/items/{elegance}/decision", json={"kind": "accept"}, headers=headers).json()[
            "final"
        ]
        resp = admin.post(f"/api/items/{elegance}/decision", json={"kind": "accept"}, headers=headers)
        assert resp.status_code == 409 and "already decided" in resp.json()["detail"]

        open_suspects = admin.get("/api/items", params={"queue": "suspect", "status": "open"}).json()
        assert EUROSPA not in [i["sku_id"] for i in open_suspects["items"]]
        assert admin.get("/api/queues").json()["suspect"]["decided"] == 1

        exported = admin.get("/api/export", params={"fmt": "csv"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        by_sku = {r["sku_id"]: r for r in rows}
        assert set(by_sku) == {EUROSPA, ELEGANCE}
        assert WASHCLOTHS in by_sku[EUROSPA].values()
        assert "root" in by_sku[EUROSPA].values()

        studio = admin.get("/api/export", params={"fmt": "labelstudio"})
        tasks = json.loads(studio.text)
        assert len(tasks) == 2
        assert "Washcloths" in json.dumps(tasks)
        assert admin.get("/api/export", params={"fmt": "xlsx"}).status_code == 422


def test_incomplete_or_unknown_choices_are_refused_with_a_reason(env: Env) -> None:
    with TestClient(env.app) as alice:
        headers = {"X-CSRF-Token": login(alice, "alice")}
        item = env.item_ids[JAIPUR]
        resp = alice.post(f"/api/items/{item}/decision", json={"kind": "choose"}, headers=headers)
        assert resp.status_code == 422 and "needs a category" in resp.json()["detail"]
        resp = alice.post(
            f"/api/items/{item}/decision",
            json={"kind": "choose", "category_id": "gid://shopify/TaxonomyCategory/zz-999"},
            headers=headers,
        )
        assert resp.status_code == 422
        assert "zz-999" in resp.json()["detail"] and "not in taxonomy" in resp.json()["detail"]
        resp = alice.post(f"/api/items/{item}/decision", json={"kind": "maybe"}, headers=headers)
        assert resp.status_code == 422
        assert (
            alice.post("/api/items/999999/decision", json={"kind": "accept"}, headers=headers).status_code
            == 404
        )
        assert alice.get("/api/items/999999").status_code == 404
    assert QueueStore(env.db_url).get_item(env.item_ids[JAIPUR]).status == "open"  # type: ignore[union-attr]


def test_skip_returns_the_item_to_others_and_not_needs_data_is_final(env: Env) -> None:
    with TestClient(env.app) as alice, TestClient(env.app) as bob:
        a_headers = {"X-CSRF-Token": login(alice, "alice")}
        b_headers = {"X-CSRF-Token": login(bob, "bob")}
        mine = alice.post("/api/queues/suspect/claim", headers=a_headers).json()[0]
        resp = alice.post(f"/api/items/{mine['id']}/decision", json={"kind": "skip"}, headers=a_headers)
        assert resp.json()["status"] == "open" and resp.json()["final"] is False
        assert alice.post("/api/queues/suspect/claim", headers=a_headers).json()[0]["id"] != mine["id"]
        theirs = bob.post("/api/queues/suspect/claim", headers=b_headers).json()[0]
        assert theirs["id"] == mine["id"]  # bob gets what alice skipped
        resp = bob.post(f"/api/items/{theirs['id']}/decision", json={"kind": "needs_data"}, headers=b_headers)
        assert resp.json()["final"] is True
        item = bob.get(f"/api/items/{theirs['id']}").json()
        assert item["final_kind"] == "needs_data" and item["decided_by"] == "bob"


def test_bulk_accept_checks_the_expected_count(env: Env) -> None:
    with TestClient(env.app) as admin:
        headers = {"X-CSRF-Token": login(admin, "root")}
        resp = admin.post("/api/bulk-accept", json={"filters": {}}, headers=headers)
        assert resp.status_code == 422 and "at least one filter" in resp.json()["detail"]
        body = {"filters": {"queue": "low_confidence", "max_confidence": 0.5}, "expected": 99}
        resp = admin.post("/api/bulk-accept", json=body, headers=headers)
        assert resp.status_code == 409 and "3 open items" in resp.json()["detail"]
        resp = admin.post("/api/bulk-accept", json={**body, "expected": 3}, headers=headers)
        assert resp.json() == {"accepted": 3}
        counts = admin.get("/api/queues").json()
        assert counts["low_confidence"]["decided"] == 3 and counts["suspect"]["decided"] == 0
    labels = QueueStore(env.db_url).labels()
    assert sorted(labels["sku_id"].to_list()) == sorted(
        [
            "55b85ea15a1536d46b7190ad6fff8ce7",
            "7b72c92c2f6c40268628ec5f14c6d590",
            "f355cc1ccb08bd0d283ed979b7ee7515",
        ]
    )


def test_list_filters_and_pagination(env: Env) -> None:
    with TestClient(env.app) as alice:
        login(alice, "alice")
        page = alice.get("/api/items", params={"limit": 2}).json()
        assert page["total"] == 6 and len(page["items"]) == 2
        assert [i["priority"] for i in page["items"]] == sorted(
            [i["priority"] for i in page["items"]], reverse=True
        )
        rest = alice.get("/api/items", params={"limit": 2, "offset": 4}).json()
        assert len(rest["items"]) == 2
        assert alice.get("/api/items", params={"text": "towel"}).json()["total"] == 2
        assert alice.get("/api/items", params={"text": "eurospa"}).json()["items"][0]["sku_id"] == EUROSPA
        assert (
            alice.get("/api/items", params={"category": "Home & Garden > Linens & Bedding"}).json()["total"]
            == 3
        )
        assert alice.get("/api/items", params={"max_confidence": 0.3}).json()["total"] == 1
        assert alice.get("/api/items", params={"reason": "current_disagrees"}).json()["total"] == 2
        assert alice.get("/api/items", params={"min_confidence": 1.5}).status_code == 422
        assert alice.get("/api/items", params={"status": "lost"}).status_code == 422


def test_openapi_documents_the_api(env: Env) -> None:
    with TestClient(env.app) as anyone:
        spec = anyone.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/items",
        "/api/items/{item_id}",
        "/api/queues/{queue}/claim",
        "/api/items/{item_id}/decision",
        "/api/bulk-accept",
        "/api/taxonomy/search",
        "/api/export",
        "/api/me",
    ):
        assert path in paths, path
    assert "/queues" not in paths and "/login" not in paths  # pages stay out of the API docs
    kinds = spec["components"]["schemas"]["DecisionKind"]["enum"]
    assert kinds == ["accept", "choose", "not_product", "needs_data", "skip"]


def test_api_docs_load_their_scripts_from_the_app_not_a_cdn(env) -> None:
    """Merchandising IT often runs the review app without internet: /docs must not need a CDN."""
    with TestClient(env.app) as anyone:
        for page in ("/docs", "/redoc"):
            html = anyone.get(page).text
            scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
            assert scripts and all(src.startswith("/") for src in scripts), (page, scripts)
            for src in scripts:
                asset = anyone.get(src)
                assert asset.status_code == 200 and len(asset.content) > 10_000, src
