"""Nightly enqueue: one open item per SKU, idempotent re-runs, capacity, human-locked SKUs."""

from __future__ import annotations

import polars as pl
import pytest

from shelfwise.errors import ConfigError
from verification import ItemFilter, QueueStoreError
from verification.store import QueueStore


def _open(store: QueueStore) -> int:
    return sum(c["open"] + c["claimed"] for c in store.queue_counts().values())


def test_rerunning_the_same_night_is_idempotent(store: QueueStore, make_frame, row_count) -> None:
    frame = make_frame(40)
    first = store.enqueue(frame, run_id="run-1")
    counts = store.queue_counts()
    assert first.total("inserted") == 40
    assert row_count("review_items") == 40

    second = store.enqueue(frame, run_id="run-1")
    assert second.total("inserted") == 0
    assert second.total("updated") == 0
    assert second.total("unchanged") == 40
    assert second.queued == first.queued
    assert store.queue_counts() == counts
    assert row_count("review_items") == 40


def test_open_item_is_updated_not_duplicated(store: QueueStore, make_frame, row_count) -> None:
    frame = make_frame(20)
    store.enqueue(frame, run_id="run-1")
    sku = frame["sku_id"][0]
    claimed = store.claim(frame["queue"][0], "alice", filters=ItemFilter(sku_id=sku))
    assert [i.sku_id for i in claimed] == [sku]

    new_cands = [{"category_id": "x1", "category_path": "Toys > Puzzles", "score": 0.91}]
    changed = frame.with_columns(
        pl.when(pl.col("sku_id") == sku)
        .then(pl.lit("x1"))
        .otherwise(pl.col("category_id"))
        .alias("category_id"),
        pl.when(pl.col("sku_id") == sku)
        .then(pl.lit("Toys > Puzzles"))
        .otherwise(pl.col("category_path"))
        .alias("category_path"),
        pl.when(pl.col("sku_id") == sku).then(pl.lit(5.0)).otherwise(pl.col("priority")).alias("priority"),
    ).with_columns(
        pl.Series(
            "candidates", [new_cands if s == sku else c for s, c in zip(frame["sku_id"], frame["candidates"])]
        )
    )
    result = store.enqueue(changed, run_id="run-2")
    assert result.total("updated") == 20  # every row carries the new run_id
    assert result.total("inserted") == 0
    assert row_count("review_items") == 20

    item = store.get_item(claimed[0].id)
    assert item is not None
    assert item.suggested_category_id == "x1"
    assert item.suggested_category_path == "Toys > Puzzles"
    assert item.priority == 5.0
    assert item.run_id == "run-2"
    assert item.candidates == new_cands
    assert item.claimed_by == "alice"  # the reviewer keeps the item they are looking at
    assert item.status == "claimed"


def test_sku_moves_between_queues_without_duplicate(store: QueueStore, make_frame, row_count) -> None:
    frame = make_frame(4, queues=("low_confidence",))
    store.enqueue(frame, run_id="run-1")
    moved = frame.with_columns(pl.lit("suspect").alias("queue"))
    result = store.enqueue(moved, run_id="run-2")
    assert result.updated["suspect"] == 4
    assert row_count("review_items") == 4
    assert store.queue_counts()["suspect"]["open"] == 4
    assert store.queue_counts()["low_confidence"]["open"] == 0


def test_capacity_keeps_top_priority_per_queue(store: QueueStore, make_frame) -> None:
    frame = make_frame(60, queues=("low_confidence", "suspect"))
    result = store.enqueue(frame, run_id="run-1", capacity={"low_confidence": 5, "suspect": 100})
    assert result.inserted == {"low_confidence": 5, "suspect": 30, "llm_failed": 0, "audit": 0}
    assert result.dropped_over_capacity["low_confidence"] == 25
    assert result.dropped_over_capacity["suspect"] == 0

    kept, total = store.list_items(ItemFilter(queue="low_confidence"), limit=100)
    assert total == 5
    expected = (
        frame.filter(pl.col("queue") == "low_confidence")
        .sort(["priority", "sku_id"], descending=[True, False])
        .head(5)["sku_id"]
        .to_list()
    )
    assert [i.sku_id for i in kept] == expected
    assert [i.priority for i in kept] == sorted((i.priority for i in kept), reverse=True)


def test_zero_capacity_writes_nothing_for_that_queue(store: QueueStore, make_frame) -> None:
    result = store.enqueue(make_frame(12), run_id="run-1", capacity={"audit": 0})
    assert result.inserted["audit"] == 0
    assert result.dropped_over_capacity["audit"] == 3
    assert store.queue_counts()["audit"]["open"] == 0


