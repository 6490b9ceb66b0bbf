"""The web page in a real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import math
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
def catalog_env(tmp_path_factory) -> dict:
    return {"GENRE_DB_URL": f"sqlite:///{tmp_path_factory.mktemp('ui') / 'catalog.sqlite3'}"}


@pytest.fixture(scope="module")
def service(store_with_models, catalog_env):
    svc = ServedService(catalog_env)
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
    _page_matches_the_api(service, page, wav_clip)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-results.png"), full_page=True)


def _page_matches_the_api(service, page, clip):
    """Every number the page shows for each model is the API's for the same clip: top genre,
    every genre's percentage, the accuracy sentence and its calibration error."""
    import requests

    with open(clip, "rb") as f:
        reply = requests.post(f"{service.url}/predict", files={"audio": f}, timeout=120).json()
    d, shown = reply["descriptors"], page.inner_text("#descriptors")
    assert f"Tempo {math.floor(d['tempo']['bpm'] + 0.5)} BPM" in shown, shown
    assert f"key {d['key']['tonic']} {d['key']['mode']} ({d['key']['camelot']})" in shown, shown
    mood = page.inner_text("#mood")  # issue 32: the reply's mood, GEMS bars, voice chips
    assert f"Mood {d['mood']['quadrant']}" in mood, mood
    assert f"arousal {math.floor(d['mood']['arousal'] * 100 + 0.5)} %" in mood, mood
    assert page.locator("#mood-gems .gem").count() == len(d["gems"]) == 9
    voiced = "instrumental" if d["voice"]["instrumental"] >= 0.5 else "vocals"
    assert voiced in page.inner_text("#mood-chips")
    assert page.locator("#mood-time > div").count() == len(reply["timeline"])
    for name, m in reply["models"].items():
        card = page.locator(f'.model-card[data-model="{name}"]')
        assert card.locator(".top-genre").inner_text() == m["top_genre"]
        for genre, p in m["probabilities"].items():
            shown = card.locator(f'.row[data-genre="{genre}"] .pct').inner_text()
            assert shown == f"{math.floor(p * 100 + 0.5)} %", (name, genre, shown, p)  # JS round
        met = m["metrics"]
        acc = card.locator(".acc").inner_text()
        right = round(met["accuracy"] * met["n_tracks"])
        assert f"Right on {right} of {met['n_tracks']} tracks" in acc, acc
        assert f"by {met['ece'] * 100:.1f} points" in acc, acc


def test_bad_file_shows_friendly_error(service, page, tmp_path):
    junk = tmp_path / "notes.mp3"
    junk.write_text("not really an mp3\n" * 50)
    page.goto(f"{service.url}/ui/")
    page.set_input_files("#file-input", str(junk))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "couldn't analyse" in page.inner_text("#error")
    assert page.locator("#results").is_hidden()


def _frac(page) -> float:
    return page.evaluate(
        "() => { const p = document.getElementById('player'); return p.currentTime / p.duration; }"
    )


def test_player_playhead_and_tracks_like_this(service, page, catalog_env, gtzan_dir, wav_clip):
    """The upload plays in the page; the playhead follows the player over the timeline and
    the spectrogram; a click on either seeks there. "Tracks like this" says the catalog is
    empty, then, once tracks are added, lists what POST /similar answers, in its order."""
    import subprocess
    import sys

    import requests

    page.goto(f"{service.url}/ui/")
    page.set_input_files("#file-input", str(wav_clip))
    page.wait_for_selector("#results:not([hidden])", timeout=60_000)
    page.wait_for_function(
        "() => document.getElementById('similar-note').textContent.startsWith('No tracks')",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=30_000
    )
    page.evaluate(
        "() => { const p = document.getElementById('player'); p.currentTime = p.duration / 2; }"
    )
    page.wait_for_function(
        "() => Math.abs(parseFloat(document.getElementById('playhead-timeline').style.left) - 50)"
        " < 2"
    )
    left = page.eval_on_selector("#playhead-spectrogram", "e => parseFloat(e.style.left)")
    assert abs(left - 50) < 2
    for selector, where in (("#timeline-wrap", 0.25), ("#spectrogram-wrap", 0.75)):
        box = page.locator(selector).bounding_box()  # a real click, scrolled into view
        page.locator(selector).click(position={"x": where * box["width"], "y": box["height"] / 2})
        page.wait_for_timeout(300)
        page.evaluate("() => document.getElementById('player').pause()")
        assert abs(_frac(page) - where) < 0.05, (selector, _frac(page))
    # add three tracks to the catalog, then the same upload lists them
    key = (
        subprocess.run(
            [sys.executable, "-m", "genre_detector", "keys", "create", "ui-label"],
            env={**os.environ, **catalog_env},
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    for name in ("blues", "country", "metal"):
        with open(gtzan_dir / f"{name}.00000.wav", "rb") as f:
            r = requests.post(
                f"{service.url}/tracks",
                files={"audio": f},
                data={"consent": "search", "title": name.title(), "artist": f"{name} band"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=120,
            )
        assert r.status_code == 201, r.text
    with open(wav_clip, "rb") as f:
        api = requests.post(f"{service.url}/similar?k=5", files={"audio": f}, timeout=120).json()
    page.goto(f"{service.url}/ui/")
    page.set_input_files("#file-input", str(wav_clip))
    page.wait_for_selector("#similar li", timeout=60_000)
    shown = page.eval_on_selector_all("#similar li", "els => els.map(e => e.dataset.id)")
    assert shown == [x["id"] for x in api["results"]] and len(shown) == 3
    first = page.locator("#similar li").first.inner_text()
    assert api["results"][0]["title"] in first and api["results"][0]["genre"] in first
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-catalog.png"), full_page=True)
