"""Who is calling, and may they do this? Session login, HTTP basic auth for scripts, roles, CSRF (internal).

Rules (the full security model is in docs/review-app.md):

- Pages and the API share one signed session cookie (Starlette ``SessionMiddleware``), set by ``POST /login``.
  It holds the user name, the user's *session epoch* at login, the login time and the CSRF token. Every
  request re-reads the user row: a cookie whose epoch differs (the user logged out, changed password, was
  deactivated or got another role since) or whose login is older than the absolute lifetime (12 h, never
  extended by activity) is anonymous.
- The API also takes HTTP basic auth (``Authorization: Basic ...``) so scripts need no cookie. Basic-auth
  calls need no CSRF token: a browser never attaches these credentials on its own because the app never
  sends a ``WWW-Authenticate: Basic`` challenge (so no browser caches them).
- Every state-changing request (POST, PUT, PATCH, DELETE) made with the session cookie must carry the
  session's CSRF token, in the form field ``csrf_token`` or the ``X-CSRF-Token`` header; a missing or
  wrong token gets 403. A request a browser marks as cross-site (``Sec-Fetch-Site``) is refused outright.
- Anonymous page requests are redirected to ``/login``; anonymous API requests get 401 (JSON).
- Admin-only pages and API calls give reviewers 403.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from verification._types import User
from verification.models import Role
from verification.store import QueueStore

from ._limits import client_address

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "ApiAdmin",
    "ApiAdminCsrf",
    "ApiUser",
    "ApiUserCsrf",
    "LoginRequired",
    "PageAdmin",
    "PageAdminCsrf",
    "PageUser",
    "PageUserCsrf",
    "Principal",
    "anonymous_csrf",
    "end_sessions",
    "ensure_csrf_token",
    "known_principal",
    "login_url",
    "principal",
    "rotate_session",
    "safe_next",
]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_SESSION_USER = "user"
_SESSION_CSRF = "csrf"
_SESSION_EPOCH = "epoch"
_SESSION_SINCE = "since"
_STATE_KEY = "shelfwise_principal"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    username: str
    role: Role
    via: Literal["session", "basic"]

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


class LoginRequired(Exception):
    """Raised by page dependencies for anonymous callers; the app turns it into a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


