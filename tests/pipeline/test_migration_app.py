"""The review app tells which taxonomy version an item's suggestion was made in (queue and item page)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from fastapi.testclient import TestClient

from taxonomy import load_taxonomy
from verification import QueueStore
from verification.app import ReviewAppConfig, create_app

PASSWORD = "correct horse battery staple"


def test_queue_and_item_page_show_the_taxonomy_version_of_the_suggestion(
    tmp_path: Path, real_data: Path
) -> None:
    tax_path = real_data / "taxonomies" / "flipkart_categories.txt"
    tax = load_taxonomy(tax_path)
    node = tax.find_path("Kitchen & Dining > Coffee Mugs")
    assert node is not None
    db = f"sqlite:///{tmp_path / 'queue.db'}"
    store = QueueStore(db)
    store.upgrade()
    store.add_user("ann", PASSWORD)
    store.enqueue(
        pl.DataFrame(
            [
                {
                    "sku_id": "mug-1",
                    "queue": "low_confidence",
                    "priority": 1.0,
                    "reason": "taxonomy_changed",
                    "category_id": node.id,
                    "category_path": node.path,
                    "confidence": 0.4,
                    "taxonomy_version": "sha256:0123456789abcdef",
                    "model_version": "m",
                    "content_hash": "h",
                    "title": "Ceramic coffee mug",
                }
            ]
        ),
        run_id="night-2",
    )
    store.close()
    app = create_app(ReviewAppConfig(db_url=db, taxonomy_path=str(tax_path), secret_key="k" * 40))
    with TestClient(app) as client:
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token
        form = {"username": "ann", "password": PASSWORD, "csrf_token": token.group(1), "next": "/queues"}
        resp = client.post("/login", data=form, follow_redirects=False)
        assert resp.status_code == 303, resp.text
        queue = client.get("/queues?queue=low_confidence")
        assert queue.status_code == 200
        assert "taxonomy sha256:0123456789abcdef" in queue.text
        item_id = re.search(r'href="/items/(\d+)', queue.text)
        assert item_id
        item = client.get(f"/items/{item_id.group(1)}")
        assert item.status_code == 200
        assert "The suggestion was made in taxonomy <code>sha256:0123456789abcdef</code>" in item.text
