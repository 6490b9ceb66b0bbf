"""The built Bento serves from its own files, as the image does (issue 27).

`bentoml build` (as `make build` and `make container` run it), then the Bento exported with its
models (what `bentoml containerize` copies into the image) and unpacked into a temporary
folder, a fresh venv made from the Bento's own `env/python/requirements.txt`, and `bentoml
serve <bento folder>` started from there with an empty model store and no path into this
checkout. It must answer as the checkout does. Every module the service loads is recorded by a
`sitecustomize` that snapshots `sys.modules` in each BentoML process, and must come from the
Bento or the venv, never from the checkout.

The container itself (podman) is built and smoke-tested by `make container`
(deploy/build_container.sh), which `.ci/run` runs; this test needs no podman.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from loadtests.service_process import REPO, ServedService

pytestmark = pytest.mark.slow
PACKAGE = REPO / "src" / "genre_detector"

# Written as sitecustomize.py into a folder on the served processes' PYTHONPATH: every BentoML
# process (the arbiter and both services' workers) writes {module: file} to its own JSON file
# twice a second, so the record does not depend on how the process is stopped.
RECORDER = """
import json, os, sys, threading, time

def _record(folder=os.environ["GENRE_TEST_MODULES_DIR"]):
    path = os.path.join(folder, f"{os.getpid()}.json")
    while True:
        try:
            mods = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"argv": sys.argv, "modules": mods}, f)
            os.replace(tmp, path)
        except Exception:
            pass
        time.sleep(0.5)

threading.Thread(target=_record, daemon=True).start()
"""


def _run(cmd, timeout=600, **kw) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def bento(store_with_models, tmp_path_factory) -> Path:
    """The Bento as the image gets it: its files and its models, unpacked outside the repo."""
    bentoml = Path(sys.executable).with_name("bentoml")
    tag = _run([str(bentoml), "build", "--output", "tag"], cwd=REPO).strip().splitlines()[-1]
    tag = tag.split("__tag__:")[-1]
    folder = tmp_path_factory.mktemp("bento")
    archive = folder / "genre_detector.bento"
    _run([str(bentoml), "export", tag, str(archive)], cwd=folder)
    root = folder / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()
    return root


@pytest.fixture(scope="module")
def bento_venv(bento, tmp_path_factory) -> Path:
    """A fresh venv with exactly the Bento's requirements (not this project, not [dev])."""
    venv = tmp_path_factory.mktemp("bento-venv") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    _run(pip + ["-r", str(bento / "env" / "python" / "requirements.txt")], timeout=900)
    return venv


