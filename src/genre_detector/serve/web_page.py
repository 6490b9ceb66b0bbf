"""The page under /ui/: its files as Starlette's StaticFiles serves them, with a
Content-Security-Policy on every reply that lets scripts come from the service itself only.

The page has no inline script (index.html loads page.js and workspace.js), so the policy is
`script-src 'self'` with no hash and no 'unsafe-inline'; tests/test_workspace_api.py fails if
an inline script comes back. Styles may be inline (the page's <style> and style attributes);
images may be data: URLs (the spectrogram) and blob: URLs, media blob: URLs (the upload
plays in the page), requests go to the service only."""

from __future__ import annotations

from pathlib import Path

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
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
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return WithHeaders(StaticFiles(directory=web_dir, html=True), headers)
