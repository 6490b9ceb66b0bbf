"""How fast the workspace draws, in headless Chromium (Debian's package), and a screenshot of
each of its views into docs/:

    python loadtests/ui_render.py                 # 1,000 tracks, screenshots into docs/
    python loadtests/ui_render.py --no-screenshots --tracks 1000

Prints (1) the first paint after sign-in: from the click on "Sign in" to the header and the
first page of the catalog drawn (two animation frames after the rows exist), and (2) a
catalog view of 1,000 tracks: the same click, then "Load more" until ten pages of `GET
/tracks` (100 each) are in one table, drawn. Timed inside the page (performance.now), so
Playwright's own round trips are not counted; network and JSON parsing are.

The catalog: synthetic tracks (loadtests/catalog_bench.Synthetic, with tempo and key added)
stored through catalog.ingest.add_many in a new SQLite file, owned by a key made with
catalog.keys.create; a second account's tracks with notify consent arrive after a watch
exists, so the watch has matches, delivered by the service's delivery thread to a real
receiver on 127.0.0.1. Served as the service mounts them: the catalog's routes at /, the page
at /ui/ (serve/web_page.page_app, with its Content-Security-Policy), and the labels at
/models/, by uvicorn on 127.0.0.1 (no model is needed for what the page asks here).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO)]
WEB_DIR = REPO / "src" / "genre_detector" / "serve" / "web"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
TONICS = ["C", "G", "D", "A", "E", "B", "F#", "C#", "F", "A#", "D#", "G#"]
CAMELOT_MAJOR = ["8B", "9B", "10B", "11B", "12B", "1B", "2B", "3B", "7B", "6B", "5B", "4B"]


def _records(syn, start: int, n: int) -> list:
    """Synthetic records with tempo and key, as a scored upload carries them."""
    out = []
    for i in range(start, start + n):
        k = i % 12
        descriptors = {
            "tempo": {"bpm": 70.0 + (i * 7) % 90, "confidence": 0.6, "alternative_bpm": None},
            "key": {
                "tonic": TONICS[k],
                "mode": "major",
                "camelot": CAMELOT_MAJOR[k],
                "confidence": 0.5,
            },
        }
        out.append(dataclasses.replace(syn.record(i), descriptors=descriptors))
    return out


def build_catalog(url: str, n: int):
    from genre_detector.catalog import ingest, keys
    from genre_detector.catalog.db import Catalog
    from genre_detector.catalog.records import Consent
    from loadtests.catalog_bench import Synthetic, embedding_dim

    db = Catalog.open(url)
    dim = embedding_dim()[0]
    syn = Synthetic(n + 40, dim, 1000, seed=7)
    mine = keys.create(db, "booker")
    other = keys.create(db, "label-b")
    search = Consent.parse("search")
    for start in range(0, n, 200):
        ingest.add_many(db, "booker", _records(syn, start, min(200, n - start)), search)
    ingest.add_many(db, "label-b", _records(syn, n, 20), search)
    return db, syn, mine.secret, other.secret


class Served:
    """The catalog's routes, the page and /models/ on a free port of 127.0.0.1 (uvicorn)."""

    def __init__(self, url: str, labels: list[str]):
        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Mount, Route

        from genre_detector.serve.catalog_routes import (
            CatalogHandle,
            catalog_app,
            start_delivery_thread,
        )
        from genre_detector.serve.web_page import page_app
        from loadtests.service_process import free_port

        self.handle = CatalogHandle(url)
        models = Starlette(routes=[Route("/", lambda r: JSONResponse({"labels": labels}))])
        app = Starlette(
            routes=[
                Mount("/ui", app=page_app(WEB_DIR)),
                Mount("/models", app=models),
                Mount("/", app=catalog_app(self.handle, labels)),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
        )
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)
        start_delivery_thread(self.handle)
        self.url = f"http://127.0.0.1:{self.server.config.port}"

    def stop(self):
        self.server.should_exit = True


