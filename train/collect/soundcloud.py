"""Collect downloadable, genre-tagged tracks from SoundCloud's public API into DIR/GENRE/.

    SOUNDCLOUD_CLIENT_ID=... python -m train.collect soundcloud --genres metal,pop \
        --per-genre 50 --out data/sc

`SoundCloudClient` is a polite HTTP client (rate limit, retries with backoff honouring
Retry-After, client id added to every URL and never printed); `collect` searches page by
page, keeps downloadable tracks whose genre tag maps to a wanted genre, downloads each to a
temp file that is renamed into place, and appends one row per track to DIR/tracks.csv.
Rows and files already there are kept, so a rerun only fetches what is still missing.
"""

from __future__ import annotations

import csv
import email.utils
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from tqdm import tqdm

from .genres import TOKENS_CSV, normalise_genre

DEFAULT_API_BASE = "https://api.soundcloud.com"
USER_AGENT = "genre-detector-collector/1.0 (+research data collection; python-requests)"
CSV_COLUMNS = [
    "path",
    "genre",
    "raw_genre",
    "artist",
    "title",
    "seconds",
    "license",
    "permalink",
    "track_id",
]
RETRY_STATUSES = {429, 500, 502, 503, 504}
SHORT_NOTE = "  (short: search ran out, hit --max-pages or failed)"
MAX_RETRY_AFTER = 300.0  # seconds; a longer Retry-After is capped to this
CHUNK_BYTES = 1 << 16  # download read size
FORMATS = {
    "mp3": "mp3",
    "mpeg": "mp3",
    "wav": "wav",
    "wave": "wav",
    "flac": "flac",
    "ogg": "ogg",
    "m4a": "m4a",
    "mp4": "m4a",
    "aac": "m4a",
    "aiff": "aiff",
    "aif": "aiff",
}
CONTENT_TYPES = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "application/ogg": "ogg",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "m4a",
    "audio/aiff": "aiff",
    "audio/x-aiff": "aiff",
}


class ApiError(RuntimeError):
    """An HTTP request that failed for good (after retries); `status` is None for I/O errors."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def redact(url: str) -> str:
    """The URL with its client id hidden, for messages and logs."""
    return re.sub(r"(client_id=)[^&]*", r"\1***", url)


def pick_extension(original_format: str | None, content_type: str | None) -> str:
    """File extension from the track's original_format, else the Content-Type, else mp3."""
    fmt = (original_format or "").strip().lower().lstrip(".")
    if fmt in FORMATS:
        return FORMATS[fmt]
    mime = (content_type or "").split(";")[0].strip().lower()
    return CONTENT_TYPES.get(mime, "mp3")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), capped."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None
        seconds = when - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class RateLimiter:
    """Spaces request starts at least 1/max_rps seconds apart (max_rps <= 0: no limit)."""

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.interval = 1.0 / max_rps if max_rps > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at = float("-inf")

    def wait(self) -> None:
        now = self.clock()
        if now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + self.interval


