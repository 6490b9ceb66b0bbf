"""The workspace on the page, end to end in a real headless Chromium (Debian's package) driven
by Playwright: a real `bentoml serve`, its real SQLite catalog, keys made by the CLI, real
clips, and a real webhook receiver on 127.0.0.1. Every step compares what the page shows
with what the API answers for the same key."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from loadtests.service_process import ServedService
from loadtests.webhook_receiver import Receiver
from tests.catalog_helpers import cli_key
from tests.test_web_ui import ARTIFACTS, CHROMIUM

pytestmark = pytest.mark.slow
ERASE_WORDS = "never appears in a result again"


def js_round(x: float) -> int:
    return math.floor(x + 0.5)  # Math.round


@pytest.fixture(scope="module")
def world(store_with_models, tmp_path_factory):
    env = {
        "GENRE_DB_URL": f"sqlite:///{tmp_path_factory.mktemp('ws') / 'catalog.sqlite3'}",
        "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the receiver below
        "GENRE_WEBHOOK_BACKOFF_SCALE": "0.01",
        "GENRE_WRITES_PER_MIN": "12",  # a bucket test_managing_watches empties (5 s a token)
    }
    svc = ServedService(env)
    receiver = Receiver().start()
    try:
        keys = {o: cli_key(env, o) for o in ("booker", "label-b", "keyboard", "manager")}
        svc.wait_ready()
        yield svc, keys, receiver
    finally:
        receiver.stop()
        svc.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():  # only outside CI: tests/conftest.py stops a CI run first
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
        )
        yield b
        b.close()


def new_page(browser, width=1200, height=1400):
    context = browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    page.console_errors, page.console_all = [], []

    def console(m):
        page.console_all.append(m.text)
        # the browser logs each 4xx the API answers (the refused dry run, ...): not the page's
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            page.console_errors.append(m.text)

    page.on("console", console)
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    return page


class Api:
    def __init__(self, svc, key):
        self.url, self.headers = svc.url, {"Authorization": f"Bearer {key}"}

    def get(self, path, **params):
        r = requests.get(f"{self.url}/{path}", params=params, headers=self.headers, timeout=60)
        return r

    def json(self, path, **params):
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def upload(self, clip: Path, **fields):
        with open(clip, "rb") as f:
            r = requests.post(
                f"{self.url}/tracks",
                files={"audio": (clip.name, f)},
                data=fields,
                headers=self.headers,
                timeout=180,
            )
        assert r.status_code == 201, r.text
        return r.json()


def sign_in(page, svc, key):
    page.goto(f"{svc.url}/ui/")
    page.fill("#ws-key", key)
    page.click("#ws-signin button[type=submit]")
    page.wait_for_selector("#workspace:not([hidden])", timeout=30_000)


def row_texts(page, selector):
    return page.eval_on_selector_all(selector, "els => els.map(e => e.innerText.trim())")


def test_workspace_end_to_end(world, browser, gtzan_dir, emotify_dir):
    svc, keys, receiver = world
    a, b = Api(svc, keys["booker"]), Api(svc, keys["label-b"])
    # other people's tracks, so that the line-up has artists to offer (search only: no notify)
    b.upload(gtzan_dir / "country.00000.wav", consent="search", artist="Other Band")
    b.upload(
        sorted((emotify_dir / "classical").glob("*.mp3"))[0], consent="search", artist="Third Band"
    )

    page = new_page(browser)
    response = page.goto(f"{svc.url}/ui/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # the page's own inline script ran under the policy, and the header asks for a key
    assert page.evaluate("typeof window.renderResults") == "function"
    assert page.locator("#workspace").is_hidden()

    # 1. sign in with key A: the header is GET /me
    sign_in(page, svc, keys["booker"])
    me = a.json("me")
    assert page.inner_text("#ws-account-name") == me["account"] == "booker"
    assert page.evaluate("sessionStorage.length") == 1 and keys["booker"] not in page.url
    assert page.inner_text("[data-budget=search]").startswith("searches left: ")

    # 2. upload three clips at once, each with its own progress line; then one again
    clips = [gtzan_dir / f"{g}.00000.wav" for g in ("classical", "jazz", "blues")]
    page.set_input_files("#ws-files", [str(c) for c in clips])
    page.fill("#ws-upload-artist", "Quartet A")
    page.click("#ws-upload-btn")
    page.wait_for_function(
        "() => document.querySelectorAll('#ws-upload-lines li[data-state=stored]').length === 3",
        timeout=240_000,
    )
    page.wait_for_function("() => document.querySelectorAll('#ws-tracks-body tr').length === 3")
    mine = a.json("tracks")["tracks"]
    ids = [t["id"] for t in mine]
    assert page.eval_on_selector_all("#ws-tracks-body tr", "r => r.map(e => e.dataset.id)") == ids
    assert (
        page.eval_on_selector_all("#ws-upload-lines li", "r => r.map(e => e.dataset.id)") == ids
    )  # one line per file, in order, each naming the stored track
    for t in mine:
        row = page.locator(f'#ws-tracks-body tr[data-id="{t["id"]}"]')
        assert row.locator(".ws-genre").inner_text() == (
            f"{t['top_genre']} {js_round(t['top_probability'] * 100)} %"
        )
        d = t["descriptors"]
        assert row.locator(".ws-tempo").inner_text() == f"{js_round(d['tempo']['bpm'])} BPM"
        assert row.locator(".ws-key").inner_text() == (
            f"{d['key']['tonic']} {d['key']['mode']} ({d['key']['camelot']})"
        )
        assert row.locator(".ws-consent-cell").inner_text() == "search"
    quota = a.json("me")["quotas"]["tracks"]
    assert page.inner_text("[data-quota=tracks]") == (
        f"tracks: {quota['used']} of {quota['limit']:,} ({quota['left']:,} left)"
    )
    assert quota["used"] == 3
    page.set_input_files("#ws-files", str(clips[0]))
    page.click("#ws-upload-btn")
    page.wait_for_selector("#ws-upload-lines li[data-state=duplicate]", timeout=120_000)
    dup = page.inner_text("#ws-upload-lines li")
    assert "duplicate: already in my catalog" in dup and len(a.json("tracks")["tracks"]) == 3
    assert page.eval_on_selector("#ws-upload-lines li", "e => e.dataset.id") == ids[0]

    # 3. find by a brief: the page shows how GET /tracks/search read it and what it found
    # (the exact answers, or when none, why and the closest fits with what each misses)
    page.click("#ws-tab-find")
    brief = "calm instrumental jazz around 90 BPM blorp"
    page.fill("#ws-brief", brief)
    page.click("#ws-find button[type=submit]")
    api = a.get("tracks/search", q=brief)
    assert api.status_code == 200, api.text
    body = api.json()
    page.wait_for_selector("#ws-brief-terms li")
    terms = page.eval_on_selector_all(
        "#ws-brief-terms li", "r => r.map(e => [e.dataset.term, e.innerText])"
    )
    read = body["query"]["brief"]
    assert [t for t, _ in terms] == [u["filter"] for u in read["understood"]] + ["not_understood"]
    assert all(f"“{u['words']}”" in text for u, (_, text) in zip(read["understood"], terms))
    assert "blorp" in terms[-1][1]
    want = body["results"] or body["why"]["closest"]
    page.wait_for_function(
        "n => document.querySelectorAll('#ws-find-results li[data-id]').length === n", arg=len(want)
    )
    shown = page.eval_on_selector_all(
        "#ws-find-results li[data-id]", "r => r.map(e => e.dataset.id)"
    )
    assert shown == [r["id"] for r in want]
    if not body["results"]:
        assert body["why"]["message"] in page.inner_text("#ws-why")
        misses = page.eval_on_selector_all(".ws-r-unmet", "r => r.map(e => e.innerText)")
        assert misses == [f" · misses {', '.join(r['unmet'])}" for r in want if r["unmet"]]

    # "Sounds like" one of my tracks: GET /tracks/{id}/similar, in its order (my own
    # artist's tracks included: the form's "leave out the same artist" unticked)
    page.uncheck("#ws-like-exclude")
    page.click("#ws-tab-catalog")
    jazz, blues = ids[1], ids[2]
    page.click(f'#ws-tracks-body tr[data-id="{jazz}"] button[data-action=like]')
    page.wait_for_selector("#ws-find-results li[data-id]")
    similar = a.json(f"tracks/{jazz}/similar", k=10, exclude_same_artist="false")["results"]
    shown = page.eval_on_selector_all(
        "#ws-find-results li[data-id]", "r => r.map(e => e.dataset.id)"
    )
    assert shown == [r["id"] for r in similar] and blues in shown
    first = page.locator("#ws-find-results li").first
    assert first.locator(".ws-r-score").inner_text() == f"score {similar[0]['score']:.2f}"
    assert first.locator(".ws-r-genre").inner_text() == similar[0]["genre"]

    # 4. a line-up from my artist, exported as CSV
    page.click("#ws-tab-lineup")
    page.select_option("#ws-lineup-mine", label="Quartet A")
    page.click("#ws-alike-form button[type=submit]")
    page.wait_for_selector("#ws-alike-body tr")
    alike = a.json("artists/similar", artist_id=mine[0]["artist_id"], k=10)["results"]
    assert row_texts(page, "#ws-alike-body tr td:first-child") == [r["artist"] for r in alike]
    assert {r["artist"] for r in alike} == {"Other Band", "Third Band"}
    for button in page.locator("#ws-alike-body button").all():
        button.click()
    with page.expect_download() as download:
        page.click("#ws-lineup-csv")
    assert download.value.suggested_filename == "line-up.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows == [
        {"artist": r["artist"], "score": f"{r['score']:.4f}", "n_tracks": str(r["n_tracks"])}
        for r in alike
    ]

    # 5. a watch: the webhook URL checked by the dry run first, then saved; its secret once
    page.click("#ws-tab-watches")
    page.fill("#ws-watch-name", "new rock")
    page.fill("#ws-watch-url", "https://10.0.0.1/hook")
    page.focus("#ws-genre-pop-rock")
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    assert page.input_value("#ws-genre-pop-rock") == "0.3"
    page.click("#ws-watch-check")
    page.wait_for_selector("#ws-watch-err-webhook_url:not([hidden])")
    body = {"name": "new rock", "genres": {"pop-rock": 0.3}, "webhook_url": "https://10.0.0.1/hook"}
    dry = requests.post(
        f"{svc.url}/watches", params={"dry_run": "true"}, json=body, headers=a.headers, timeout=30
    )
    assert dry.status_code == 400
    assert page.inner_text("#ws-watch-err-webhook_url") == dry.json()["detail"]
    assert a.json("watches")["watches"] == []
    page.fill("#ws-watch-url", receiver.url)
    page.click("#ws-watch-save")
    page.wait_for_selector("#ws-secret:not([hidden])")
    secret = page.input_value("#ws-secret-value")
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    (watch,) = a.json("watches")["watches"]
    assert watch["name"] == "new rock" and watch["genres"] == {"pop-rock": 0.3}
    assert watch["webhook_url"] == receiver.url and watch["active"] is True
    page.wait_for_selector(f'#ws-watches-body tr[data-id="{watch["id"]}"]')
    assert page.inner_text(f'#ws-watches-body tr[data-id="{watch["id"]}"] .ws-state') == "active"
    page.click("#ws-secret-done")
    assert secret not in page.inner_text("body") and page.locator("#ws-secret").is_hidden()
    page.click(f'#ws-watches-body tr[data-id="{watch["id"]}"] button[data-action=open]')
    page.wait_for_selector("#ws-matches li")
    assert page.inner_text("#ws-matches") == "No match yet."

    # key B, on its own page, uploads a matching track with notify consent
    page_b = new_page(browser)
    sign_in(page_b, svc, keys["label-b"])
    page_b.check("#ws-consent-notify")
    page_b.fill("#ws-upload-artist", "Loud Band")
    page_b.set_input_files("#ws-files", str(sorted((emotify_dir / "rock").glob("*.mp3"))[1]))
    page_b.click("#ws-upload-btn")
    page_b.wait_for_selector("#ws-upload-lines li[data-state=stored]", timeout=120_000)
    track = page_b.eval_on_selector("#ws-upload-lines li", "e => e.dataset.id")
    uploaded = time.monotonic()
    assert page_b.inner_text(f'#ws-tracks-body tr[data-id="{track}"] .ws-consent-cell') == (
        "search, notify"
    )

    # A's page shows the match and a delivered attempt within 30 s
    page.wait_for_selector(f'#ws-matches li[data-track="{track}"]', timeout=30_000)
    page.wait_for_selector(
        "#ws-deliveries li[data-status=delivered] .ws-attempt[data-status-code='200']",
        timeout=max(1_000, int(30_000 - (time.monotonic() - uploaded) * 1000)),
    )
    took = time.monotonic() - uploaded
    assert took < 30, took
    matches = a.json(f"watches/{watch['id']}/matches")["matches"]
    assert [m["track_id"] for m in matches] == [track]
    shown = page.inner_text(f'#ws-matches li[data-track="{track}"]')
    assert f"score {matches[0]['score']:.2f}" in shown and "Loud Band" in shown
    (delivery,) = a.json(f"watches/{watch['id']}/deliveries")["deliveries"]
    assert delivery["status"] == "delivered"
    item = page.locator(f'#ws-deliveries li[data-id="{delivery["id"]}"]')
    assert item.get_attribute("data-status") == "delivered"
    assert item.locator(".ws-attempt").count() == len(delivery["attempts"])
    assert any(r.verified and r.payload["data"]["track_id"] == track for r in receiver.received)

    # 6. erase a track, with a confirmation that says what erasure removes
    page.click("#ws-tab-catalog")
    said = []
    page.once("dialog", lambda d: (said.append(d.message), d.accept()))
    page.click(f'#ws-tracks-body tr[data-id="{blues}"] button[data-action=erase]')
    page.wait_for_selector(f'#ws-tracks-body tr[data-id="{blues}"]', state="detached")
    assert ERASE_WORDS in said[0] and "audio itself was never stored" in said[0]
    assert blues not in [t["id"] for t in a.json("tracks")["tracks"]]
    page.click(f'#ws-tracks-body tr[data-id="{jazz}"] button[data-action=like]')
    page.wait_for_function(
        "ids => { const s = [...document.querySelectorAll('#ws-find-results li[data-id]')]"
        ".map(e => e.dataset.id);"
        " return s.length === ids.length && s.every((x, i) => x === ids[i]); }",
        arg=[
            r["id"]
            for r in a.json(f"tracks/{jazz}/similar", k=10, exclude_same_artist="false")["results"]
        ],
    )
    assert blues not in page.eval_on_selector_all(
        "#ws-find-results li[data-id]", "r => r.map(e => e.dataset.id)"
    )

    # no script error, no policy violation, and the key in no console message
    assert not any(k in m for k in keys.values() for m in page.console_all + page_b.console_all)
    assert not page.console_errors and not page_b.console_errors, (
        page.console_errors + page_b.console_errors
    )
    # an inline script that is not the page's own is refused by the policy
    injected = page.evaluate(
        "() => { window.__injected = false; const s = document.createElement('script');"
        " s.textContent = 'window.__injected = true'; document.body.append(s);"
        " return window.__injected; }"
    )
    assert injected is False
    page.click("#ws-signout")
    assert page.evaluate("sessionStorage.length") == 0 and page.locator("#workspace").is_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "workspace-e2e.png"), full_page=True)


UNLABELLED = """() => [...document.querySelectorAll(
  '#ws-header input, #ws-header select, #workspace input, #workspace select, #workspace textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.id || e.outerHTML)"""


def test_readable_at_375_px(world, browser):
    svc, keys, _ = world
    page = new_page(browser, width=375, height=812)
    sign_in(page, svc, keys["booker"])
    page.wait_for_timeout(500)
    for view in ("catalog", "find", "lineup", "watches"):
        page.click(f"#ws-tab-{view}")
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1] == 375, (view, width)
        assert page.evaluate(UNLABELLED) == [], view
        small = page.evaluate(
            "() => [...document.querySelectorAll('#workspace *')].filter(e => e.offsetParent"
            " && e.childNodes.length && parseFloat(getComputedStyle(e).fontSize) < 12).length"
        )
        assert small == 0, view
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"workspace-375-{view}.png"), full_page=True)
    page.click("#ws-tab-catalog")
    rows = page.locator("#ws-tracks-body tr")
    if rows.count():  # a row is a block of labelled cells, inside the screen
        box = rows.first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375


