"""The report in a real browser: headless Chromium renders it, every table and image is visible, nothing fails to load.

Needs the Python package ``playwright`` (its wheel ships the driver; no browser is downloaded) and a system
Chromium (Debian: ``apt-get install chromium``). Skips with the reason when either is missing. Set
``INTERP_CHROMIUM`` to a browser binary to choose one, and ``INTERP_SCREENSHOT`` to a path to keep a copy of the
full-page screenshot.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str | None:
    chosen = os.environ.get("INTERP_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs the Python package playwright (pip install playwright)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set INTERP_CHROMIUM); browser test skipped")
    with sync_api.sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        except Exception as error:  # a broken or incompatible browser install
            pytest.skip(f"Chromium at {executable} could not be started by playwright: {str(error).splitlines()[0]}")
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def report(extracted_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from interp.report import run_report

    return run_report([extracted_run], out=tmp_path_factory.mktemp("browser") / "synth-test")


def _open(browser, path: Path, media: str = "screen"):
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    problems: list[str] = []
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url} ({request.failure})"))
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    external: list[str] = []
    page.on("request", lambda request: external.append(request.url)
            if not request.url.startswith(("file://", "data:", "about:")) else None)
    page.emulate_media(media=media)
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, problems, external


def test_report_renders_in_chromium(browser, report: Path, tmp_path: Path) -> None:
    page, problems, external = _open(browser, report)
    try:
        tables = page.locator("table")
        assert tables.count() >= 5  # model card, performance, planted, r, p·r, p
        for index in range(tables.count()):
            box = tables.nth(index).bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, f"table {index} is not visible"
        images = page.locator("img")
        assert images.count() >= 8  # the heatmaps and the gallery thumbnails
        for index in range(images.count()):
            image = images.nth(index)
            image.scroll_into_view_if_needed()
            box = image.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, f"image {index} is not visible"
            assert image.evaluate("img => img.complete && img.naturalWidth > 0"), f"image {index} did not decode"
        for section in ("#model-card", "#performance", "#planted", "#global", "#gallery"):
            assert page.locator(section).is_visible(), section
        # Laptop screen: no horizontal scrolling of the page itself.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1366 + 1
        screenshot = tmp_path / "report.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        keep = os.environ.get("INTERP_SCREENSHOT")
        if keep:
            shutil.copyfile(screenshot, keep)
    finally:
        page.close()
    assert not problems, problems
    assert not external, f"the report requested external resources: {external}"


def test_gallery_link_opens_a_local_page(browser, report: Path) -> None:
    page, problems, external = _open(browser, report)
    try:
        href = page.locator("#gallery a").first.get_attribute("href")
        assert href and href.startswith("local/")
    finally:
        page.close()
    local, local_problems, local_external = _open(browser, report.parent / href)
    try:
        image = local.locator("img").first
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    finally:
        local.close()
    assert not problems and not local_problems, problems + local_problems
    assert not external and not local_external


def test_report_prints(browser, report: Path, tmp_path: Path) -> None:
    page, problems, _ = _open(browser, report, media="print")
    try:
        assert not page.locator("nav.toc").is_visible()  # hidden in print
        for selector in ("table.planted", "table.intervals", "figure.card-sample"):
            box = page.locator(selector).first.bounding_box()
            assert box is not None and box["width"] > 0 and box["height"] > 0, selector
        pdf = page.pdf(format="A4", print_background=True)
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        (tmp_path / "report.pdf").write_bytes(pdf)
    finally:
        page.close()
    assert not problems, problems


def test_wide_table_scrolls_inside_its_own_box(browser, extracted_run: Path, tmp_path: Path) -> None:
    """The combined Table 3 (sentiment and emotion, 13 columns) is wider than a 1300-px window: its own box
    scrolls, the page does not."""
    from test_report import make_emotion_run

    from interp.report import run_report

    emotion = make_emotion_run(tmp_path / "runs" / "emo-test")
    path = run_report([extracted_run, emotion], out=tmp_path / "report", gallery_random=0)
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    try:
        page.goto(path.resolve().as_uri(), wait_until="load")
        table = page.locator('table[data-paper-table="3"]')
        assert table.locator("thead tr").last.locator("th").count() == 1 + 13
        sizes = table.evaluate("""t => ({table: t.getBoundingClientRect().width, box: t.parentElement.clientWidth,
            scroll: t.parentElement.scrollWidth, overflow: getComputedStyle(t.parentElement).overflowX})""")
        assert sizes["table"] > sizes["box"], sizes  # wider than the page: the case this test is about
        assert sizes["overflow"] in ("auto", "scroll") and sizes["scroll"] >= sizes["table"] - 1, sizes
        assert page.evaluate("document.documentElement.scrollWidth") <= 1300 + 1
    finally:
        page.close()
