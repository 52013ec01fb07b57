"""503 answers while the queue database is down, never 500 (internal).

The store runs each transaction again for a few seconds when the connection fails
(``verification._retry``); when the database is still not answering, the request ends here:

- ``/api/...``: HTTP 503, ``Retry-After``, and JSON ``{"detail", "reason": "database_unavailable",
  "saved", "retry_after"}``; ``saved`` is true only when a decision reached the database before a
  later step of the same request (the next claim) failed;
- pages: HTTP 503 and a page that says whether the last action was saved. A decision that was not
  saved comes back as a form holding the same decision and request id; ``app.js`` sends it once more
  after ``Retry-After`` seconds, and the request id makes sure it is never applied twice.

This page never reads the database (the user shown is the one the request already looked up).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from verification._retry import RETRY_AFTER_SECONDS, is_transient

from ._auth import ensure_csrf_token, known_principal
from ._common import parse_filters, state

__all__ = ["POSTED_FORM", "SAVED_DECISION", "database_error_is_transient", "unavailable"]

POSTED_FORM = "shelfwise_posted_form"  # request.state: the form a page POST sent (parsed before the user)
SAVED_DECISION = "shelfwise_saved_decision"  # request.state: what was saved before the database went away
_REASON = "database_unavailable"


def database_error_is_transient(request: Request, exc: Exception) -> bool:
    """True for a connection failure that escaped the store's own retries (a safety net)."""
    return is_transient(exc, dialect=state(request).store.dialect)


def unavailable(request: Request, exc: Exception) -> Response:
    """The 503 answer for ``request``: JSON under ``/api/``, a page otherwise; ``Retry-After`` on both."""
    saved: str | None = getattr(request.state, SAVED_DECISION, None)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if request.url.path.startswith("/api/"):
        if saved is not None:
            detail = f"{saved} The next step failed: the review database is not answering."
        else:
            detail = (
                "the review database is not answering; nothing was saved; retry after Retry-After seconds"
            )
        body = {
            "detail": detail,
            "reason": _REASON,
            "saved": saved is not None,
            "retry_after": RETRY_AFTER_SECONDS,
        }
        return JSONResponse(body, status_code=503, headers=headers)
    form: FormData | None = getattr(request.state, POSTED_FORM, None)
    posted = request.method not in ("GET", "HEAD")
    context: dict[str, Any] = {
        "user": known_principal(request),
        "csrf_token": ensure_csrf_token(request),
        "flashes": [],
        "nav": None,
        "retry_after": RETRY_AFTER_SECONDS,
        "posted": posted,
        "saved": saved,
        "resend": _resend(request, form) if posted and saved is None else None,
    }
    templates = state(request).templates
    return templates.TemplateResponse(request, "unavailable.html", context, status_code=503, headers=headers)


def _resend(request: Request, form: FormData | None) -> dict[str, Any] | None:
    """The decision to send again (same request id), when the failed POST was a decision."""
    if form is None or not request.url.path.endswith("/decide"):
        return None
    decision, request_id = form.get("decision"), form.get("request_id")
    if not isinstance(decision, str) or not isinstance(request_id, str) or not request_id:
        return None
    filters, _ = parse_filters(form)
    note = form.get("note")
    duration = form.get("duration_ms")
    return {
        "action": request.url.path,
        "decision": decision,
        "request_id": request_id,
        "note": note if isinstance(note, str) else "",
        "duration_ms": duration if isinstance(duration, str) else "",
        "filters": filters,
        "auto": form.get("resent") != "1",  # app.js resends once; a resend that fails again waits for a click
    }
