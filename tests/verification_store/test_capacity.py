"""The nightly capacity is applied once: what the run reports as queued and dropped is what the store
holds."""

from __future__ import annotations

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
