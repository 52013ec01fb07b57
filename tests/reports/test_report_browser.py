"""The HTML report in a real headless Chromium: self-contained, charts drawn, contents linked."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")


def test_report_opens_offline_with_charts_and_a_working_table_of_contents(
    nights: Any, repo_root: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the CI script installs it)")
    from playwright.sync_api import sync_playwright

    html_path = nights.reports[1]
    html = html_path.read_text()
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', html)
    shots = repo_root / ".shelfwise-test" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1500})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html_path.as_uri())
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        page.screenshot(path=str(shots / "report_top.png"))
        images = page.eval_on_selector_all(
            "img",
            "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, shown: "
            "e.getBoundingClientRect().width,"
            " title: e.dataset.chart, src: e.src}))",
        )
        toc = page.eval_on_selector_all("nav.toc a", "els => els.map(e => e.getAttribute('href'))")
        targets = [page.locator(h).count() for h in toc]
        headline = page.locator("#headline").inner_text()
        cards = page.locator(".card").count()
        # the "What is missing" notes are readable text, not hidden
        sections = page.locator("section").count()
        browser.close()
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert headline.startswith("Tonight ") and "precision" in headline
    assert cards == 8
    assert sections >= 8 and len(toc) == sections and all(n == 1 for n in targets)
    titles = {i["title"] for i in images}
    for expected in (
        "Where tonight's products went",
        "Calibration",
        "Categories with the most corrections",
        "Confusion hot-spots",
        "Overloaded nodes",
        "Top category moves",
        "Top-level mix",
        "Throughput",
        "Backlog age",
        "Auto-accept rate",
        "Precision",
    ):
        assert expected in titles, f"chart {expected!r} missing; have {sorted(titles)}"
    for img in images:
        assert img["w"] >= 400 and img["h"] >= 200, img["title"]
        assert 300 <= img["shown"] <= 1000, img["title"]
        png = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).convert("RGB")
        colours = png.getcolors(maxcolors=1_000_000) or []
        assert len(colours) > 20, f"chart {img['title']} is blank"
        # something besides white: at least 2% of the pixels carry ink
        ink = sum(n for n, rgb in colours if rgb != (255, 255, 255))
        assert ink / (png.width * png.height) > 0.02, img["title"]
    shot = Image.open(shots / "report.png")
    assert shot.height > 3000 and len(shot.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 100
