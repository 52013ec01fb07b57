"""PostgreSQL stopped and restarted under the queue store and the review app (a cluster of the test's own,
on its own port): transactions run again, the app answers 503 with Retry-After while the database is
down and never 500, and no decision that got a 200 is lost or applied twice."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from drill import PASSWORD, Night, Tally, queue_frame, reviewer, verify
from pg_cluster import PgCluster

from verification import QueueStore
from verification.store import QueueUnavailableError, retry_counts

pytestmark = pytest.mark.postgres


def _later(seconds: float, action) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_transaction_cut_by_a_restart_runs_again(pg_cluster: PgCluster, real_data: Path) -> None:
    with QueueStore(pg_cluster.url) as store:
        store.upgrade()
        store.enqueue(queue_frame(real_data, run_id="n1").head(30), run_id="n1")
        assert store.claim("low_confidence", "alice")  # the pool now holds live connections
        before = retry_counts().get("queue_db", 0)
        pg_cluster.stop()
        back = _later(1.0, pg_cluster.start)  # down for about a second, as a restart here
        item = store.claim("low_confidence", "bob")[0]
        result = store.decide(item.id, "bob", "accept", request_id="after-restart")
        back.join()
        assert result.final and not result.replayed
        assert retry_counts().get("queue_db", 0) > before  # it was retried, not lucky
        assert store.decisions_frame()["request_id"].to_list() == ["after-restart"]


def test_a_database_that_stays_down_is_reported_unavailable(pg_cluster: PgCluster, real_data: Path) -> None:
    with QueueStore(pg_cluster.url, retry_seconds=2.0) as store:
        store.upgrade()
        pg_cluster.stop()
        started = time.monotonic()
        with pytest.raises(QueueUnavailableError, match=r"did not answer get_item after \d+ tries in"):
            store.get_item(1)
        assert 1.0 < time.monotonic() - started < 10


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_reviewers_and_a_night_ride_out_restarts(
    pg_cluster: PgCluster, real_data: Path, tmp_path: Path, review_app_on_cluster: Callable[[list[str]], str]
) -> None:
    names = [f"reviewer{i}" for i in range(6)]
    base = review_app_on_cluster(names)
    tally = Tally()
    stop = threading.Event()
    night = Night(pg_cluster.url, real_data, tally, pause=0.5)
    threads = [threading.Thread(target=reviewer, args=(base, n, tally, stop)) for n in names]
    threads.append(threading.Thread(target=night.run, args=(stop,)))
    try:
        for t in threads:
            t.start()
        time.sleep(4)
        for down in (0.5, 6.0, 1.0, 0.2):  # 6 s outlasts the store's retries: reviewers must see 503s
            pg_cluster.restart(down_seconds=down, mode="fast" if down < 1 else "immediate")
            time.sleep(4)
        stop.set()
        for t in threads:
            t.join(timeout=90)
    finally:
        stop.set()
    figures = verify(pg_cluster.url, real_data, tally, tmp_path / "export.csv")
    assert tally.statuses[500] == 0, tally.statuses
    assert tally.dropped == 0
    assert tally.statuses[503] > 0, "the 6 s outage should have outlasted the retries"
    assert tally.unavailable_without_retry_after == 0 and tally.bad_503_bodies == 0
    assert set(tally.statuses) <= {200, 409, 503}, tally.statuses
    assert tally.night_failures == [] and tally.nights >= 3
    assert figures["decisions_saved_200"] > 50, figures
    assert figures["saved_missing_from_log"] == figures["saved_missing_from_export"] == 0, figures
    assert figures["applied_twice"] == 0, figures
    assert figures["next_night_kept"] == figures["next_night_should_keep"] > 0, figures


@pytest.mark.timeout(120)
def test_pages_say_what_was_saved_and_resend_once(
    pg_cluster: PgCluster, review_app_on_cluster: Callable[[list[str]], str]
) -> None:
    base = review_app_on_cluster(["alice"])
    with httpx.Client(base_url=base, timeout=60, follow_redirects=False) as client:
        page = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        resp = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/queues"},
        )
        assert resp.status_code == 303
        token = client.get("/api/me").json()["csrf_token"]  # the session's token after login
        resp = client.post("/queues/next", data={"csrf_token": token})
        item_url = resp.headers["location"]
        item_page = client.get(item_url).text
        request_id = re.search(r'name="request_id" value="([^"]+)"', item_page).group(1)  # type: ignore[union-attr]
        item_id = int(item_url.split("/items/")[1].split("?")[0])
        form = {"csrf_token": token, "decision": "not_product", "request_id": request_id, "note": "drill"}

        pg_cluster.stop()
        down = client.get("/queues")
        assert down.status_code == 503 and down.headers["retry-after"].isdigit()
        assert "Database unavailable" in down.text and "Nothing was changed" in down.text
        failed = client.post(f"/items/{item_id}/decide", data=form)
        assert failed.status_code == 503 and "Your last action was not saved" in failed.text
        assert 'data-resend-after="' in failed.text  # app.js sends it once more after Retry-After
        assert f'name="request_id" value="{request_id}"' in failed.text
        api = client.get("/api/queues")
        assert api.status_code == 503 and api.json()["reason"] == "database_unavailable"

        pg_cluster.start()
        resend = dict(form, resent="1")
        saved = client.post(f"/items/{item_id}/decide", data=resend)
        assert saved.status_code == 303
        again = client.post(f"/items/{item_id}/decide", data=resend)  # a second resend: no second decision
        assert again.status_code == 303
        shown = client.get(again.headers["location"]).text
        assert "It had been saved already" in shown
    with QueueStore(pg_cluster.url) as store:
        log = store.decisions_frame()
    mine = log.filter(log["item_id"] == item_id)
    assert mine.height == 1 and mine["kind"].to_list() == ["not_product"]
