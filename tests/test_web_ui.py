"""The web page in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from genre_detector.models.families import model_names
from loadtests.service_process import REPO, ServedService

pytestmark = pytest.mark.slow
# the same lookup as tests/conftest.py's, which fails a CI run (CI set) without it
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def service(store_with_models):
    svc = ServedService()
    try:
        svc.wait_ready()
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def page():
    if not Path(CHROMIUM).exists():  # only outside CI: tests/conftest.py stops a CI run first
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        yield browser.new_page(viewport={"width": 1200, "height": 1600})
        browser.close()


def test_upload_real_clip_and_see_results(service, page, wav_clip):
    page.goto(f"{service.url}/ui/")
    assert "Genre detector" in page.title() + page.inner_text("body")
    page.set_input_files("#file-input", str(wav_clip))
    page.wait_for_selector("#results:not([hidden])", timeout=60_000)
    cards = page.locator(".model-card")
    assert cards.count() == len(model_names()) == 5
    assert page.locator(".model-card .bar").count() == 5 * 9  # a bar per genre per model
    assert page.inner_text("#top3").startswith("Top three: ")
    widths = page.eval_on_selector_all(
        ".model-card .bar", "els => els.map(e => e.getBoundingClientRect().width)"
    )
    assert max(widths) > 20  # bars are drawn, the top ones wide
    assert page.inner_text("#verdict").strip().startswith("This sounds like")
    natural = page.eval_on_selector(
        "#spectrogram", "img => [img.complete, img.naturalWidth, img.naturalHeight]"
    )
    assert natural[0] and natural[1] > 100 and natural[2] > 10
    assert page.locator("#timeline .segment").count() >= 10
    assert page.locator("#error").is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-results.png"), full_page=True)


def test_bad_file_shows_friendly_error(service, page, tmp_path):
    junk = tmp_path / "notes.mp3"
    junk.write_text("not really an mp3\n" * 50)
    page.goto(f"{service.url}/ui/")
    page.set_input_files("#file-input", str(junk))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "couldn't analyse" in page.inner_text("#error")
    assert page.locator("#results").is_hidden()
