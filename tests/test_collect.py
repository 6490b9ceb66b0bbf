"""Tests for train.collect against a local fake SoundCloud serving real audio cut from ../shared.

python -m pytest tests/test_collect.py -q
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from pathlib import Path

import pytest

from train.collect import genres
from train.collect.__main__ import main
from train.collect.soundcloud import (
    CSV_COLUMNS,
    ApiError,
    RateLimiter,
    SoundCloudClient,
    license_ok,
    pick_extension,
    retry_after_seconds,
    tag_list,
)
from train.data import list_tracks

try:
    from tests.fake_soundcloud import FakeSoundCloud
except ImportError:  # tests/ run as a rootdir-less folder
    from fake_soundcloud import FakeSoundCloud

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
CLIP = DATA / "gtzan-samples" / "metal.00000.wav"
KEY = "test-client-id"
PIECE_SECONDS = 4

# Media: track id -> (soundfile format, Content-Type served)
MEDIA = {
    101: ("WAV", "audio/wav"),
    102: ("FLAC", "audio/x-flac"),
    104: ("WAV", "audio/wav"),
    105: ("MP3", "audio/mpeg"),
    106: ("OGG", "audio/ogg"),
    201: ("MP3", "audio/mpeg"),
    202: ("WAV", "audio/wav"),
    203: ("AIFF", "audio/x-aiff"),
    204: ("MP3", "audio/mpeg"),
    205: ("MP3", "audio/mpeg"),
    206: ("MP3", "audio/mpeg"),
    301: ("MP3", "audio/mpeg"),
    302: ("MP3", "audio/mpeg"),
    303: ("MP3", "audio/mpeg"),
    304: ("FLAC", "audio/flac"),
}


def spec(
    title: str,
    genre: str,
    user: str,
    fmt: str = "",
    ms: int = 30000,
    license: str = "cc-by",
    **extra,
) -> dict:
    slug = lambda s: re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")  # noqa: E731
    return {
        "title": title,
        "genre": genre,
        "duration": ms,
        "license": license,
        "permalink_url": f"https://soundcloud.com/{slug(user)}/{slug(title)}",
        "user": {"id": len(user), "kind": "user", "username": user},
        "downloadable": True,
        "original_format": fmt,
        **extra,
    }


TRACKS = {
    # metal search, 3 a page: four tracks to skip, then three to keep (106 is a compact record)
    103: spec("Locked Away", "Metal", "Closed Gate", "wav", downloadable=False),
    104: spec("Sold Out", "Heavy Metal", "Closed Gate", "wav", downloads_remaining=0),
    105: spec("Episode 12", "Podcast", "Talk Show", "mp3"),
    107: spec("Broken Link", "Metal", "Closed Gate", "wav", download_url=None),
    101: spec("Iron Rain", "Metal", "Iron Lung", "wav", ms=241500),
    102: spec(
        "Crypt,  Part 2", "Death Metal", "Grave Digger", "flac", ms=180000, license="cc-by-nc"
    ),
    106: spec(
        "Core Sample", "Metalcore", "Iron Lung", "ogg", ms=95250, license="cc-by-sa", _compact=True
    ),
    # hiphop search: a duplicate of 101, an unknown genre, three keepers, two never reached
    204: spec("Interview", "Spoken Word", "Talk Show", "mp3"),
    201: spec(
        "Block Party",
        "Hip-Hop",
        "MC Test",
        "mp3",
        license="all-rights-reserved",
        has_downloads_left=True,
    ),
    202: spec("Bars", "Rap", "Lyric Smith", "wav", ms=200001),
    203: spec("Late Night", "", "Lyric Smith", "aiff", tag_list='chill "Hip Hop" beats'),
    205: spec("Unreached", "Hip Hop", "MC Test", "mp3"),
    206: spec("Also Unreached", "Hip Hop", "MC Test", "mp3"),
    # electronic search: other genres, a repeat across pages, and then the results run out
    302: spec("Hit Single", "Pop", "Star", "mp3"),
    301: spec("Drop It", "EDM", "DJ Unit", "mp3", ms=60000),
    303: spec("Perreo", "Reguetón", "Star", "mp3"),
    304: spec("Basement", "Deep House", "DJ Unit", "", ms=75500, license="cc-by-sa"),
}
SEARCHES = {
    "metal": [103, 104, 105, 107, 101, 102, 106],
    "hiphop": [101, 204, 201, 202, 203, 205, 206],
    "electronic": [302, 301, 303, 301, 304],
}
FAULTS = {
    "search:metal:0": [(429, {"Retry-After": "0"})],
    "search:electronic:3": [(503, {})],
    "media:202": [(500, {})],
}

# path, genre, raw_genre, artist, title, seconds, license, track_id (permalink from TRACKS)
EXPECTED = [
    ("metal/101.wav", "metal", "Metal", "Iron Lung", "Iron Rain", "241.5", "cc-by", "101"),
    (
        "metal/102.flac",
        "metal",
        "Death Metal",
        "Grave Digger",
        "Crypt, Part 2",
        "180.0",
        "cc-by-nc",
        "102",
    ),
    ("metal/106.ogg", "metal", "Metalcore", "Iron Lung", "Core Sample", "95.25", "cc-by-sa", "106"),
    (
        "hiphop/201.mp3",
        "hiphop",
        "Hip-Hop",
        "MC Test",
        "Block Party",
        "30.0",
        "all-rights-reserved",
        "201",
    ),
    ("hiphop/202.wav", "hiphop", "Rap", "Lyric Smith", "Bars", "200.001", "cc-by", "202"),
    ("hiphop/203.aiff", "hiphop", "Hip Hop", "Lyric Smith", "Late Night", "30.0", "cc-by", "203"),
    ("electronic/301.mp3", "electronic", "EDM", "DJ Unit", "Drop It", "60.0", "cc-by", "301"),
    (
        "electronic/304.flac",
        "electronic",
        "Deep House",
        "DJ Unit",
        "Basement",
        "75.5",
        "cc-by-sa",
        "304",
    ),
]


def expected_rows(ids: set[str] | None = None) -> list[dict]:
    rows = [
        dict(
            zip(
                ["path", "genre", "raw_genre", "artist", "title", "seconds", "license", "track_id"],
                e,
            )
        )
        for e in EXPECTED
    ]
    for row in rows:
        row["permalink"] = TRACKS[int(row["track_id"])]["permalink_url"]
    return [{c: r[c] for c in CSV_COLUMNS} for r in rows if ids is None or r["track_id"] in ids]


@pytest.fixture(scope="session")
def media() -> dict[int, tuple[bytes, str]]:
    """Real audio per track: distinct 4 s pieces of the GTZAN metal clip, in the track's format."""
    if not CLIP.exists():
        pytest.skip(f"real clip {CLIP} not found (set GENRE_DATA to the shared data folder)")
    import soundfile as sf

    samples, rate = sf.read(CLIP, dtype="float32")
    pieces = len(samples) // (PIECE_SECONDS * rate)
    out = {}
    for i, (track_id, (fmt, content_type)) in enumerate(sorted(MEDIA.items())):
        start = (i % pieces) * PIECE_SECONDS * rate
        buf = io.BytesIO()
        sf.write(buf, samples[start : start + PIECE_SECONDS * rate], rate, format=fmt)
        out[track_id] = (buf.getvalue(), content_type)
    return out


