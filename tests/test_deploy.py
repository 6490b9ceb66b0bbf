"""The deployment manifests and the image recipe agree with the code (offline, no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genre_detector.container_image import BASE_IMAGE
from genre_detector.families import FAMILIES
from genre_detector.http_boundary import (
    DEFAULT_DRAIN_SECONDS,
    MAX_CONCURRENCY,
    TARGET_CONCURRENCY,
)
from genre_detector.store import CALIBRATION_NAME, store_name

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
FRONT, MODELS = "genre_detector", "genre_models"


def _env(items) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in items or []}


def test_bentocloud_scales_to_zero_on_concurrency():
    cfg = yaml.safe_load((DEPLOY / "bentocloud.yaml").read_text())
    assert cfg["bento"] == "."
    envs = _env(cfg["envs"])
    assert envs["GENRE_RUNTIME"] == "onnx"
    assert float(envs["GENRE_DRAIN_SECONDS"]) == DEFAULT_DRAIN_SECONDS
    assert set(cfg["services"]) == {FRONT, MODELS}
    for name, svc in cfg["services"].items():
        assert svc["scaling"]["min_replicas"] == 0, name
        assert svc["scaling"]["max_replicas"] >= 1, name
        assert svc["config_overrides"]["traffic"]["concurrency"] == TARGET_CONCURRENCY, name
        res = svc["config_overrides"]["resources"]
        assert res["cpu"] and res["memory"], name
    front = cfg["services"][FRONT]["config_overrides"]["traffic"]
    assert front["max_concurrency"] == MAX_CONCURRENCY


def test_knative_service_scales_to_zero_and_drains():
    ksvc = yaml.safe_load((DEPLOY / "k8s" / "knative-service.yaml").read_text())
    assert ksvc["apiVersion"] == "serving.knative.dev/v1" and ksvc["kind"] == "Service"
    template = ksvc["spec"]["template"]
    notes = template["metadata"]["annotations"]
    assert notes["autoscaling.knative.dev/min-scale"] == "0"
    assert notes["autoscaling.knative.dev/metric"] == "concurrency"
    assert int(notes["autoscaling.knative.dev/target"]) == TARGET_CONCURRENCY
    spec = template["spec"]
    assert spec["containerConcurrency"] == TARGET_CONCURRENCY
    (container,) = spec["containers"]
    envs = _env(container["env"])
    drain = float(envs["GENRE_DRAIN_SECONDS"])
    assert drain == DEFAULT_DRAIN_SECONDS
    # the drain must end before Kubernetes' SIGKILL, with room for the exit itself
    assert spec["terminationGracePeriodSeconds"] >= drain + 10
    assert envs["GENRE_RUNTIME"] == "onnx"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["cpu"] and container["resources"][kind]["memory"]
    assert spec["timeoutSeconds"] >= 120


def _pins(lines) -> dict[str, str]:
    return dict(line.strip().split("==", 1) for line in lines if "==" in line)


def test_serving_pins_match_the_training_environment():
    """bentofile.yaml's packages (the image) are a TensorFlow-free subset of pyproject's
    pins, at the same versions: what is tested is what ships."""
    import tomllib

    serving = _pins(yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"])
    project = _pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    assert {"onnxruntime", "bentoml", "numpy", "soundfile", "soxr", "av"} <= set(serving)
    assert not {"tensorflow-cpu", "tensorflow", "librosa", "scikit-learn", "scipy"} & set(serving)
    for name, version in serving.items():
        assert project.get(name) == version, (
            f"{name}: bentofile {version}, pyproject {project.get(name)}"
        )


@pytest.mark.slow
def test_the_built_bento_installs_no_compiler_and_nothing_from_apt(store_with_models, tmp_path):
    """`bentoml build` (as `make build` / `make container` run it) gives an image recipe on
    Debian slim with no build-essential, git or apt step, the serving pins, and every model."""
    import subprocess
    import sys

    out = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "build", "--output", "tag"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1].split("__tag__:")[-1]
    name, version = tag.split(":")
    info = yaml.safe_load(
        (store_with_models / "bentos" / name / version / "bento.yaml").read_text()
    )
    image = info["image"]
    assert image["base_image"] == BASE_IMAGE
    assert not any("apt-get" in c or "build-essential" in c for c in image["commands"])
    reqs = _pins(image["python_requirements"].splitlines())
    assert reqs["onnxruntime"] and reqs["av"] and "tensorflow-cpu" not in reqs
    assert "librosa" not in reqs
    packed = {m["tag"].split(":")[0] for m in info["models"]}
    assert packed == {store_name(n) for n in FAMILIES} | {CALIBRATION_NAME}
