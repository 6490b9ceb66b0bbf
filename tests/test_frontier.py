"""train/experiments/frontier.py: each configuration's CPU per 30 s track, measured on a real
clip with the shipped ONNX graphs, beside its cross-validated accuracy and paired difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_train import _cv_file


def test_frontier_prints_cost_ratio_and_paired_accuracy(tmp_path, data_dir, capsys, monkeypatch):
    """Budget from the shipped graph even when the first run is another configuration
    (here int8); paired differences only on the fold seeds both runs have."""
    from train.experiments import quantize_musicnn as q
    from train.experiments.frontier import main as frontier

    windows = q.calibration_windows(Path(data_dir))
    int8 = tmp_path / "int8.onnx"
    q.quantize(q.FP32, windows[::20], tmp_path / "static.onnx", int8)
    monkeypatch.setattr(q, "INT8", int8)

    labels, n = ["a", "b"], 100
    y = [i % 2 for i in range(n)]
    artists = [f"artist {i // 2}" for i in range(n)]
    folds = {s: [1 + (i // 2 + s) % 5 for i in range(n)] for s in (0, 1)}

    def probs(right):
        ok = [(i % 10) < 10 * right for i in range(n)]
        return [[0.9, 0.1] if (c == 0) == r else [0.1, 0.9] for c, r in zip(y, ok)]

    runs = []
    for name, features, seeds, right in (
        ("int8", "musicnn-int8", (0,), 0.6),
        ("fp32", "musicnn", (0, 1), 0.9),
    ):
        by_seed = {s: {"musicnn": probs(right)} for s in seeds}
        path = _cv_file(tmp_path / f"{name}.json", y, labels, folds, by_seed, artists)
        run = json.loads(path.read_text())
        cfg = {"features": features, "head": "joint", "head_c": 0.01, "class_balance": 0.75}
        run["settings"] = {"musicnn": cfg}
        path.write_text(json.dumps(run))
        runs.append(str(path))
    out = tmp_path / "frontier.json"
    assert frontier([*runs, "--data", str(data_dir), "--repeats", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    cost = res["cost"]
    assert cost["windows"] == {"research": 19, "musicnn": 5}  # a 30 s clip, as served
    assert all(cost[k] > 0 for k in ("decode", "features", "research_four"))
    assert set(cost["musicnn"]) == {"musicnn", "musicnn-int8"}  # each graph measured once
    int8_row, fp32_row = res["rows"]
    assert fp32_row["request_ratio"] == pytest.approx(1.0)  # today = the shipped graph
    assert int8_row["musicnn_ms"] != fp32_row["musicnn_ms"]
    assert int8_row["request_ratio"] != pytest.approx(1.0)
    assert fp32_row["accuracy"]["accuracy"] == pytest.approx(0.9)  # over both of its seeds
    assert fp32_row["paired_vs_first"]["seeds"] == [0]
    assert fp32_row["paired_vs_first"]["difference"] == pytest.approx(0.3)
    assert "| musicnn-int8 / joint head, C 0.01, classes^-0.75 |" in capsys.readouterr().out
