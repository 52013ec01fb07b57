"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for the LLM arbiter's tests.

Speaks ``POST /v1/chat/completions``, ``POST /v1/files``, ``GET /v1/files/{id}/content``,
``POST /v1/batches``, ``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel``. Each chat request
(live or inside a batch) takes the next *behaviour* from a queue, or asks ``responder(body)`` when the
queue is empty. Behaviours are dicts:

    {"answer": {"choice": 1, "reason": "..."}, "p": 0.93}   a completion whose JSON content (or forced tool
                                                             call) is that object; "p" = answer-token prob
    {"content": "not json"}                                   a completion with this raw content
    {"status": 429, "json": {...}, "headers": {"Retry-After": "1"}}   any literal HTTP answer
    {"delay": 2.0, **other}                                   sleep first (for client timeouts)
    {"drop": True}                                            close the connection without answering

Every request is recorded (method, path, headers, JSON body) in ``server.requests``.
``die_after=N`` shuts the whole server down after N chat requests were answered (connection refused after).
``port=P`` listens on a given port (e.g. the port of a server that died: the same endpoint coming back).
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

Behaviour = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


def _tokens(content: str, p: float | None) -> list[dict[str, Any]]:
    """Split content so the digits of "choice" are one token; give them log(p)."""
    m = re.search(r'"choice"\s*:\s*"?(\d+)', content)
    pieces: list[tuple[str, float]] = []
    if m and p is not None:
        a, b = m.span(1)
        pieces = [
            (content[:a], math.log(0.999)),
            (content[a:b], math.log(max(p, 1e-12))),
            (content[b:], math.log(0.999)),
        ]
    else:
        pieces = [(content, math.log(0.999))]
    out = []
    for text, lp in pieces:
        if not text:
            continue
        out.append(
            {
                "token": text,
                "logprob": lp,
                "bytes": list(text.encode()),
                "top_logprobs": [{"token": text, "logprob": lp, "bytes": list(text.encode())}],
            }
        )
    return out


def completion(body: dict[str, Any], content: str, *, p: float | None = None) -> dict[str, Any]:
    """A chat.completion answering ``body`` with ``content`` (as a tool call when tools were forced)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    finish = "stop"
    if body.get("tools"):
        name = body["tools"][0]["function"]["name"]
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_" + uuid.uuid4().hex[:8],
                    "type": "function",
                    "function": {"name": name, "arguments": content},
                }
            ],
        }
        finish = "tool_calls"
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if body.get("logprobs") and p is not None:
        choice["logprobs"] = {"content": _tokens(content, p)}
    prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:12],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt_chars // 4 + len(content) // 4 + 1,
        },
    }


def first_option(body: dict[str, Any]) -> Behaviour:
    """Default responder: always choose option 1."""
    return {"answer": {"choice": 1, "reason": "first option"}}


def prompt_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


def options_of(body: dict[str, Any]) -> dict[int, str]:
    """The numbered options in a request's prompt: {number: path}."""
    out = {}
    for line in prompt_of(body).splitlines():
        m = re.match(r"^(\d+)\. (.+)$", line)
        if m:
            out[int(m.group(1))] = m.group(2)
    return out


