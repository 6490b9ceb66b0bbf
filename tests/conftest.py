"""Shared fixtures: where the real clips live, fixed seeds, an isolated BentoML store."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never touch the user's model store: a private one, set before bentoml is imported.
import tempfile  # noqa: E402

os.environ["BENTOML_HOME"] = os.environ.get("GENRE_TEST_BENTOML_HOME") or tempfile.mkdtemp(
    prefix="genre-test-bentoml-"
)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real clips not found at {path} (set GENRE_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def emotify_dir(data_dir) -> Path:
    return _need(data_dir / "emotify")


@pytest.fixture(scope="session")
def gtzan_dir(data_dir) -> Path:
    return _need(data_dir / "gtzan-samples")


@pytest.fixture(scope="session")
def wav_clip(gtzan_dir) -> Path:
    """A real 30 s, 16-bit mono, 22.05 kHz WAV."""
    return gtzan_dir / "rock.00000.wav"


@pytest.fixture(scope="session")
def mp3_clip(emotify_dir) -> Path:
    """A real ~60 s mono 64 kbit/s MP3."""
    return sorted((emotify_dir / "rock").glob("*.mp3"))[0]


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def store_with_models() -> Path:
    """The private store with the shipped models imported, as `make models` does."""
    from train.import_models import import_models

    import_models()
    return Path(os.environ["BENTOML_HOME"])
