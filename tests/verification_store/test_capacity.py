"""The nightly capacity is applied once: what the run reports as queued and dropped is what the store
holds."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import polars as pl

from shelfwise.pipeline import enqueue_rescored
from shelfwise.settings import QueueCapacity, Settings
from verification.routing import priority
from verification.store import QueueStore


def test_run_counts_match_the_queue_when_capacity_drops_items(tmp_path: Path, make_frame) -> None:
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    settings = Settings(
        state_dir=tmp_path, queue_url=url, queue_capacity=QueueCapacity(low_confidence=5, suspect=3)
    )
    frame = make_frame(40).drop("priority")  # ten items per queue; the run ranks them itself
    sent = Counter(frame["queue"].to_list())

    result, queued = enqueue_rescored(settings, frame.lazy(), "run-1")

    with QueueStore(url) as store:
        held = {q: c["open"] for q, c in store.queue_counts().items()}
    assert held == queued  # counts.queued is exactly what reviewers find open
    assert queued["low_confidence"] == 5 and queued["suspect"] == 3
    assert queued["audit"] == sent["audit"] and queued["llm_failed"] == sent["llm_failed"]
    dropped = result["dropped_over_capacity"]
    assert dropped["low_confidence"] == sent["low_confidence"] - 5  # was always 0 before
    assert dropped["suspect"] == sent["suspect"] - 3
    assert sum(queued.values()) + sum(dropped.values()) == frame.height

    # the kept items are the highest-priority ones of their queue
    with QueueStore(url) as store:
        items = store.items_frame()
    low = frame.filter(pl.col("queue") == "low_confidence")
    ranked = low.with_columns(pl.Series("p", priority(low["queue"].to_list(), low["confidence"].to_numpy())))
    best = ranked.sort("p", descending=True).head(5)["sku_id"].to_list()
    assert set(items.filter(pl.col("queue") == "low_confidence")["sku_id"].to_list()) == set(best)


def _items(url: str) -> pl.DataFrame:
    """The queue's items in id order (the reviewing order among equal priorities), timestamps aside."""
    with QueueStore(url) as store:
        items = store.items_frame()
    return items.drop("created_at", "updated_at", "decided_at", "lease_expires_at", "claimed_at")


def test_a_night_cut_into_many_parts_fills_the_queues_as_one_file_does(tmp_path: Path, make_frame) -> None:
    # 600 products over the four queues, confidences rounded so that many tie on priority (ties keep the
    # rows' order), a price that scales the priority, and 100 SKUs that tonight auto-accepts (no queue)
    base = make_frame(600).drop("priority")
    tonight = base.with_columns(
        pl.col("confidence").round(1),
        price=(pl.int_range(pl.len()) % 3 * 10.0).cast(pl.Float64),
        queue=pl.when(pl.int_range(pl.len()) < 100).then(None).otherwise(pl.col("queue")),
    )
    # a big part too, ranked in several batches: 250,000 more rows for the low-confidence queue
    many = pl.concat(
        [tonight.slice(100, 100).with_columns(pl.col("sku_id") + f"-x{k}") for k in range(2500)]
    ).with_columns(queue=pl.lit("low_confidence"))
    rows = pl.concat([tonight, many])
    cuts = [0, 100, 130, 130, 400, 600, rows.height]  # the first part only auto-accepted rows; one empty
    folder = tmp_path / "parts"
    folder.mkdir()
    files = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        files.append(folder / f"part-{i}.parquet")
        rows.slice(lo, hi - lo).write_parquet(files[-1])
    one = tmp_path / "one.parquet"
    rows.write_parquet(one)
    capacity = QueueCapacity(low_confidence=40, suspect=25, llm_failed=10, audit=0)

    got = {}
    for name, parts in (("one", [one]), ("parts", files), ("lazy", pl.scan_parquet(files))):
        url = f"sqlite:///{tmp_path / name / 'queue.db'}"
        settings = Settings(state_dir=tmp_path / name, queue_url=url, queue_capacity=capacity)
        # last night left 25 of the first 100 SKUs open for review; tonight auto-accepts them
        enqueue_rescored(settings, base.head(100).with_columns(queue=pl.lit("suspect")).lazy(), "run-0")
        result, queued = enqueue_rescored(settings, parts, "run-1")
        got[name] = (result, queued, _items(url))

    result, queued, items = got["one"]
    for other in ("parts", "lazy"):
        assert got[other][0] == result and got[other][1] == queued
        assert got[other][2].equals(items)
    assert queued == {"low_confidence": 40, "suspect": 25, "llm_failed": 10, "audit": 0}
    assert result["superseded"] == {"suspect": 25}
    assert result["dropped_over_capacity"]["audit"] == rows.filter(pl.col("queue") == "audit").height

    # each queue holds its highest priorities; among equal priorities, the earlier rows
    cand = rows.with_row_index("order").filter(pl.col("queue").is_not_null())
    ranked = cand.with_columns(
        pl.Series("p", priority(cand["queue"].to_list(), cand["confidence"].to_numpy(), price=cand["price"]))
    )
    for q, cap in capacity.model_dump().items():
        best = ranked.filter(pl.col("queue") == q).sort("p", "order", descending=[True, False]).head(cap)
        held = items.filter((pl.col("queue") == q) & (pl.col("status") == "open"))
        assert set(held["sku_id"]) == set(best["sku_id"]), q
        assert (
            held.sort("priority", descending=True, maintain_order=True)["sku_id"].to_list()
            == best.sort("p", "sku_id", descending=[True, False])["sku_id"].to_list()
        )


def test_more_kept_items_than_one_store_call_takes_keep_the_reviewing_order(
    tmp_path: Path, make_frame
) -> None:
    # 60,000 low-confidence items kept in one night (a raised capacity): the store gets them in chunks,
    # and reviewers still get them highest priority first, then by SKU, as from one call
    base = (
        make_frame(600)
        .drop("priority")
        .with_columns(pl.col("confidence").round(2), queue=pl.lit("low_confidence"))
    )
    rows = pl.concat([base.with_columns(pl.col("sku_id") + f"-{k}") for k in range(101)])
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    settings = Settings(
        state_dir=tmp_path, queue_url=url, queue_capacity=QueueCapacity(low_confidence=60_000)
    )
    result, queued = enqueue_rescored(settings, rows.lazy(), "run-1")

    assert queued["low_confidence"] == 60_000
    assert result["dropped_over_capacity"]["low_confidence"] == rows.height - 60_000
    items = _items(url)
    assert items.height == 60_000 and items["sku_id"].n_unique() == 60_000
    in_order = items.sort("priority", "sku_id", descending=[True, False])
    assert items["id"].to_list() == sorted(items["id"].to_list())  # ids: the order reviewers get
    assert in_order["sku_id"].to_list() == items["sku_id"].to_list()
