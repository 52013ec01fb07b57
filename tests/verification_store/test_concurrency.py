"""8 reviewers (threads, each with its own connections) drain one queue in parallel.

No item is handed to two reviewers, every item gets exactly one final decision, and claims abandoned by
a crashed reviewer come back when their lease expires. PostgreSQL is the production case
(``FOR UPDATE SKIP LOCKED``); SQLite runs the same test (``BEGIN IMMEDIATE``)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from verification import ItemConflictError
from verification.store import QueueStore

N_ITEMS = 400
N_WORKERS = 8
N_GHOST = 10


def test_parallel_reviewers_never_share_an_item(db_url: str, make_store, make_frame) -> None:
    setup = make_store()
    setup.enqueue(make_frame(N_ITEMS, queues=("suspect",)), run_id="r1")
    # a reviewer who claims items and then vanishes (short lease)
    ghost = make_store(lease_seconds=1)
    ghost_items = ghost.claim("suspect", "ghost", limit=N_GHOST)
    assert len(ghost_items) == N_GHOST

    claims: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(N_WORKERS)
    deadline = time.monotonic() + 120

    def worker(index: int) -> None:
        me = f"reviewer-{index}"
        store = QueueStore(db_url)
        try:
            start.wait()
            while time.monotonic() < deadline:
                limit = 1 + index % 3
                items = store.claim("suspect", me, limit=limit)
                assert len(items) <= limit, f"claim(limit={limit}) leased {len(items)} items"
                if not items:
                    counts = store.queue_counts()["suspect"]
                    if counts["open"] == 0 and counts["claimed"] == 0:
                        return
                    time.sleep(0.05)  # only others' (or the ghost's unexpired) claims are left
                    continue
                with lock:
                    claims.extend((i.id, me) for i in items)
                for n, item in enumerate(items):
                    kind = ("accept", "not_product", "needs_data")[(item.id + n) % 3]
                    store.decide(item.id, me, kind, duration_ms=10)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=150)
    assert not errors, errors[:3]
    assert not [e for e in errors if isinstance(e, ItemConflictError)]

    ids = [item_id for item_id, _ in claims]
    assert len(ids) == len(set(ids)) == N_ITEMS, Counter(ids).most_common(3)
    assert len({who for _, who in claims}) > 1

    log = setup.decisions_frame()
    assert log.height == N_ITEMS
    assert log["final"].all()
    assert log["item_id"].n_unique() == N_ITEMS
    assert "ghost" not in set(log["reviewer"])
    ghost_ids = {i.id for i in ghost_items}
    assert ghost_ids <= set(log["item_id"].to_list())  # the expired claims were reclaimed and decided
    assert setup.queue_counts()["suspect"] == {"open": 0, "claimed": 0, "decided": N_ITEMS}
