"""Cold start of `bentoml serve`, broken down: process start -> /readyz -> first /predict.

    python loadtests/cold_start.py                     # the store in BENTOML_HOME
    python loadtests/cold_start.py --runtime keras     # the TensorFlow path, to compare
    python loadtests/cold_start.py --no-tensorflow     # fail if anything imports TensorFlow
    python loadtests/cold_start.py --container genre-detector:latest --repeat 3

Prints: import times of the heavy modules (each in a fresh interpreter), model load and
warm-up per model (ONNX Runtime or Keras), then the served timeline: seconds from
`bentoml serve` to /readyz 200 and to the first 200 from POST /predict on a 30 s clip.
`--container IMAGE` times `podman run` of the image (`make container` builds it) the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "src")]
CLIP = REPO.parent / "shared" / "data" / "gtzan-samples" / "rock.00000.wav"
BLOCKER = """import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf2onnx", "tf_keras"}:
            raise ImportError(name + " is blocked: the service must run without TensorFlow")
sys.meta_path.insert(0, _Block())
"""


def _python(code: str, env: dict | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return out.stdout.strip().splitlines()[-1]


def import_times(modules: list[str]) -> dict[str, float]:
    code = (
        "import time, importlib; m = {m!r}; "
        "t = time.perf_counter(); importlib.import_module(m); "
        "print(time.perf_counter() - t)"
    )
    return {m: float(_python(code.format(m=m))) for m in modules}


def model_load_times(runtime: str) -> dict[str, float]:
    code = f"""
import json, time
t = time.perf_counter()
if {runtime!r} == "onnx":
    from genre_detector.runtime.onnx_predictor import OnnxPredictor as P
else:
    from genre_detector.runtime.keras_predictor import Predictor as P
from genre_detector.runtime.model_set import default_refs
times = {{"import": time.perf_counter() - t}}
for name, ref in default_refs().items():
    t = time.perf_counter(); p = P.from_store(ref); p.warm_up()
    times[name] = time.perf_counter() - t
print(json.dumps(times))
"""
    return json.loads(_python(code, {"PYTHONPATH": f"{REPO / 'src'}:{REPO}"}))


def served(runtime: str, clip: Path, block_tf: bool, port: int = 0) -> dict[str, float]:
    from loadtests.service_process import free_port

    port = port or free_port()
    env = {**os.environ, "GENRE_RUNTIME": runtime}
    blocker_dir = None
    if block_tf:
        blocker_dir = tempfile.mkdtemp(prefix="genre-notf-")
        Path(blocker_dir, "sitecustomize.py").write_text(BLOCKER)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [blocker_dir, env.get("PYTHONPATH")]))
    log = tempfile.NamedTemporaryFile(prefix="cold-start-", suffix=".log", delete=False)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "service:GenreDetector",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        times = timeline(
            f"http://127.0.0.1:{port}",
            clip,
            t0,
            alive=lambda: proc.poll() is None,
            log=lambda: Path(log.name).read_text(errors="replace"),
        )
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        if blocker_dir:
            import shutil

            shutil.rmtree(blocker_dir, ignore_errors=True)
    return times


def timeline(url: str, clip: Path, t0: float, alive, log) -> dict:
    """Seconds from t0 to /readyz 200 and to the first /predict answer, then a second
    request's time. `alive()` says whether the server still runs; `log()` gives its log."""
    times: dict = {}
    while "readyz" not in times:
        if not alive():
            raise RuntimeError(log()[-4000:])
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                times["readyz"] = time.monotonic() - t0
        except requests.RequestException:
            pass
        if time.monotonic() - t0 > 300:
            raise TimeoutError(log()[-4000:])
        time.sleep(0.05)
    t1 = time.monotonic()
    r = requests.post(
        f"{url}/predict", files={"audio": (clip.name, clip.read_bytes())}, timeout=120
    )
    r.raise_for_status()
    times["first_predict_request"] = time.monotonic() - t1
    times["first_predict_total"] = time.monotonic() - t0
    t1 = time.monotonic()
    requests.post(
        f"{url}/predict", files={"audio": (clip.name, clip.read_bytes())}, timeout=120
    ).raise_for_status()
    times["second_predict_request"] = time.monotonic() - t1
    times["tensorflow_imported"] = "tensorflow imported: True" in log()
    return times


