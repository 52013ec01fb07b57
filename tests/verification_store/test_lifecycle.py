"""When the schema is migrated (``upgrade`` or the first write, never a read), stores as context managers,
and the review items as a table (what the reports read)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from verification import QueueStoreError
from verification._db import head_revision
from verification.store import QueueStore


def test_a_read_never_migrates_and_says_how_to_create_the_tables(db_url: str) -> None:
    with QueueStore(db_url) as store:
        reads = (
            store.labels,
            store.locked,
            store.queue_counts,
            store.decisions_frame,
            store.items_frame,
            store.list_users,
            lambda: store.get_item(1),
        )
        for read in reads:
            with pytest.raises(QueueStoreError, match="shelfwise review upgrade"):
                read()
        assert store.schema_revision() is None  # nothing was created by the reads
        assert "review_items" not in sa.inspect(store.engine).get_table_names()


def test_first_write_migrates_then_reads_work(db_url: str, make_frame) -> None:
    with QueueStore(db_url) as store:
        assert store.schema_revision() is None
        result = store.enqueue(make_frame(6), run_id="r1")
        assert store.schema_revision() == head_revision()
        assert result.total("inserted") == 6
    with QueueStore(db_url) as reader:  # a second process-like store reads without migrating
        assert sum(c["open"] for c in reader.queue_counts().values()) == 6


def test_adding_the_first_user_migrates(db_url: str) -> None:
    with QueueStore(db_url, bcrypt_rounds=4) as store:
        store.add_user("alice", "correct horse battery")
        assert store.schema_revision() == head_revision()
        assert store.authenticate("alice", "correct horse battery") is not None


def test_store_closes_its_pool_on_exit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with QueueStore(url) as store:
        store.upgrade()
        store.queue_counts()
        pool = store.engine.pool
        assert pool.checkedin() >= 1  # a pooled connection stays open while the store is open
    assert pool.checkedin() == 0  # closing the store closed it


def test_items_frame_lists_every_item_with_its_candidates(store: QueueStore, make_frame) -> None:
    frame = make_frame(8)
    store.enqueue(frame, run_id="r1")
    item = store.claim("audit", "alice")[0]
    store.decide(item.id, "alice", "accept")
    items = store.items_frame()
    assert items.height == 8
    assert set(items["sku_id"]) == set(frame["sku_id"])
    decided = items.filter(items["id"] == item.id).row(0, named=True)
    assert decided["status"] == "decided" and decided["final_kind"] == "accept"
    assert decided["decided_at"].tzinfo is not None  # timestamps come back as aware UTC
    cands = json.loads(items.filter(items["sku_id"] == frame["sku_id"][0])["candidates"][0])
    assert [c["category_id"] for c in cands] == [c["category_id"] for c in frame["candidates"][0]]
