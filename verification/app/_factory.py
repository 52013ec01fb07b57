"""``create_app``: wire the store, the taxonomy, sessions, security headers and the routes (internal)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from shelfwise.errors import ConfigError
from verification._errors import QueueUnavailableError
from verification._retry import APP_RETRY_SECONDS
from verification.store import QueueStore

from . import _api, _pages
from ._auth import LoginRequired, login_url
from ._common import AppState, render
from ._limits import DEFAULT_MAX_BODY, BodyLimit, TrustedProxies
from ._taxonomy import load_service
from ._unavailable import database_error_is_transient, unavailable

__all__ = ["SECRET_ENV", "SECRET_FILE_NAME", "ReviewAppConfig", "create_app", "resolve_secret_key"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SECRET_ENV = "SHELFWISE_REVIEW_SECRET_KEY"
SECRET_FILE_NAME = "review_secret.key"
SESSION_COOKIE = "shelfwise_review"
SESSION_MAX_AGE = 12 * 3600
_CSP = (
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_TITLES = {401: "Please sign in", 403: "Not allowed", 404: "Not found", 405: "Not allowed", 409: "Conflict"}


def resolve_secret_key(secret_key: str | None) -> str:
    """The session signing key: the argument, else ``$SHELFWISE_REVIEW_SECRET_KEY``, else a key file.

    The key file is ``$SHELFWISE_STATE_DIR/review_secret.key`` (default ``./.shelfwise``): created with
    a random 256-bit key (mode 0600) on first start and reused afterwards, so sessions survive restarts.
    """
    if secret_key:
        if len(secret_key) < 16:
            raise ConfigError(
                f"review app: secret_key is {len(secret_key)} characters long; use at least 16 random "
                'characters, e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return secret_key
    from_env = os.environ.get(SECRET_ENV, "").strip()
    if from_env:
        return resolve_secret_key(from_env)
    state_dir = Path(os.environ.get("SHELFWISE_STATE_DIR", ".shelfwise")).expanduser()
    key_file = state_dir / SECRET_FILE_NAME
    if key_file.is_file():
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if os.name == "posix" and mode & 0o077:
            raise ConfigError(
                f"review app: session key file {key_file} has mode {mode:04o}: other users of this machine "
                f"can read it and forge any session; run: chmod 600 {key_file} (or delete it for a new key)"
            )
        key = key_file.read_text(encoding="utf-8").strip()
        if len(key) >= 16:
            return key
        raise ConfigError(
            f"review app: secret key file {key_file} holds fewer than 16 characters; delete it to get a new "
            f"key"
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
    except OSError as exc:
        raise ConfigError(
            f"review app: cannot write the session key file {key_file} ({exc}); set {SECRET_ENV} or pass "
            "secret_key, or make SHELFWISE_STATE_DIR writable"
        ) from exc
    log.info("review app: created session key file %s", key_file)
    return key


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,  # every {{ }} is HTML-escaped: product text is shown, never interpreted
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    return Jinja2Templates(env=env)


def _printable(value: Any, limit: int) -> str:
    """Text safe to put in a JSON answer: at most ``limit`` characters, lone surrogates escaped."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """The 422 details: where and what, never the submitted value (it may be huge or not encodable)."""
    out = []
    for error in list(exc.errors())[:20]:
        out.append(
            {
                "loc": [_printable(part, 60) for part in error.get("loc", ())],
                "msg": _printable(error.get("msg", "invalid value"), 300),
                "type": _printable(error.get("type", "value_error"), 60),
            }
        )
    return out


@dataclass(frozen=True)
class ReviewAppConfig:
    """What the review web app is built from (:func:`create_app`).

    ``db_url``: the queue store (``sqlite:///...`` or ``postgresql+psycopg://...``), upgraded to the
    latest schema when the app is built. ``taxonomy_path``: the taxonomy reviewers choose from;
    ``extra_taxonomy_paths``: the same taxonomy in other languages (same ids), searched too and shown as
    localized paths. ``secret_key``: signs the session cookie (see :func:`resolve_secret_key` when
    ``None``). ``image_root``: folder the product photos are served from (nothing outside it is ever
    served). ``secure_cookies``: send the session cookie only over HTTPS (set it behind a TLS proxy).
    ``consensus_suspect``: a suspect item's disagreeing decision waits for a second reviewer.
    ``trusted_proxies``: addresses or networks of reverse proxies whose ``X-Forwarded-For`` is believed
    (none by default: the TCP peer is the client). ``max_body_bytes``: request bodies above it get 413.
    """

    db_url: str
    taxonomy_path: str
    extra_taxonomy_paths: Sequence[str] = ()
    secret_key: str | None = None
    image_root: str | None = None
    secure_cookies: bool = False
    consensus_suspect: bool = False
    trusted_proxies: Sequence[str] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY


def create_app(config: ReviewAppConfig) -> FastAPI:
    """Build the review web app from its :class:`ReviewAppConfig`."""
    root = _image_root(config.image_root)
    taxonomy = load_service(config.taxonomy_path, list(config.extra_taxonomy_paths))
    # a person waits for each answer: a few seconds of retries, then 503 with Retry-After
    store = QueueStore(
        config.db_url, consensus_suspect=config.consensus_suspect, retry_seconds=APP_RETRY_SECONDS
    )
    store.upgrade()

    app = _new_app()
    app.state.review = AppState(
        store=store,
        taxonomy=taxonomy,
        templates=_templates(),
        image_root=root,
        trusted_proxies=TrustedProxies(config.trusted_proxies),
        session_lifetime=float(SESSION_MAX_AGE),
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=resolve_secret_key(config.secret_key),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        same_site="lax",
        https_only=config.secure_cookies,
    )
    _add_security_headers(app)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(_api.router)
    app.include_router(_pages.router)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # outermost: before sessions and parsing
    return app


def _image_root(image_root: str | None) -> Path | None:
    """The resolved photo folder, or ``None`` when photos are not served."""
    if image_root is None:
        return None
    root = Path(image_root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(
            f"review app: image_root {image_root} is not a folder; pass the folder the image paths are "
            f"relative to"
        )
    return root


def _new_app() -> FastAPI:
    """The bare FastAPI app, its API docs (/docs, /redoc) served from the package, not a CDN."""
    app: FastAPI = FastAPIOffline(
        title="shelfwise review",
        version="1",
        description=(
            "Review queues of the nightly catalog classification. Authenticate with the session cookie from "
            "`POST /login` (then send `X-CSRF-Token`, from `GET /api/me`, on every POST) or with HTTP basic "
            "auth (no CSRF token needed)."
        ),
    )
    return app


def _add_security_headers(app: FastAPI) -> None:
    """nosniff, same-origin referrer and no framing on every answer; CSP and no-store on HTML pages."""

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        path = request.url.path
        if response.headers.get("content-type", "").startswith("text/html") and path not in (
            "/docs",
            "/redoc",
        ):
            response.headers.setdefault("Content-Security-Policy", _CSP)
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _add_error_handlers(app: FastAPI) -> None:
    """Sign-in redirects, 503 while the database is down, and error pages (JSON under ``/api/``)."""

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(QueueUnavailableError)
    async def _database_down(request: Request, exc: QueueUnavailableError) -> Response:
        return unavailable(request, exc)

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _database_error(request: Request, exc: sa.exc.SQLAlchemyError) -> Response:
        if database_error_is_transient(request, exc):  # a connection failure outside the store's retries
            return unavailable(request, exc)
        raise exc

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": errors}, status_code=422)
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors)
        context = {"status_code": 422, "title": "Invalid request", "detail": detail}
        return render(request, "error.html", context, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/api/") or request.url.path in ("/openapi.json",):
            return await http_exception_handler(request, exc)
        if exc.status_code == 401:
            return RedirectResponse(login_url(request.url.path), status_code=303)
        context = {
            "status_code": exc.status_code,
            "title": _TITLES.get(exc.status_code, "Error"),
            "detail": exc.detail,
        }
        return render(request, "error.html", context, status_code=exc.status_code)
