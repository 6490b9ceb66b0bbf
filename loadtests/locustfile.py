"""Locust load test of the genre service: real clips, real request mix, real waits.

    locust -f loadtests/locustfile.py --headless -u 8 -r 4 -t 60s \\
        --host http://127.0.0.1:3000 \\
        --csv loadtests/results/locust --html loadtests/results/locust.html

Three kinds of traffic (one user class each):

* TrackUploader      people uploading their tracks to POST /predict (field `audio`):
                     30 s WAV clips, ~60 s MP3 previews and 3-minute tracks (WAV and MP3);
* PrototypeFrontEnd  the research prototype's React page on POST / (field `audio_file`);
* ModelsPoller       a dashboard polling GET /models (exactly one such user).

The clips are made once at start-up from the shared data (GENRE_DATA, default
<repo>/../shared/data) in a temporary directory, never in the repository:
30 s WAVs = the gtzan-samples, MP3s = one Emotify clip per genre, the 3-minute tracks =
three Emotify clips of one genre concatenated (one written as WAV, one as MP3).

Environment knobs:
    GENRE_DATA            shared data folder
    LOADTEST_WAIT_SCALE   multiplies every wait (default 1 = realistic think times;
                          0 = no waits, a closed-loop stress test)

Every reply is checked (status 200, JSON keys, every registered model family, duration);
anything else is marked as a failure with a reason, so `Failure Count` in the CSV is the
number to watch.
"""

from __future__ import annotations

import atexit
import io
import itertools
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf
from locust import HttpUser, between, constant, task

from genre_detector.models.families import model_names

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
WAIT_SCALE = float(os.environ.get("LOADTEST_WAIT_SCALE", "1"))
MODEL_NAMES = set(model_names())  # the registry's families (GENRE_PLUGINS included)
LEGACY_KEYS = {"CNN Model", "Le-Net Model", "LSTM Model", "Feed-Forward Model"}
TIMEOUT = 120  # s: the service's own request timeout


@dataclass(frozen=True)
class Clip:
    name: str  # file name sent in the upload
    kind: str  # label used in the request name: "30s wav", "3min mp3", ...
    data: bytes
    duration_s: float
    mime: str


def _scaled(lo: float, hi: float):
    return between(lo * WAIT_SCALE, hi * WAIT_SCALE) if WAIT_SCALE > 0 else constant(0)


def _encode(wave: np.ndarray, sr: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format=fmt)
    return buf.getvalue()


