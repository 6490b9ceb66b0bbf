"""A local stand-in for SoundCloud's v1 API, for tests/test_collect.py (no network needed).

    with FakeSoundCloud("key", tracks, searches) as api:   # serves http://127.0.0.1:<free port>
        ...  # point the collector at api.base

Endpoints, shaped like the real ones: `GET /tracks?q=&genres=&limit=&linked_partitioning=1&offset=`
(`{"collection": [...], "next_href": ...}`), `GET /tracks/<id>` (track JSON), and
`GET /tracks/<id>/download` (302 to `/media/<id>?sig=...`, which serves the audio bytes).
Every request needs `client_id=<key>` exactly once, except /media (a signed URL).
`faults[key]` is a list of (status, headers) answered, in order, before the normal reply;
keys are "search:<q>:<offset>", "track:<id>", "download:<id>", "media:<id>".
`hits[key]` counts every request and `served[id]` counts audio actually delivered.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

COMPACT_FIELDS = ("kind", "id", "title", "genre", "duration", "license", "permalink_url", "user")


class FakeSoundCloud:
    def __init__(
        self,
        client_id: str,
        tracks: dict[int, dict],
        searches: dict[str, list[int]],
        media: dict[int, tuple[bytes, str]],
        faults: dict[str, list] | None = None,
    ):
        """tracks: id -> spec (public JSON fields; `_compact: True` makes search give a
        compact record); media: id -> (bytes, Content-Type) for tracks with a download."""
        self.client_id, self.tracks, self.searches, self.media = client_id, tracks, searches, media
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.hits: Counter = Counter()
        self.served: Counter = Counter()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeSoundCloud":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def track_json(self, track_id: int, compact: bool = False) -> dict:
        spec = self.tracks[track_id]
        body = {
            "kind": "track",
            "id": track_id,
            "download_count": 7,
            "tag_list": "",
            "original_format": "",
            "streamable": True,
            **{k: v for k, v in spec.items() if not k.startswith("_")},
        }
        if track_id in self.media and "download_url" not in spec:
            body["download_url"] = f"{self.base}/tracks/{track_id}/download"
        body.setdefault("download_url", None)
        if compact:
            body = {k: body[k] for k in COMPACT_FIELDS if k in body}
        return body

    def search_page(self, q: str, limit: int, offset: int) -> dict:
        ids = self.searches.get(q, [])
        page = ids[offset : offset + limit]
        next_href = None
        if offset + limit < len(ids):
            next_href = f"{self.base}/tracks?" + urlencode(
                {
                    "q": q,
                    "genres": q,
                    "limit": limit,
                    "linked_partitioning": 1,
                    "offset": offset + limit,
                    "client_id": self.client_id,
                }
            )
        return {
            "collection": [self.track_json(i, self.tracks[i].get("_compact", False)) for i in page],
            "next_href": next_href,
        }


def _handler(api: FakeSoundCloud) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def send(
            self,
            status: int,
            body: bytes = b"",
            content_type: str = "application/json",
            headers: dict | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, status: int, obj) -> None:
            self.send(status, json.dumps(obj).encode())

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            qs = parse_qs(url.query)
            parts = url.path.strip("/").split("/")
            if parts[0] == "media":
                key = f"media:{parts[1]}"
            elif parts == ["tracks"]:
                key = f"search:{qs.get('q', [''])[0]}:{qs.get('offset', ['0'])[0]}"
            elif len(parts) == 2 and parts[0] == "tracks":
                key = f"track:{parts[1]}"
            elif len(parts) == 3 and parts[0] == "tracks" and parts[2] == "download":
                key = f"download:{parts[1]}"
            else:
                return self.send_json(404, {"errors": [{"error_message": "404 - Not Found"}]})
            with api.lock:
                api.hits[key] += 1
                fault = api.faults.get(key, []).pop(0) if api.faults.get(key) else None
            if fault:
                status, headers = fault
                body = json.dumps({"errors": [{"error_message": str(status)}]}).encode()
                return self.send(status, body, headers=headers)
            if key.startswith("media:"):
                track_id = int(parts[1])
                if track_id not in api.media or qs.get("sig") != ["abc"]:
                    return self.send_json(404, {"errors": []})
                body, content_type = api.media[track_id]
                with api.lock:
                    api.served[track_id] += 1
                return self.send(200, body, content_type)
            if qs.get("client_id") != [api.client_id]:
                return self.send_json(401, {"errors": [{"error_message": "401 - Unauthorized"}]})
            if key.startswith("search:"):
                if qs.get("linked_partitioning") != ["1"] or qs.get("genres") != qs.get("q"):
                    return self.send_json(400, {"errors": []})
                limit, offset = int(qs["limit"][0]), int(qs.get("offset", ["0"])[0])
                return self.send_json(200, api.search_page(qs["q"][0], limit, offset))
            track_id = int(parts[1])
            if track_id not in api.tracks:
                return self.send_json(404, {"errors": [{"error_message": "404 - Not Found"}]})
            if key.startswith("track:"):
                return self.send_json(200, api.track_json(track_id))
            if track_id not in api.media:
                return self.send_json(404, {"errors": []})
            return self.send(302, headers={"Location": f"{api.base}/media/{track_id}?sig=abc"})

    return Handler
