"""serve.bentoml_internals: everything that leans on BentoML/uvicorn internals still finds
them in the pinned versions (an upgrade that breaks one fails here, loudly), and the
request-folder patch really removes a released folder."""

from __future__ import annotations

import tempfile
from pathlib import Path

from genre_detector.serve import bentoml_internals as internals


def test_every_assumption_holds_in_the_pinned_bentoml():
    assert internals.broken_assumptions() == []


def test_a_released_request_folder_is_removed_not_pooled():
    assert internals.unpooled_request_dirs()
    pool = internals._request_tempdir_pool()
    folder = Path(tempfile.mkdtemp(prefix="bentoml-request-test-"))
    (folder / "upload.mp3").write_bytes(b"x")
    pool.release(str(folder))
    assert not folder.exists()


def test_worker_command_lines():
    cmd = ["python", "-m", internals.WORKER_MODULE, "service:GenreDetector", "genre_models"]
    assert internals.is_service_worker(cmd)
    assert internals.is_service_worker(cmd, "genre_models")
    assert not internals.is_service_worker(cmd, "genre_detector_front")
    assert not internals.is_service_worker(["python", "-m", "pytest"])


def test_no_uvicorn_handler_outside_a_worker():
    assert internals.uvicorn_server() is None  # pytest's SIGTERM handler is not uvicorn's
