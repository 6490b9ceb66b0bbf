"""The deployment manifests agree with the code's defaults (parsed offline, no cluster)."""

from __future__ import annotations

from pathlib import Path

import yaml

from genre_detector.http_boundary import (
    DEFAULT_DRAIN_SECONDS,
    MAX_CONCURRENCY,
    TARGET_CONCURRENCY,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
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
