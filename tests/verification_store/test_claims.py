"""Claims are leases: highest priority first, never one item to two people, expiry returns items."""

from __future__ import annotations

import time

import pytest

from verification import ItemConflictError, ItemFilter
from verification.store import QueueStore


def test_claim_hands_out_highest_priority_first_and_never_twice(store: QueueStore, make_frame) -> None:
    frame = make_frame(40, queues=("low_confidence",))
    store.enqueue(frame, run_id="r1")
    a = store.claim("low_confidence", "alice", limit=5)
    b = store.claim("low_confidence", "bob", limit=5)
    assert len(a) == len(b) == 5
    assert not {i.id for i in a} & {i.id for i in b}
    top = frame.sort(["priority", "sku_id"], descending=[True, False])["sku_id"].to_list()
    assert [i.sku_id for i in a] == top[:5]
    assert [i.sku_id for i in b] == top[5:10]
    assert all(i.status == "claimed" and i.claimed_by == "alice" and i.lease_expires_at for i in a)
    counts = store.queue_counts()["low_confidence"]
    assert counts == {"open": 30, "claimed": 10, "decided": 0}


def test_reclaiming_returns_held_items_with_renewed_lease(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(10, queues=("suspect",)), run_id="r1")
    first = store.claim("suspect", "alice")
    again = store.claim("suspect", "alice")
    assert [i.id for i in again] == [first[0].id]
    assert again[0].lease_expires_at >= first[0].lease_expires_at
    more = store.claim("suspect", "alice", limit=3)
    assert more[0].id == first[0].id and len(more) == 3


def test_expired_leases_return_to_the_pool(make_store, make_frame) -> None:
    store = make_store(lease_seconds=1)
    store.enqueue(make_frame(3, queues=("llm_failed",)), run_id="r1")
    held = store.claim("llm_failed", "alice", limit=3)
    assert store.claim("llm_failed", "bob") == []
    time.sleep(1.3)
    assert store.queue_counts()["llm_failed"]["open"] == 3  # expired claims count as open
    taken = store.claim("llm_failed", "bob")  # claim treats expired claims as claimable
    assert taken[0].id == held[0].id and taken[0].claimed_by == "bob"
    assert store.release_expired() == 2
    assert store.release_expired() == 0
    with pytest.raises(ItemConflictError, match="claimed by bob"):
        store.decide(taken[0].id, "alice", "accept")
    # alice's own expired claim that nobody took can still be decided by her
    result = store.decide(held[1].id, "alice", "accept")
    assert result.final


def test_skip_keeps_item_away_from_the_skipper_only(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(2, queues=("audit",)), run_id="r1")
    first = store.claim("audit", "alice")[0]
    store.decide(first.id, "alice", "skip", note="not sure")
    nxt = store.claim("audit", "alice")
    assert [i.id for i in nxt] != [first.id]
    store.decide(nxt[0].id, "alice", "skip")
    assert store.claim("audit", "alice") == []
    assert store.claim("audit", "bob")[0].id == first.id


def test_release_and_claim_filters(store: QueueStore, make_frame) -> None:
    frame = make_frame(30, queues=("low_confidence",))
    store.enqueue(frame, run_id="r1")
    item = store.claim("low_confidence", "alice")[0]
    assert store.release(item.id, "bob") is False
    assert store.release(item.id, "alice") is True
    assert store.get_item(item.id).status == "open"

    brand = frame["brand"].drop_nulls()[0]
    got = store.claim("low_confidence", "bob", limit=50, filters=ItemFilter(search=brand))
    assert got and all(brand.lower() in ((i.title or "") + (i.brand or "")).lower() for i in got)
    low = store.claim("low_confidence", "carol", limit=50, filters=ItemFilter(max_confidence=0.4))
    assert all(i.confidence <= 0.4 for i in low)


def test_claim_unknown_queue_is_refused(store: QueueStore) -> None:
    from shelfwise.errors import ConfigError

    with pytest.raises(ConfigError, match="queue 'nope' is not known"):
        store.claim("nope", "alice")


def test_renew_and_status_filters(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(6, queues=("suspect",)), run_id="r1")
    item = store.claim("suspect", "alice")[0]
    renewed = store.renew(item.id, "alice")
    assert renewed.claimed_by == "alice" and renewed.lease_expires_at >= item.lease_expires_at
    with pytest.raises(ItemConflictError, match="claimed by alice"):
        store.renew(item.id, "bob")
    assert store.list_items(ItemFilter(status="claimed"))[1] == 1
    assert store.list_items(ItemFilter(status="open"))[1] == 5
    store.decide(item.id, "alice", "accept", note="obvious")
    assert store.list_items(ItemFilter(status="decided"))[0][0].id == item.id
    history = store.decisions_for_item(item.id)
    assert [(h["reviewer"], h["kind"], h["note"]) for h in history] == [("alice", "accept", "obvious")]
    assert history[0]["decided_at"].tzinfo is not None
