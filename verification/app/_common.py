"""Shared pieces of the review app: its state, filters from query/form fields, flashes, images (internal)."""

from __future__ import annotations

import dataclasses
import mimetypes
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from verification._types import ItemFilter, ItemView
from verification.models import ItemStatus, Queue
from verification.store import QueueStore

from ._auth import ensure_csrf_token, principal
from ._limits import TrustedProxies
from ._taxonomy import TaxonomyService
from ._throttle import CredentialCache, LoginThrottle

__all__ = [
    "FILTER_FIELDS",
    "IMAGE_TYPES",
    "MAX_FILTER_CHARS",
    "MAX_INT32",
    "QUEUE_LABELS",
    "QUEUE_ORDER",
    "AppState",
    "UiFilters",
    "bad_text",
    "filter_query",
    "flash",
    "image_media_type",
    "parse_filters",
    "parse_int",
    "public_image_path",
    "render",
    "resolve_image",
    "state",
]

QUEUE_ORDER: tuple[Queue, ...] = (Queue.SUSPECT, Queue.LOW_CONFIDENCE, Queue.LLM_FAILED, Queue.AUDIT)
QUEUE_LABELS: dict[str, str] = {
    Queue.SUSPECT: "Suspected misfiled",
    Queue.LOW_CONFIDENCE: "Low confidence",
    Queue.LLM_FAILED: "LLM failed",
    Queue.AUDIT: "Audit sample",
}
# Query/form field names of the list filters (``text`` maps to ItemFilter.search).
FILTER_FIELDS = ("queue", "status", "category", "reason", "min_confidence", "max_confidence", "text")
IMAGE_TYPES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
STATUS_ANY = "any"
MAX_INT32 = 2**31 - 1  # ids and durations are 32-bit integer columns on PostgreSQL
MAX_FILTER_CHARS = 500
_FLASH_KEY = "flash"


@dataclass(frozen=True)
class AppState:
    """Everything the routes need, built once by ``create_app`` (``app.state.review``)."""

    store: QueueStore
    taxonomy: TaxonomyService
    templates: Jinja2Templates
    image_root: Path | None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    credentials: CredentialCache = field(default_factory=CredentialCache)
    trusted_proxies: TrustedProxies = field(default_factory=TrustedProxies)
    session_lifetime: float = 12 * 3600.0
    # bcrypt checks at once: one fewer than the cores, so the event loop always keeps a core
    bcrypt_slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))
    )


def state(request: Request) -> AppState:
    review: AppState = request.app.state.review
    return review