@lru_cache(maxsize=1)
def clips() -> dict[str, list[Clip]]:
    """All upload clips by kind, made once per locust process (files in a temp dir)."""
    gtzan, emotify = DATA / "gtzan-samples", DATA / "emotify"
    if not gtzan.is_dir() or not emotify.is_dir():
        raise FileNotFoundError(
            f"need {gtzan} and {emotify}: set GENRE_DATA to the shared data folder"
        )
    tmp = Path(tempfile.mkdtemp(prefix="genre-loadtest-clips-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)

    def clip(path: Path, kind: str, mime: str, name: str | None = None) -> Clip:
        return Clip(name or path.name, kind, path.read_bytes(), sf.info(str(path)).duration, mime)

    out: dict[str, list[Clip]] = {"30s wav": [], "mp3": [], "3min wav": [], "3min mp3": []}
    for path in sorted(gtzan.glob("*.wav")):  # 30 s, 22.05 kHz, 16 bit
        out["30s wav"].append(clip(path, "30s wav", "audio/wav"))
    genres = sorted(p for p in emotify.iterdir() if p.is_dir())
    for genre in genres:  # ~60 s, 64 kbit/s MP3
        first = sorted(genre.glob("*.mp3"))[0]
        out["mp3"].append(clip(first, "mp3", "audio/mpeg", f"{genre.name}-{first.name}"))
    for genre, fmt, kind, mime in (
        (genres[-1], "WAV", "3min wav", "audio/wav"),
        (genres[0], "MP3", "3min mp3", "audio/mpeg"),
    ):
        parts = [sf.read(str(p), dtype="float32") for p in sorted(genre.glob("*.mp3"))[:3]]
        sr = parts[0][1]
        wave = np.concatenate([w if w.ndim == 1 else w.mean(axis=1) for w, _ in parts])
        path = tmp / f"{genre.name}-3min.{fmt.lower()}"
        path.write_bytes(_encode(wave, sr, fmt))
        out[kind].append(clip(path, kind, mime))
    return out


def _check_predict(resp, clip: Clip) -> None:
    """Mark a /predict reply as success or failure (called inside catch_response)."""
    if resp.status_code != 200:
        resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return
    try:
        body = resp.json()
        keys = {"models", "ensemble", "n_windows", "duration_s", "labels", "timeline"}
        missing = keys - set(body)
        if missing:
            raise ValueError(f"missing keys {sorted(missing)}")
        if set(body["models"]) != MODEL_NAMES:
            raise ValueError(f"models {sorted(body['models'])}")
        if body["ensemble"]["top_genre"] not in body["labels"]:
            raise ValueError("ensemble top_genre not a label")
        if abs(body["duration_s"] - clip.duration_s) > 1.0:
            raise ValueError(f"duration {body['duration_s']} s, sent {clip.duration_s:.1f} s")
        if not 1 <= body["n_windows"] <= 40:
            raise ValueError(f"n_windows {body['n_windows']}")
    except (ValueError, KeyError, TypeError) as exc:
        resp.failure(f"bad /predict reply: {exc}")
    else:
        resp.success()


class TrackUploader(HttpUser):
    """A person using the web page or the API: uploads a track to POST /predict, reads the
    result for 5-20 s, uploads the next. Mostly 30 s clips (the page's typical upload), some
    ~60 s MP3 previews, now and then a whole 3-minute track (WAV or MP3)."""

    weight = 4
    wait_time = _scaled(5, 20)

    def on_start(self) -> None:
        self.clips = clips()
        self.rng = random.Random()

    def _upload(self, kind: str) -> None:
        clip = self.rng.choice(self.clips[kind])
        with self.client.post(
            "/predict",
            files={"audio": (clip.name, clip.data, clip.mime)},
            name=f"/predict [{kind}]",
            timeout=TIMEOUT,
            catch_response=True,
        ) as resp:
            _check_predict(resp, clip)

    @task(6)
    def clip_30s_wav(self) -> None:
        self._upload("30s wav")

    @task(3)
    def preview_mp3(self) -> None:
        self._upload("mp3")

    @task(1)
    def track_3min_wav(self) -> None:
        self._upload("3min wav")

    @task(1)
    def track_3min_mp3(self) -> None:
        self._upload("3min mp3")


class PrototypeFrontEnd(HttpUser):
    """The research prototype's React page, still deployed: posts a 30 s WAV to POST / in
    field `audio_file` and expects the four legacy keys; its users look longer (10-30 s)."""

    weight = 1
    wait_time = _scaled(10, 30)

    def on_start(self) -> None:
        self.clips = itertools.cycle(clips()["30s wav"])

    @task
    def legacy_upload(self) -> None:
        clip = next(self.clips)
        with self.client.post(
            "/",
            files={"audio_file": (clip.name, clip.data, clip.mime)},
            name="/ [legacy 30s wav]",
            timeout=TIMEOUT,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            try:
                body = resp.json()
                if set(body) != LEGACY_KEYS:
                    raise ValueError(f"keys {sorted(body)}")
                for key, value in body.items():
                    total = sum(float(p) for p in value["data"].values())
                    if abs(total - 1) > 1e-3 or "accuracy" not in value["metrics"]:
                        raise ValueError(f"{key}: probabilities sum to {total}")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                resp.failure(f"bad legacy reply: {exc}")
            else:
                resp.success()


class ModelsPoller(HttpUser):
    """A status dashboard polling GET /models every 10-20 s (exactly one per test run)."""

    fixed_count = 1
    wait_time = _scaled(10, 20)

    @task
    def models(self) -> None:
        with self.client.get("/models", name="/models", timeout=30, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                body = resp.json()
                if set(body["models"]) != MODEL_NAMES or not body["labels"]:
                    raise ValueError(f"models {sorted(body['models'])}")
            except (ValueError, KeyError, TypeError) as exc:
                resp.failure(f"bad /models reply: {exc}")
            else:
                resp.success()
