"""genre_detector.config: one Settings for every GENRE_* variable; its table in docs/."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from genre_detector.config import Settings, markdown_table, setting, settings

REPO = Path(__file__).resolve().parent.parent


def test_defaults_and_parsing():
    s = settings({})
    assert s.max_upload_bytes == 50 * 2**20 and s.drain_seconds == 30.0
    assert s.onnx_spin is False and s.onnx_export is True and s.plugins == ()
    s = settings(
        {
            "GENRE_MAX_BATCH": "12",
            "GENRE_ONNX_SPIN": "1",
            "GENRE_ONNX_EXPORT": "0",
            "GENRE_PLUGINS": "a.b, c ,",
            "GENRE_RUNTIME": " ONNX ",
            "GENRE_DRAIN_SECONDS": "2.5",
            "GENRE_FEATURE_THREADS": "",  # empty: the default
        }
    )
    assert (s.max_batch, s.onnx_spin, s.onnx_export, s.plugins) == (12, True, False, ("a.b", "c"))
    assert (s.runtime, s.drain_seconds, s.feature_threads) == ("onnx", 2.5, 2)
    assert Settings.model_ref("cnn", "genre-cnn:latest", {}) == "genre-cnn:latest"
    assert Settings.model_ref("cnn", "x", {"GENRE_MODEL_CNN": "genre-cnn:abc"}) == "genre-cnn:abc"


def test_one_setting_read_alone_is_what_settings_reads():
    env = {"GENRE_SEARCH_PER_MIN": " 240 ", "GENRE_BURST_SECONDS": "10", "GENRE_DB_URL": "X"}
    env["GENRE_TRUSTED_PROXIES"] = "10.0.0.0/8, 127.0.0.1"
    for f in dataclasses.fields(Settings):
        assert setting(f.name, env) == getattr(settings(env), f.name), f.name
        assert setting(f.name, {}) == getattr(settings({}), f.name), f.name
    assert setting("search_per_min", env) == 240 and setting("db_url", env) == "X"
    with pytest.raises(ValueError, match="GENRE_BURST_SECONDS"):
        setting("burst_seconds", {"GENRE_BURST_SECONDS": "soon"})


@pytest.mark.parametrize(
    "env, named",
    [
        ({"GENRE_MAX_BATCH": "many"}, "GENRE_MAX_BATCH"),
        ({"GENRE_ONNX_SPIN": "yes"}, "GENRE_ONNX_SPIN"),
        ({"GENRE_RUNTIME": "tpu"}, "GENRE_RUNTIME"),
        ({"GENRE_DRAIN_SECONDS": "soon"}, "GENRE_DRAIN_SECONDS"),
    ],
)
def test_a_bad_value_names_its_variable(env, named):
    with pytest.raises(ValueError, match=named):
        settings(env)


def test_configuration_page_shows_the_settings_table():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert markdown_table() in page, "run `python -m genre_detector settings` into the page"


def test_no_module_reads_a_genre_variable_itself():
    """Only config.py reads GENRE_* variables (os.environ / os.getenv with a GENRE_ literal)."""
    offenders = []
    for path in (REPO / "src" / "genre_detector").rglob("*.py"):
        if path.name == "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"GENRE_[A-Z_]+", node.value):
                    offenders.append(f"{path.name}: {node.value}")
    assert offenders == []
