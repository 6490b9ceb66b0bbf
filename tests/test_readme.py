"""The README shows what the code produces: its example reply is a real reply of the shipped
models (docs/example_reply.py), its model table is models/report/crossval.json
(docs/models_table.py), and it stays short."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_models_table_is_the_crossval_report():
    assert _load("models_table").table() in README


@pytest.mark.slow
def test_example_reply_is_what_the_shipped_models_answer(store_with_models, wav_clip):
    example = _load("example_reply")
    shown = example.shortened(example.reply_for(wav_clip))
    assert shown in README, "run `python docs/example_reply.py` into the README"
