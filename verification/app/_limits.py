"""Guards that run before any route: a request-body cap, and the client address behind a proxy (internal).

:class:`BodyLimit` is a plain ASGI middleware placed outermost, so it acts before sessions, CSRF, form or
JSON parsing and before the login check:

- a ``Content-Length`` over the cap is answered ``413`` without reading a byte of the body;
- a body without ``Content-Length`` (chunked) is read into memory only up to the cap; one byte more and
  the request is answered ``413`` and the rest is never read;
- a malformed ``Content-Length`` is answered ``400``.

:func:`client_address` is the address the login throttle counts: the TCP peer, or the right-most
untrusted hop of ``X-Forwarded-For`` when (and only when) the peer is one of the configured proxies.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_MAX_BODY", "BodyLimit", "TrustedProxies", "client_address"]

DEFAULT_MAX_BODY = 64 * 1024


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` (413) before anything else sees them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: int | None) -> str:
        shown = "more" if size is None else f"{size:,} bytes"
        return (
            f"request body too large ({shown}); the review app accepts at most {self.max_bytes:,} bytes "
            "per request (a decision or a filter is a few hundred bytes)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length_header = None
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                length_header = value
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length_header is not None:
            text = length_header.decode("latin-1").strip()
            if not (text.isascii() and text.isdigit()) or len(text) > 18:
                await _refuse(send, 400, f"malformed Content-Length header {text[:20]!r}; send a byte count")
                return
            if int(text) > self.max_bytes:
                await _refuse(send, 413, self._too_large(int(text)))
                return
        if length_header is None and not chunked and scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # Read the (small) body now, counting bytes as they arrive, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _refuse(send, 413, self._too_large(None))
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TrustedProxies:
    """Addresses (single IPs or networks) whose ``X-Forwarded-For`` header is believed."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        nets = []
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                from shelfwise.errors import ConfigError

                raise ConfigError(
                    f"review app: trusted proxy {entry!r} is not an IP address or network; "
                    "give e.g. 127.0.0.1 or 10.0.0.0/8"
                ) from None
        self._nets = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._nets)


def client_address(request: Request) -> str | None:
    """The caller's address for throttling: the peer, or from ``X-Forwarded-For`` via a trusted proxy.

    Walking ``X-Forwarded-For`` from the right, trusted proxies are skipped and the first other address
    is the client; a header sent by an untrusted peer is ignored entirely.
    """
    peer = request.client.host if request.client else None
    trusted: Any = getattr(request.app.state.review, "trusted_proxies", None)
    if not trusted or peer not in trusted:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from the proxy's client: count the proxy itself
    return peer
