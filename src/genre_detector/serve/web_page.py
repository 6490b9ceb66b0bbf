"""The page under /ui/: its files as Starlette's StaticFiles serves them, with a
Content-Security-Policy on every reply that lets scripts come from the service itself only.

INLINE_SCRIPT_HASHES: index.html still carries one inline <script>; the policy allows it by
the SHA-256 of its text (computed from the page's HTML files when the service starts), never
by 'unsafe-inline'. Once the script lives in a file of its own the list is empty and the
policy is `script-src 'self'` alone, with no change here. Styles may be inline (the page's
<style> and style attributes); images may be data: URLs (the spectrogram) and blob: URLs,
media blob: URLs (the upload plays in the page), requests go to the service only."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.S | re.I)


def inline_script_hashes(html: str) -> list[str]:
    """The CSP source of each inline script of an HTML text: 'sha256-BASE64'."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode("utf-8")).digest()).decode() + "'"
        for s in INLINE_SCRIPT.findall(html)
    ]


def page_hashes(web_dir: Path) -> list[str]:
    out: list[str] = []
    for page in sorted(web_dir.glob("*.html")):
        out += inline_script_hashes(page.read_text(encoding="utf-8"))
    return sorted(set(out))


def content_security_policy(inline_script_hashes: list[str]) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *inline_script_hashes]),
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class WithHeaders:
    """An ASGI app's HTTP replies with these headers added (any of the same name replaced)."""

    def __init__(self, app, headers: dict[str, str]):
        self.app = app
        self.raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.names = {k for k, _ in self.raw}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                old = message.get("headers", [])
                kept = [(k, v) for k, v in old if k.lower() not in self.names]
                message = {**message, "headers": kept + self.raw}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def page_app(web_dir: Path):
    """StaticFiles over `web_dir` (index.html at /), with the policy and two more headers:
    no MIME sniffing, and no Referer sent from the page."""
    from starlette.staticfiles import StaticFiles

    headers = {
        "Content-Security-Policy": content_security_policy(page_hashes(web_dir)),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return WithHeaders(StaticFiles(directory=web_dir, html=True), headers)