def container(image: str, clip: Path, port: int = 0) -> dict:
    """`podman run` of the image (as deploy/build_container.sh runs it) to first answer."""
    from loadtests.service_process import free_port

    port = port or free_port()
    name = f"genre-cold-start-{port}"
    podman = ["podman", "--runtime", "runc"]
    subprocess.run([*podman, "rm", "-f", name], capture_output=True)
    t0 = time.monotonic()
    subprocess.run(
        [*podman, "run", "-d", "--name", name, "--network", "host"]
        + ["-e", f"BENTOML_PORT={port}", image],
        check=True,
        capture_output=True,
    )

    def alive() -> bool:
        state = subprocess.run(
            [*podman, "inspect", "--format", "{{.State.Status}}", name],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return state == "running"

    def log() -> str:
        return subprocess.run([*podman, "logs", name], capture_output=True, text=True).stdout

    try:
        return timeline(f"http://127.0.0.1:{port}", clip, t0, alive, log)
    finally:
        subprocess.run([*podman, "rm", "-f", "-t", "10", name], capture_output=True)


def image_size(image: str) -> int:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runtime", choices=("onnx", "keras"), default="onnx")
    p.add_argument("--clip", type=Path, default=CLIP)
    p.add_argument(
        "--no-tensorflow",
        action="store_true",
        help="block tensorflow/keras imports in every process of the service",
    )
    p.add_argument(
        "--container",
        metavar="IMAGE",
        help="time `podman run IMAGE` to the first answer instead (make container builds it)",
    )
    p.add_argument("--repeat", type=int, default=1, help="starts to time (median printed)")
    args = p.parse_args(argv)
    if args.container:
        runs = [container(args.container, args.clip) for _ in range(args.repeat)]
        for k in ("readyz", "first_predict_total", "second_predict_request"):
            vals = sorted(r[k] for r in runs)
            print(f"   {k}: {', '.join(f'{v:.2f}' for v in vals)} s")
        med = sorted(runs, key=lambda r: r["first_predict_total"])[len(runs) // 2]
        print(
            f"== container {args.container} ({image_size(args.container) / 1e9:.2f} GB): "
            f"/readyz {med['readyz']:.2f} s after `podman run`; first /predict answered "
            f"{med['first_predict_total']:.2f} s after it (median of {len(runs)}); "
            f"tensorflow imported: {med['tensorflow_imported']}"
        )
        return 0
    heavy = ["onnxruntime", "soundfile", "soxr", "bentoml"] + (
        ["tensorflow"] if args.runtime == "keras" else []
    )
    print(
        f"== imports (fresh interpreter each, s): "
        f"{json.dumps({k: round(v, 2) for k, v in import_times(heavy).items()})}"
    )
    loads = model_load_times(args.runtime)
    print(
        f"== model load + warm-up ({args.runtime}, s): "
        f"{json.dumps({k: round(v, 2) for k, v in loads.items()})} "
        f"total {sum(loads.values()):.2f}"
    )
    t = served(args.runtime, args.clip, args.no_tensorflow)
    print(
        f"== bentoml serve ({args.runtime}{', TensorFlow blocked' if args.no_tensorflow else ''}"
        f"): /readyz after {t['readyz']:.2f} s; first /predict {t['first_predict_request']:.2f}"
        f" s (answered {t['first_predict_total']:.2f} s after start); second "
        f"{t['second_predict_request']:.2f} s; tensorflow imported: {t['tensorflow_imported']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