class SoundCloudClient:
    """GETs against the SoundCloud v1 API with client id, rate limit, retries and backoff."""

    def __init__(
        self,
        client_id: str,
        api_base: str = DEFAULT_API_BASE,
        max_rps: float = 2.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.client_id, self.api_base = client_id, api_base.rstrip("/")
        self.max_retries, self.backoff, self.timeout = max_retries, backoff, timeout
        self.sleep = sleep
        self.limiter = RateLimiter(max_rps, sleep=sleep)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.requests = self.retries = 0

    def with_client_id(self, url: str) -> str:
        parts = urlsplit(url)
        query = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "client_id"
        ]
        return urlunsplit(parts._replace(query=urlencode(query + [("client_id", self.client_id)])))

    def get(self, url: str, stream: bool = False) -> requests.Response:
        """GET with retries on 429/5xx/connection errors; raises ApiError on any other failure.

        A loop of its own, not urllib3's Retry (as the --url tagger uses): every try waits its
        turn at the rate limiter and counts in `requests`/`retries` (the summary prints them),
        waits go through the injectable `sleep`, and Retry-After is capped at MAX_RETRY_AFTER;
        urllib3 retries inside the adapter, past all three."""
        url = self.with_client_id(url)
        for attempt in range(self.max_retries + 1):
            self.limiter.wait()
            self.requests += 1
            try:
                resp = self.session.get(url, stream=stream, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt == self.max_retries:
                    raise ApiError(f"GET {redact(url)}: {redact(str(exc))}") from None
                wait = self.backoff * 2**attempt
            else:
                if resp.status_code < 400:
                    return resp
                resp.close()
                if resp.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                    raise ApiError(f"GET {redact(url)}: HTTP {resp.status_code}", resp.status_code)
                wait = retry_after_seconds(resp.headers.get("Retry-After"))
                if wait is None:
                    wait = self.backoff * 2**attempt
            self.retries += 1
            self.sleep(wait)
        raise AssertionError("unreachable")

    def get_json(self, url: str):
        resp = self.get(url)
        try:
            return resp.json()
        except json.JSONDecodeError as exc:
            raise ApiError(f"GET {redact(resp.url)}: not JSON ({exc})") from None

    def search(self, query: str, page_size: int) -> Iterator[list[dict]]:
        """Pages of track JSON for a genre search, following next_href until it runs out."""
        url: str | None = f"{self.api_base}/tracks?" + urlencode(
            {"q": query, "genres": query, "limit": page_size, "linked_partitioning": 1}
        )
        seen_urls: set[str] = set()
        while url and url not in seen_urls:
            seen_urls.add(url)
            page = self.get_json(url)
            if isinstance(page, list):  # old un-partitioned shape: one bare page
                page = {"collection": page}
            collection = page.get("collection") or []
            if not collection:
                return
            yield collection
            url = urljoin(url, page["next_href"]) if page.get("next_href") else None

    def track(self, track_id: int | str) -> dict:
        return self.get_json(f"{self.api_base}/tracks/{track_id}")

    def download(self, url: str, folder: Path, stem: str, original_format: str | None) -> Path:
        """Stream url into folder/stem.EXT via a temp file renamed into place; returns the path."""
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{stem}.{os.getpid()}.part"
        resp = self.get(url, stream=True)
        try:
            with resp, open(tmp, "wb") as f:
                ext = pick_extension(original_format, resp.headers.get("Content-Type"))
                size = 0
                for chunk in resp.iter_content(CHUNK_BYTES):
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            expected = resp.headers.get("Content-Length")
            if size == 0 or (
                expected and not resp.headers.get("Content-Encoding") and int(expected) != size
            ):
                raise ApiError(f"GET {redact(resp.url)}: got {size} of {expected or '?'} bytes")
            final = folder / f"{stem}.{ext}"
            os.replace(tmp, final)
            return final
        except requests.RequestException as exc:
            raise ApiError(f"GET {redact(url)}: {redact(str(exc))}") from None
        finally:
            tmp.unlink(missing_ok=True)


class Ledger:
    """DIR/tracks.csv: rows already collected, and appending one row per new track."""

    def __init__(self, out: Path):
        self.path = out / "tracks.csv"
        self.rows: list[dict] = []
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames != CSV_COLUMNS:
                    raise ValueError(
                        f"{self.path} has columns {reader.fieldnames}, "
                        f"expected {CSV_COLUMNS}; use another --out"
                    )
                self.rows = list(reader)
        self.ids = {row["track_id"] for row in self.rows}

    def count(self, genre: str) -> int:
        return sum(row["genre"] == genre for row in self.rows)

    def append(self, row: dict) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        self.ids.add(row["track_id"])


@dataclass
class Summary:
    genres: list[str]
    wanted: int  # tracks wanted per genre
    before: Counter = field(default_factory=Counter)  # genre -> rows from earlier runs
    kept: Counter = field(default_factory=Counter)  # genre -> rows added now
    downloaded: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> tracks
    failed: list[str] = field(default_factory=list)
    requests: int = 0
    retries: int = 0

    def report(self, out: Path) -> str:
        lines = [
            f"{out}/tracks.csv: {sum(self.before.values()) + sum(self.kept.values())} "
            f"tracks ({sum(self.kept.values())} new, {self.downloaded} downloaded)",
            f"{'genre':<14}{'before':>7}{'new':>6}{'total':>7}{'wanted':>8}",
        ]
        for genre in self.genres:
            total = self.before[genre] + self.kept[genre]
            note = "" if total >= self.wanted else SHORT_NOTE
            lines.append(
                f"{genre:<14}{self.before[genre]:>7}{self.kept[genre]:>6}{total:>7}"
                f"{self.wanted:>8}{note}"
            )
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        lines += [
            f"skipped: {skipped}",
            f"failed: {len(self.failed)}",
            f"requests: {self.requests} (retries: {self.retries})",
        ]
        lines += [f"  failed: {msg}" for msg in self.failed]
        return "\n".join(lines)


def tag_list(text: str) -> list[str]:
    """SoundCloud tag_list ('rock "hip hop" live') -> ['rock', 'hip hop', 'live']."""
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', text or "")]


def track_genre(track: dict, table: str | Path = TOKENS_CSV) -> tuple[str, str | None]:
    """(raw tag, canonical genre) from the genre field, or from tag_list when genre is empty."""
    raw = (track.get("genre") or "").strip()
    if raw:
        return raw, normalise_genre(raw, table)
    for tag in tag_list(track.get("tag_list") or ""):
        genre = normalise_genre(tag, table)
        if genre:
            return tag, genre
    return "", None


def license_ok(license: str | None, allowed: list[str] | None) -> bool:
    """Exact match, or prefix match for entries ending in '-' or '*' ("cc-" keeps cc-by-sa)."""
    if not allowed:
        return True
    lic = (license or "").strip().lower()
    return any(
        lic.startswith(a.rstrip("*")) if a.endswith(("-", "*")) else lic == a
        for a in (a.strip().lower() for a in allowed)
    )


def unavailable(track: dict) -> str | None:
    """Why a track cannot be downloaded (a skip reason), or None when it can."""
    if not track.get("downloadable"):
        return "not_downloadable"
    if not track.get("download_url"):
        return "no_download_url"
    remaining = track.get("downloads_remaining")
    if track.get("has_downloads_left") is False or (
        isinstance(remaining, (int, float)) and remaining <= 0
    ):
        return "no_downloads_left"
    return None


def collect(
    client: SoundCloudClient,
    queries: dict[str, str],
    per_genre: int,
    out: Path,
    licenses: list[str] | None = None,
    page_size: int = 50,
    max_pages: int = 100,
    progress: bool = True,
    genre_table: str | Path = TOKENS_CSV,
) -> Summary:
    """Fill out/GENRE/ with up to per_genre tracks per genre; queries maps search term -> genre."""
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    wanted = list(dict.fromkeys(queries.values()))
    summary = Summary(wanted, per_genre, before=Counter({g: ledger.count(g) for g in wanted}))
    have = Counter(summary.before)
    seen: set[str] = set()
    bar = tqdm(
        total=sum(max(0, per_genre - have[g]) for g in wanted),
        unit="track",
        desc="collect",
        disable=not progress,
    )

    def fail(what: str, exc: Exception) -> None:
        summary.failed.append(f"{what}: {exc}")
        tqdm.write(f"failed: {what}: {exc}")

    def consider(track: dict) -> None:
        tid = str(track.get("id") or "")
        if not tid.isdigit():
            summary.skipped["invalid"] += 1
            return
        if tid in seen:  # met earlier in this run
            summary.skipped["duplicate"] += 1
            return
        seen.add(tid)
        if tid in ledger.ids:  # collected by an earlier run
            summary.skipped["already_collected"] += 1
            return
        raw, genre = track_genre(track, genre_table)
        reason = (
            "unknown_genre"
            if genre is None
            else "other_genre"
            if genre not in wanted
            else "genre_full"
            if have[genre] >= per_genre
            else None
        )
        if reason is None and (
            "downloadable" not in track
            or "license" not in track
            or (track["downloadable"] and "download_url" not in track)
        ):
            try:  # search gave a compact record
                track = {**track, **client.track(tid)}
            except ApiError as exc:
                if exc.status == 401:
                    raise
                return fail(f"track {tid}", exc)
        if reason is None and not license_ok(track.get("license"), licenses):
            reason = "license"
        reason = reason or unavailable(track)
        if reason:
            summary.skipped[reason] += 1
            return
        folder = out / genre
        existing = sorted(p for p in folder.glob(f"{tid}.*") if p.suffix != ".part")
        if existing:  # file landed but its row did not
            path = existing[0]
        else:
            try:
                path = client.download(
                    track["download_url"], folder, tid, track.get("original_format")
                )
            except ApiError as exc:
                return fail(f"download {tid}", exc)
            summary.downloaded += 1
        duration = track.get("duration")
        ledger.append(
            {
                "path": path.relative_to(out).as_posix(),
                "genre": genre,
                "raw_genre": raw,
                "artist": ((track.get("user") or {}).get("username") or "").strip(),
                "title": " ".join(str(track.get("title") or "").split()),
                "seconds": round(duration / 1000, 3) if isinstance(duration, (int, float)) else "",
                "license": track.get("license") or "",
                "permalink": track.get("permalink_url") or "",
                "track_id": tid,
            }
        )
        have[genre] += 1
        summary.kept[genre] += 1
        bar.update()

    try:
        for query, genre in queries.items():
            if have[genre] >= per_genre:
                continue
            pages = 0
            try:
                for page in client.search(query, page_size):
                    for track in page:
                        if have[genre] >= per_genre:
                            break
                        consider(track)
                    pages += 1
                    if have[genre] >= per_genre or pages >= max_pages:
                        break
            except ApiError as exc:
                if exc.status in (401, 403):
                    raise ApiError(f"{exc} - is SOUNDCLOUD_CLIENT_ID valid?", exc.status) from None
                fail(f"search {query!r}", exc)
    finally:
        bar.close()
        summary.requests, summary.retries = client.requests, client.retries
    return summary
