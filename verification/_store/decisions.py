"""Leases (claim, renew, release) and the decision state machine, with the one decision-log row builder."""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from verification._db import utcnow
from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError
from verification._retry import transient_retry
from verification._store.core import DECISIONS, ITEMS, LABELS, RowLike, StoreCore, to_kind, view
from verification._types import DecisionResult, ItemFilter, ItemView
from verification.models import DecisionKind, DecisionSource, ItemStatus, Queue

__all__ = ["DecisionOps", "Verdict", "decision_row"]


@dataclass(frozen=True)
class Verdict:
    """One decision as given: by a reviewer, a bulk accept or an import (``at``: naive UTC)."""

    reviewer: str
    kind: DecisionKind
    source: DecisionSource
    at: _dt.datetime
    category_id: str | None = None
    category_path: str | None = None
    note: str = ""
    duration_ms: int | None = None
    request_id: str | None = None  # unique in the log: the same request is applied once


class DecisionOps(StoreCore):
    """Claims and decisions on review items."""

    @transient_retry
    def claim(
        self, queue: str, reviewer: str, *, limit: int = 1, filters: ItemFilter | None = None
    ) -> list[ItemView]:
        """Lease up to ``limit`` items of ``queue`` to ``reviewer``, highest priority first.

        Items the reviewer already holds (unexpired) come back first with a renewed lease, so reloading
        the review page does not strand claims. Never hands one item to two reviewers; expired claims of
        others are claimable; items the reviewer skipped recently, and suspect items awaiting a second
        opinion on the reviewer's own first decision, are not offered to them.
        """
        queue = self._queue_name(queue)
        if limit < 1:
            return []
        now = utcnow()
        expires = now + _dt.timedelta(seconds=self.lease_seconds)
        extra = self._filter_conditions(
            None if filters is None else ItemFilter(**{**filters.__dict__, "queue": None, "status": None}),
            now,
        )
        mine = sa.and_(
            ITEMS.c.status == ItemStatus.CLAIMED.value,
            ITEMS.c.claimed_by == reviewer,
            ITEMS.c.lease_expires_at >= now,
        )
        cooldown = now - _dt.timedelta(seconds=self.skip_cooldown_seconds)
        skipped_recently = sa.exists().where(
            DECISIONS.c.item_id == ITEMS.c.id,
            DECISIONS.c.reviewer == reviewer,
            DECISIONS.c.kind == DecisionKind.SKIP.value,
            DECISIONS.c.decided_at > cooldown,
        )
        fresh = sa.and_(self._available(now), self._not_own_second_review(reviewer), ~skipped_recently)
        pick = self._lock(
            sa.select(ITEMS.c.id)
            .where(ITEMS.c.queue == queue, sa.or_(mine, fresh), *extra)
            .order_by(sa.case((mine, 0), else_=1), ITEMS.c.priority.desc(), ITEMS.c.id)
            .limit(limit),
            skip_locked=True,
        )
        with self._writing() as conn:
            if self.dialect == "postgresql":
                # a lost lease is harmless (the item returns to the pool): skip the WAL flush wait
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            # Pick first (PostgreSQL locks the rows and skips rows other claims hold; SQLite holds the
            # database write lock since BEGIN IMMEDIATE), then lease exactly those rows. Not one
            # UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED): PostgreSQL may rescan
            # that subquery per row and lease far more than n items.
            ids = list(conn.execute(pick).scalars())
            if not ids:
                return []
            rows = (
                conn.execute(
                    sa.update(ITEMS)
                    .where(ITEMS.c.id.in_(ids), sa.or_(mine, self._available(now)))
                    .values(
                        status=ItemStatus.CLAIMED.value,
                        claimed_by=reviewer,
                        claimed_at=sa.case((mine, ITEMS.c.claimed_at), else_=now),
                        lease_expires_at=expires,
                    )
                    .returning(*ITEMS.c)
                )
                .mappings()
                .all()
            )
            if len(rows) != len(ids):  # pragma: no cover - the locks above make this impossible
                raise ItemConflictError(
                    f"claim of {len(ids)} items in queue {queue!r} leased {len(rows)}; another reviewer "
                    "took some in between; retry the claim"
                )
        return sorted((view(r) for r in rows), key=lambda v: (-v.priority, v.id))

    @transient_retry
    def renew(self, item_id: int, reviewer: str) -> ItemView:
        """Extend the lease of an item the reviewer holds (raises if someone else took it)."""
        now = utcnow()
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(
                    ITEMS.c.id == item_id,
                    sa.or_(
                        sa.and_(ITEMS.c.status == ItemStatus.CLAIMED.value, ITEMS.c.claimed_by == reviewer),
                        self._available(now),
                    ),
                    self._not_own_second_review(reviewer),
                )
                .values(
                    status=ItemStatus.CLAIMED.value,
                    claimed_by=reviewer,
                    claimed_at=sa.func.coalesce(ITEMS.c.claimed_at, now),
                    lease_expires_at=now + _dt.timedelta(seconds=self.lease_seconds),
                )
            )
            if res.rowcount != 1:
                self._raise_unavailable(conn, item_id, reviewer)
            return self._views(conn, [item_id])[0]

    @transient_retry
    def release(self, item_id: int, reviewer: str) -> bool:
        """Give a claimed item back to the pool without a decision. False if the reviewer did not hold it."""
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(
                    ITEMS.c.id == item_id,
                    ITEMS.c.status == ItemStatus.CLAIMED.value,
                    ITEMS.c.claimed_by == reviewer,
                )
                .values(status=ItemStatus.OPEN.value, claimed_by=None, claimed_at=None, lease_expires_at=None)
            )
            return res.rowcount == 1

    @transient_retry
    def release_expired(self) -> int:
        """Return every claim whose lease has expired to the pool; the number released."""
        now = utcnow()
        with self._writing() as conn:
            res = conn.execute(
                sa.update(ITEMS)
                .where(self._expired(now))
                .values(status=ItemStatus.OPEN.value, claimed_by=None, claimed_at=None, lease_expires_at=None)
            )
            return int(res.rowcount)

    def _raise_unavailable(self, conn: sa.Connection, item_id: int, reviewer: str) -> None:
        row = conn.execute(sa.select(ITEMS).where(ITEMS.c.id == item_id)).mappings().first()
        if row is None:
            raise ItemNotFoundError(f"review item {item_id} does not exist; list items with list_items()")
        self._check_decidable(row, reviewer, utcnow(), DecisionKind.ACCEPT)
        raise ItemConflictError(f"review item {item_id} is not available to {reviewer!r}")

    # ------------------------------------------------------------------ decisions
    def decide(
        self,
        item_id: int,
        reviewer: str,
        kind: DecisionKind | str,
        *,
        category_id: str | None = None,
        category_path: str | None = None,
        note: str = "",
        duration_ms: int | None = None,
        request_id: str | None = None,
    ) -> DecisionResult:
        """Record a reviewer's decision on an item (claimed by them, or open) in the audit log.

        - ``accept``: the suggested category is final; ``choose``: ``category_id`` + ``category_path``
          (validated against the taxonomy by the caller) is final; ``not_product`` / ``needs_data``:
          final without a category; ``skip``: the item returns to the pool and is kept away from this
          reviewer for ``skip_cooldown_seconds``.
        - with ``consensus_suspect``, a first decision on a ``suspect`` item that disagrees with the
          suggestion is recorded but not final: a second, different reviewer decides.

        - ``request_id`` (at most 64 characters; a random one when ``None``) is stored with the decision:
          the same request sent again (the store's own retry after a lost connection, or a client's)
          is not applied twice; it returns the decision already made, with ``replayed=True``.

        Raises :class:`ItemNotFoundError`, :class:`ItemConflictError` (claimed by someone else, already
        decided, own first decision) or :class:`InvalidDecisionError`.
        """
        kind = to_kind(kind)
        if kind == DecisionKind.CHOOSE and (not category_id or not category_path):
            raise InvalidDecisionError(
                f"decision 'choose' on item {item_id} needs both category_id and category_path "
                f"(got {category_id!r}, {category_path!r}); pick a taxonomy node or use 'accept'"
            )
        if request_id is not None and not 1 <= len(request_id) <= 64:
            raise InvalidDecisionError(
                f"decision on item {item_id}: request_id must be 1 to 64 characters (got {len(request_id)})"
            )
        verdict = Verdict(
            reviewer,
            kind,
            DecisionSource.REVIEW,
            utcnow(),
            category_id,
            category_path,
            note,
            duration_ms,
            request_id or uuid.uuid4().hex,
        )
        return self._decide_once(item_id, verdict)

    @transient_retry
    def _decide_once(self, item_id: int, verdict: Verdict) -> DecisionResult:
        """One transaction of :meth:`decide`: lock the item, replay a known request id, else apply."""
        with self._writing() as conn:
            row = conn.execute(self._lock(sa.select(ITEMS).where(ITEMS.c.id == item_id))).mappings().first()
            if row is None:
                raise ItemNotFoundError(f"review item {item_id} does not exist; list items with list_items()")
            done = self._replay(conn, row, verdict)
            if done is not None:
                return done
            self._check_decidable(row, verdict.reviewer, verdict.at, verdict.kind)
            return self._apply(conn, row, verdict)

    def _replay(self, conn: sa.Connection, row: RowLike, verdict: Verdict) -> DecisionResult | None:
        """The decision already made by ``verdict.request_id`` (``None`` when there is none).

        Read after the item row is locked, so a concurrent send of the same request sees the first one.
        """
        if verdict.request_id is None:
            return None
        d = (
            conn.execute(sa.select(DECISIONS).where(DECISIONS.c.request_id == verdict.request_id))
            .mappings()
            .first()
        )
        if d is None:
            return None
        if d["item_id"] != row["id"] or d["reviewer"] != verdict.reviewer:
            raise ItemConflictError(
                f"request id {verdict.request_id!r} already made decision {d['id']} on another item or by "
                "another reviewer; send a new request id with each decision"
            )
        return DecisionResult(
            row["id"],
            d["id"],
            d["kind"],
            bool(d["final"]),
            row["status"],
            row["reviews_done"],
            row["reviews_required"],
            d["category_id"],
            d["category_path"],
            replayed=True,
        )

    def _check_decidable(self, row: RowLike, reviewer: str, now: _dt.datetime, kind: DecisionKind) -> None:
        item_id = row["id"]
        if row["status"] == ItemStatus.DECIDED.value:
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) was already decided by {row['decided_by']} at "
                f"{row['decided_at']:%Y-%m-%d %H:%M} UTC ({row['final_kind']}); claim the next item instead"
            )
        if (
            row["status"] == ItemStatus.CLAIMED.value
            and row["claimed_by"] != reviewer
            and row["lease_expires_at"] is not None
            and row["lease_expires_at"] >= now
        ):
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) is claimed by {row['claimed_by']} until "
                f"{row['lease_expires_at']:%H:%M:%S} UTC; claim another item"
            )
        if kind != DecisionKind.SKIP and row["reviews_done"] > 0 and row["first_reviewer"] == reviewer:
            raise ItemConflictError(
                f"review item {item_id} (sku {row['sku_id']}) needs a second opinion from a different "
                f"reviewer; {reviewer} already gave the first decision"
            )

    def _apply(
        self, conn: sa.Connection, row: RowLike, verdict: Verdict, *, force_final: bool = False
    ) -> DecisionResult:
        """Apply ``verdict`` to the item ``row``: log it, then reopen, wait for a second opinion, or close."""
        verdict, agrees = _resolved(row, verdict)
        if verdict.kind == DecisionKind.SKIP:
            return self._apply_skip(conn, row, verdict)
        needs_second = (
            not force_final
            and self.consensus_suspect
            and row["queue"] == Queue.SUSPECT.value
            and row["reviews_done"] == 0
            and not agrees
        )
        if needs_second:
            return self._apply_first_of_two(conn, row, verdict)
        return self._apply_final(conn, row, verdict)

    def _apply_skip(self, conn: sa.Connection, row: RowLike, verdict: Verdict) -> DecisionResult:
        """Log a skip (it does not count as a review round) and reopen the item."""
        item_id = row["id"]
        base = decision_row(row, verdict, review_round=row["reviews_done"] + 1, final=False)
        decision_id = self._log(conn, {**base, "review_round": row["reviews_done"]})
        conn.execute(
            sa.update(ITEMS)
            .where(ITEMS.c.id == item_id)
            .values(status=ItemStatus.OPEN.value, **_released(verdict.at))
        )
        return DecisionResult(
            item_id,
            decision_id,
            verdict.kind.value,
            False,
            ItemStatus.OPEN.value,
            row["reviews_done"],
            row["reviews_required"],
        )

    def _apply_first_of_two(self, conn: sa.Connection, row: RowLike, verdict: Verdict) -> DecisionResult:
        """Log the first of two opinions and reopen the item for a different reviewer."""
        item_id = row["id"]
        base = decision_row(row, verdict, review_round=row["reviews_done"] + 1, final=False)
        decision_id = self._log(conn, base)
        conn.execute(
            sa.update(ITEMS)
            .where(ITEMS.c.id == item_id)
            .values(
                status=ItemStatus.OPEN.value,
                reviews_done=1,
                reviews_required=2,
                first_reviewer=verdict.reviewer,
                **_released(verdict.at),
            )
        )
        return DecisionResult(
            item_id,
            decision_id,
            verdict.kind.value,
            False,
            ItemStatus.OPEN.value,
            1,
            2,
            verdict.category_id,
            verdict.category_path,
        )

    def _apply_final(self, conn: sa.Connection, row: RowLike, verdict: Verdict) -> DecisionResult:
        """Log the final decision, make it the SKU's label and close the item."""
        item_id = row["id"]
        review_round = row["reviews_done"] + 1
        base = decision_row(row, verdict, review_round=review_round, final=False)
        decision_id = self._record_final(conn, {**base, "final": True})
        conn.execute(
            sa.update(ITEMS)
            .where(ITEMS.c.id == item_id)
            .values(
                status=ItemStatus.DECIDED.value,
                reviews_done=review_round,
                decided_at=verdict.at,
                decided_by=verdict.reviewer,
                final_kind=verdict.kind.value,
                final_category_id=verdict.category_id,
                final_category_path=verdict.category_path,
                **_released(verdict.at),
            )
        )
        return DecisionResult(
            item_id,
            decision_id,
            verdict.kind.value,
            True,
            ItemStatus.DECIDED.value,
            review_round,
            max(row["reviews_required"], review_round),
            verdict.category_id,
            verdict.category_path,
        )

    def _log(self, conn: sa.Connection, values: Mapping[str, Any]) -> int:
        return int(conn.execute(sa.insert(DECISIONS).values(**values).returning(DECISIONS.c.id)).scalar_one())

    def _record_final(self, conn: sa.Connection, decision: Mapping[str, Any]) -> int:
        """Log a final decision and make it the SKU's human label; the decision's id."""
        decision_id = self._log(conn, decision)
        label = {
            "sku_id": decision["sku_id"],
            "kind": decision["kind"],
            "category_id": decision["category_id"],
            "category_path": decision["category_path"],
            "content_hash": decision["content_hash"],
            "decided_at": decision["decided_at"],
            "reviewer": decision["reviewer"],
            "item_id": decision["item_id"],
            "decision_id": decision_id,
        }
        stmt = self._insert(LABELS).values(**label)
        stmt = stmt.on_conflict_do_update(
            index_elements=[LABELS.c.sku_id], set_={k: stmt.excluded[k] for k in label if k != "sku_id"}
        )
        conn.execute(stmt)
        return decision_id

    @transient_retry
    def bulk_accept(self, filters: ItemFilter, reviewer: str) -> int:
        """Accept the suggestion of every available item matching ``filters``; the number accepted.

        Only open (or lease-expired) items with a suggestion are touched; items claimed by others,
        and second opinions the reviewer may not give, are left alone. Each acceptance is logged.
        """
        now = utcnow()
        f = ItemFilter(**{**filters.__dict__, "status": None})
        conds = self._filter_conditions(f, now)
        done = 0
        bulk = Verdict(reviewer, DecisionKind.ACCEPT, DecisionSource.BULK, now, note="bulk accept")
        with self._writing() as conn:
            stmt = (
                sa.select(ITEMS)
                .where(
                    self._available(now),
                    self._not_own_second_review(reviewer),
                    sa.or_(
                        ITEMS.c.suggested_category_id.is_not(None),
                        ITEMS.c.suggested_category_path.is_not(None),
                    ),
                    *conds,
                )
                .order_by(ITEMS.c.priority.desc(), ITEMS.c.id)
            )
            for row in conn.execute(self._lock(stmt, skip_locked=True)).mappings().all():
                self._apply(conn, row, bulk)
                done += 1
        return done


