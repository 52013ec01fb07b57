"""Server-rendered pages: login, queue list, item review, bulk accept, user management (internal)."""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from shelfwise.errors import ConfigError
from verification._errors import InvalidDecisionError, ItemConflictError, ItemNotFoundError, QueueStoreError
from verification._types import ItemView
from verification.models import DecisionKind, ItemStatus, Role

from ._auth import (
    PageAdmin,
    PageAdminCsrf,
    PageUser,
    PageUserCsrf,
    Principal,
    anonymous_csrf,
    end_sessions,
    principal,
    rotate_session,
    safe_next,
)
from ._common import (
    MAX_INT32,
    QUEUE_LABELS,
    QUEUE_ORDER,
    UiFilters,
    bad_text,
    filter_query,
    flash,
    image_media_type,
    parse_filters,
    parse_int,
    render,
    resolve_image,
    state,
)
from ._decide import DecisionRequest, apply_decision, claim_next, describe_decision, move_next
from ._limits import client_address
from ._unavailable import POSTED_FORM, SAVED_DECISION

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
PER_PAGE = 50
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything after the 72nd byte
MAX_PAGE = 1_000_000


async def _read_form(request: Request) -> FormData:
    """The posted form, parsed on the event loop; the handler itself then runs in the thread pool.

    Handlers are plain ``def`` so bcrypt and database calls never block the event loop (static files and
    other users' requests keep being served while a password is checked).
    """
    form = await request.form()
    setattr(request.state, POSTED_FORM, form)  # the 503 page offers a failed decision again
    return form


Form = Annotated[FormData, Depends(_read_form)]