@dataclass(frozen=True)
class UiFilters:
    """The list filters as the pages show them (strings for the form, parsed values for the store)."""

    queue: str | None = None
    status: str | None = None
    category: str | None = None
    reason: str | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None
    text: str | None = None

    def to_item_filter(self) -> ItemFilter:
        return ItemFilter(
            queue=self.queue,
            status=None if self.status in (None, STATUS_ANY) else self.status,
            category=self.category,
            reason=self.reason,
            min_confidence=self.min_confidence,
            max_confidence=self.max_confidence,
            search=self.text,
        )

    def narrows(self) -> bool:
        """True when at least one filter other than the status is set (bulk accept needs one)."""
        return any(
            v is not None
            for v in (
                self.queue,
                self.category,
                self.reason,
                self.min_confidence,
                self.max_confidence,
                self.text,
            )
        )

    def describe(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                parts.append(f"{f.name.replace('_', ' ')} = {value}")
        return ", ".join(parts) or "no filter"


def bad_text(text: str) -> str | None:
    """Why ``text`` cannot be stored or searched (a NUL byte, a lone surrogate), or ``None`` when it can."""
    if "\x00" in text:
        return "contains a NUL byte (\\x00)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def parse_int(raw: str, *, maximum: int = MAX_INT32) -> int | None:
    """A non-negative whole number typed with ASCII digits 0-9 and at most ``maximum``, else ``None``.

    ``str.isdigit`` is not enough: it accepts superscripts and other scripts' digits (``'²'``).
    """
    text = raw.strip()
    if not text or len(text) > 19 or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= maximum else None


def _clean(value: Any, name: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    reason = bad_text(text)
    if reason is None and len(text) > MAX_FILTER_CHARS:
        reason = f"is longer than {MAX_FILTER_CHARS} characters"
    if reason is not None:
        problems.append(f"filter {name} ignored: it {reason}; type plain text")
        return None
    return text or None


def parse_filters(
    params: Mapping[str, Any], *, default_status: str | None = ItemStatus.OPEN
) -> tuple[UiFilters, list[str]]:
    """Filters from query or form fields, and messages about values that were ignored.

    Unknown queue or status names and confidences outside 0..1 are dropped with a message rather than
    failing the page: the reviewer sees what was ignored and why.
    """
    problems: list[str] = []
    queue = _clean(params.get("queue"), "queue", problems)
    if queue is not None and queue not in set(Queue):
        problems.append(f"unknown queue {queue!r} ignored; queues are {', '.join(Queue)}")
        queue = None
    status = _clean(params.get("status"), "status", problems)
    if status is None:
        status = default_status
    elif status != STATUS_ANY and status not in set(ItemStatus):
        problems.append(f"unknown status {status!r} ignored; statuses are {', '.join(ItemStatus)} or any")
        status = default_status
    bounds: dict[str, float | None] = {}
    for name in ("min_confidence", "max_confidence"):
        raw = _clean(params.get(name), name, problems)
        bounds[name] = None
        if raw is None:
            continue
        try:
            number = float(raw)
        except ValueError:
            problems.append(f"{name.replace('_', ' ')} {raw!r} ignored; give a number between 0 and 1")
            continue
        if not 0.0 <= number <= 1.0:  # NaN fails this too
            problems.append(f"{name.replace('_', ' ')} {raw!r} ignored; give a number between 0 and 1")
            continue
        bounds[name] = number
    filters = UiFilters(
        queue=queue,
        status=status,
        category=_clean(params.get("category"), "category", problems),
        reason=_clean(params.get("reason"), "reason", problems),
        min_confidence=bounds["min_confidence"],
        max_confidence=bounds["max_confidence"],
        text=_clean(params.get("text"), "text", problems),
    )
    return filters, problems


def filter_query(filters: UiFilters, **extra: Any) -> str:
    """URL query string that reproduces ``filters`` (plus ``extra`` fields), empty fields left out."""
    pairs = [(f.name, getattr(filters, f.name)) for f in dataclasses.fields(filters)]
    pairs += list(extra.items())
    return urlencode([(k, "" if v is None else str(v)) for k, v in pairs if v is not None and v != ""])


def flash(request: Request, level: str, message: str) -> None:
    """Queue a message for the next page this session renders (kept short: it lives in the cookie)."""
    if len(message) > 300:
        message = message[:297] + "..."
    messages = list(request.session.get(_FLASH_KEY, []))[-3:]
    messages.append([level, message])
    request.session[_FLASH_KEY] = messages


def render(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    """Render a page with the user, the CSRF token and pending flashes in its context."""
    flashes = request.session.pop(_FLASH_KEY, [])
    full = {
        "user": principal(request),
        "csrf_token": ensure_csrf_token(request),
        "flashes": [tuple(f) for f in flashes],
        "nav": None,
        **context,
    }
    templates = state(request).templates
    return templates.TemplateResponse(request, template, full, status_code=status_code)


def resolve_image(item: ItemView, image_root: Path | None) -> Path | None:
    """The item's photo as a file inside ``image_root``, or ``None`` (no root, no file, outside the root).

    Relative image paths are taken from ``image_root``; absolute ones must lie inside it. Symlinks are
    resolved before the check, so neither ``../`` nor a link can reach files outside the root.
    """
    if image_root is None or not item.image_path:
        return None
    raw = Path(item.image_path)
    root = image_root.resolve()
    try:
        candidate = (raw if raw.is_absolute() else root / raw).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if not candidate.is_relative_to(root) or candidate.suffix.lower() not in IMAGE_TYPES:
        return None
    return candidate if candidate.is_file() else None


def public_image_path(item: ItemView, image_root: Path | None) -> str | None:
    """The item's photo path as clients may see it: relative to the image root, or ``None``.

    Never an absolute server path, never one outside the root (``../../etc/passwd`` gives ``None``).
    """
    path = resolve_image(item, image_root)
    if path is None or image_root is None:
        return None
    return path.relative_to(image_root.resolve()).as_posix()


def image_media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