@pytest.fixture
def api(media):
    with FakeSoundCloud(KEY, TRACKS, SEARCHES, media, FAULTS) as server:
        yield server


@pytest.fixture
def run(monkeypatch, capsys):
    """Run the CLI against a fake server: run(api, out, *extra) -> (exit code, stdout, stderr)."""

    def _run(
        server, out: Path, *extra: str, genres="metal,hiphop,electronic", per_genre=3, client_id=KEY
    ):
        monkeypatch.setenv("SOUNDCLOUD_CLIENT_ID", client_id)
        monkeypatch.setenv("SOUNDCLOUD_API_BASE", server.base)
        code = main(
            [
                "soundcloud",
                "--genres",
                genres,
                "--per-genre",
                str(per_genre),
                "--out",
                str(out),
                "--page-size",
                "3",
                "--max-rps",
                "500",
                "--backoff",
                "0.01",
                "--no-progress",
                *extra,
            ]
        )
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def read_csv(out: Path) -> tuple[list[str], list[dict]]:
    with (out / "tracks.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def files_under(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "tag, genre",
    [
        ("Rap", "hiphop"),
        ("Hiphop", "hiphop"),
        ("hip-hop", "hiphop"),
        ("hip hop", "hiphop"),
        ("Hip Hop & Rap", "hiphop"),
        ("Dance", "electronic"),
        ("EDM", "electronic"),
        ("Electronic", "electronic"),
        ("Electro", "electronic"),
        ("Techno", "electronic"),
        ("Deep House", "electronic"),
        ("Drum & Bass", "electronic"),
        ("R&B", "rnb"),
        ("R & B", "rnb"),
        ("rnb", "rnb"),
        ("R&B/Soul", "rnb"),
        ("Reggaeton", "reggaeton"),
        ("Reguetón", "reggaeton"),
        ("REGUETON", "reggaeton"),
        ("Classical", "classical"),
        ("Classic", "classical"),
        ("Classic Rock", "rock"),
        ("Alternative", "alternative"),
        ("Indie", "alternative"),
        ("Indie Rock", "alternative"),
        ("Death Metal", "metal"),
        ("  METAL!! ", "metal"),
        ("Pop", "pop"),
        ("K-Pop", "pop"),
        ("Jazz", "jazz"),
        ("Blues", "blues"),
        ("Country", "country"),
        ("Reggae", "reggae"),
        ("Disco", "disco"),
        ("Podcast", None),
        ("Spoken Word", None),
        ("", None),
        (None, None),
        ("&&", None),
    ],
)
def test_normalise_genre(tag, genre):
    assert genres.normalise_genre(tag) == genre