FRAMES = (
    "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
    "() => r(performance.now()))))"
)


def sign_in_timed(page, url: str, key: str) -> float:
    page.goto(f"{url}/ui/")
    page.fill("#ws-key", key)
    page.evaluate("() => { window.__t0 = performance.now(); }")
    page.click("#ws-signin button[type=submit]")
    page.wait_for_selector("#ws-tracks-body tr")
    return page.evaluate(FRAMES) - page.evaluate("() => window.__t0")


LOAD_ALL = """async (n) => {
  const body = document.getElementById('ws-tracks-body');
  const more = document.getElementById('ws-tracks-more');
  const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const t0 = performance.now(), pages = [];
  while (body.rows.length < n && !more.hidden) {
    const before = body.rows.length, t = performance.now();
    const grown = new Promise(r => {
      const o = new MutationObserver(() => {
        if (body.rows.length > before) { o.disconnect(); r(); }
      });
      o.observe(body, { childList: true });
    });
    more.click();  // as a person would, the moment the page before is drawn
    await grown;
    await frames();
    pages.push(performance.now() - t);
  }
  return { total: performance.now() - t0, pages, rows: body.rows.length };
}"""


RENDER_ALL = """async () => {
  const ws = await import(new URL('workspace.js', location.href).href);  // the page's instance
  const t = performance.now();
  ws.renderTracks(ws.state.tracks, false);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t;
}"""


def measure(browser, url: str, key: str, n: int, repeats: int) -> dict:
    """Medians over `repeats` fresh pages: the sign-in's first paint, then the other pages of
    the catalog loaded one after another in the page itself (no Playwright round trip
    between them), and what the page's User Timing says went to the requests and to
    building rows."""
    runs = []
    for _ in range(repeats):
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        first = sign_in_timed(page, url, key)
        rest = page.evaluate(LOAD_ALL, n)
        assert rest["rows"] == n, rest
        render = page.evaluate(RENDER_ALL)
        spent = page.evaluate(
            "() => Object.fromEntries(['ws-tracks-fetch', 'ws-tracks-render'].map(name =>"
            " [name, performance.getEntriesByName(name).reduce((s, e) => s + e.duration, 0)]))"
        )
        runs.append(
            {
                "first_paint_ms": first,
                "catalog_1000_ms": first + rest["total"],
                "slowest_page_ms": max(rest["pages"], default=0.0),
                "fetch_ms": spent["ws-tracks-fetch"],
                "build_ms": spent["ws-tracks-render"],
                "render_1000_ms": render,
            }
        )
        page.close()
    return {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}


