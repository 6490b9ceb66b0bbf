"""What the workspace page needs of the API, over real HTTP on both engines: `POST
/watches?dry_run=true` checks everything a create checks (the webhook URL, the quota, the
reference tracks) and stores nothing; the page's files come with a Content-Security-Policy
that lets scripts come from the service only. The catalog's routes and the page are served by
uvicorn on 127.0.0.1, as the service mounts them (no models are needed for these routes)."""

from __future__ import annotations

import contextlib
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import requests
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from genre_detector.serve.catalog_routes import CatalogHandle, catalog_app
from genre_detector.serve.web_page import page_app
from loadtests.service_process import free_port
from tests.catalog_helpers import cli_key
from tests.expected import NINE

WEB_DIR = Path(__file__).resolve().parent.parent / "src" / "genre_detector" / "serve" / "web"


@contextlib.contextmanager
def served(url: str):
    """The catalog's routes at / and the page at /ui/, on a free port of 127.0.0.1."""
    app = Starlette(
        routes=[
            Mount("/ui", app=page_app(WEB_DIR)),
            Mount("/", app=catalog_app(CatalogHandle(url), NINE)),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def _comparable(watch: dict) -> dict:
    return {k: v for k, v in watch.items() if k not in {"id", "created_at", "updated_at"}}


def test_dry_run_checks_what_a_create_checks_and_stores_nothing(catalog_url, monkeypatch):
    monkeypatch.setenv("GENRE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("GENRE_WATCH_LIMIT", "2")
    key = cli_key({"GENRE_DB_URL": catalog_url}, "scout")
    with served(catalog_url) as base:

        def post(body, dry: str | None = "true", k: str | None = key):
            params = {"dry_run": dry} if dry is not None else {}
            return requests.post(
                f"{base}/watches",
                json=body,
                params=params,
                headers=_auth(k) if k else {},
                timeout=30,
            )

        def stored() -> list:
            r = requests.get(f"{base}/watches", headers=_auth(key), timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["watches"]

        good = {"name": "rock", "genres": {"pop-rock": 0.5}, "webhook_url": "http://127.0.0.1:9/h"}
        dry = post(good)
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True and dry.json()["id"] is None
        assert "secret" not in dry.json()
        assert stored() == []
        me = requests.get(f"{base}/me", headers=_auth(key), timeout=30).json()
        assert me["quotas"]["watches"]["used"] == 0

        # every refusal of a dry run is the refusal of the real create, word for word
        refused = [
            {**good, "webhook_url": "https://10.0.0.1/hook"},  # a private address
            {**good, "webhook_url": "ftp://127.0.0.1/hook"},
            {**good, "webhook_url": "https://[::1]:9/hook"},  # loopback, not in the allow list
            {"name": "x", "webhook_url": good["webhook_url"]},  # no genres, no like
            {**good, "like": ["no-such-track"]},  # checked in the transaction
            {**good, "genres": {"polka": 0.5}},
            {**good, "name": ""},
        ]
        for body in refused:
            d, real = post(body), post(body, dry=None)
            assert d.status_code == real.status_code == 400, (body, d.text, real.text)
            assert d.json() == real.json(), body
        assert "webhook_url" in post(refused[0]).json()["detail"]
        assert stored() == []

        # what the dry run says would be created is what a create then creates
        made = post(good, dry=None)
        assert made.status_code == 201, made.text
        assert _comparable({**made.json(), "dry_run": True}) == _comparable(
            {**dry.json(), "secret": made.json()["secret"]}
        )
        assert post({**good, "name": "second"}, dry=None).status_code == 201
        # the quota as a create counts it (GENRE_WATCH_LIMIT=2): refused alike, nothing added
        d, real = post(good), post(good, dry=None)
        assert d.status_code == real.status_code == 403 and d.json() == real.json()
        assert d.json()["error"] == "quota_exceeded"
        assert len(stored()) == 2

        bad = post(good, dry="maybe")
        assert bad.status_code == 400 and bad.json()["detail"].startswith("dry_run:")
        assert post(good, k=None).status_code == 401
        assert len(stored()) == 2


class _Scripts(HTMLParser):
    """The text of each inline <script> of a page, as a browser hashes it."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.inline, self.sources, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            src = dict(attrs).get("src")
            if src:
                self.sources.append(src)
            else:
                self._in = []

    def handle_data(self, data):
        if self._in is not None:
            self._in.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._in is not None:
            self.inline.append("".join(self._in))
            self._in = None


def _directives(policy: str) -> dict:
    out = {}
    for part in policy.split(";"):
        name, *values = part.split()
        out[name] = values
    return out


def test_page_has_a_policy_that_allows_scripts_from_the_service_only(tmp_path):
    with served(f"sqlite:///{tmp_path / 'c.sqlite3'}") as base:
        page = requests.get(f"{base}/ui/", timeout=30)
        module = requests.get(f"{base}/ui/workspace.js", timeout=30)
    assert page.status_code == 200 and module.status_code == 200
    policy = _directives(page.headers["content-security-policy"])
    scripts = _Scripts()
    scripts.feed(page.text)
    # the page's scripts are files of the service's own; none inline, so no hash and no
    # 'unsafe-inline' is needed
    assert {"page.js", "workspace.js"} <= set(scripts.sources) and scripts.inline == []
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert module.headers["content-security-policy"] == page.headers["content-security-policy"]
    assert "javascript" in module.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"
