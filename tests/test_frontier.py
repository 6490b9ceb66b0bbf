"""train/frontier.py: each configuration's CPU per 30 s track, measured on a real clip with
the shipped ONNX graphs, beside its cross-validated accuracy and paired difference."""

from __future__ import annotations

import json

import pytest

from tests.test_train import _cv_file


def test_frontier_prints_cost_ratio_and_paired_accuracy(tmp_path, data_dir, capsys):
    from train.frontier import main as frontier

    labels, n = ["a", "b"], 100
    y = [i % 2 for i in range(n)]
    artists = [f"artist {i // 2}" for i in range(n)]
    folds = {0: [1 + (i // 2) % 5 for i in range(n)]}

    def probs(right):
        return [[0.9, 0.1] if (c == 0) == r else [0.1, 0.9] for c, r in zip(y, right)]

    runs = []
    for name, head, right in (("joint", "joint", 0.6), ("stacked", "stacked", 0.9)):
        ok = [(i % 10) < 10 * right for i in range(n)]
        path = _cv_file(
            tmp_path / f"{name}.json", y, labels, folds, {0: {"musicnn": probs(ok)}}, artists
        )
        run = json.loads(path.read_text())
        run["settings"] = {
            "musicnn": {"features": "musicnn", "head": head, "head_c": 0.01, "class_balance": 0.75}
        }
        path.write_text(json.dumps(run))
        runs.append(str(path))
    out = tmp_path / "frontier.json"
    assert frontier([*runs, "--data", str(data_dir), "--repeats", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    cost = res["cost"]
    assert cost["windows"] == {"research": 19, "musicnn": 5}  # a 30 s clip, as served
    assert all(cost[k] > 0 for k in ("decode", "features", "research_four"))
    first, second = res["rows"]
    assert first["request_ratio"] == pytest.approx(1.0)
    assert first["musicnn_ms"] == second["musicnn_ms"] > 0  # one graph, measured once
    assert second["accuracy"]["accuracy"] == pytest.approx(0.9)
    assert second["paired_vs_first"]["difference"] == pytest.approx(0.3)
    assert "| musicnn / stacked head, C 0.01, classes^-0.75 |" in capsys.readouterr().out
