"""The JSON API under /api/ (documented at /openapi.json and /docs) (internal)."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError
from verification._types import ItemFilter, ItemView
from verification.models import DecisionKind, ItemStatus, Queue, Role

from ._auth import ApiAdmin, ApiAdminCsrf, ApiUser, ApiUserCsrf, ensure_csrf_token
from ._common import MAX_FILTER_CHARS, MAX_INT32, UiFilters, bad_text, public_image_path, state
from ._decide import DecisionRequest, apply_decision, claim_next, describe_decision
from ._unavailable import SAVED_DECISION

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["review"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Not logged in (no session cookie, no valid basic auth)"},
    403: {"description": "Missing/wrong CSRF token, or not an admin"},
    413: {"description": "Request body over the size cap (64 KiB)"},
}


def _storable(value: str | None) -> str | None:
    """Text the database can hold: no NUL byte, no lone surrogate (422 with the reason otherwise)."""
    if value is not None:
        reason = bad_text(value)
        if reason is not None:
            raise ValueError(f"the text {reason}; send plain UTF-8 text")
    return value


def _filter_text(value: str | None) -> str | None:
    """A filter value: storable, at most 500 characters, stripped; blank means no filter."""
    value = _storable(value)
    if value is not None and len(value) > MAX_FILTER_CHARS:
        raise ValueError(f"a filter is at most {MAX_FILTER_CHARS} characters long")
    return None if value is None or not value.strip() else value.strip()


Text = Annotated[str, AfterValidator(_storable)]
FilterText = Annotated[str | None, AfterValidator(_filter_text)]
ItemId = Annotated[int, PathParam(ge=1, le=MAX_INT32, description="Review item id")]


class Candidate(BaseModel):
    category_id: str
    category_path: str
    score: float


class Item(BaseModel):
    """A review item: the product as shown to the reviewer, the model's suggestion and the queue state."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sku_id: str
    queue: str
    status: str
    priority: float
    reason: str
    title: str | None
    description: str | None
    brand: str | None
    image_path: str | None = Field(
        description="Photo path relative to the app's image root (never a server path), or null"
    )
    image_url: str | None = Field(default=None, description="Where the app serves the photo (session login)")
    review_excerpt: str | None
    current_category_path: str | None
    suggested_category_id: str | None
    suggested_category_path: str | None
    confidence: float | None
    candidates: list[Candidate]
    taxonomy_version: str | None
    model_version: str | None
    run_id: str | None
    claimed_by: str | None
    lease_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    reviews_required: int
    reviews_done: int
    decided_by: str | None = None
    final_kind: str | None = None
    final_category_id: str | None = None
    final_category_path: str | None = None


class ItemPage(BaseModel):
    items: list[Item]
    total: int
    offset: int
    limit: int


class Me(BaseModel):
    username: str
    role: Role
    auth: Literal["session", "basic"]
    csrf_token: str | None = Field(
        default=None, description="Send as X-CSRF-Token on POSTs made with the session cookie"
    )


class Filters(BaseModel):
    """Which items: every field optional; ``text`` searches SKU, title, brand and description."""

    queue: Queue | None = None
    status: ItemStatus | None = None
    category: FilterText = Field(default=None, description="Path prefix of the suggested category")
    reason: FilterText = None
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    max_confidence: float | None = Field(default=None, ge=0, le=1)
    text: FilterText = None

    def ui(self) -> UiFilters:
        return UiFilters(**self.model_dump())

    def item_filter(self) -> ItemFilter:
        return self.ui().to_item_filter()


class ClaimRequest(BaseModel):
    limit: int = Field(default=1, ge=1, le=50)
    filters: Filters = Filters()


class DecisionIn(BaseModel):
    kind: DecisionKind
    category_id: Text | None = Field(
        default=None, max_length=255, description="Taxonomy node id; required for kind=choose"
    )
    note: Text = Field(default="", max_length=2000)
    duration_ms: int | None = Field(default=None, ge=0, le=MAX_INT32)
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.~:-]+$",
        description=(
            "Your id for this decision (or send the Idempotency-Key header): sent again after a 503 or a "
            "lost answer, the decision already made is returned (replayed=true), never applied twice"
        ),
    )


class DecisionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    item_id: int
    decision_id: int
    kind: str
    final: bool
    status: str
    reviews_done: int
    reviews_required: int
    category_id: str | None = None
    category_path: str | None = None
    replayed: bool = Field(
        default=False, description="True when this request id was already applied (nothing applied again)"
    )
    next_item: Item | None = Field(
        default=None, description="The next item claimed for you when claim_next was set"
    )


class BulkAcceptIn(BaseModel):
    filters: Filters
    expected: int | None = Field(
        default=None, ge=0, le=MAX_INT32, description="Refuse (409) unless exactly this many items match"
    )


class BulkAcceptOut(BaseModel):
    accepted: int


class SearchHitOut(BaseModel):
    id: str
    path: str
    localized_path: str | None
    score: float


class SearchOut(BaseModel):
    query: str
    took_ms: float
    results: list[SearchHitOut]


def _item(request: Request, view: ItemView) -> Item:
    data = dataclasses.asdict(view)
    data["candidates"] = [c for c in view.candidates if c.get("category_id") and c.get("category_path")]
    data["image_path"] = public_image_path(view, state(request).image_root)
    data["image_url"] = None if data["image_path"] is None else f"/items/{view.id}/image"
    return Item.model_validate(data)


_QText = Annotated[FilterText, Query()]


def _filters(
    queue: Queue | None = None,
    status: ItemStatus | None = None,
    category: _QText = None,
    reason: _QText = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    text: _QText = None,
) -> Filters:
    return Filters(
        queue=queue,
        status=status,
        category=category,
        reason=reason,
        min_confidence=min_confidence,
        max_confidence=max_confidence,
        text=text,
    )


@router.get("/me", response_model=Me, responses=_ERRORS)
def me(request: Request, who: ApiUser) -> Me:
    """Who you are, and the CSRF token to send with POSTs made with the session cookie."""
    token = ensure_csrf_token(request) if who.via == "session" else None
    return Me(username=who.username, role=who.role, auth=who.via, csrf_token=token)


@router.get("/queues", responses=_ERRORS)
def queues(request: Request, _: ApiUser) -> dict[str, dict[str, int]]:
    """Item counts per queue and status, e.g. ``{"suspect": {"open": 12, "decided": 3}}``."""
    counts = state(request).store.queue_counts()
    return {str(q): dict(counts.get(q, {})) for q in Queue}