def test_locked_skus_skipped_until_content_changes(store: QueueStore, make_frame) -> None:
    frame = make_frame(8)
    store.enqueue(frame, run_id="run-1")
    decided: list[str] = []
    for queue in ("low_confidence", "suspect", "llm_failed", "audit"):
        item = store.claim(queue, "alice")[0]
        store.decide(item.id, "alice", "accept" if queue != "llm_failed" else "not_product")
        decided.append(item.sku_id)

    again = store.enqueue(frame, run_id="run-2")
    assert again.total("skipped_locked") == 4
    assert again.skipped_locked["audit"] == 1  # the audit queue never takes locked items either
    assert again.total("inserted") == 0
    assert _open(store) == 4
    assert set(store.locked()) == set(decided) - {decided[2]}  # not_product carries no category

    # the product's content changed (new title -> new content_hash): back into review
    changed_sku = decided[0]
    changed = frame.with_columns(
        pl.when(pl.col("sku_id") == changed_sku)
        .then(pl.lit("new-hash"))
        .otherwise(pl.col("content_hash"))
        .alias("content_hash")
    )
    third = store.enqueue(changed, run_id="run-3")
    assert third.total("skipped_locked") == 3
    assert third.total("inserted") == 1
    items, _ = store.list_items(ItemFilter(sku_id=changed_sku), limit=10)
    assert sorted(i.status for i in items) == ["decided", "open"]


def test_rows_without_queue_are_ignored(store: QueueStore, make_frame) -> None:
    frame = make_frame(6).with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("queue")).alias("queue")
    )
    result = store.enqueue(frame, run_id="run-1")
    assert result.total("inserted") == 4


def test_bad_frames_and_capacities_are_refused_with_fix(store: QueueStore, make_frame) -> None:
    frame = make_frame(3)
    bad = frame.with_columns(pl.lit("urgent").alias("queue"))
    with pytest.raises(QueueStoreError, match=r"column 'queue' has unknown value 'urgent'.*low_confidence"):
        store.enqueue(bad, run_id="r")
    with pytest.raises(QueueStoreError, match="no column 'queue'"):
        store.enqueue(frame.drop("queue"), run_id="r")
    with pytest.raises(ConfigError, match="unknown queue 'urgent'"):
        store.enqueue(frame, run_id="r", capacity={"urgent": 3})
    assert _open(store) == 0


def test_review_text_becomes_a_short_excerpt(store: QueueStore, make_frame) -> None:
    long_review = "Great set, my kids love it. " * 60
    frame = make_frame(1).with_columns(pl.lit(long_review).alias("review_text"))
    store.enqueue(frame, run_id="r")
    item = store.list_items(ItemFilter())[0][0]
    assert item.review_excerpt is not None
    assert item.review_excerpt.startswith("Great set, my kids love it.")
    assert len(item.review_excerpt) <= 600


def test_items_of_skus_a_later_run_auto_accepts_are_closed_unless_someone_works_on_them(
    store: QueueStore, make_frame, row_count
) -> None:
    frame = make_frame(12, queues=("low_confidence", "suspect"))
    store.enqueue(frame, run_id="run-1")
    skus = frame["sku_id"].to_list()
    held = store.claim("suspect", "alice")[0].sku_id  # a reviewer has it open right now
    decided = store.claim("low_confidence", "bob")[0]
    store.decide(decided.id, "bob", "accept")
    labels_before = store.labels().height

    # next night the model is sure about every one of these SKUs: no queue for them
    closed = store.supersede(skus, run_id="run-2")

    assert sum(closed.values()) == 10 and set(closed) == {"low_confidence", "suspect"}
    assert _open(store) == 1  # only the claimed item stays, with alice
    items, _ = store.list_items(ItemFilter(sku_id=skus[2]), limit=5)
    assert [(i.status, i.final_kind, i.decided_by) for i in items] == [("decided", "superseded", None)]
    assert store.labels().height == labels_before  # nothing is learned from a closed item
    assert store.get_item(decided.id).final_kind == "accept"  # a human decision is never overwritten
    assert row_count("decisions") == 1 and row_count("review_items") == 12
    assert store.supersede(skus, run_id="run-3") == {}  # idempotent
    assert store.supersede([], run_id="run-3") == {}
    # a later night may route the SKU to review again: a fresh open item, the old one kept as history
    again = store.enqueue(frame.filter(pl.col("sku_id") == skus[2]), run_id="run-4")
    assert again.total("inserted") == 1
    assert held in {i.sku_id for i in store.list_items(ItemFilter(status="claimed"), limit=20)[0]}
