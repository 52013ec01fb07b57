"""A fault drill shared by the fault tests and ``benchmarks/faults.py``: reviewers deciding through the
review app's REST API on a real uvicorn server (real HTTP), a night enqueueing into the same queue
database, and a tally of every answer they got.

Reviewers behave as ``app.js`` and the docs tell an API client to: on 503 they wait ``Retry-After``
seconds and send the same decision again with the same ``request_id``. A request that gets no answer
at all (connection reset or refused) is counted as dropped.
"""

from __future__ import annotations

import collections
import hashlib
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import uvicorn

from verification import QueueStore, Role

__all__ = ["Night", "Tally", "queue_frame", "reviewer", "serve", "verify"]

PASSWORD = "fault drill password"
_CANDIDATES = pl.List(pl.Struct({"category_id": pl.String, "category_path": pl.String, "score": pl.Float64}))


@dataclass
class Tally:
    """Everything the reviewers and the night saw (shared by threads; guard with ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    dropped: int = 0  # requests that got no HTTP answer at all
    unavailable_without_retry_after: int = 0
    bad_503_bodies: int = 0
    saved: dict[int, tuple[str, str, str]] = field(default_factory=dict)  # item -> (reviewer, kind, req)
    replayed: int = 0  # decisions answered "already saved" on a resend
    lost_after_retries: int = 0  # decisions still 503 after every resend (never counted as saved)
    nights: int = 0
    last_night: int = 0  # the newest night whose content the queue has seen
    night_failures: list[str] = field(default_factory=list)

    def answer(self, resp: httpx.Response) -> None:
        with self.lock:
            self.statuses[resp.status_code] += 1
            if resp.status_code == 503:
                if not resp.headers.get("retry-after", "").isdigit():
                    self.unavailable_without_retry_after += 1
                if resp.request.url.path.startswith("/api/"):
                    body = resp.json()
                    if body.get("reason") != "database_unavailable":
                        self.bad_503_bodies += 1


def queue_frame(
    data: Path,
    *,
    run_id: str,
    night: int = 0,
    changed: float = 0.05,
    catalogs: tuple[str, ...] = ("flipkart",),
) -> pl.DataFrame:
    """Every real product of ``catalogs`` as a review item (suggestion: its own category path) as of
    ``night``: on each night 1..``night`` a ``changed`` share of the products gets new content (a new
    content hash, which reopens it even after a human decision); content never changes back."""
    rows = []
    products = [
        p for name in catalogs for p in pl.read_parquet(data / "catalogs" / f"{name}.parquet").to_dicts()
    ]
    for i, p in enumerate(products):
        path = p["category_path"] or "Unknown"
        node = "fk-" + hashlib.sha1(path.encode()).hexdigest()[:10]
        bump = f"-v{_version(p['sku_id'], night, changed)}"
        rows.append(
            {
                "sku_id": p["sku_id"],
                "category_id": node,
                "category_path": path,
                "confidence": 0.4 + (i % 50) / 100,
                "candidates": [{"category_id": node, "category_path": path, "score": 0.5}],
                "current_category_path": path,
                "taxonomy_version": "flipkart",
                "model_version": "drill",
                "run_id": run_id,
                "content_hash": f"h-{p['sku_id']}{bump}",
                "queue": ("low_confidence", "suspect", "audit")[i % 3],
                "priority": float(i % 97),
                "reason": "drill",
                "title": p["title"],
                "description": p.get("description"),
                "brand": p.get("brand"),
                "image_path": p.get("image_path"),
                "review_text": None,
            }
        )
    frame = pl.DataFrame(rows, schema_overrides={"candidates": _CANDIDATES}, infer_schema_length=None)
    return frame.unique(subset="sku_id", keep="first", maintain_order=True)


def _version(sku: str, night: int, changed: float) -> int:
    """The last night (0 = never) on which ``sku``'s content changed, up to ``night``."""
    for n in range(night, 0, -1):
        if int(hashlib.sha1(f"{sku}:{n}".encode()).hexdigest()[:8], 16) / 2**32 < changed:
            return n
    return 0


def prepare(url: str, data: Path, reviewers: list[str], *, catalogs: tuple[str, ...] = ("flipkart",)) -> None:
    """Schema, the first night's items and the reviewers' accounts."""
    with QueueStore(url, bcrypt_rounds=4) as store:
        store.upgrade()
        store.enqueue(queue_frame(data, run_id="night-0", catalogs=catalogs), run_id="night-0")
        for name in reviewers:
            store.add_user(name, PASSWORD, role=Role.ADMIN)  # admins: the drill reads the export too


