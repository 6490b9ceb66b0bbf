"""A real webhook receiver on 127.0.0.1, for the tests and the load scripts: an HTTP server
in a thread that verifies every request's Standard Webhooks signature with
`standardwebhooks` (as a subscriber would), records what arrived, and answers with the
replies it is told to."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


def verify(secret: str, body: bytes, headers: dict) -> dict:
    """The payload when the signature is good; raises WebhookVerificationError otherwise
    (tampered body, stale timestamp, wrong secret)."""
    return Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})


@dataclass
class Received:
    id: str
    headers: dict
    body: bytes
    verified: bool
    payload: dict | None


@dataclass
class Receiver:
    secrets: list = field(default_factory=list)  # a request verifies with any of them
    replies: list = field(default_factory=list)  # (status, headers) for the next requests
    default: tuple = (200, {})
    received: list = field(default_factory=list)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = dict(self.headers.items())
                payload, ok = None, False
                for secret in receiver.secrets:
                    try:
                        payload, ok = verify(secret, body, headers), True
                        break
                    except WebhookVerificationError:
                        continue
                receiver.received.append(
                    Received(headers.get("webhook-id", ""), headers, body, ok, payload)
                )
                status, extra = receiver.replies.pop(0) if receiver.replies else receiver.default
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                data = json.dumps({"ok": status < 300}).encode()
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
