"""Helpers of the review-app tests: a queue DB seeded with real Flipkart products and Shopify suggestions."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from fastapi.testclient import TestClient

from taxonomy import TaxonomyIndex, load_taxonomy
from verification import QueueStore, Role
from verification.app import ReviewAppConfig, create_app

SECRET = "test-secret-key-for-the-review-app-0123456789"
PASSWORD = "correct horse battery"
INJECTION_TITLE = "<script>alert(1)</script> Curtain'; DROP TABLE review_items; --"
INJECTION_BRAND = '<img src=x onerror="alert(2)">'
INJECTION_DESCRIPTION = 'Robert\'); DROP TABLE decisions; -- & <b>bold</b> "quoted"'

# Real Flipkart SKUs (catalogs/flipkart.parquet) and the Shopify words that find their category.
SEED: list[tuple[str, str, str]] = [
    # (sku_id, Shopify search words for the suggestion, queue)
    ("55b85ea15a1536d46b7190ad6fff8ce7", "curtains", "low_confidence"),  # Elegance door curtain
    ("7b72c92c2f6c40268628ec5f14c6d590", "bath towels", "low_confidence"),  # Sathiyas bath towel
    ("64d5d4a258243731dc7bbb1eef49ad74", "towels", "suspect"),  # Eurospa face towel set
    ("6325b6870c54cd47be6ebfbffa620ec7", "bed sheets", "suspect"),  # Jaipur Print bedsheet
    ("f355cc1ccb08bd0d283ed979b7ee7515", "watches", "low_confidence"),  # Camerii wrist watch
]


@dataclass(frozen=True)
class Env:
    """One seeded review app: its DB URL, paths, and the seeded item ids by SKU."""

    app: Any
    db_url: str
    taxonomy_path: Path
    ko_path: Path
    image_root: Path
    item_ids: dict[str, int]
    injection_id: int


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the real form; returns the session's CSRF token."""
    page = client.get("/login")
    resp = client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": csrf_from(page.text),
            "next": "/queues",
        },
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return client.get("/api/me").json()["csrf_token"]


@functools.lru_cache(maxsize=2)
def _shopify(path: Path) -> tuple[Any, TaxonomyIndex]:
    en = load_taxonomy(path)
    return en, TaxonomyIndex(en)


def seed_frame(
    shared_data: Path, *, run_id: str, extra_rows: list[dict[str, Any]] | None = None
) -> pl.DataFrame:
    """Queue rows for the SEED products: real titles/photos, Shopify suggestions from the search index."""
    en, index = _shopify(shared_data / "taxonomies" / "shopify_categories_2025-01.en.txt")
    products = pl.read_parquet(shared_data / "catalogs" / "flipkart.parquet")
    by_sku = {row["sku_id"]: row for row in products.to_dicts()}
    rows = []
    for rank, (sku, words, queue) in enumerate(SEED):
        product = by_sku[sku]
        hits = [hit.node for hit in index.search(words, limit=5)]
        assert hits, f"no Shopify category for {words!r}"
        siblings = en.children(hits[0].parent_id) if hits[0].parent_id else []
        nodes = list({n.id: n for n in [*hits, *siblings]}.values())  # model-like confusions: siblings
        scores = [0.46, 0.31, 0.12, 0.07, 0.04]
        candidates = [
            {"category_id": n.id, "category_path": n.path, "score": s} for n, s in zip(nodes, scores)
        ]
        rows.append(
            {
                "sku_id": sku,
                "category_id": hits[0].id,
                "category_path": hits[0].path,
                "confidence": scores[0],
                "candidates": candidates,
                "current_category_path": product["category_path"],
                "taxonomy_version": en.version,
                "model_version": "test-model",
                "run_id": run_id,
                "content_hash": f"hash-{sku}",
                "queue": queue,
                "priority": 10.0 - rank,
                "reason": "below_threshold" if queue == "low_confidence" else "current_disagrees",
                "title": product["title"],
                "description": product["description"],
                "brand": product["brand"],
                "image_path": product["image_path"],
                "review_text": "Good quality, colour as shown.\nArrived on time.",
            }
        )
    rows.extend(extra_rows or [])
    return pl.DataFrame(
        rows,
        schema_overrides={
            "candidates": pl.List(
                pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64})
            )
        },
    )


def injection_row(shared_data: Path, *, run_id: str) -> dict[str, Any]:
    en, _ = _shopify(shared_data / "taxonomies" / "shopify_categories_2025-01.en.txt")
    node = en.find_path("Home & Garden > Decor > Window Treatments > Curtains & Drapes > Curtains")
    assert node is not None
    return {
        "sku_id": "evil-1",
        "category_id": node.id,
        "category_path": node.path,
        "confidence": 0.2,
        "candidates": [{"category_id": node.id, "category_path": node.path, "score": 0.2}],
        "current_category_path": "Home Furnishing > <i>Curtains</i>",
        "taxonomy_version": en.version,
        "model_version": "test-model",
        "run_id": run_id,
        "content_hash": "hash-evil",
        "queue": "audit",
        "priority": 1.0,
        "reason": "audit_sample",
        "title": INJECTION_TITLE,
        "description": INJECTION_DESCRIPTION,
        "brand": INJECTION_BRAND,
        "image_path": "../../../../etc/passwd",
        "review_text": "</blockquote><script>alert(3)</script>",
    }


def make_env(db_url: str, shared_data: Path) -> Env:
    tax_dir = shared_data / "taxonomies"
    en_path = tax_dir / "shopify_categories_2025-01.en.txt"
    ko_path = tax_dir / "shopify_categories_2025-01.ko.txt"
    store = QueueStore(db_url, bcrypt_rounds=4)  # cheap hashes keep logins fast in tests
    store.upgrade()
    frame = seed_frame(
        shared_data, run_id="run-test", extra_rows=[injection_row(shared_data, run_id="run-test")]
    )
    store.enqueue(frame, run_id="run-test")
    for name, role in (("alice", Role.REVIEWER), ("bob", Role.REVIEWER), ("root", Role.ADMIN)):
        store.add_user(name, PASSWORD, role=role)
    items, _ = store.list_items(_all_filter(), limit=100)
    ids = {i.sku_id: i.id for i in items}
    store.close()
    app = create_app(
        ReviewAppConfig(
            db_url=db_url,
            taxonomy_path=str(en_path),
            extra_taxonomy_paths=[str(ko_path)],
            secret_key=SECRET,
            image_root=str(shared_data),
        )
    )
    return Env(app, db_url, en_path, ko_path, shared_data, ids, ids["evil-1"])


def _all_filter():  # type: ignore[no-untyped-def]
    from verification import ItemFilter

    return ItemFilter()


@contextlib.contextmanager
def pg_database(pg_url: str, prefix: str = "shelfwise_review") -> Iterator[str]:
    """A throw-away PostgreSQL database on the test server; yields its URL, drops it afterwards."""
    import secrets

    import sqlalchemy as sa

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free 127.0.0.1 port (in a thread); yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
