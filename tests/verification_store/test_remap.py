"""remap_categories: human labels and open review items follow their node to a new taxonomy version."""

from __future__ import annotations

from verification import ItemFilter
from verification.store import QueueStore


def test_labels_and_open_items_follow_their_node(store: QueueStore, make_frame) -> None:
    frame = make_frame(40, queues=("low_confidence",)).unique(
        "category_id", keep="first", maintain_order=True
    )
    rows = frame.head(12).to_dicts()
    assert len(rows) == 12  # twelve products with twelve different suggested nodes
    frame = frame.head(12)
    store.enqueue(frame, run_id="r1")
    # three decided SKUs: one keeps its node, one's node is renamed, one's node is gone
    kept, renamed, gone = rows[0], rows[1], rows[2]
    by_sku = {i.sku_id: i for i in store.claim("low_confidence", "alice", limit=12)}
    for r in (kept, renamed, gone):
        store.decide(by_sku[r["sku_id"]].id, "alice", "accept")
    for sku, i in by_sku.items():
        if sku not in (kept["sku_id"], renamed["sku_id"], gone["sku_id"]):
            assert store.release(i.id, "alice")
    # open items: one's suggestion is renamed, one's is gone (untouched), one's is gone but bob holds it
    moved_item, stale_item, busy_item = rows[3], rows[4], rows[5]
    for i in store.claim("low_confidence", "bob", limit=12):
        if i.sku_id != busy_item["sku_id"]:
            store.release(i.id, "bob")

    renames = {
        renamed["category_id"]: ("new-1", "New > Renamed"),
        moved_item["category_id"]: ("new-2", "New > Moved"),
    }
    vanished = {gone["category_id"], stale_item["category_id"], busy_item["category_id"]}

    def follow(cid: str | None, path: str | None) -> tuple[str, str] | None:
        if cid in vanished:
            return None
        return renames.get(cid or "", (cid or "", path or ""))

    result = store.remap_categories(follow, run_id="migrate-1")

    assert result.labels == {"same": 1, "remapped": 1, "lost": 1}
    assert result.lost_labels == [(gone["sku_id"], gone["category_id"])]
    locked = store.locked()
    assert locked[renamed["sku_id"]][:2] == ("new-1", "New > Renamed")
    assert locked[kept["sku_id"]][0] == kept["category_id"]
    assert gone["sku_id"] not in locked  # a label on a vanished node teaches nothing
    assert result.items["superseded"] == 1 and result.items["kept_in_progress"] == 1
    assert result.items["remapped"] >= 1

    items = {i.sku_id: i for i in store.list_items(ItemFilter(), limit=100)[0]}
    moved = items[moved_item["sku_id"]]
    assert (moved.suggested_category_id, moved.suggested_category_path) == ("new-2", "New > Moved")
    stale = items[stale_item["sku_id"]]
    assert (stale.status, stale.final_kind, stale.run_id) == ("decided", "superseded", "migrate-1")
    assert items[busy_item["sku_id"]].status == "claimed"  # bob keeps working on it
    for item in items.values():  # open items show no candidate on a vanished node, renamed ones moved
        if item.status == "open":
            ids = {c["category_id"] for c in item.candidates}
            assert not ids & vanished and not ids & set(renames)

    again = store.remap_categories(follow, run_id="migrate-1")  # a second pass finds nothing to move
    assert again.labels == {"same": 2} and again.items.get("remapped", 0) == 0