def tab_to(page, selector: str, limit: int = 400, key: str = "Tab") -> None:
    for _ in range(limit):
        page.keyboard.press(key)
        if page.evaluate(
            "s => !!document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
    raise AssertionError(f"the keyboard never reached {selector}")


def test_keyboard_only(world, browser, gtzan_dir):
    """Sign-in, upload and a watch with the keyboard alone: no click, no fill."""
    svc, keys, receiver = world
    api = Api(svc, keys["keyboard"])
    page = new_page(browser)
    page.goto(f"{svc.url}/ui/")
    tab_to(page, "#ws-key")
    page.keyboard.type(keys["keyboard"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#workspace:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "ws-title"
    tab_to(page, "#ws-files")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Space")
    chooser.value.set_files(str(gtzan_dir / "jazz.00000.wav"))
    tab_to(page, "#ws-upload-btn")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # where the focus is can be seen
    page.keyboard.press("Enter")
    page.wait_for_selector("#ws-upload-lines li[data-state=stored]", timeout=120_000)
    (track,) = api.json("tracks")["tracks"]
    page.wait_for_selector(f'#ws-tracks-body tr[data-id="{track["id"]}"]')

    tab_to(page, "#ws-tab-watches", key="Shift+Tab")
    page.keyboard.press("Enter")
    tab_to(page, "#ws-watch-name")
    page.keyboard.type("by keyboard")
    tab_to(page, "#ws-watch-url")
    page.keyboard.type(receiver.url)
    tab_to(page, "#ws-genre-jazz")
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    tab_to(page, f'#ws-like-choices input[value="{track["id"]}"]')
    page.keyboard.press("Space")
    tab_to(page, "#ws-watch-save")
    page.keyboard.press("Enter")
    page.wait_for_selector("#ws-secret:not([hidden])")
    assert page.evaluate("document.activeElement.id") == "ws-secret-title"
    (watch,) = api.json("watches")["watches"]
    assert watch["name"] == "by keyboard" and watch["genres"] == {"jazz": 0.2}
    assert watch["like"] == [track["id"]] and watch["webhook_url"] == receiver.url
    tab_to(page, "#ws-secret-copy")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('ws-secret-copied').textContent !== ''")
    tab_to(page, "#ws-secret-done")
    page.keyboard.press("Enter")
    assert page.locator("#ws-secret").is_hidden()
    assert not page.console_errors, page.console_errors


def test_managing_watches_and_a_429(world, browser, gtzan_dir):
    """Notify withdrawn; a watch edited (PATCH, checked by the dry run first), tested,
    redelivered, its secret rotated (the new one signs the next event); and an empty budget
    read as "slow down, try again in N s" with the API's Retry-After."""
    svc, keys, receiver = world
    api = Api(svc, keys["manager"])
    track = api.upload(gtzan_dir / "disco.00000.wav", consent="search,notify", artist="M")
    page = new_page(browser)
    sign_in(page, svc, keys["manager"])
    row = f'#ws-tracks-body tr[data-id="{track["id"]}"]'
    page.click(f"{row} button[data-action=withdraw]")
    page.wait_for_selector(f"{row} button[data-action=give]")
    assert api.json(f"tracks/{track['id']}")["consent"] == ["search"]
    assert page.inner_text(f"{row} .ws-consent-cell") == "search"

    # "Sounds like" a file that is not stored: POST /similar with the key, in its order
    clip = gtzan_dir / "hiphop.00000.wav"
    page.click("#ws-tab-find")
    page.set_input_files("#ws-like-file", str(clip))
    page.click("#ws-like-upload button[type=submit]")
    page.wait_for_selector("#ws-find-results li[data-id]", timeout=60_000)
    with open(clip, "rb") as f:
        r = requests.post(
            f"{svc.url}/similar?k=10", files={"audio": f}, headers=api.headers, timeout=120
        )
    want = [x["id"] for x in r.json()["results"]]
    shown = page.eval_on_selector_all(
        "#ws-find-results li[data-id]", "r => r.map(e => e.dataset.id)"
    )
    assert shown == want and track["id"] in shown
    assert api.json("tracks")["tracks"] == [api.json(f"tracks/{track['id']}")]  # nothing stored

    page.click("#ws-tab-watches")
    page.fill("#ws-watch-name", "managed")
    page.fill("#ws-watch-url", receiver.url)
    page.focus("#ws-genre-electronic")
    page.keyboard.press("ArrowRight")
    page.click("#ws-watch-save")
    page.wait_for_selector("#ws-secret:not([hidden])")
    first_secret = page.input_value("#ws-secret-value")
    page.click("#ws-secret-done")
    (watch,) = api.json("watches")["watches"]
    assert watch["genres"] == {"electronic": 0.05}
    wrow = f'#ws-watches-body tr[data-id="{watch["id"]}"]'

    # edit: the form holds the watch; saving is a PATCH (no new secret)
    page.click(f"{wrow} button[data-action=edit]")
    assert page.inner_text("#ws-watch-form-title") == "Edit “managed”"
    assert page.input_value("#ws-genre-electronic") == "0.05"
    page.fill("#ws-watch-name", "managed again")
    page.focus("#ws-genre-electronic")
    page.keyboard.press("ArrowRight")
    page.click("#ws-watch-save")
    page.wait_for_function(
        "() => document.getElementById('ws-watch-checked').textContent.startsWith('Saved')"
    )
    (edited,) = api.json("watches")["watches"]
    assert edited["id"] == watch["id"] and edited["name"] == "managed again"
    assert edited["genres"] == {"electronic": 0.1} and page.locator("#ws-secret").is_hidden()
    page.wait_for_selector(f"{wrow} >> text=managed again")

    # a test event, delivered; then sent again: two attempts
    receiver.secrets.append(first_secret)
    page.click(f"{wrow} button[data-action=test]")
    page.click(f"{wrow} button[data-action=open]")
    page.wait_for_selector("#ws-deliveries li[data-status=delivered]", timeout=30_000)
    (delivery,) = api.json(f"watches/{watch['id']}/deliveries")["deliveries"]
    assert delivery["event"] == "watch.test" and delivery["status"] == "delivered"
    item = f'#ws-deliveries li[data-id="{delivery["id"]}"]'
    page.click(f"{item} button[data-delivery]")
    page.wait_for_function(
        "sel => document.querySelectorAll(sel).length === 2",
        arg=f"{item} .ws-attempt[data-status-code='200']",
        timeout=30_000,
    )
    again = api.json(f"watches/{watch['id']}/deliveries")["deliveries"][0]
    assert len(again["attempts"]) == 2
    signed = [r for r in receiver.received if r.id == delivery["id"]]
    assert len(signed) == 2 and all(r.verified for r in signed)

    # rotate: the new secret once; the next event verifies with it alone
    page.once("dialog", lambda d: d.accept())
    page.click(f"{wrow} button[data-action=rotate]")
    page.wait_for_selector("#ws-secret:not([hidden])")
    second_secret = page.input_value("#ws-secret-value")
    assert second_secret.startswith("whsec_") and second_secret != first_secret
    page.click("#ws-secret-done")
    receiver.secrets[:] = [second_secret]
    seen = len(receiver.received)
    page.click(f"{wrow} button[data-action=test]")
    deadline = time.time() + 30
    while len(receiver.received) == seen and time.time() < deadline:
        time.sleep(0.2)
    assert receiver.received[-1].verified

    # the watch changes budget spent: the page says to slow down, with the API's seconds
    while True:
        r = requests.post(f"{svc.url}/watches/{watch['id']}/test", headers=api.headers, timeout=30)
        if r.status_code == 429:
            break
        assert r.status_code == 202, r.text
    page.click(f"{wrow} button[data-action=test]")
    page.wait_for_selector("#ws-watches-error:not([hidden])")
    shown = page.inner_text("#ws-watches-error")
    seconds = int(r.headers["retry-after"])
    assert shown in {f"Slow down: try again in {s} s." for s in (seconds, seconds - 1)}, shown
    assert "ws-slow" in page.get_attribute("#ws-watches-error", "class")
    assert page.inner_text("#ws-notice") == shown
    assert not page.console_errors, page.console_errors