def ensure_csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (anonymous sessions get one for the login form)."""
    token = request.session.get(_SESSION_CSRF)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[_SESSION_CSRF] = token
    return token


def rotate_session(request: Request, user: User | None) -> None:
    """Start a fresh session (against session fixation): new CSRF token, and the user if logging in.

    A logged-in session records the user's current session epoch and the login time; :func:`principal`
    refuses it once either no longer holds.
    """
    request.session.clear()
    if user is not None:
        request.session[_SESSION_USER] = user.username
        request.session[_SESSION_EPOCH] = user.session_epoch
        request.session[_SESSION_SINCE] = int(time.time())
    request.session[_SESSION_CSRF] = secrets.token_urlsafe(32)


def end_sessions(request: Request, username: str) -> None:
    """End every session of ``username`` (all browsers, all app processes) and forget remembered basic auth.

    Called on logout; the store bumps the epoch by itself on password, role and activation changes, and the
    app then drops this process's remembered credentials at once.
    """
    _store(request).end_sessions(username)
    request.app.state.review.credentials.drop_user(username)


def _store(request: Request) -> QueueStore:
    store: QueueStore = request.app.state.review.store
    return store


def _session_valid(request: Request, user: User | None) -> bool:
    if user is None or not user.is_active:
        return False
    epoch = request.session.get(_SESSION_EPOCH)
    since = request.session.get(_SESSION_SINCE)
    if type(epoch) is not int or epoch != user.session_epoch or type(since) is not int:
        return False
    age = time.time() - since
    lifetime: float = request.app.state.review.session_lifetime
    return -60 <= age < lifetime  # absolute: activity never extends it


def known_principal(request: Request) -> Principal | None:
    """The caller if this request already looked them up, else ``None`` (never reads the database)."""
    found: Principal | None = getattr(request.state, _STATE_KEY, None)
    return found


def principal(request: Request) -> Principal | None:
    """The caller of this request from the session cookie or (API only) HTTP basic auth, else ``None``.

    The user is looked up on every request, so a logout elsewhere, a password or role change and a
    deactivation take effect at once.
    """
    if hasattr(request.state, _STATE_KEY):
        cached: Principal | None = getattr(request.state, _STATE_KEY)
        return cached
    found: Principal | None = None
    store = _store(request)
    name = request.session.get(_SESSION_USER)
    if isinstance(name, str) and name:
        user = store.get_user(name)
        if user is not None and _session_valid(request, user):
            found = Principal(user.username, Role(user.role), "session")
        else:
            request.session.clear()
    if found is None and request.url.path.startswith("/api/"):
        creds = _basic_credentials(request.headers.get("authorization"))
        if creds is not None:
            found = _basic_login(request, store, *creds)
    setattr(request.state, _STATE_KEY, found)
    return found


def _basic_login(request: Request, store: QueueStore, username: str, password: str) -> Principal | None:
    review = request.app.state.review
    remembered = review.credentials.get(username, password)
    if remembered is not None:
        user = store.get_user(username)  # role, active flag and epoch are always read fresh
        if user is not None and user.is_active and user.session_epoch == remembered[1]:
            return Principal(user.username, Role(user.role), "basic")
        review.credentials.drop_user(username)  # the account changed: check the password again
    client = client_address(request)
    if review.throttle.retry_after(username, client) > 0:
        return None
    pause = review.throttle.backoff(username)
    if pause > 0:
        time.sleep(pause)  # runs in the thread pool (sync dependency), never on the event loop
    with review.bcrypt_slots:
        user = store.authenticate(username, password)
    if user is None or not user.is_active:
        review.throttle.failed(username, client)
        return None
    review.throttle.succeeded(username, client)
    review.credentials.put(username, password, user.session_epoch)
    return Principal(user.username, Role(user.role), "basic")


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    if not sep or not username or len(username) > 150 or "\x00" in decoded:
        return None  # never a user name; the database must not see a NUL byte
    return username, password


async def _check_csrf(request: Request, who: Principal | None) -> None:
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(
            403, f"cross-site request refused (Sec-Fetch-Site: {site}); use the review app's own pages"
        )
    if who is not None and who.via == "basic":
        return
    expected = request.session.get(_SESSION_CSRF)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if not isinstance(expected, str) or not sent or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise HTTPException(
            403,
            "missing or wrong CSRF token: reload the page and try again (scripts: send the X-CSRF-Token "
            "header "
            "with the token from GET /api/me, or use HTTP basic auth)",
        )


def _next_url(request: Request) -> str:
    url = request.url.path
    if request.url.query:
        url += "?" + request.url.query
    return url


def page_user(request: Request) -> Principal:
    """Dependency of every page: the logged-in user, or a redirect to /login."""
    who = principal(request)
    if who is None:
        raise LoginRequired(_next_url(request) if request.method == "GET" else "/queues")
    return who


async def page_user_csrf(request: Request, who: Annotated[Principal, Depends(page_user)]) -> Principal:
    await _check_csrf(request, who)
    return who


def _admin(who: Principal) -> Principal:
    if not who.is_admin:
        raise HTTPException(403, f"user {who.username!r} is a {who.role}; this needs an admin")
    return who


def page_admin(who: Annotated[Principal, Depends(page_user)]) -> Principal:
    return _admin(who)


async def page_admin_csrf(request: Request, who: Annotated[Principal, Depends(page_admin)]) -> Principal:
    await _check_csrf(request, who)
    return who


def api_user(request: Request) -> Principal:
    """Dependency of every API call: the caller (session cookie or basic auth), or 401."""
    who = principal(request)
    if who is None:
        raise HTTPException(
            401, "not logged in: log in at /login (session cookie) or send HTTP basic auth credentials"
        )
    return who


async def api_user_csrf(request: Request, who: Annotated[Principal, Depends(api_user)]) -> Principal:
    await _check_csrf(request, who)
    return who


def api_admin(who: Annotated[Principal, Depends(api_user)]) -> Principal:
    return _admin(who)


async def api_admin_csrf(request: Request, who: Annotated[Principal, Depends(api_admin)]) -> Principal:
    await _check_csrf(request, who)
    return who


async def anonymous_csrf(request: Request) -> None:
    """CSRF check for the login form (the token comes from the anonymous session of GET /login)."""
    await _check_csrf(request, None)


# Dependency aliases for route signatures: ``who: ApiUser``.
PageUser = Annotated[Principal, Depends(page_user)]
PageUserCsrf = Annotated[Principal, Depends(page_user_csrf)]
PageAdmin = Annotated[Principal, Depends(page_admin)]
PageAdminCsrf = Annotated[Principal, Depends(page_admin_csrf)]
ApiUser = Annotated[Principal, Depends(api_user)]
ApiUserCsrf = Annotated[Principal, Depends(api_user_csrf)]
ApiAdmin = Annotated[Principal, Depends(api_admin)]
ApiAdminCsrf = Annotated[Principal, Depends(api_admin_csrf)]


def safe_next(value: str | None, *, default: str = "/queues") -> str:
    """A same-site path to go to after login; anything else (``//evil``, ``https://...``) gives
    ``default``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if any(ord(ch) < 32 for ch in value):
        return default
    return value


def login_url(next_url: str) -> str:
    return "/login?next=" + quote(next_url, safe="/")
