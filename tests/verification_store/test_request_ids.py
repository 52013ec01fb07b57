"""A decision sent twice with the same request id (a resend after a 503 or a lost answer) is applied
once, and the second send reports the first decision as saved."""

from __future__ import annotations

import pytest

from verification import ItemConflictError
from verification.store import QueueStore


def test_a_resent_decision_is_reported_saved_and_logged_once(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(4, queues=("low_confidence",)), run_id="r1")
    item = store.claim("low_confidence", "alice")[0]
    first = store.decide(item.id, "alice", "accept", request_id="req-1")
    again = store.decide(item.id, "alice", "accept", request_id="req-1")
    assert first.final and not first.replayed
    assert again.replayed and again.final and again.decision_id == first.decision_id
    assert again.category_id == item.suggested_category_id
    log = store.decisions_frame()
    assert log.height == 1 and log["request_id"].to_list() == ["req-1"]
    assert store.labels().height == 1

    # a skip resent does not log a second skip either
    other = store.claim("low_confidence", "bob")[0]
    store.decide(other.id, "bob", "skip", request_id="req-2")
    assert store.decide(other.id, "bob", "skip", request_id="req-2").replayed
    assert store.decisions_frame().filter(store.decisions_frame()["request_id"] == "req-2").height == 1


def test_a_request_id_names_one_decision_only(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(4, queues=("low_confidence",)), run_id="r1")
    a, b = store.claim("low_confidence", "alice", limit=2)
    store.decide(a.id, "alice", "accept", request_id="same")
    with pytest.raises(ItemConflictError, match="request id 'same' already made decision"):
        store.decide(b.id, "alice", "accept", request_id="same")
    assert store.get_item(b.id).status == "claimed"  # nothing was applied to the second item


def test_without_a_request_id_a_second_decision_is_a_conflict(store: QueueStore, make_frame) -> None:
    store.enqueue(make_frame(2, queues=("low_confidence",)), run_id="r1")
    item = store.claim("low_confidence", "alice")[0]
    store.decide(item.id, "alice", "accept")
    with pytest.raises(ItemConflictError, match="already decided"):
        store.decide(item.id, "alice", "accept")