def test_genre_table_is_data(tmp_path):
    table = genres.load_table()
    assert table["hiphop"] == table["rap"] == "hiphop" and table["rb"] == "rnb"
    assert {
        "metal",
        "rock",
        "pop",
        "jazz",
        "blues",
        "country",
        "reggae",
        "disco",
        "classical",
        "hiphop",
        "electronic",
        "rnb",
        "reggaeton",
        "alternative",
    } <= set(table.values())
    custom = tmp_path / "tokens.csv"
    custom.write_text("# comment\ntoken,genre\nPodcast,talk\n", encoding="utf-8")
    assert genres.normalise_genre("PODCAST", custom) == "talk"
    assert genres.normalise_genre("metal", custom) is None
    clash = tmp_path / "clash.csv"
    clash.write_text("token,genre\nrap,hiphop\nRAP,rock\n", encoding="utf-8")
    with pytest.raises(ValueError, match="maps to both"):
        genres.load_table(clash)


def test_collect_end_to_end_and_rerun(api, run, tmp_path, media):
    out = tmp_path / "sc"
    api.faults["search:metal:0"] = [(429, {"Retry-After": "1"})]
    started = time.monotonic()
    code, stdout, _ = run(api, out)
    assert code == 0, stdout
    assert time.monotonic() - started >= 0.9  # the 429's Retry-After: 1 was honoured

    assert files_under(out) == {e[0] for e in EXPECTED} | {"tracks.csv"}  # no temp files left
    for path, *_, track_id in EXPECTED:
        assert (out / path).read_bytes() == media[int(track_id)][0]
    header, rows = read_csv(out)
    assert header == CSV_COLUMNS
    assert rows == expected_rows()

    # every fault was retried once; quota and pagination stopped where they should
    assert api.hits["search:metal:0"] == 2 and api.hits["search:electronic:3"] == 2
    assert api.hits["media:202"] == 2 and api.served[202] == 1
    assert dict(api.served) == {int(e[-1]): 1 for e in EXPECTED}
    assert api.hits["search:hiphop:6"] == 0 and api.hits["search:metal:6"] == 1
    assert [k for k in api.hits if k.startswith("track:")] == ["track:106"]
    for reason in [
        "unknown_genre=2",
        "duplicate=2",
        "other_genre=2",
        "not_downloadable=1",
        "no_downloads_left=1",
        "no_download_url=1",
    ]:
        assert reason in stdout
    assert "failed: 0" in stdout and "retries: 3" in stdout and "8 new, 8 downloaded" in stdout
    assert re.search(r"electronic\s+0\s+2\s+2\s+3\s+\(short", stdout)

    # a rerun keeps everything and downloads nothing new
    csv_before, hits_before = (out / "tracks.csv").read_bytes(), dict(api.hits)
    code, stdout, _ = run(api, out)
    assert code == 0
    assert (out / "tracks.csv").read_bytes() == csv_before
    assert files_under(out) == {e[0] for e in EXPECTED} | {"tracks.csv"}
    assert dict(api.served) == {int(e[-1]): 1 for e in EXPECTED}
    new_hits = {
        k: v - hits_before.get(k, 0) for k, v in api.hits.items() if v != hits_before.get(k, 0)
    }
    assert not [k for k in new_hits if k.startswith(("download:", "media:", "track:"))]
    assert set(new_hits) <= {"search:electronic:0", "search:electronic:3"}  # only the short genre
    assert "0 new, 0 downloaded" in stdout and "already_collected=2" in stdout


