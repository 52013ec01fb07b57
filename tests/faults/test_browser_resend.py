"""In a real browser (headless Debian Chromium, Playwright): a reviewer clicks Accept while the queue
database is down, sees "Database unavailable ... your last action was not saved", and app.js sends the
decision again after Retry-After; once the database is back, it is saved once.

Skipped when /usr/bin/chromium is missing, except in CI (``CI`` set), where that fails the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from drill import PASSWORD
from pg_cluster import PgCluster

from verification import QueueStore

pytestmark = [pytest.mark.browser, pytest.mark.postgres]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing; CI must install Debian's chromium (apt-get install chromium)"
            )
        pytest.skip(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.set_default_timeout(20_000)
        yield page
        browser.close()


@pytest.mark.timeout(180)
def test_a_decision_made_while_the_database_is_down_is_sent_again_by_the_page(
    pg_cluster: PgCluster, browser_page: object, review_app_on_cluster: Callable[[list[str]], str]
) -> None:
    page: object = browser_page
    base = review_app_on_cluster(["alice"])
    page.goto(f"{base}/login")  # type: ignore[attr-defined]
    page.fill("input[name=username]", "alice")  # type: ignore[attr-defined]
    page.fill("input[name=password]", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/queues.*"))  # type: ignore[attr-defined]
    page.click("button.primary:has-text('Start reviewing')")  # type: ignore[attr-defined]
    page.wait_for_url(re.compile(r".*/items/\d+.*"))  # type: ignore[attr-defined]
    item_id = int(re.search(r"/items/(\d+)", page.url).group(1))  # type: ignore[attr-defined, union-attr]

    pg_cluster.stop()
    page.click("#btn-accept")  # type: ignore[attr-defined]
    page.wait_for_selector("#action-not-saved")  # type: ignore[attr-defined]
    assert "Database unavailable" in page.content()  # type: ignore[attr-defined]
    pg_cluster.start()  # back before the countdown ends: app.js resends on its own
    page.wait_for_url(re.compile(rf".*/items/(?!{item_id}\b)\d+.*"), timeout=30_000)  # type: ignore[attr-defined]
    assert "Accepted" in page.content()  # type: ignore[attr-defined]
    with QueueStore(pg_cluster.url) as store:
        log = store.decisions_frame()
    mine = log.filter(log["item_id"] == item_id)
    assert mine.height == 1 and mine["kind"].to_list() == ["accept"]