def serve(app: Any) -> tuple[uvicorn.Server, str]:
    """The app on a free port of 127.0.0.1 in a background thread; ``server.should_exit = True`` stops it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=30)
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def _send(client: httpx.Client, tally: Tally, method: str, url: str, **kw: Any) -> httpx.Response | None:
    try:
        resp = client.request(method, url, **kw)
    except httpx.TransportError:
        with tally.lock:
            tally.dropped += 1
        time.sleep(0.2)
        return None
    tally.answer(resp)
    return resp


def _wait(resp: httpx.Response | None) -> None:
    if resp is not None and resp.status_code == 503:
        time.sleep(float(resp.headers.get("retry-after", "1")))


def reviewer(
    base: str, name: str, tally: Tally, stop: threading.Event, *, resends: int = 5, think: float = 0.2
) -> None:
    """Claim and decide through the API (basic auth) until ``stop``, ``think`` seconds per item; a
    decision answered 503 is sent again after ``Retry-After`` with the same request id."""
    rng = random.Random(name)
    with httpx.Client(base_url=base, auth=(name, PASSWORD), timeout=60) as client:
        while not stop.is_set():
            resp = _send(client, tally, "POST", "/api/queues/low_confidence/claim", json={"limit": 1})
            if resp is None or resp.status_code != 200:
                _wait(resp)
                continue
            items = resp.json()
            if not items:
                for queue in ("suspect", "audit"):
                    resp = _send(client, tally, "POST", f"/api/queues/{queue}/claim", json={"limit": 1})
                    if resp is not None and resp.status_code == 200 and resp.json():
                        items = resp.json()
                        break
            if not items:
                time.sleep(0.5)
                continue
            stop.wait(think * (0.5 + rng.random()))
            kind = rng.choice(["accept", "accept", "accept", "not_product", "needs_data"])
            _decide(client, tally, items[0]["id"], name, kind, resends=resends)


def _decide(client: httpx.Client, tally: Tally, item_id: int, name: str, kind: str, *, resends: int) -> None:
    request_id = secrets.token_hex(8)
    body = {"kind": kind, "request_id": request_id}
    for _ in range(resends + 1):
        resp = _send(client, tally, "POST", f"/api/items/{item_id}/decision", json=body)
        if resp is not None and resp.status_code == 200:
            with tally.lock:
                tally.saved[item_id] = (name, kind, request_id)
                tally.replayed += bool(resp.json().get("replayed"))
            return
        if resp is not None and resp.status_code not in (503,):
            return  # 409 (someone else's, lease lost while the database was down): not saved, not ours
        _wait(resp)
    with tally.lock:
        tally.lost_after_retries += 1


@dataclass
class Night:
    """What a night does with the queue database, again and again: the human-lock read, the audit read,
    then write-and-enqueue (5% of the products changed) and closing stale items."""

    url: str
    data: Path
    tally: Tally
    pause: float = 1.0
    catalogs: tuple[str, ...] = ("flipkart",)

    def run(self, stop: threading.Event, *, once: Callable[[QueueStore, int], None] | None = None) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            run_id = f"night-{n}"
            frame = queue_frame(self.data, run_id=run_id, night=n, catalogs=self.catalogs)
            try:
                with QueueStore(self.url) as store:
                    store.locked()
                    store.decisions_frame()
                    store.enqueue(frame, run_id=run_id)
                    if once is not None:
                        once(store, n)
                with self.tally.lock:
                    self.tally.nights += 1
                    self.tally.last_night = n
            except Exception as exc:  # noqa: BLE001 - every failure is a finding of the drill
                with self.tally.lock:
                    self.tally.night_failures.append(f"{run_id}: {type(exc).__name__}: {exc}")
            stop.wait(self.pause)


def verify(
    url: str, data: Path, tally: Tally, export_csv: Path, *, catalogs: tuple[str, ...] = ("flipkart",)
) -> dict[str, Any]:
    """After the drill: every decision that got a 200 is in the export, once; the next night keeps it."""
    with QueueStore(url) as store:
        decisions = store.decisions_frame()
        store.export_decisions(export_csv, fmt="csv")
        exported = pl.read_csv(export_csv, infer_schema_length=0)
        finals = decisions.filter(pl.col("final"))
        per_item = finals.group_by("item_id").len()
        applied_twice = int(per_item.filter(pl.col("len") > 1).height)
        by_request = dict(zip(decisions["request_id"].to_list(), decisions["item_id"].to_list(), strict=True))
        missing = [i for i, (_, _, rid) in tally.saved.items() if by_request.get(rid) != i]
        exported_skus = set(exported["sku_id"].to_list())
        saved_skus = set(finals.filter(pl.col("item_id").is_in(list(tally.saved)))["sku_id"].to_list())
        # the next night: nothing changed since the drill's last night
        next_night = queue_frame(data, run_id="night-next", night=tally.last_night, catalogs=catalogs)
        locked = store.locked()  # accepted or chosen categories, with the content they were decided on
        result = store.enqueue(next_night, run_id="night-next")
        items = store.items_frame()
    current = dict(zip(next_night["sku_id"].to_list(), next_night["content_hash"].to_list(), strict=True))
    should_keep = {sku for sku, (_, _, chash) in locked.items() if current.get(sku) == chash}
    reopened = set(items.filter(pl.col("status") != "decided")["sku_id"].to_list()) & should_keep
    return {
        "decisions_saved_200": len(tally.saved),
        "saved_missing_from_log": len(missing),
        "saved_missing_from_export": len(saved_skus - exported_skus),
        "applied_twice": applied_twice,
        "final_decisions": finals.height,
        "next_night_should_keep": len(should_keep),  # human categories on unchanged products
        "next_night_kept": len(should_keep - reopened),
        "next_night_skipped_decided": result.total("skipped_locked"),
    }
