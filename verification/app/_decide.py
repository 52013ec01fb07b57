"""Deciding and claiming, shared by the pages and the JSON API (internal)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError
from verification._types import DecisionResult, ItemView
from verification.models import DecisionKind
from verification.store import QueueStore

from ._common import QUEUE_ORDER, UiFilters
from ._taxonomy import TaxonomyService

__all__ = ["DecisionRequest", "apply_decision", "claim_next", "describe_decision", "move_next"]


@dataclass(frozen=True)
class DecisionRequest:
    kind: DecisionKind
    category_id: str | None = None
    note: str = ""
    duration_ms: int | None = None
    request_id: str | None = None  # the same id sent again is reported as saved, never applied twice


def apply_decision(
    store: QueueStore, taxonomy: TaxonomyService, item_id: int, reviewer: str, decision: DecisionRequest
) -> DecisionResult:
    """Record ``decision``; a ``choose`` must name a node of the app's taxonomy (its path is taken from
    it)."""
    category_path = None
    category_id = None
    if decision.kind == DecisionKind.CHOOSE:
        if not decision.category_id:
            raise InvalidDecisionError(
                f"item {item_id}: 'choose' needs a category; pick a candidate or search the taxonomy"
            )
        node = taxonomy.get(decision.category_id)
        if node is None:
            shown = (
                decision.category_id if len(decision.category_id) <= 40 else decision.category_id[:37] + "..."
            )
            raise InvalidDecisionError(
                f"item {item_id}: category id {shown!r} is not in taxonomy "
                f"{taxonomy.taxonomy.source} ({taxonomy.taxonomy.version}); pick one from the taxonomy search"
            )
        category_id, category_path = node.id, node.path
    return store.decide(
        item_id,
        reviewer,
        decision.kind,
        category_id=category_id,
        category_path=category_path,
        note=decision.note,
        duration_ms=decision.duration_ms,
        request_id=decision.request_id,
    )


def claim_next(
    store: QueueStore, reviewer: str, filters: UiFilters, *, exclude: int | None = None
) -> ItemView | None:
    """Claim the next item for ``reviewer`` in the filtered queue (or the queues in triage order).

    ``exclude`` is the item just shown, so "next" moves on even while that item is still leased to this
    reviewer.
    """
    item_filter = dataclasses.replace(filters.to_item_filter(), status=None, queue=None)
    queues = [filters.queue] if filters.queue else [str(q) for q in QUEUE_ORDER]
    for queue in queues:
        items = store.claim(queue, reviewer, limit=1, filters=item_filter)
        if items and items[0].id == exclude:
            # The excluded item is still leased to us, so it comes back first: take the one after it.
            items = [i for i in store.claim(queue, reviewer, limit=2, filters=item_filter) if i.id != exclude]
        if items:
            return items[0]
    return None


def move_next(
    store: QueueStore, reviewer: str, filters: UiFilters, *, current: int, scan: int = 200
) -> ItemView | None:
    """Leave item ``current`` undecided and take the one after it in the list order (priority, then id).

    The current item is given back to the pool (its lease released, no decision logged). The next open
    item after it (or one this reviewer already holds) is leased to ``reviewer``; past the end of the
    list it wraps around to the top. Items the reviewer skipped recently are passed over.
    """
    here = store.get_item(current)
    store.release(current, reviewer)
    base = filters.to_item_filter()
    open_items, _ = store.list_items(dataclasses.replace(base, status="open"), offset=0, limit=scan)
    mine, _ = store.list_items(
        dataclasses.replace(base, status="claimed", claimed_by=reviewer), offset=0, limit=scan
    )
    items = sorted({i.id: i for i in [*open_items, *mine]}.values(), key=lambda i: (-i.priority, i.id))
    if here is not None:
        key = (-here.priority, here.id)
        items = [i for i in items if (-i.priority, i.id) > key] + [
            i for i in items if (-i.priority, i.id) < key
        ]
    for item in items:
        if item.id == current or _skipped_recently(store, item.id, reviewer):
            continue
        try:
            return store.renew(item.id, reviewer)
        except (ItemConflictError, ItemNotFoundError):
            continue  # taken or decided in the meantime
    return None


def _skipped_recently(store: QueueStore, item_id: int, reviewer: str) -> bool:
    """True when ``reviewer`` skipped the item within the store's skip cool-down (claim honours it too)."""
    since = datetime.now(UTC) - timedelta(seconds=store.skip_cooldown_seconds)
    return any(
        d["reviewer"] == reviewer and d["kind"] == DecisionKind.SKIP and d["decided_at"] > since
        for d in store.decisions_for_item(item_id)
    )


def describe_decision(item: ItemView, result: DecisionResult) -> str:
    """One line for the reviewer about what was saved."""
    name = item.title or item.sku_id
    if len(name) > 80:
        name = name[:77] + "..."
    kind = DecisionKind(result.kind)
    if kind == DecisionKind.SKIP:
        text = f"Skipped \u201c{name}\u201d."
    elif kind == DecisionKind.ACCEPT:
        text = f"Accepted \u201c{name}\u201d \u2192 {result.category_path or item.suggested_category_path}."
    elif kind == DecisionKind.CHOOSE:
        text = f"Moved \u201c{name}\u201d \u2192 {result.category_path}."
    elif kind == DecisionKind.NOT_PRODUCT:
        text = f"Marked \u201c{name}\u201d as not a product."
    else:
        text = f"Marked \u201c{name}\u201d as needing more data."
    if result.awaiting_second_review:
        text += f" A second reviewer must confirm ({result.reviews_done} of {result.reviews_required})."
    if result.replayed:
        text += " (It had been saved already; it was not recorded twice.)"
    return text
