"""Fixtures of the queue store tests: one store per test on SQLite (tmp file) and on the real PostgreSQL
(a fresh schema per test, reached through ``search_path``, dropped afterwards), and enqueue frames built
from the real Amazon UK catalog and its taxonomy (the bundled excerpt, tests/data)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from verification.store import QueueStore

QUEUES = ("low_confidence", "suspect", "llm_failed", "audit")


@pytest.fixture(scope="session")
def shared_data(real_data: Path) -> Path:
    """Tests here read the bundled excerpt (tests/data, see SOURCES.md): it holds every file they use.

    Kept under the old name so the test bodies need no change; new code should ask for `real_data`.
    """
    return real_data


def pg_schema_url(base: str, schema: str) -> str:
    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema ``t_<random>`` (dropped at the end)."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield pg_schema_url(pg_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'queue.db'}"
    return str(request.getfixturevalue("pg_schema"))


@pytest.fixture
def make_store(db_url: str) -> Iterator[Callable[..., QueueStore]]:
    """Factory of upgraded stores on this test's database (all closed at the end)."""
    made: list[QueueStore] = []

    def factory(**kwargs: Any) -> QueueStore:
        kwargs.setdefault("bcrypt_rounds", 4)
        store = QueueStore(db_url, **kwargs)
        store.upgrade()
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., QueueStore]) -> QueueStore:
    return make_store()


@pytest.fixture(scope="session")
def amazon(real_data: Path) -> tuple[pl.DataFrame, Any]:
    """The labelled rows of the real Amazon UK catalog and its taxonomy."""
    from taxonomy import load_taxonomy

    tax = load_taxonomy(real_data / "taxonomies" / "amazon_uk_categories.txt")
    catalog = (
        pl.read_parquet(real_data / "catalogs" / "amazon_uk.parquet")
        .filter(pl.col("category_path").is_not_null())
        .unique("sku_id", keep="first", maintain_order=True)
    )
    return catalog, tax


def _h(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


@pytest.fixture(scope="session")
def make_frame(amazon: tuple[pl.DataFrame, Any]) -> Callable[..., pl.DataFrame]:
    """Build an enqueue frame (predictions + product columns + queue/priority/reason) from real products.

    The suggestion is a real taxonomy node other than the product's current category (so the frame
    looks like a model's disagreements); confidence and queue are derived deterministically.
    """
    catalog, tax = amazon
    nodes = sorted(tax, key=lambda n: n.id)

    def build(
        n: int = 60, *, offset: int = 0, queues: tuple[str, ...] = QUEUES, run: str = "run-1"
    ) -> pl.DataFrame:
        rows = catalog.slice(offset, n).to_dicts()
        out: list[dict[str, Any]] = []
        for i, r in enumerate(rows):
            sku = r["sku_id"]
            k = int(_h(sku) * len(nodes))
            suggested, second, third = nodes[k], nodes[(k + 7) % len(nodes)], nodes[(k + 13) % len(nodes)]
            conf = round(0.2 + 0.6 * _h(sku + "c"), 4)
            out.append(
                {
                    "sku_id": sku,
                    "category_id": suggested.id,
                    "category_path": suggested.path,
                    "confidence": conf,
                    "candidates": [
                        {"category_id": suggested.id, "category_path": suggested.path, "score": conf},
                        {"category_id": second.id, "category_path": second.path, "score": round(conf / 2, 4)},
                        {"category_id": third.id, "category_path": third.path, "score": round(conf / 4, 4)},
                    ],
                    "current_category_path": r["category_path"],
                    "taxonomy_version": tax.version,
                    "model_version": "test-model-1",
                    "run_id": run,
                    "content_hash": hashlib.sha256((r["title"] or "").encode()).hexdigest(),
                    "queue": queues[i % len(queues)],
                    "priority": round(1.0 - conf, 4),
                    "reason": "low_confidence" if i % 2 else "suspect_branch",
                    "title": r["title"],
                    "description": None,
                    "brand": r["brand"],
                    "image_path": None,
                    "review_text": None,
                }
            )
        return pl.DataFrame(out)

    return build


@pytest.fixture
def row_count(db_url: str) -> Callable[[str], int]:
    """Rows in a table, counted over a separate connection."""

    def count(table: str) -> int:
        engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
        finally:
            engine.dispose()

    return count