def test_partial_run_then_resume(api, run, tmp_path):
    out = tmp_path / "sc"
    assert run(api, out, per_genre=1)[0] == 0
    _, rows = read_csv(out)
    assert [r["track_id"] for r in rows] == ["101", "201", "301"]
    code, stdout, _ = run(api, out, per_genre=3)
    assert code == 0
    _, rows = read_csv(out)
    assert sorted(r["track_id"] for r in rows) == sorted(e[-1] for e in EXPECTED)
    assert rows[:3] == expected_rows({"101", "201", "301"})  # earlier rows kept as they were
    assert set(api.served.values()) == {1}  # nothing downloaded twice
    assert "already_collected" in stdout


@pytest.mark.parametrize(
    "licenses, kept",
    [
        ("cc-by,cc-by-sa", ["101", "106"]),
        ("cc-", ["101", "102", "106"]),
        ("CC-BY-NC", ["102"]),
        ("cc-*", ["101", "102", "106"]),
        ("all-rights-reserved", []),
    ],
)
def test_license_filter(api, run, tmp_path, licenses, kept):
    out = tmp_path / "sc"
    code, stdout, _ = run(api, out, "--license", licenses, genres="metal")
    assert code == 0
    rows = read_csv(out)[1] if (out / "tracks.csv").exists() else []
    assert [r["track_id"] for r in rows] == kept
    assert all(license_ok(r["license"], licenses.split(",")) for r in rows)
    refused = [
        i
        for i in SEARCHES["metal"]
        if TRACKS[i]["genre"] != "Podcast"
        and not license_ok(TRACKS[i]["license"], licenses.split(","))
    ]
    assert f"license={len(refused)}" in stdout or not refused


