"""The server-rendered pages: queue list, item review flow, escaping of hostile product data, photos,
bulk accept."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from review_app_support import INJECTION_BRAND, INJECTION_DESCRIPTION, INJECTION_TITLE, Env, login

from verification import ItemFilter, QueueStore

EUROSPA = "64d5d4a258243731dc7bbb1eef49ad74"
JAIPUR = "6325b6870c54cd47be6ebfbffa620ec7"
ELEGANCE = "55b85ea15a1536d46b7190ad6fff8ce7"
SATHIYAS = "7b72c92c2f6c40268628ec5f14c6d590"
CAMERII = "f355cc1ccb08bd0d283ed979b7ee7515"


def _flashes(html: str) -> list[str]:
    return re.findall(r'<div class="flash \w+" role="status">(.*?)</div>', html)


def test_queue_page_shows_counts_items_and_filters(client: TestClient) -> None:
    login(client, "alice")
    page = client.get("/queues").text
    cards = dict(re.findall(r'data-queue="(\w+)">.*?<span class="num">(\d+)</span>', page, flags=re.DOTALL))
    assert cards == {"suspect": "2", "low_confidence": "3", "llm_failed": "0", "audit": "1"}
    assert "Elegance Polyester Multicolor Abstract Eyelet Door Curtain" in page
    assert "6 items" in page
    page = client.get("/queues", params={"queue": "suspect", "text": "jaipur"}).text
    assert "1 item ·" in page and "Jaipur Print Cotton Floral King sized Double Bedsheet" in page
    assert "Elegance Polyester" not in page
    page = client.get("/queues", params={"queue": "nope", "min_confidence": "high"}).text
    assert any("unknown queue" in f for f in _flashes(page))
    assert any("min confidence" in f for f in _flashes(page))


def test_review_flow_accept_moves_to_the_next_item(client: TestClient, env: Env) -> None:
    token = login(client, "alice")
    resp = client.post("/queues/next", data={"csrf_token": token, "queue": "suspect"})
    assert resp.url.path == f"/items/{env.item_ids[EUROSPA]}"  # the highest-priority suspect item
    page = resp.text
    assert "Eurospa Cotton Terry Face Towel Set" in page
    assert f'src="/items/{env.item_ids[EUROSPA]}/image"' in page
    assert 'data-candidate="1"' in page and 'data-candidate="5"' in page
    assert "Baby Bath Towels" in page  # the current (Flipkart) category
    assert "Good quality, colour as shown." in page  # review excerpt

    resp = client.post(
        f"/items/{env.item_ids[EUROSPA]}/decide",
        data={"csrf_token": token, "decision": "accept", "queue": "suspect", "duration_ms": "4100"},
    )
    assert resp.url.path == f"/items/{env.item_ids[JAIPUR]}"  # straight on to the next suspect item
    assert any(f.startswith("Accepted") and "Towels" in f for f in _flashes(resp.text))
    store = QueueStore(env.db_url)
    held, _ = store.list_items(ItemFilter(status="claimed", claimed_by="alice"))
    assert [i.sku_id for i in held] == [JAIPUR]  # exactly one lease: the item on screen
    done = store.get_item(env.item_ids[EUROSPA])
    assert done is not None and done.status == "decided" and done.final_kind == "accept"
    assert store.decisions_for_item(env.item_ids[EUROSPA])[0]["duration_ms"] == 4100

    # Choose the second candidate of the last suspect item: the queue is then empty.
    jaipur = store.get_item(env.item_ids[JAIPUR])
    assert jaipur is not None
    second = jaipur.candidates[1]["category_id"]
    resp = client.post(
        f"/items/{jaipur.id}/decide",
        data={"csrf_token": token, "decision": f"choose:{second}", "queue": "suspect"},
    )
    assert resp.url.path == "/queues"
    assert any("No more open items in Suspected misfiled" in f for f in _flashes(resp.text))
    chosen = store.get_item(jaipur.id)
    assert chosen is not None and chosen.final_category_id == second
    assert store.queue_counts()["suspect"]["open"] == 0


def test_next_leaves_the_item_undecided_and_skip_records_it(client: TestClient, env: Env) -> None:
    token = login(client, "alice")
    first = client.post("/queues/next", data={"csrf_token": token, "queue": "low_confidence"})
    assert first.url.path == f"/items/{env.item_ids[ELEGANCE]}"
    nxt = client.post(
        "/queues/next", data={"csrf_token": token, "queue": "low_confidence", "after": env.item_ids[ELEGANCE]}
    )
    assert nxt.url.path == f"/items/{env.item_ids[SATHIYAS]}"
    store = QueueStore(env.db_url)
    elegance = store.get_item(env.item_ids[ELEGANCE])
    assert elegance is not None and elegance.status == "open" and elegance.claimed_by is None  # released
    assert store.decisions_for_item(env.item_ids[ELEGANCE]) == []
    skipped = client.post(
        f"/items/{env.item_ids[SATHIYAS]}/decide",
        data={"csrf_token": token, "decision": "skip", "queue": "low_confidence"},
    )
    assert any(f.startswith("Skipped") for f in _flashes(skipped.text))
    assert [d["kind"] for d in store.decisions_for_item(env.item_ids[SATHIYAS])] == ["skip"]
    assert skipped.url.path == f"/items/{env.item_ids[ELEGANCE]}"  # top of the queue again (released)
    held, _ = store.list_items(ItemFilter(status="claimed", claimed_by="alice"))
    assert [i.id for i in held] == [env.item_ids[ELEGANCE]]  # no stray leases left behind
    # "Next" passes over the item alice skipped, and wraps around at the end of the queue.
    step = client.post(
        "/queues/next", data={"csrf_token": token, "queue": "low_confidence", "after": env.item_ids[ELEGANCE]}
    )
    assert step.url.path == f"/items/{env.item_ids[CAMERII]}"
    step = client.post(
        "/queues/next", data={"csrf_token": token, "queue": "low_confidence", "after": env.item_ids[CAMERII]}
    )
    assert step.url.path == f"/items/{env.item_ids[ELEGANCE]}"


def test_decision_on_an_item_someone_else_holds_is_refused_politely(env: Env) -> None:
    with TestClient(env.app) as alice, TestClient(env.app) as bob:
        a_token = login(alice, "alice")
        b_token = login(bob, "bob")
        alice.post("/queues/next", data={"csrf_token": a_token, "queue": "suspect"})
        resp = bob.post(
            f"/items/{env.item_ids[EUROSPA]}/decide",
            data={"csrf_token": b_token, "decision": "accept", "queue": "suspect"},
        )
        assert any("Not saved" in f and "claimed by alice" in f for f in _flashes(resp.text))
        assert resp.url.path == f"/items/{env.item_ids[JAIPUR]}"  # bob moves on to a free item
    item = QueueStore(env.db_url).get_item(env.item_ids[EUROSPA])
    assert item is not None and item.status == "claimed" and item.claimed_by == "alice"


def test_hostile_product_text_is_stored_verbatim_and_shown_as_text(client: TestClient, env: Env) -> None:
    store = QueueStore(env.db_url)
    stored = store.get_item(env.injection_id)
    assert stored is not None
    assert (stored.title, stored.brand, stored.description) == (
        INJECTION_TITLE,
        INJECTION_BRAND,
        INJECTION_DESCRIPTION,
    )
    login(client, "alice")
    for url in (f"/items/{env.injection_id}", "/queues?queue=audit", "/queues?text=DROP+TABLE"):
        html = client.get(url).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<i>Curtains</i>" not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Curtain&#39;; DROP TABLE review_items; --" in html, url
    html = client.get(f"/items/{env.injection_id}").text
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert "Robert&#39;); DROP TABLE decisions; -- &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;/blockquote&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in html
    # Only our own script tag is on the page.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/app.js">']
    api = client.get(f"/api/items/{env.injection_id}").json()
    assert api["title"] == INJECTION_TITLE  # JSON carries the text verbatim
    # The SQL in the text did nothing: every table still answers.
    assert store.list_items(ItemFilter(), limit=100)[1] == 6
    assert client.get("/api/queues").json()["audit"]["open"] == 1


def test_photos_are_served_only_from_the_image_root(client: TestClient, env: Env) -> None:
    login(client, "alice")
    resp = client.get(f"/items/{env.item_ids[ELEGANCE]}/image")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg" and resp.content[:3] == b"\xff\xd8\xff"
    evil = client.get(f"/items/{env.injection_id}/image")  # image_path ../../../../etc/passwd
    assert evil.status_code == 404 and "root:" not in evil.text
    assert "No photo" in client.get(f"/items/{env.injection_id}").text
    assert client.get("/items/999999/image").status_code == 404
    assert client.get("/static/../../../../etc/passwd").status_code == 404


def test_unknown_item_page_is_a_friendly_404(client: TestClient) -> None:
    login(client, "alice")
    resp = client.get("/items/424242")
    assert resp.status_code == 404
    assert "review item 424242 does not exist" in resp.text and "Back to the queues" in resp.text


def test_bulk_accept_asks_for_confirmation_then_accepts(client: TestClient, env: Env) -> None:
    token = login(client, "root")
    page = client.get("/bulk-accept", params={"queue": "low_confidence"})
    assert page.status_code == 200
    assert '<strong id="bulk-total">3</strong>' in page.text
    store = QueueStore(env.db_url)
    assert store.queue_counts()["low_confidence"]["decided"] == 0  # nothing happens before the POST
    stale = client.post(
        "/bulk-accept", data={"csrf_token": token, "queue": "low_confidence", "expected": "7"}
    )
    assert "The list changed" in stale.text
    assert store.queue_counts()["low_confidence"]["decided"] == 0
    done = client.post("/bulk-accept", data={"csrf_token": token, "queue": "low_confidence", "expected": "3"})
    assert any("Accepted the suggestion for 3 items" in f for f in _flashes(done.text))
    assert store.queue_counts()["low_confidence"] == {"open": 0, "claimed": 0, "decided": 3}
    refused = client.get("/bulk-accept")
    assert any("needs at least one filter" in f for f in _flashes(refused.text))


def test_decided_item_shows_the_decision_and_its_history(client: TestClient, env: Env) -> None:
    token = login(client, "bob")
    item_id = env.item_ids[ELEGANCE]
    client.post(
        f"/items/{item_id}/decide",
        data={
            "csrf_token": token,
            "decision": "not_product",
            "note": "a <b>bundle</b>",
            "queue": "low_confidence",
        },
    )
    html = client.get(f"/items/{item_id}").text
    assert 'id="decided"' in html and "Decided by bob" in html and "not product" in html
    assert 'id="btn-accept"' not in html  # nothing left to decide
    assert "“a &lt;b&gt;bundle&lt;/b&gt;”" in html  # the note, escaped, in the history


def test_queue_list_pages_through_many_items(client: TestClient, env: Env, shared_data) -> None:  # type: ignore[no-untyped-def]
    import polars as pl
    from review_app_support import seed_frame

    products = pl.read_parquet(shared_data / "catalogs" / "flipkart.parquet").head(60)
    base = seed_frame(shared_data, run_id="run-many").row(0, named=True)
    rows = [
        {**base, "sku_id": p["sku_id"] + "-x", "title": p["title"], "content_hash": f"m{i}", "priority": 0.5}
        for i, p in enumerate(products.to_dicts())
    ]
    frame = pl.DataFrame(rows, schema=seed_frame(shared_data, run_id="run-many").schema)
    QueueStore(env.db_url).enqueue(frame, run_id="run-many")
    login(client, "alice")
    first = client.get("/queues", params={"queue": "low_confidence"}).text
    assert "63 items · showing 1–50" in first and "page 1 of 2" in first
    assert first.count('<a href="/items/') == 50
    assert 'href="/queues?queue=low_confidence&amp;status=open&amp;page=2"' in first
    second = client.get("/queues", params={"queue": "low_confidence", "page": 2}).text
    assert "showing 51–63" in second and second.count('<a href="/items/') == 13


def test_an_item_closed_by_a_later_run_says_so_and_offers_no_decision(client: TestClient, env: Env) -> None:
    sku, item_id = next(iter(env.item_ids.items()))
    store = QueueStore(env.db_url)
    assert store.supersede([sku], run_id="run-night-2") == {store.get_item(item_id).queue: 1}
    login(client, "alice")
    page = client.get(f"/items/{item_id}").text
    assert "Closed by nightly run run-night-2" in page and "No longer needs review" in page
    assert "Decided by None" not in page and 'id="decision-form"' not in page
