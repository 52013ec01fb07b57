"""Decisions of each kind, consensus on suspect items, the append-only audit log, bulk accept."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from verification import InvalidDecisionError, ItemConflictError, ItemFilter, ItemNotFoundError
from verification.store import QueueStore


def _claim(store: QueueStore, queue: str, who: str):
    items = store.claim(queue, who)
    assert items, f"nothing to claim in {queue}"
    return items[0]


def test_each_decision_kind(store: QueueStore, make_frame, amazon) -> None:
    _, tax = amazon
    store.enqueue(make_frame(8, queues=("low_confidence",)), run_id="r1")
    accepted = _claim(store, "low_confidence", "alice")
    res = store.decide(accepted.id, "alice", "accept", duration_ms=4200)
    assert res.final and res.category_id == accepted.suggested_category_id

    chosen = _claim(store, "low_confidence", "alice")
    node = tax.find_path(chosen.current_category_path)
    res = store.decide(chosen.id, "alice", "choose", category_id=node.id, category_path=node.path)
    assert res.final and res.category_path == node.path

    junk = _claim(store, "low_confidence", "bob")
    assert store.decide(junk.id, "bob", "not_product").final
    thin = _claim(store, "low_confidence", "bob")
    assert store.decide(thin.id, "bob", "needs_data", note="no description").final
    skipped = _claim(store, "low_confidence", "bob")
    res = store.decide(skipped.id, "bob", "skip")
    assert not res.final and res.status == "open"

    labels = {r["sku_id"]: r for r in store.labels().iter_rows(named=True)}
    assert labels == {
        accepted.sku_id: labels[accepted.sku_id],
        chosen.sku_id: labels[chosen.sku_id],
    }
    assert labels[accepted.sku_id]["category_id"] == accepted.suggested_category_id
    assert labels[chosen.sku_id]["category_id"] == node.id
    assert labels[chosen.sku_id]["reviewer"] == "alice"
    assert labels[chosen.sku_id]["content_hash"] == chosen.content_hash

    log = store.decisions_frame()
    assert log["kind"].to_list() == ["accept", "choose", "not_product", "needs_data", "skip"]
    assert log["final"].to_list() == [True, True, True, True, False]
    first = log.row(0, named=True)
    assert first["reviewer"] == "alice" and first["duration_ms"] == 4200
    assert first["shown_category_id"] == accepted.suggested_category_id
    assert first["shown_confidence"] == accepted.confidence
    assert first["current_category_path"] == accepted.current_category_path
    assert first["model_version"] == "test-model-1"
    assert first["taxonomy_version"] == tax.version
    assert log.row(3, named=True)["note"] == "no description"

    counts = store.queue_counts()["low_confidence"]
    assert counts == {"open": 4, "claimed": 0, "decided": 4}
    final = store.get_item(chosen.id)
    assert final.status == "decided" and final.final_category_id == node.id and final.decided_by == "alice"


def test_decisions_refused_with_reasons(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(4, queues=("suspect",)), run_id="r1")
    item = _claim(store, "suspect", "alice")
    with pytest.raises(ItemConflictError, match="claimed by alice"):
        store.decide(item.id, "bob", "accept")
    with pytest.raises(InvalidDecisionError, match="needs both category_id and category_path"):
        store.decide(item.id, "alice", "choose", category_id="x")
    with pytest.raises(InvalidDecisionError, match="decision kind 'maybe' is not known"):
        store.decide(item.id, "alice", "maybe")
    with pytest.raises(ItemNotFoundError, match="999999"):
        store.decide(999999, "alice", "accept")
    store.decide(item.id, "alice", "accept")
    with pytest.raises(ItemConflictError, match="already decided by alice"):
        store.decide(item.id, "alice", "accept")
    assert store.decisions_frame().height == 1


def test_consensus_on_suspect_needs_a_second_reviewer(make_store, make_frame, amazon) -> None:
    _, tax = amazon
    store = make_store(consensus_suspect=True)
    store.enqueue(make_frame(8, queues=("suspect", "low_confidence")), run_id="r1")
    item = _claim(store, "suspect", "alice")
    keep = tax.find_path(item.current_category_path)
    first = store.decide(item.id, "alice", "choose", category_id=keep.id, category_path=keep.path)
    assert not first.final and first.awaiting_second_review
    assert store.get_item(item.id).awaiting_second_review
    assert store.labels().is_empty()

    # alice may not give the second opinion, and is not offered the item again
    with pytest.raises(ItemConflictError, match="different reviewer"):
        store.decide(item.id, "alice", "accept")
    assert item.id not in {i.id for i in store.claim("suspect", "alice", limit=10)}
    for other in store.list_items(ItemFilter(claimed_by="alice"))[0]:
        store.release(other.id, "alice")

    second = store.claim("suspect", "bob", limit=10)
    assert item.id in {i.id for i in second}
    res = store.decide(item.id, "bob", "choose", category_id=keep.id, category_path=keep.path)
    assert res.final and res.reviews_done == 2
    log = store.decisions_frame().filter(item_id=item.id)
    assert log.select("reviewer", "review_round", "final").rows() == [("alice", 1, False), ("bob", 2, True)]
    assert store.labels().row(0, named=True)["category_id"] == keep.id
    for other in second:
        store.release(other.id, "bob")

    # agreeing with the suggestion is final at once; other queues never need consensus
    agree = _claim(store, "suspect", "carol")
    assert store.decide(agree.id, "carol", "accept").final
    low = _claim(store, "low_confidence", "carol")
    assert store.decide(low.id, "carol", "not_product").final


def test_without_consensus_first_suspect_decision_is_final(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(4, queues=("suspect",)), run_id="r1")
    item = _claim(store, "suspect", "alice")
    assert store.decide(item.id, "alice", "not_product").final


def test_audit_log_is_append_only(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(2, queues=("audit",)), run_id="r1")
    item = _claim(store, "audit", "alice")
    store.decide(item.id, "alice", "accept")
    with store.engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            conn.execute(sa.text("UPDATE decisions SET kind = 'not_product'"))
        conn.rollback()
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            conn.execute(sa.text("DELETE FROM decisions"))
        conn.rollback()
        if store.dialect == "postgresql":
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text("TRUNCATE decisions"))
            conn.rollback()
    log = store.decisions_frame()
    assert log.height == 1 and log["kind"][0] == "accept"


def test_bulk_accept_by_filter(store: QueueStore, make_frame) -> None:
    frame = make_frame(40, queues=("low_confidence",))
    store.enqueue(frame, run_id="r1")
    held = _claim(store, "low_confidence", "bob")
    target = ItemFilter(queue="low_confidence", min_confidence=0.5)
    expected = {i.id for i in store.list_items(target, limit=100)[0]} - {held.id}
    assert expected
    n = store.bulk_accept(target, "alice")
    assert n == len(expected)
    assert store.get_item(held.id).status == "claimed"  # someone else's claim is left alone
    labels = set(store.labels()["sku_id"].to_list())
    assert labels == {store.get_item(i).sku_id for i in expected}
    assert set(store.decisions_frame()["source"].to_list()) == {"bulk"}
    assert store.bulk_accept(target, "alice") == 0


def test_list_items_filters_and_pages(store: QueueStore, make_frame) -> None:
    frame = make_frame(50)
    store.enqueue(frame, run_id="r1")
    page1, total = store.list_items(ItemFilter(), offset=0, limit=20)
    page3, _ = store.list_items(ItemFilter(), offset=40, limit=20)
    assert total == 50 and len(page1) == 20 and len(page3) == 10
    top = frame["category_path"][0].split(" > ")[0]
    by_cat, n = store.list_items(ItemFilter(category=top), limit=100)
    assert (
        n
        == frame.filter(
            frame["category_path"].str.starts_with(top + " >") | (frame["category_path"] == top)
        ).height
    )
    assert all(i.suggested_category_path.startswith(top) for i in by_cat)
    _, n_reason = store.list_items(ItemFilter(reason="suspect_branch"), limit=1)
    assert n_reason == 25
    word = frame["title"][3].split()[0]
    found, _ = store.list_items(ItemFilter(search=word.upper()), limit=100)
    assert frame["sku_id"][3] in {i.sku_id for i in found}
    pct, _ = store.list_items(ItemFilter(search="%"), limit=100)
    assert all("%" in ((i.title or "") + (i.brand or "") + i.sku_id) for i in pct)