def test_failed_download_leaves_no_file_and_is_retried_next_run(media, run, tmp_path):
    faults = {"media:101": [(503, {})] * 3}
    with FakeSoundCloud(KEY, TRACKS, SEARCHES, media, faults) as server:
        out = tmp_path / "sc"
        code, stdout, err = run(server, out, "--max-retries", "2", genres="metal", per_genre=2)
        assert code == 1 and "failed: 1" in stdout and "download 101" in stdout + err
        assert files_under(out) == {"metal/102.flac", "metal/106.ogg", "tracks.csv"}
        assert KEY not in stdout + err  # the client id is never printed
        code, stdout, _ = run(server, out, genres="metal", per_genre=3)
        assert code == 0 and server.served[101] == 1
        assert sorted(r["track_id"] for r in read_csv(out)[1]) == ["101", "102", "106"]


def test_missing_client_id_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("SOUNDCLOUD_CLIENT_ID", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["soundcloud", "--genres", "metal", "--per-genre", "1", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "SOUNDCLOUD_CLIENT_ID" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_rejected_client_id_and_unknown_genre(api, run, tmp_path):
    code, stdout, err = run(api, tmp_path / "sc", client_id="wrong")
    assert code == 2 and "HTTP 401" in err and "SOUNDCLOUD_CLIENT_ID" in err
    assert "wrong" not in err
    with pytest.raises(SystemExit):
        run(api, tmp_path / "sc", genres="metal,polka")


def test_client_honours_retry_after_then_backs_off(api):
    sleeps: list[float] = []
    api.faults["track:101"] = [(429, {"Retry-After": "1"}), (503, {}), (502, {})]
    client = SoundCloudClient(KEY, api.base, max_rps=0, backoff=0.5, sleep=sleeps.append)
    assert client.track(101)["title"] == "Iron Rain"
    assert sleeps == [1.0, 1.0, 2.0]  # Retry-After, then 0.5 * 2**1 and 0.5 * 2**2
    assert client.retries == 3 and api.hits["track:101"] == 4
    api.faults["track:102"] = [(500, {})] * 3
    client = SoundCloudClient(KEY, api.base, max_rps=0, max_retries=2, sleep=sleeps.append)
    with pytest.raises(ApiError, match="HTTP 500") as exc:
        client.track(102)
    assert exc.value.status == 500 and KEY not in str(exc.value)
    with pytest.raises(ApiError, match="HTTP 404"):  # no retry on other 4xx
        client.track(999)
    assert api.hits["track:999"] == 1


def test_client_id_added_once(api):
    client = SoundCloudClient(KEY, api.base)
    url = client.with_client_id(f"{api.base}/tracks?q=a&client_id=old&limit=2")
    assert url.count("client_id=") == 1 and url.endswith(f"client_id={KEY}") and "limit=2" in url


def test_rate_limiter_spaces_requests():
    now, sleeps = [0.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    assert sleeps == [0.5, 0.5, 0.5] and now[0] == 1.5
    now[0] += 10  # idle time is not banked
    limiter.wait()
    limiter.wait()
    assert sleeps[-1] == 0.5


@pytest.mark.parametrize(
    "fmt, content_type, ext",
    [
        ("wav", "audio/mpeg", "wav"),
        ("FLAC", None, "flac"),
        ("aif", None, "aiff"),
        ("", "audio/ogg; codecs=vorbis", "ogg"),
        (None, "audio/x-m4a", "m4a"),
        ("raw", "application/octet-stream", "mp3"),
        ("", None, "mp3"),
    ],
)
def test_pick_extension(fmt, content_type, ext):
    assert pick_extension(fmt, content_type) == ext


def test_small_parsers():
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("99999") == 300.0 and retry_after_seconds("soon") is None
    assert tag_list('chill "Hip Hop" beats') == ["chill", "Hip Hop", "beats"]


def test_training_loader_accepts_the_result(api, run, tmp_path):
    out = tmp_path / "sc"
    assert run(api, out)[0] == 0
    tracks = list_tracks(out)
    got = {
        ((out / t.path) if not Path(t.path).is_absolute() else Path(t.path)).resolve(): (
            t.genre,
            t.artist,
        )
        for t in tracks
    }
    want = {(out / e[0]).resolve(): (e[1], e[3]) for e in EXPECTED}
    assert got == want