def _password_problem(password: str, whose: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"{whose} password is too short; use at least {MIN_PASSWORD} characters"
    size = len(password.encode("utf-8", "surrogatepass"))
    if size > MAX_PASSWORD_BYTES:
        return (
            f"{whose} password is {size} bytes long in UTF-8; use at most {MAX_PASSWORD_BYTES} bytes "
            "(about 24 characters of Korean or Chinese, 72 of English)"
        )
    return None


def _password_ok(app_state: Any, username: str, password: str) -> bool:
    with app_state.bcrypt_slots:
        return app_state.store.authenticate(username, password) is not None


def _plausible_username(name: str) -> bool:
    return 0 < len(name) <= 150 and bad_text(name) is None


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _form_str(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# ---- login / logout ----------------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, next: str | None = None) -> Response:
    if principal(request) is not None:
        return _see_other(safe_next(next))
    return render(request, "login.html", {"next_url": safe_next(next), "error": None, "username": ""})


@router.post("/login", dependencies=[Depends(anonymous_csrf)])
def login(request: Request, form: Form) -> Response:
    username = _form_str(form, "username").strip()
    password = _form_str(form, "password")
    next_url = safe_next(_form_str(form, "next"))
    app_state = state(request)
    client = client_address(request)
    if not _plausible_username(username):
        username = ""
    wait = app_state.throttle.retry_after(username, client)
    if wait > 0:
        minutes = max(1, round(wait / 60))
        error = f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        context = {"next_url": next_url, "error": error, "username": username}
        return render(request, "login.html", context, status_code=429)
    pause = app_state.throttle.backoff(username)
    if pause > 0:
        time.sleep(pause)  # soft brake on guessing from many addresses; this runs in the thread pool
    user = None
    if username and password:
        with app_state.bcrypt_slots:  # bounded, so bcrypt never takes every core from the event loop
            user = app_state.store.authenticate(username, password)
    if user is None or not user.is_active:
        app_state.throttle.failed(username, client)
        context = {"next_url": next_url, "error": "Wrong user name or password.", "username": username}
        return render(request, "login.html", context, status_code=401)
    app_state.throttle.succeeded(username, client)
    rotate_session(request, user)
    return _see_other(next_url)


@router.post("/logout")
def logout(request: Request, who: PageUserCsrf) -> Response:
    end_sessions(request, who.username)  # this cookie, copies of it and the user's other sessions
    rotate_session(request, None)
    flash(request, "info", f"Signed out {who.username}.")
    return _see_other("/login")


# ---- queues ------------------------------------------------------------------------------------


@router.get("/")
def home(_: PageUser) -> Response:
    return _see_other("/queues")


def _queue_cards(counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    cards = []
    for queue in QUEUE_ORDER:
        by_status = counts.get(queue, {})
        cards.append(
            {
                "name": str(queue),
                "label": QUEUE_LABELS[queue],
                "open": by_status.get(ItemStatus.OPEN, 0),
                "claimed": by_status.get(ItemStatus.CLAIMED, 0),
                "decided": by_status.get(ItemStatus.DECIDED, 0),
            }
        )
    return cards


@router.get("/queues")
def queues_page(request: Request, who: PageUser) -> Response:
    filters, problems = parse_filters(request.query_params)
    for problem in problems:
        flash(request, "error", problem)
    page = max(1, parse_int(request.query_params.get("page", "1"), maximum=MAX_PAGE) or 1)
    store = state(request).store
    items, total = store.list_items(filters.to_item_filter(), offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    pages = max(1, math.ceil(total / PER_PAGE))
    if page > pages:  # past the end (or a huge number): show the last page
        page = pages
        items, _ = store.list_items(filters.to_item_filter(), offset=(page - 1) * PER_PAGE, limit=PER_PAGE)
    query = filter_query(filters)
    context = {
        "nav": "queues",
        "queues": _queue_cards(store.queue_counts()),
        "statuses": [*ItemStatus, "any"],
        "filters": filters,
        "filter_query": query,
        "items": items,
        "total": total,
        "offset": (page - 1) * PER_PAGE,
        "page": page,
        "pages": pages,
        "prev_url": f"/queues?{filter_query(filters, page=page - 1)}" if page > 1 else None,
        "next_url": f"/queues?{filter_query(filters, page=page + 1)}" if page < pages else None,
    }
    return render(request, "queues.html", context)


def _go_next(
    request: Request, who: Principal, filters: UiFilters, *, exclude: int | None, move: bool = False
) -> Response:
    store = state(request).store
    if move and exclude is not None:
        item = move_next(store, who.username, filters, current=exclude)
    else:
        item = claim_next(store, who.username, filters, exclude=exclude)
    if item is None:
        where = QUEUE_LABELS.get(filters.queue or "", "the selected queues")
        flash(request, "info", f"No more open items in {where} for these filters. Well done!")
        return _see_other(f"/queues?{filter_query(filters)}")
    return _see_other(f"/items/{item.id}?{filter_query(filters)}")


@router.post("/queues/next")
def next_item(request: Request, who: PageUserCsrf, form: Form) -> Response:
    filters, _ = parse_filters(form)
    after = parse_int(_form_str(form, "after"))
    if after is not None and after > 0:
        return _go_next(request, who, filters, exclude=after, move=True)
    return _go_next(request, who, filters, exclude=None)


# ---- one item ----------------------------------------------------------------------------------


def _item_or_404(request: Request, item_id: int) -> ItemView:
    if not 1 <= item_id <= MAX_INT32:
        raise HTTPException(404, "no review item has this id (ids are whole numbers from 1 to 2147483647)")
    item = state(request).store.get_item(item_id)
    if item is None:
        raise HTTPException(404, f"review item {item_id} does not exist (it may have been removed)")
    return item


def _review_excerpts(text: str | None, *, limit: int = 5) -> list[str]:
    if not text:
        return []
    parts = [p.strip() for p in re.split(r"\n\s*\n|\n| \| ", text) if p.strip()]
    return parts[:limit]


@router.get("/items/{item_id}")
def item_page(request: Request, item_id: int, who: PageUser) -> Response:
    item = _item_or_404(request, item_id)
    app_state = state(request)
    filters, _ = parse_filters(request.query_params)
    if filters.queue is None:
        filters = dataclasses.replace(filters, queue=item.queue)
    counts = app_state.store.queue_counts().get(item.queue, {})
    open_count = counts.get(ItemStatus.OPEN, 0) + counts.get(ItemStatus.CLAIMED, 0)
    image = resolve_image(item, app_state.image_root)
    context = {
        "nav": "queues",
        "item": item,
        "filters": filters,
        "filter_query": filter_query(filters),
        "image_url": f"/items/{item.id}/image" if image is not None else None,
        "candidates": [c for c in item.candidates if c.get("category_id")][:5],
        "current_node": app_state.taxonomy.find_path(item.current_category_path),
        "reviews": _review_excerpts(item.review_excerpt),
        "history": app_state.store.decisions_for_item(item.id),
        "request_id": secrets.token_urlsafe(16),  # one per page view: a decision resent is applied once
        "position": f"{open_count} waiting in {QUEUE_LABELS.get(item.queue, item.queue)}",
    }
    return render(request, "item.html", context)


@router.post("/items/{item_id}/decide")
def decide(request: Request, item_id: int, form: Form, who: PageUserCsrf) -> Response:
    # ``form`` before ``who``: parsed first, so a 503 while the user is looked up can still offer it again
    filters, _ = parse_filters(form)
    back = f"/items/{item_id}?{filter_query(filters)}"
    raw = _form_str(form, "decision")
    kind_text, _, category_id = raw.partition(":")
    duration = parse_int(_form_str(form, "duration_ms"))
    note = _form_str(form, "note").strip()[:2000]
    try:
        kind = DecisionKind(kind_text)
    except ValueError:
        flash(request, "error", f"unknown decision {raw[:40]!r}; use the buttons on the page")
        return _see_other(back)
    problem = bad_text(note)
    if problem is not None:
        flash(request, "error", f"Not saved: the note {problem}; type plain text")
        return _see_other(back)
    request_id = _form_str(form, "request_id").strip()[:64] or None
    decision = DecisionRequest(
        kind=kind, category_id=category_id or None, note=note, duration_ms=duration, request_id=request_id
    )
    store = state(request).store
    try:
        item = _item_or_404(request, item_id)
        result = apply_decision(store, state(request).taxonomy, item_id, who.username, decision)
    except (InvalidDecisionError, ValueError) as exc:
        flash(request, "error", str(exc))
        return _see_other(back)
    except ItemNotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ItemConflictError as exc:
        flash(request, "error", f"Not saved: {exc}")
        return _go_next(request, who, filters, exclude=item_id)
    except QueueStoreError as exc:
        flash(request, "error", f"Not saved: {exc}")
        return _see_other(back)
    saved = describe_decision(item, result)
    setattr(request.state, SAVED_DECISION, saved)  # a 503 from here on says the decision was saved
    flash(request, "ok", saved)
    return _go_next(request, who, filters, exclude=item_id)


@router.get("/items/{item_id}/image")
def item_image(request: Request, item_id: int, _: PageUser) -> Response:
    item = _item_or_404(request, item_id)
    path = resolve_image(item, state(request).image_root)
    if path is None:
        raise HTTPException(404, f"review item {item_id} has no photo inside the image folder")
    return FileResponse(
        path, media_type=image_media_type(path), headers={"Cache-Control": "private, max-age=3600"}
    )


# ---- bulk accept (admins) ----------------------------------------------------------------------


def _bulk_filters(params: Any) -> UiFilters:
    filters, _ = parse_filters(params)
    return dataclasses.replace(filters, status=ItemStatus.OPEN)


def _bulk_page(request: Request, filters: UiFilters, *, warning: str | None = None) -> Response:
    store = state(request).store
    items, total = store.list_items(filters.to_item_filter(), offset=0, limit=10)
    context = {
        "nav": "queues",
        "filters": filters,
        "filter_query": filter_query(filters),
        "total": total,
        "sample": items,
        "description": filters.describe(),
        "warning": warning,
    }
    return render(request, "bulk_confirm.html", context)


@router.get("/bulk-accept")
def bulk_accept_page(request: Request, _: PageAdmin) -> Response:
    filters = _bulk_filters(request.query_params)
    if not filters.narrows():
        flash(
            request,
            "error",
            "Bulk accept needs at least one filter (queue, category, reason, confidence or text).",
        )
        return _see_other("/queues")
    return _bulk_page(request, filters)


@router.post("/bulk-accept")
def bulk_accept(request: Request, who: PageAdminCsrf, form: Form) -> Response:
    filters = _bulk_filters(form)
    if not filters.narrows():
        flash(
            request,
            "error",
            "Bulk accept needs at least one filter (queue, category, reason, confidence or text).",
        )
        return _see_other("/queues")
    store = state(request).store
    _, total = store.list_items(filters.to_item_filter(), offset=0, limit=1)
    expected = parse_int(_form_str(form, "expected"))
    if expected is None or expected != total:
        shown = "?" if expected is None else expected
        warning = (
            f"The list changed while you looked at it: {total} items match now, not {shown}. Check again."
        )
        return _bulk_page(request, filters, warning=warning)
    accepted = store.bulk_accept(filters.to_item_filter(), who.username)
    flash(
        request,
        "ok",
        f"Accepted the suggestion for {accepted} item{'s' if accepted != 1 else ''} ({filters.describe()}).",
    )
    return _see_other(f"/queues?{filter_query(dataclasses.replace(filters, status=None))}")


# ---- own account --------------------------------------------------------------------------------


@router.get("/account")
def account_page(request: Request, _: PageUser) -> Response:
    return render(request, "account.html", {"nav": "account"})


@router.post("/account/password")
def change_own_password(request: Request, who: PageUserCsrf, form: Form) -> Response:
    """A reviewer changes their own password: the current one must be right, the new one typed twice.

    The change ends the user's other sessions and remembered basic-auth logins; this one goes on with a
    fresh cookie.
    """
    current, new, repeat = _form_str(form, "current"), _form_str(form, "new"), _form_str(form, "repeat")
    app_state = state(request)
    client = client_address(request)
    problem = _password_problem(new, "The new")
    if app_state.throttle.retry_after(who.username, client) > 0:
        flash(request, "error", "Too many wrong passwords; try again later.")
    elif not _password_ok(app_state, who.username, current):
        app_state.throttle.failed(who.username, client)
        flash(request, "error", "Your current password is not right; nothing was changed.")
    elif problem is not None:
        flash(request, "error", problem + "; nothing was changed.")
    elif new != repeat:
        flash(request, "error", "The two new passwords differ; type the same one twice.")
    else:
        with app_state.bcrypt_slots:
            app_state.store.set_password(who.username, new)  # bumps the session epoch
        app_state.credentials.drop_user(who.username)
        user = app_state.store.get_user(who.username)
        rotate_session(request, user)  # a fresh session (and CSRF token) after a credential change
        flash(request, "ok", "Your password was changed; your other sessions were signed out.")
    return _see_other("/account")


# ---- users (admins) ----------------------------------------------------------------------------


@router.get("/admin/users")
def users_page(request: Request, _: PageAdmin) -> Response:
    store = state(request).store
    lister = getattr(store, "list_users", None)
    users = list(lister()) if callable(lister) else None
    return render(request, "admin_users.html", {"nav": "users", "users": users, "roles": list(Role)})


@router.post("/admin/users")
def add_user(request: Request, who: PageAdminCsrf, form: Form) -> Response:
    username = _form_str(form, "username").strip()
    password = _form_str(form, "password")
    role_text = _form_str(form, "role") or Role.REVIEWER
    problem = _password_problem(password, f"the {username[:64]!r}")
    if not USERNAME_RE.fullmatch(username):
        flash(
            request,
            "error",
            f"user name {username[:64]!r} is not allowed; use 1-64 letters, digits or . _ @ -",
        )
    elif problem is not None:
        flash(request, "error", problem)
    elif role_text not in set(Role):
        flash(request, "error", f"unknown role {role_text!r}; roles are {', '.join(Role)}")
    elif state(request).store.get_user(username) is not None:
        flash(request, "error", f"user {username!r} already exists; pick another name")
    else:
        try:
            with state(request).bcrypt_slots:
                state(request).store.add_user(username, password, role=Role(role_text))
        except (QueueStoreError, ConfigError) as exc:
            flash(request, "error", str(exc))
        else:
            flash(request, "ok", f"Added {role_text} {username!r}.")
    return _see_other("/admin/users")


@router.post("/admin/users/{username}/active")
def set_user_active(request: Request, username: str, who: PageAdminCsrf, form: Form) -> Response:
    active = _form_str(form, "active") == "1"
    store = state(request).store
    if username == who.username and not active:
        flash(request, "error", "You cannot deactivate yourself; ask another admin.")
    elif not _plausible_username(username) or store.get_user(username) is None:
        raise HTTPException(404, f"user {username[:64]!r} does not exist")
    else:
        store.set_active(username, active)  # bumps the session epoch: old cookies stay dead on re-activation
        state(request).credentials.drop_user(username)
        flash(request, "ok", f"{'Activated' if active else 'Deactivated'} {username!r}.")
    return _see_other("/admin/users")