class FakeOpenAI:
    """Threaded fake server. Use as a context manager or call ``close()``."""

    def __init__(
        self,
        *,
        responder: Callable[[dict[str, Any]], Behaviour] = first_option,
        die_after: int | None = None,
        batch_polls: int = 2,
        port: int = 0,
    ) -> None:
        self.responder = responder
        self.die_after = die_after
        self.batch_polls = batch_polls
        self.queue: deque[Behaviour] = deque()
        self.requests: list[Recorded] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._answered = 0
        self.dead = False
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # public -------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> FakeOpenAI:
        with self._lock:
            self.queue.extend(behaviours)
        return self

    @property
    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def close(self) -> None:
        with self._lock:
            if self.dead:
                return
            self.dead = True
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # behaviour ----------------------------------------------------------------------------------
    def _next(self, body: dict[str, Any]) -> Behaviour:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
        return self.responder(body)

    def _resolve(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any, float]:
        """Behaviour -> (status, headers, JSON body or None for 'drop', delay)."""
        b = self._next(body)
        if callable(b):
            b = b(body)
        delay = float(b.get("delay", 0.0))
        if b.get("drop"):
            return 0, {}, None, delay
        if "status" in b:
            return (
                int(b["status"]),
                dict(b.get("headers", {})),
                b.get("json", {"error": {"message": "scripted"}}),
                delay,
            )
        if "answer" in b:
            content = json.dumps(b["answer"])
        else:
            content = str(b.get("content", ""))
        return 200, {}, completion(body, content, p=b.get("p")), delay

    # batch --------------------------------------------------------------------------------------
    def _process_batch(self, batch: dict[str, Any]) -> None:
        _, data = self.files[batch["input_file_id"]]
        out_lines = []
        for raw in data.decode().splitlines():
            if not raw.strip():
                continue
            req = json.loads(raw)
            status, _h, payload, _d = self._resolve(req["body"])
            out_lines.append(
                json.dumps(
                    {
                        "id": "batch_req_" + uuid.uuid4().hex[:8],
                        "custom_id": req["custom_id"],
                        "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": payload},
                        "error": None,
                    }
                )
            )
        fid = "file-" + uuid.uuid4().hex[:12]
        self.files[fid] = ("output.jsonl", ("\n".join(out_lines) + "\n").encode())
        batch.update(status="completed", output_file_id=fid, completed_at=int(time.time()))
        batch["request_counts"] = {"total": len(out_lines), "completed": len(out_lines), "failed": 0}

    # HTTP ---------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(
                self,
                status: int,
                payload: Any,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None,
            ) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header(
                        "Content-Type", "application/json" if raw is None else "application/octet-stream"
                    )
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _drop(self) -> None:
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.close_connection = True

            def _record(self, body: Any) -> None:
                with fake._lock:
                    fake.requests.append(
                        Recorded(
                            self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                        )
                    )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if fake.dead:
                    return self._drop()
                if self.path.endswith("/chat/completions"):
                    body = json.loads(raw or b"{}")
                    self._record(body)
                    status, headers, payload, delay = fake._resolve(body)
                    if delay:
                        time.sleep(delay)
                    if payload is None:
                        return self._drop()
                    self._send(status, payload, headers)
                    with fake._lock:
                        fake._answered += 1
                        die = fake.die_after is not None and fake._answered >= fake.die_after
                    if die:
                        with fake._lock:
                            fake.dead = True
                        threading.Thread(target=fake._kill, daemon=True).start()
                    return None
                if self.path.endswith("/files"):
                    msg = BytesParser(policy=email_policy).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
                    )
                    fields: dict[str, Any] = {}
                    for part in msg.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        fields[name] = (part.get_filename(), part.get_payload(decode=True))
                    filename, content = fields["file"]
                    purpose = fields.get("purpose", (None, b""))[1].decode()
                    self._record({"purpose": purpose, "filename": filename, "content": content.decode()})
                    fid = "file-" + uuid.uuid4().hex[:12]
                    fake.files[fid] = (filename, content)
                    return self._send(
                        200,
                        {
                            "id": fid,
                            "object": "file",
                            "bytes": len(content),
                            "created_at": int(time.time()),
                            "filename": filename,
                            "purpose": purpose,
                            "status": "processed",
                        },
                    )
                if self.path.endswith("/batches"):
                    body = json.loads(raw or b"{}")
                    self._record(body)
                    bid = "batch_" + uuid.uuid4().hex[:12]
                    batch = {
                        "id": bid,
                        "object": "batch",
                        "endpoint": body["endpoint"],
                        "errors": None,
                        "input_file_id": body["input_file_id"],
                        "completion_window": body["completion_window"],
                        "status": "validating",
                        "output_file_id": None,
                        "error_file_id": None,
                        "created_at": int(time.time()),
                        "metadata": body.get("metadata"),
                        "_polls": 0,
                    }
                    fake.batches[bid] = batch
                    return self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                m = re.search(r"/batches/([^/]+)/cancel$", self.path)
                if m and m.group(1) in fake.batches:
                    self._record(None)
                    batch = fake.batches[m.group(1)]
                    batch["status"] = "cancelled"
                    return self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                self._record(None)
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self) -> None:
                if fake.dead:
                    return self._drop()
                self._record(None)
                m = re.search(r"/batches/([^/]+)$", self.path)
                if m and m.group(1) in fake.batches:
                    batch = fake.batches[m.group(1)]
                    batch["_polls"] += 1
                    if batch["status"] not in ("completed", "cancelled"):
                        if fake.batch_polls is not None and batch["_polls"] >= fake.batch_polls:
                            fake._process_batch(batch)
                        else:
                            batch["status"] = "in_progress"
                    return self._send(200, {k: v for k, v in batch.items() if not k.startswith("_")})
                m = re.search(r"/files/([^/]+)/content$", self.path)
                if m and m.group(1) in fake.files:
                    return self._send(200, None, raw=fake.files[m.group(1)][1])
                return self._send(404, {"error": {"message": f"no route {self.path}"}})

        return Handler

    def _kill(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    """A port on 127.0.0.1 with nothing listening (for 'connection refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