def _resolved(row: RowLike, verdict: Verdict) -> tuple[Verdict, bool]:
    """``verdict`` with the category it stands for (the suggestion for an accept, none unless chosen),
    and whether it agrees with the item's suggestion."""
    kind = verdict.kind
    category_id, category_path = verdict.category_id, verdict.category_path
    suggested_id, suggested_path = row["suggested_category_id"], row["suggested_category_path"]
    if kind == DecisionKind.ACCEPT:
        if not suggested_id and not suggested_path:
            raise InvalidDecisionError(
                f"review item {row['id']} (sku {row['sku_id']}) has no suggested category to accept; "
                "use 'choose' with a taxonomy node, 'not_product' or 'needs_data'"
            )
        category_id, category_path = suggested_id, suggested_path
    elif kind != DecisionKind.CHOOSE:
        category_id = category_path = None
    agrees = kind == DecisionKind.ACCEPT or (
        kind == DecisionKind.CHOOSE and suggested_id is not None and category_id == suggested_id
    )
    return replace(verdict, category_id=category_id, category_path=category_path), agrees


def _released(now: _dt.datetime) -> dict[str, Any]:
    """The item columns that end a lease."""
    return {"claimed_by": None, "claimed_at": None, "lease_expires_at": None, "updated_at": now}


def decision_row(shown: RowLike, verdict: Verdict, *, review_round: int, final: bool) -> dict[str, Any]:
    """The audit-log row of one decision on ``shown``: a review item row, or an item-shaped mapping of
    what an imported decision says was shown (``id`` None when no item exists)."""
    return {
        "item_id": shown["id"],
        "sku_id": shown["sku_id"],
        "queue": shown["queue"],
        "reviewer": verdict.reviewer,
        "decided_at": verdict.at,
        "kind": verdict.kind.value,
        "category_id": verdict.category_id,
        "category_path": verdict.category_path,
        "note": verdict.note or "",
        "duration_ms": verdict.duration_ms,
        "review_round": review_round,
        "final": final,
        "source": verdict.source.value,
        "title": shown["title"],
        "shown_category_id": shown["suggested_category_id"],
        "shown_category_path": shown["suggested_category_path"],
        "shown_confidence": shown["confidence"],
        "shown_candidates": shown["candidates"],
        "current_category_path": shown["current_category_path"],
        "model_version": shown["model_version"],
        "taxonomy_version": shown["taxonomy_version"],
        "run_id": shown["run_id"],
        "content_hash": shown["content_hash"],
        "request_id": verdict.request_id,
    }
