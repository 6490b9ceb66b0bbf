"""Smoke-test the serving image as a deployment runs it (deploy/build_container.sh step 6).

    python deploy/smoke_image.py --image genre-detector:latest --port 3300 --clip CLIP

Two containers of the one image on the host network, sharing a catalog this script provides
(a SQLite file in a host folder mounted at /catalog): the service (`podman run IMAGE`, its
own delivery worker off) and the delivery worker (`podman run IMAGE python -m genre_detector
deliver`), as deploy/k8s/ runs them. Keys are made with the image's CLI. Checked: /readyz,
/predict on a real clip, POST /tracks (201), GET /tracks/{id}/similar, and one watch match
delivered by the worker container to a receiver on the host that verifies its Standard
Webhooks signature. Prints the seconds from `podman run` to /readyz and to the first
/predict 200; exits non-zero on any failure, with the containers' logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from loadtests.webhook_receiver import Receiver  # noqa: E402

PODMAN = ["podman", "--runtime", "runc"]
IMAGE_UID = 1034  # BentoML's image user (bentoml): the catalog folder must be its to write


class Smoke:
    def __init__(self, image: str, port: int, work: Path):
        self.image, self.port, self.work = image, port, work
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            "GENRE_DB_URL": "sqlite:////catalog/catalog.sqlite3",
            "GENRE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # the receiver is this host's 127.0.0.1
            "GENRE_WEBHOOK_BACKOFF_SCALE": "0.01",
        }
        self.names: list[str] = []

    def _run_args(self, extra_env: dict | None = None) -> list[str]:
        env = {**self.env, **(extra_env or {})}
        args = ["--network", "host", "-v", f"{self.work}:/catalog"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        return args

    def cli(self, *argv: str) -> str:
        out = subprocess.run(
            [
                *PODMAN,
                "run",
                "--rm",
                *self._run_args(),
                self.image,
                "python",
                "-m",
                "genre_detector",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode:
            raise RuntimeError(f"{' '.join(argv)} in the image: {out.stderr[-2000:]}")
        return out.stdout

    def start(self, name: str, env: dict, *command: str) -> None:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True)
        subprocess.run(
            [*PODMAN, "run", "-d", "--name", name, *self._run_args(env), self.image, *command],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.names.append(name)

    def running(self, name: str) -> bool:
        state = subprocess.run(
            [*PODMAN, "inspect", "--format", "{{.State.Status}}", name],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return state == "running"

    def logs(self) -> str:
        out = []
        for name in self.names:
            log = subprocess.run([*PODMAN, "logs", "--tail", "60", name], capture_output=True)
            out.append(f"---- {name} ----\n{(log.stdout + log.stderr).decode(errors='replace')}")
        return "\n".join(out)

    def stop(self) -> None:
        for name in self.names:
            subprocess.run([*PODMAN, "rm", "-f", "-t", "10", name], capture_output=True)


def wait(what: str, check, timeout: float, alive=lambda: True) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not alive():
            raise RuntimeError(f"the container stopped before {what}")
        try:
            if check():
                return time.time() - t0
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not after {timeout} s")


def smoke_batch(image: str, clip: Path) -> int:
    """The [batch] image (`--batch`): `python -m genre_detector tag --engine ray` on a local Ray
    inside the container tags every clip of the clip's folder, mounted read-only."""
    clips = sorted(p for p in clip.parent.iterdir() if p.suffix in {".wav", ".mp3", ".flac"})
    cmd = "python -m genre_detector tag /clips --engine ray --workers 2 --no-progress " \
        "--out /tmp/tags.csv && cat /tmp/tags.csv"  # fmt: skip
    t0 = time.time()
    out = subprocess.run(
        [*PODMAN, "run", "--rm", "--network", "host", "--shm-size", "1g",
         "-v", f"{clip.parent}:/clips:ro", image, "sh", "-c", cmd],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if out.returncode:
        print(f"SMOKE TEST FAILED: tag on Ray in {image}:\n{out.stderr[-4000:]}", file=sys.stderr)
        return 1
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(out.stdout[out.stdout.index("path,") :])))
    tagged = {Path(r["path"]).name for r in rows if r.get("ensemble_genre")}
    missing = {p.name for p in clips} - tagged
    if missing:
        print(f"SMOKE TEST FAILED: not tagged on Ray: {sorted(missing)}", file=sys.stderr)
        return 1
    print(f"tag --engine ray in {image}: {len(tagged)} clips tagged in {time.time() - t0:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="genre-detector:latest")
    ap.add_argument("--port", type=int, default=3300)
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--ready-timeout", type=float, default=600)
    ap.add_argument("--batch", action="store_true", help="the [batch] image: tag on Ray")
    args = ap.parse_args(argv)
    if args.batch:
        return smoke_batch(args.image, args.clip)

    work = Path(tempfile.mkdtemp(prefix="genre-smoke-"))
    os.chown(work, IMAGE_UID, IMAGE_UID)
    smoke = Smoke(args.image, args.port, work)
    receiver = Receiver().start()
    try:
        label = smoke.cli("keys", "create", "label").strip().splitlines()[-1]
        scout = smoke.cli("keys", "create", "scout").strip().splitlines()[-1]
        print("keys made by the image's CLI (python -m genre_detector keys create)")

        t0 = time.time()
        smoke.start(
            "genre-detector-smoke",
            {"BENTOML_PORT": str(args.port), "GENRE_DELIVER_IN_SERVICE": "0"},
        )
        alive = lambda: smoke.running("genre-detector-smoke")  # noqa: E731
        ready = wait(
            "/readyz 200",
            lambda: requests.get(f"{smoke.url}/readyz", timeout=2).status_code == 200,
            args.ready_timeout,
            alive,
        )
        clip = args.clip.read_bytes()
        r = requests.post(
            f"{smoke.url}/predict", files={"audio": (args.clip.name, clip)}, timeout=120
        )
        first = time.time() - t0
        assert r.status_code == 200, f"/predict {r.status_code}: {r.text[:500]}"
        reply = r.json()
        e = reply["ensemble"]
        print(
            f"/readyz 200 after {ready:.1f} s; first /predict 200 after {first:.1f} s "
            f"(from podman run)"
        )
        print(
            f"/predict: {reply['n_windows']} windows, ensemble {e['top_genre']} "
            f"({e['top_probability']:.3f}), {e['agreeing_models']}/{e['n_models']} agree"
        )

        auth = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
        r = requests.post(
            f"{smoke.url}/watches",
            json={"name": "smoke", "genres": {e["top_genre"]: 0.2}, "webhook_url": receiver.url},
            headers=auth(scout),
            timeout=30,
        )
        assert r.status_code == 201, f"POST /watches {r.status_code}: {r.text[:500]}"
        receiver.secrets.append(r.json()["secret"])
        r = requests.post(
            f"{smoke.url}/tracks",
            files={"audio": (args.clip.name, clip)},
            data={"consent": "search,notify", "title": "Smoke", "artist": "Smoke Test"},
            headers=auth(label),
            timeout=120,
        )
        assert r.status_code == 201, f"POST /tracks {r.status_code}: {r.text[:500]}"
        track = r.json()
        assert track["top_genre"] == e["top_genre"], (track["top_genre"], e["top_genre"])
        r = requests.get(
            f"{smoke.url}/tracks/{track['id']}/similar?k=3", headers=auth(label), timeout=30
        )
        assert r.status_code == 200, f"similar {r.status_code}: {r.text[:500]}"
        print(f"POST /tracks 201 ({track['id']}); GET /tracks/{{id}}/similar 200")
        # a spent search budget: answered 429 by the gate around the app, counted at /metrics
        statuses = [
            requests.get(f"{smoke.url}/tracks/x/similar", headers=auth(scout), timeout=30)
            for _ in range(70)
        ]
        assert {r.status_code for r in statuses[-5:]} == {429}, statuses[-1].text[:300]
        metrics = requests.get(f"{smoke.url}/metrics", timeout=30).text
        assert 'genre_rate_limited_total{bucket="search"}' in metrics, metrics[-1500:]
        log = subprocess.run(
            [*PODMAN, "logs", "genre-detector-smoke"], capture_output=True, text=True
        )
        assert "BudgetGate is not around the app" not in log.stdout + log.stderr
        print("a spent search budget: 429 from the gate, genre_rate_limited_total at /metrics")
        time.sleep(2)
        assert receiver.received == [], "the service delivered although its worker is off"

        smoke.start("genre-delivery-smoke", {}, "python", "-m", "genre_detector", "deliver")
        took = wait(
            "a webhook from the worker container",
            lambda: bool(receiver.received),
            120,
            lambda: smoke.running("genre-delivery-smoke"),
        )
        (got,) = receiver.received
        assert got.verified, "the webhook's signature did not verify"
        assert got.payload["data"]["track_id"] == track["id"], got.payload
        print(
            f"delivery worker container: webhook {got.id} verified after {took:.1f} s "
            f"({got.payload['type']}, track {got.payload['data']['track_id']})"
        )
        return 0
    except Exception as exc:  # noqa: BLE001  any failure: say it, show the logs, fail
        print(f"SMOKE TEST FAILED: {exc}\n{smoke.logs()}", file=sys.stderr)
        return 1
    finally:
        smoke.stop()
        receiver.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
