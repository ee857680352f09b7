"""The HTML report in headless Chromium (Debian's chromium + chromedriver): it renders, the leaderboard
and every image load, and the console stays clean."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.ray

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1366,900")


def browser(profile):
    """Debian's Chromium driven by Debian's chromedriver; a fresh profile, nothing downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(DRIVER))


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_html_report_renders_in_headless_chromium(report_dir, tmp_path):
    page = report_dir / "report.html"
    driver = browser(tmp_path / "profile")
    try:
        driver.get(page.as_uri())
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        table = driver.find_element("id", "leaderboard-table")
        rows = table.find_elements("css selector", "tbody tr")
        assert [r.find_element("tag name", "th").text for r in rows] == ["lstm", "transformer", "chance", "ranking"]
        # 2 seeds: no cell may be marked best; each task says why (insufficient seeds)
        assert not table.find_elements("css selector", "td.best")
        assert "insufficient seeds" in driver.find_element("tag name", "body").text
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        # learning curves for 2 tasks, a generalisation curve for copy, and a heatmap per cell
        assert len(images) == 2 + 1 + 4
        for alt, complete, width, height in images:
            assert complete and width > 0 and height > 0, f"image not loaded: {alt}"
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe
    finally:
        driver.quit()
