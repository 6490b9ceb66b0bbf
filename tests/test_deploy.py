"""The deployment manifests and the image recipe agree with the code (offline, no cluster)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from genre_detector.models.families import FAMILIES
from genre_detector.runtime.store import CALIBRATION_NAME, store_name
from genre_detector.serve.container_image import BASE_IMAGE
from genre_detector.serve.http_boundary import (
    DEFAULT_DRAIN_SECONDS,
    MAX_CONCURRENCY,
    TARGET_CONCURRENCY,
)

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"  # vendored CRD schemas: deploy/schemas/README.md
KNATIVE = DEPLOY / "k8s" / "knative-service.yaml"
RAYJOB = DEPLOY / "ray" / "rayjob.yaml"
FRONT, MODELS = "genre_detector", "genre_models"


def _env(items) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in items or [] if "value" in e}


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
    # Knative refuses terminationGracePeriodSeconds (and a container's lifecycle): it sets the
    # pod's grace period to timeoutSeconds and adds its own preStop hook, which holds SIGTERM
    # back until the queue-proxy has drained (knative/serving, revision/resources/deploy.go).
    # The service's own drain must then end before SIGKILL, with room for the exit itself.
    assert "terminationGracePeriodSeconds" not in spec and "lifecycle" not in container
    assert spec["timeoutSeconds"] >= drain + 10
    assert envs["GENRE_RUNTIME"] == "onnx"
    # a draining pod (/readyz 503) leaves the endpoints after one failed probe, 1 s apart
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] == 1 and probe["failureThreshold"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["ports"][0]["containerPort"] == 3000
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["cpu"] and container["resources"][kind]["memory"]
    assert spec["timeoutSeconds"] >= 120


# ----------------------------------------------------------------------------- CRD schemas
def _strict(schema):
    """A CRD's structural schema as JSON Schema that refuses fields it does not list, as the
    API server does for `kubectl apply` (field validation Strict, kubectl's default since
    Kubernetes 1.27), except under x-kubernetes-preserve-unknown-fields."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if key in out:
            out[key] = _strict(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_strict(sub) for sub in out[key]]
    return out


def _schema_errors(doc: dict, schema_file: str) -> list[str]:
    schema = _strict(yaml.safe_load((SCHEMAS / schema_file).read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(doc)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '.'}: {e.message}" for e in errors)


def _rayjob() -> dict:
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    return job


def test_knative_manifest_passes_the_knative_serving_schema():
    assert (
        _schema_errors(yaml.safe_load(KNATIVE.read_text()), "knative-serving-service-v1.yaml") == []
    )


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        # what the manifest had before: Knative's webhook refuses it for a Service
        ("spec.template.spec.terminationGracePeriodSeconds", 45, "terminationGracePeriodSeconds"),
        # Knative adds its own preStop hook; a container may not bring one
        ("spec.template.spec.containers.0.lifecycle", {"preStop": {}}, "lifecycle"),
        ("spec.template.spec.containerConcurrency", "8", "is not of type 'integer'"),
        ("spec.template.spec.containers.0.resources.limits.cpu", "two", "does not match"),
    ],
)
def test_the_knative_schema_check_refuses_what_knative_refuses(path, value, expected):
    ksvc = yaml.safe_load(KNATIVE.read_text())
    errors = _schema_errors(_set(ksvc, path, value), "knative-serving-service-v1.yaml")
    assert len(errors) == 1 and expected in errors[0], errors


def test_kuberay_manifest_passes_the_rayjob_schema():
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    assert sorted(d["kind"] for d in docs) == ["PersistentVolumeClaim", "RayJob"]
    job = _rayjob()
    assert job["apiVersion"] == "ray.io/v1"
    assert _schema_errors(job, "kuberay-rayjob-v1.yaml") == []
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in head["volumes"]]
    assert claims == [pvc["metadata"]["name"]]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.shutdownAfterJobFinish", True, "shutdownAfterJobFinish"),  # a typo
        ("spec.rayClusterSpec.workerGroupSpecs.0.replicas", "8", "is not of type 'integer'"),
        ("spec.rayClusterSpec.headGroupSpec.rayStartParams.num-cpus", 0, "is not of type"),
        ("spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0.cpu", "16", "cpu"),
    ],
)
def test_the_rayjob_schema_check_refuses_a_wrong_field(path, value, expected):
    errors = _schema_errors(_set(_rayjob(), path, value), "kuberay-rayjob-v1.yaml")
    assert len(errors) == 1 and expected in errors[0], errors