@router.get("/items", response_model=ItemPage, responses=_ERRORS)
def list_items(
    request: Request,
    _: ApiUser,
    filters: Annotated[Filters, Depends(_filters)],
    offset: Annotated[int, Query(ge=0, le=MAX_INT32)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ItemPage:
    """Items matching the filters, highest priority first."""
    items, total = state(request).store.list_items(filters.item_filter(), offset=offset, limit=limit)
    return ItemPage(items=[_item(request, i) for i in items], total=total, offset=offset, limit=limit)


@router.get(
    "/items/{item_id}", response_model=Item, responses={**_ERRORS, 404: {"description": "No such item"}}
)
def get_item(request: Request, item_id: ItemId, _: ApiUser) -> Item:
    item = state(request).store.get_item(item_id)
    if item is None:
        raise HTTPException(404, f"review item {item_id} does not exist")
    return _item(request, item)


@router.post("/queues/{queue}/claim", response_model=list[Item], responses=_ERRORS)
def claim(request: Request, queue: Queue, who: ApiUserCsrf, body: ClaimRequest | None = None) -> list[Item]:
    """Claim (lease) up to ``limit`` open items of ``queue`` for yourself; an empty list when none is left."""
    body = body or ClaimRequest()
    item_filter = dataclasses.replace(body.filters.item_filter(), queue=None, status=None)
    items = state(request).store.claim(str(queue), who.username, limit=body.limit, filters=item_filter)
    return [_item(request, i) for i in items]


@router.post(
    "/items/{item_id}/decision",
    response_model=DecisionOut,
    responses={
        **_ERRORS,
        404: {"description": "No such item"},
        409: {
            "description": "Claimed by someone else, already decided, or needs a different second reviewer"
        },
        422: {"description": "Incomplete decision (choose without a known category id)"},
    },
)
def decide(
    request: Request,
    item_id: ItemId,
    body: DecisionIn,
    who: ApiUserCsrf,
    claim_next_item: Annotated[bool, Query(alias="claim_next")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=64, pattern=r"^[A-Za-z0-9_.~:-]+$")] = None,
) -> DecisionOut:
    """Record a decision. With ``?claim_next=true`` the answer also carries the next item of the same
    queue. While the database is down the answer is 503 with ``Retry-After``: send the same decision
    with the same ``request_id`` (or ``Idempotency-Key``) again; it is applied once."""
    app_state = state(request)
    item = app_state.store.get_item(item_id)
    if item is None:
        raise HTTPException(404, f"review item {item_id} does not exist")
    request_id = body.request_id or idempotency_key
    decision = DecisionRequest(body.kind, body.category_id, body.note, body.duration_ms, request_id)
    try:
        result = apply_decision(app_state.store, app_state.taxonomy, item_id, who.username, decision)
    except ItemNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ItemConflictError as exc:
        raise HTTPException(409, str(exc)) from exc
    except InvalidDecisionError as exc:
        raise HTTPException(422, str(exc)) from exc
    out = DecisionOut.model_validate(result)
    setattr(request.state, SAVED_DECISION, describe_decision(item, result))  # a later 503 says "saved"
    if claim_next_item:
        nxt = claim_next(app_state.store, who.username, UiFilters(queue=item.queue), exclude=item_id)
        out.next_item = _item(request, nxt) if nxt is not None else None
    return out


@router.post(
    "/bulk-accept",
    response_model=BulkAcceptOut,
    responses={**_ERRORS, 409: {"description": "The number of matching items is not `expected`"}},
)
def bulk_accept(request: Request, body: BulkAcceptIn, who: ApiAdminCsrf) -> BulkAcceptOut:
    """Accept the suggestion of every open item matching the filters (admins; at least one filter)."""
    ui = dataclasses.replace(body.filters.ui(), status=ItemStatus.OPEN)
    if not ui.narrows():
        raise HTTPException(
            422, "bulk accept needs at least one filter (queue, category, reason, confidence or text)"
        )
    store = state(request).store
    if body.expected is not None:
        _, total = store.list_items(ui.to_item_filter(), offset=0, limit=1)
        if total != body.expected:
            raise HTTPException(
                409, f"{total} open items match these filters, not the expected {body.expected}"
            )
    return BulkAcceptOut(accepted=store.bulk_accept(ui.to_item_filter(), who.username))


@router.get("/taxonomy/search", response_model=SearchOut, responses=_ERRORS)
def taxonomy_search(
    request: Request,
    q: Annotated[
        Text, Query(max_length=200, description="Name, words, path or fragment (English or localized)")
    ],
    _: ApiUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchOut:
    """Search-as-you-type over the taxonomy and its localized names (e.g. Korean)."""
    results, took = state(request).taxonomy.search(q, limit=limit)
    hits = [SearchHitOut(**dataclasses.asdict(r)) for r in results]
    return SearchOut(query=q, took_ms=round(took, 3), results=hits)


@router.get(
    "/export",
    responses={
        **_ERRORS,
        200: {"description": "The decisions file", "content": {"text/csv": {}, "application/json": {}}},
    },
    response_class=FileResponse,
)
def export(
    request: Request,
    _: ApiAdmin,
    fmt: Annotated[
        Literal["csv", "labelstudio"], Query(description="csv or labelstudio (JSON tasks)")
    ] = "csv",
) -> FileResponse:
    """Download every decision as CSV or as Label Studio JSON (admins)."""
    suffix, media = (".csv", "text/csv") if fmt == "csv" else (".json", "application/json")
    fd, name = tempfile.mkstemp(prefix="shelfwise-decisions-", suffix=suffix)
    os.close(fd)
    path = Path(name)
    state(request).store.export_decisions(path, fmt=fmt)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return FileResponse(
        path,
        media_type=media,
        filename=f"shelfwise-decisions-{stamp}{suffix}",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )
