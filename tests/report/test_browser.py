"""The report in a real browser: Debian's Chromium, headless, driven by Playwright.

Opened from ``file://``: every image must decode (naturalWidth > 0), the console must stay free
of errors, no request may leave the page, and no script may run (the hostile run would open a
dialog). A full-page screenshot is saved to ``test-artifacts/report.png``.

Skipped when Chromium or Playwright is missing, unless ``RNN_DIAG_REQUIRE_BROWSER=1`` (set by
``.ci/run``), which turns the skip into a failure.
"""

import os
import shutil
from pathlib import Path

import pytest

from rnn_diag.report.page import render_report
from rnn_diag.report.run_data import load_run

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    reason = ("Chromium not found (apt-get install chromium)" if exe is None else
              "Playwright not installed (pip install playwright)" if sync_playwright is None
              else None)
    if reason:
        if os.environ.get("RNN_DIAG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"RNN_DIAG_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, path: Path):
    """Load ``path``; returns the page and what it logged, fetched and tried to show."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"console": [], "errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(path.as_uri(), wait_until="load")
    return page, seen


def _check(page, seen, path: Path):
    images = page.evaluate(
        "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert images, "the page shows no figure"
    broken = [alt for alt, complete, width in images if not (complete and width > 0)]
    assert broken == [], f"images that did not load: {broken}"
    assert [c for c in seen["console"] if c.startswith(("error", "warning"))] == []
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == [path.as_uri()]  # the file itself, nothing else
    return images


def test_report_in_chromium(browser, small_run, tmp_path):
    rendered = render_report(load_run(small_run))
    path = tmp_path / "index.html"
    path.write_text(rendered.html, encoding="utf-8")
    page, seen = _open(browser, path)
    images = _check(page, seen, path)
    assert len(images) == sum(s.state == "figure" for s in rendered.sections)
    assert page.title() == "small — rnn_diag report"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    page.emulate_media(media="print")  # the print stylesheet applies without errors
    assert page.evaluate("getComputedStyle(document.querySelector('nav')).display") == "none"
    page.close()


def test_hostile_report_runs_no_script(browser, hostile_run, hostile, tmp_path):
    from matplotlib.figure import Figure

    class Section:
        key, title, caption, needs = "loss", "Loss", "cap", ("curves",)

        @staticmethod
        def build(tables):
            fig = Figure(figsize=(2, 1))
            fig.add_subplot().plot([0, 1])
            return fig

    path = tmp_path / "hostile.html"
    path.write_text(render_report(load_run(hostile_run), [Section]).html, encoding="utf-8")
    page, seen = _open(browser, path)
    _check(page, seen, path)  # no dialog: the planted alert() never ran
    assert page.evaluate("document.scripts.length") == 0
    assert hostile in page.inner_text("h1")
    page.close()