def test_the_bento_holds_every_module_file_and_every_registry_builder(bento):
    """Static: each file the package has in the checkout is in the Bento (so no ignore rule
    drops a folder again), and each builder the model registry names by string resolves there."""
    from genre_detector.models.families import FAMILIES

    src = bento / "src"
    wanted = {p.relative_to(REPO) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    wanted |= {p.relative_to(REPO) for p in (PACKAGE / "serve" / "web").iterdir() if p.is_file()}
    assert wanted, "no package files found"
    missing = sorted(str(p) for p in wanted if not (src / p).is_file())
    assert missing == [], f"not in the Bento (check .bentoignore / bentofile include): {missing}"
    assert (src / "service.py").is_file()
    assert (src / "src" / "genre_detector" / "models" / "families.py").is_file()  # issue 27
    for f in FAMILIES.values():
        module = f.builder.split(":")[0]
        assert (src / "src" / Path(*module.split("."))).with_suffix(".py").is_file(), f.builder
    # every model the registry serves is packed with the Bento (bentofile's `models:`)
    packed = {
        m["tag"].split(":")[0] for m in yaml.safe_load((bento / "bento.yaml").read_text())["models"]
    }
    from genre_detector.runtime.store import CALIBRATION_NAME, store_name

    assert packed == {store_name(n) for n in FAMILIES} | {CALIBRATION_NAME}
    assert packed == {p.name for p in (bento / "models").iterdir()}
    # musicnn's entry carries what scoring reads beside its graph: the genre head, the search
    # projection and the mood heads (issue 32)
    (entry,) = [p for p in (bento / "models" / store_name("musicnn")).iterdir() if p.is_dir()]
    for name in ("model.onnx", "head.npz", "projection.npz", "moods.npz"):
        assert (entry / name).is_file(), name


@pytest.fixture(scope="module")
def served_bento(bento, bento_venv, tmp_path_factory):
    work = tmp_path_factory.mktemp("bento-run")
    recorder, modules = work / "recorder", work / "modules"
    recorder.mkdir()
    modules.mkdir()
    (recorder / "sitecustomize.py").write_text(RECORDER)
    env = {
        "PATH": f"{bento_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(work),
        "BENTOML_HOME": str(work / "empty-store"),  # the Bento's own models/ must serve
        "BENTO_PATH": str(bento),  # as the image's Dockerfile sets it (the CLI reads it)
        "BENTOML_DO_NOT_TRACK": "True",
        "GENRE_DB_URL": f"sqlite:///{work / 'catalog.sqlite3'}",
        "GENRE_TEST_MODULES_DIR": str(modules),
        "PYTHONPATH": str(recorder),
        "TMPDIR": str(work),
    }
    env.update({k: os.environ[k] for k in ("LANG", "OPENBLAS_CORETYPE") if k in os.environ})
    svc = ServedService(
        env, target=str(bento), cwd=bento, bentoml=bento_venv / "bin" / "bentoml", inherit_env=False
    )
    try:
        cli_env = {**env, "PYTHONPATH": str(bento / "src" / "src")}
        key = _run(
            [str(bento_venv / "bin" / "python"), "-m", "genre_detector", "keys", "create", "a"],
            env=cli_env,
            cwd=work,
        ).splitlines()[-1]
        svc.wait_ready(timeout=300)
        yield svc, key, modules
    finally:
        svc.stop()


def _in_process_reply(clip: Path) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_reply", REPO / "docs/example_reply.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reply_for(clip)


def test_the_bento_serves_from_its_own_files_as_the_checkout_does(served_bento, bento, wav_clip):
    svc, key, modules = served_bento
    assert requests.get(f"{svc.url}/readyz", timeout=10).status_code == 200
    with open(wav_clip, "rb") as f:
        r = requests.post(f"{svc.url}/predict", files={"audio": f}, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    expected = _in_process_reply(wav_clip)
    assert set(body["models"]) == set(expected["models"])
    assert body["n_windows"] == expected["n_windows"]
    for g, p in expected["ensemble"]["probabilities"].items():
        assert abs(body["ensemble"]["probabilities"][g] - p) < 1e-4, g
    for name, m in expected["models"].items():
        assert body["models"][name]["top_genre"] == m["top_genre"], name

    auth = {"Authorization": f"Bearer {key}"}
    with open(wav_clip, "rb") as f:
        r = requests.post(
            f"{svc.url}/tracks",
            files={"audio": (wav_clip.name, f)},
            data={"consent": "search", "title": "Rock 0", "artist": "GTZAN"},
            headers=auth,
            timeout=300,
        )
    assert r.status_code == 201, r.text
    track = r.json()
    assert track["top_genre"] == body["ensemble"]["top_genre"]
    r = requests.get(f"{svc.url}/tracks/{track['id']}/similar?k=5", headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == []  # the only track: nothing else to be similar to
    bad = requests.post(f"{svc.url}/predict", files={"audio": ("x.wav", b"no audio")}, timeout=60)
    assert bad.status_code in (415, 422) and "error" in bad.json()

    time.sleep(1.5)  # two snapshots after the last request
    records = [json.loads(p.read_text()) for p in modules.glob("*.json")]
    loaded = {name: file for rec in records for name, file in rec["modules"].items()}
    ours = {n: f for n, f in loaded.items() if n == "service" or n.startswith("genre_detector")}
    # the request paths ran: decoding, scoring, the catalog's write and search paths
    for name in (
        "service",
        "genre_detector.audio.decode",
        "genre_detector.runtime.onnx_predictor",
        "genre_detector.scoring.track_result",
        "genre_detector.catalog.ingest",
        "genre_detector.catalog.search",
    ):
        assert name in ours, f"{name} was not loaded: {sorted(ours)}"
    outside = {n: f for n, f in ours.items() if f and not Path(f).is_relative_to(bento)}
    assert outside == {}, "modules loaded from outside the Bento"
    from_checkout = {n: f for n, f in loaded.items() if f and Path(f).is_relative_to(REPO)}
    assert from_checkout == {}, "modules loaded from the checkout"
    assert "tensorflow" not in loaded and "keras" not in loaded