def test_the_schema_check_finds_a_missing_required_field_and_a_plain_pod_field():
    job = copy.deepcopy(_rayjob())
    del job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    errors = _schema_errors(job, "kuberay-rayjob-v1.yaml")
    assert len(errors) == 1 and "'groupName' is a required property" in errors[0], errors
    # a plain Kubernetes pod (KubeRay's template) may set the grace period Knative refuses
    path = "spec.rayClusterSpec.headGroupSpec.template.spec.terminationGracePeriodSeconds"
    assert _schema_errors(_set(_rayjob(), path, 45), "kuberay-rayjob-v1.yaml") == []


def _pins(lines) -> dict[str, str]:
    return dict(line.strip().split("==", 1) for line in lines if "==" in line)


def test_serving_pins_are_the_serve_extra():
    """bentofile.yaml's packages (the image) are exactly pyproject's `[serve]` extra, which
    `make serve` installs: TensorFlow-free, and what is tested is what ships."""
    import tomllib

    serving = _pins(yaml.safe_load((REPO / "bentofile.yaml").read_text())["python"]["packages"])
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert serving == _pins(extras["serve"])
    assert {"onnxruntime", "bentoml", "numpy", "soundfile", "soxr", "av"} <= set(serving)
    assert not {"tensorflow-cpu", "tensorflow", "librosa", "scikit-learn", "scipy"} & set(serving)
    # the batch extra adds no TensorFlow either (a RayJob image needs only [batch])
    assert not {"tensorflow-cpu", "tf2onnx", "librosa"} & set(_pins(extras["batch"]))
    everything = {k: v for group in extras.values() for k, v in _pins(group).items()}
    for name, version in serving.items():
        assert everything[name] == version


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


def test_delivery_worker_runs_the_deliver_command_on_the_shared_catalog():
    """The worker Deployment beside the Knative service: the `deliver` command of the same
    image, the same catalog secret as the service, always on (the service scales to zero)."""
    worker = yaml.safe_load((REPO / "deploy" / "k8s" / "delivery-worker.yaml").read_text())
    assert (worker["apiVersion"], worker["kind"]) == ("apps/v1", "Deployment")
    assert worker["spec"]["replicas"] >= 1
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "genre_detector", "deliver"]
    env = {e["name"]: e for e in c["env"]}
    service = yaml.safe_load(KNATIVE.read_text())
    (svc,) = service["spec"]["template"]["spec"]["containers"]
    svc_env = {e["name"]: e for e in svc["env"]}
    assert env["GENRE_DB_URL"]["valueFrom"] == svc_env["GENRE_DB_URL"]["valueFrom"]
    assert c["image"] == svc["image"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert worker["spec"]["selector"]["matchLabels"].items() <= labels.items()
    from genre_detector.__main__ import _parser

    assert _parser().parse_args(c["command"][3:]).command == "deliver"


def test_each_manifest_runs_the_image_that_has_its_entry_point():
    """The Knative service and the delivery worker run the serving image (`make container`,
    whose smoke test runs both entry points); the RayJob runs the [batch] image (`make
    container-batch`), the only one with Ray."""
    service = yaml.safe_load(KNATIVE.read_text())["spec"]["template"]["spec"]["containers"][0]
    worker = yaml.safe_load((DEPLOY / "k8s" / "delivery-worker.yaml").read_text())
    (w,) = worker["spec"]["template"]["spec"]["containers"]
    name = lambda image: image.rsplit("/", 1)[-1].split(":")[0]  # noqa: E731
    assert name(service["image"]) == name(w["image"]) == "genre-detector"
    assert "command" not in service  # the image's entrypoint: bentoml serve of the Bento
    spec = _rayjob()["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    images = {name(c["image"]) for p in pods for c in p["template"]["spec"]["containers"]}
    assert images == {"genre-detector-batch"}
    makefile = (REPO / "Makefile").read_text()
    assert "deploy/build_container.sh --batch" in makefile
    script = (DEPLOY / "build_container.sh").read_text()
    assert 'IMAGE="genre-detector-batch:latest"' in script
    # the image's package path is set by the image (bentofile envs), not by each manifest
    envs = {
        e["name"]: e["value"] for e in yaml.safe_load((REPO / "bentofile.yaml").read_text())["envs"]
    }
    assert envs["PYTHONPATH"] == "/home/bentoml/bento/src/src"
