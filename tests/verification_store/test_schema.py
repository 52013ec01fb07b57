"""upgrade() builds the schema from the packaged Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from verification._db import MIGRATIONS_DIR, head_revision
from verification.store import QueueStore

TABLES = {"review_items", "decisions", "human_labels", "review_users", "alembic_version"}


def test_migrations_ship_inside_the_package() -> None:
    import verification

    pkg = Path(verification.__file__).parent
    assert MIGRATIONS_DIR == pkg / "migrations"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    assert head_revision() == "0003_decision_request_id"


def test_upgrade_creates_schema_and_second_upgrade_is_a_noop(db_url: str, make_frame) -> None:
    store = QueueStore(db_url)
    try:
        assert store.schema_revision() is None
        store.upgrade()
        assert store.schema_revision() == head_revision()
        assert store.is_current()
        insp = sa.inspect(store.engine)
        assert TABLES <= set(insp.get_table_names())
        indexes = {ix["name"]: ix for ix in insp.get_indexes("review_items")}
        assert indexes["uq_review_items_open_sku"]["unique"]

        store.enqueue(make_frame(8), run_id="r1")
        store.upgrade()  # again: nothing changes, data stays
        assert store.schema_revision() == head_revision()
        assert sum(c["open"] for c in store.queue_counts().values()) == 8
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_schema_isolated_in_search_path(pg_schema: str, pg_url: str) -> None:
    # a plain postgresql:// URL is served by psycopg 3 (shelfwise does not ship psycopg2)
    store = QueueStore(pg_schema.replace("postgresql+psycopg://", "postgresql://"))
    try:
        store.upgrade()
        schema = sa.engine.make_url(pg_schema).query["options"].split("=", 1)[1]
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            tables = set(
                conn.execute(
                    sa.text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                    {"s": schema},
                ).scalars()
            )
        engine.dispose()
        assert TABLES <= tables
    finally:
        store.close()


def test_store_creates_sqlite_parent_folder(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "queue.db"
    store = QueueStore(f"sqlite:///{db}")
    store.upgrade()
    store.close()
    assert db.is_file()
