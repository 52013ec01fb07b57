"""A merchandiser's session in a real browser: headless Debian Chromium driven by Playwright against uvicorn.

Skipped with a reason when /usr/bin/chromium is missing (``apt-get install chromium``), except in CI
(``CI`` set), where a missing browser fails the test.
"""

from __future__ import annotations

import csv
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from review_app_support import PASSWORD, Env

from verification import QueueStore

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
EUROSPA = "64d5d4a258243731dc7bbb1eef49ad74"
JAIPUR = "6325b6870c54cd47be6ebfbffa620ec7"
WASHCLOTHS = "gid://shopify/TaxonomyCategory/hg-15-4-1-2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def live_server(env: Env) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1 (a thread), stopped after the test."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(env.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="review-app-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def page(live_server: str) -> Iterator[object]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(
                f"{CHROMIUM} is missing; CI must install Debian's chromium (apt-get install chromium)"
            )
        pytest.skip(f"{CHROMIUM} is missing; install it with: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="ko-KR")
        pg = context.new_page()
        pg.set_default_timeout(10_000)
        yield pg
        context.close()
        browser.close()


def test_merchandiser_corrects_an_item_with_a_korean_search(  # type: ignore[no-untyped-def]
    page, live_server: str, env: Env, repo_root: Path, tmp_path: Path
) -> None:
    requests: list[str] = []
    problems: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.on("dialog", lambda dlg: (dialogs.append(dlg.message), dlg.dismiss()))

    # Log in (the queue page sends us to the login form first).
    page.goto(f"{live_server}/queues")
    assert page.url.startswith(f"{live_server}/login")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/queues")
    assert page.inner_text(".card[data-queue=suspect] .num") == "2"

    # Open the suspect queue: the highest-priority item comes up, with its photo.
    page.click(".card[data-queue=suspect] button")
    page.wait_for_url(f"**/items/{env.item_ids[EUROSPA]}?*")
    assert page.inner_text("#item-title") == "Eurospa Cotton Terry Face Towel Set"
    assert page.eval_on_selector(".photo img", "img => img.complete && img.naturalWidth > 0")

    # "/" focuses the taxonomy search; a Korean query finds the Shopify node.
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "taxo-search"
    page.keyboard.type("세안 타월")
    page.wait_for_selector(f'#taxo-results li[data-id="{WASHCLOTHS}"]')
    first = page.locator("#taxo-results li").first
    assert first.get_attribute("data-id") == WASHCLOTHS
    assert "세안 타월" in first.inner_text() and "Washcloths" in first.inner_text()
    page.keyboard.press("Enter")  # pick the highlighted (first) result
    assert page.is_visible("#choose-form")
    assert page.inner_text("#choose-label").endswith("Bath Towels & Washcloths > Washcloths")

    shots = repo_root / ".shelfwise-test" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "review_item_page.png"), full_page=True)

    page.keyboard.press("Enter")  # the focused "Choose this category" button
    page.wait_for_url(f"**/items/{env.item_ids[JAIPUR]}?*")  # on to the next suspect item
    assert "Washcloths" in page.inner_text(".flash.ok")
    page.screenshot(path=str(shots / "review_next_item.png"), full_page=True)

    # "a" accepts the suggestion of the next one; the queue is then empty.
    page.keyboard.press("a")
    page.wait_for_url(f"{live_server}/queues?*")
    assert "No more open items in Suspected misfiled" in page.inner_text(".flash.info")
    assert page.inner_text(".card[data-queue=suspect] .num") == "0"
    page.goto(f"{live_server}/queues?queue=suspect&status=decided")
    assert "Eurospa Cotton Terry Face Towel Set" in page.inner_text("table.items")
    page.screenshot(path=str(shots / "review_queues.png"), full_page=True)

    # Hostile product text stays text in the browser too: no script ran, no dialog opened.
    page.goto(f"{live_server}/items/{env.injection_id}")
    assert page.inner_text("#item-title").startswith("<script>alert(1)</script>")
    assert dialogs == []

    # The correction is in the export.
    export = tmp_path / "decisions.csv"
    assert QueueStore(env.db_url).export_decisions(export, fmt="csv") == 2
    with export.open(encoding="utf-8") as handle:
        rows = {row["sku_id"]: row for row in csv.DictReader(handle)}
    assert WASHCLOTHS in rows[EUROSPA].values() and "alice" in rows[EUROSPA].values()

    assert all(url.startswith(live_server) for url in requests), [
        u for u in requests if not u.startswith(live_server)
    ]
    assert problems == []


def test_admin_downloads_the_export_in_the_browser(page, live_server: str, env: Env) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server}/login")
    page.fill("#username", "root")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/queues")
    page.click(".card[data-queue=low_confidence] button")
    page.wait_for_selector("#btn-accept")
    page.keyboard.press("2")  # second candidate
    page.wait_for_selector(".flash.ok")
    shown = page.url
    page.keyboard.press("j")  # next item, this one stays undecided
    page.wait_for_url(lambda url: url != shown and "/items/" in url)
    page.keyboard.press("s")  # skip
    page.wait_for_selector(".flash.ok")
    assert page.inner_text(".flash.ok").startswith("Skipped")
    with page.expect_download() as info:
        page.evaluate("window.location.href = '/api/export?fmt=csv'")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    assert "55b85ea15a1536d46b7190ad6fff8ce7" in text  # the Elegance curtain, moved to candidate 2
    assert "Curtains & Drapes" in text