def screenshots(
    browser, url: str, key_a: str, key_b: str, db, syn, receiver, out: Path
) -> list[Path]:
    import requests

    from genre_detector.catalog import ingest
    from genre_detector.catalog.records import Consent

    headers = {"Authorization": f"Bearer {key_a}"}
    tracks = requests.get(f"{url}/tracks", params={"limit": 3}, headers=headers, timeout=30).json()[
        "tracks"
    ]
    genre = tracks[0]["top_genre"]
    body = {"name": f"new {genre}", "genres": {genre: 0.5}, "webhook_url": receiver.url}
    watch = requests.post(f"{url}/watches", json=body, headers=headers, timeout=30).json()
    receiver.secrets.append(watch["secret"])
    # label-b's new tracks of that genre, with notify consent: matched and delivered
    same = [i for i in range(syn.n - 20, syn.n) if syn.record(i).top_genre == genre][:3]
    ingest.add_many(
        db, "label-b", [_records(syn, i, 1)[0] for i in same], Consent.parse("search,notify")
    )
    deadline = time.time() + 30
    while len(receiver.received) < len(same) and time.time() < deadline:
        time.sleep(0.2)

    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{url}/ui/")
    page.fill("#ws-key", key_a)
    page.click("#ws-signin button[type=submit]")
    page.wait_for_selector("#ws-tracks-body tr")
    shots = []

    def shot(name):
        path = out / f"workspace-{name}.png"
        page.screenshot(path=str(path), full_page=False)
        shots.append(path)

    page.evaluate("() => document.getElementById('workspace').scrollIntoView()")
    shot("catalog")
    page.click(f'#ws-tracks-body tr[data-id="{tracks[0]["id"]}"] button[data-action=like]')
    page.wait_for_selector("#ws-find-results li[data-id]")
    page.fill("#ws-brief", "calm instrumental jazz around 90 BPM")
    page.evaluate("() => document.getElementById('ws-view-find').scrollIntoView()")
    shot("find")
    page.click("#ws-tab-lineup")
    page.select_option("#ws-lineup-mine", index=1)
    page.click("#ws-alike-form button[type=submit]")
    page.wait_for_selector("#ws-alike-body tr")
    for b in page.locator("#ws-alike-body button").all()[:3]:
        b.click()
    page.evaluate("() => document.getElementById('ws-view-lineup').scrollIntoView()")
    shot("lineup")
    page.click("#ws-tab-watches")
    page.click(f'#ws-watches-body tr[data-id="{watch["id"]}"] button[data-action=open]')
    page.wait_for_selector("#ws-deliveries li[data-status=delivered]")
    page.evaluate("() => document.getElementById('ws-watches').scrollIntoView()")
    shot("watches")
    page.set_viewport_size({"width": 375, "height": 812})
    page.click("#ws-tab-catalog")
    page.evaluate("() => window.scrollTo(0, 0)")
    shot("375")
    page.close()
    return shots


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tracks", type=int, default=1000, help="the catalog view's size (100 a page)")
    ap.add_argument("--repeats", type=int, default=3, help="runs; the median is printed")
    ap.add_argument(
        "--screenshots", type=Path, default=REPO / "docs", help="folder for workspace-*.png"
    )
    ap.add_argument("--no-screenshots", action="store_true")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from loadtests.catalog_bench import GENRES
    from loadtests.webhook_receiver import Receiver

    os.environ.setdefault("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    tmp = Path(tempfile.mkdtemp(prefix="ui-render-"))
    url = f"sqlite:///{tmp / 'catalog.sqlite3'}"
    t = time.perf_counter()
    db, syn, key_a, key_b = build_catalog(url, args.tracks)
    print(f"catalog: {args.tracks} tracks of one account stored in {time.perf_counter() - t:.1f} s")
    served = Served(url, sorted(GENRES))
    receiver = Receiver().start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            r = measure(browser, served.url, key_a, args.tracks, args.repeats)
            print(
                "first paint after sign-in (header and the first 100 rows): "
                f"{r['first_paint_ms']:.0f} ms"
            )
            print(
                f"catalog view of {args.tracks} tracks ({args.tracks // 100} pages of GET /tracks "
                f"in one table, from the sign-in click): {r['catalog_1000_ms']:.0f} ms; "
                f"slowest page {r['slowest_page_ms']:.0f} ms "
                f"(median of {args.repeats}, headless Chromium)"
            )
            print(
                f"the {args.tracks} rows drawn again from the loaded pages (build, style, layout, "
                f"paint): {r['render_1000_ms']:.0f} ms"
            )
            print(
                f"  of which waiting for the ten GET /tracks: {r['fetch_ms']:.0f} ms; building "
                f"the rows of the ten pages: {r['build_ms']:.0f} ms (User Timing in the page)"
            )
            if not args.no_screenshots:
                args.screenshots.mkdir(parents=True, exist_ok=True)
                for path in screenshots(
                    browser, served.url, key_a, key_b, db, syn, receiver, args.screenshots
                ):
                    print(
                        "screenshot:",
                        path.relative_to(REPO) if path.is_relative_to(REPO) else path,
                    )
            browser.close()
    finally:
        receiver.stop()
        served.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
