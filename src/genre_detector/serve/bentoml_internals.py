"""Every place the service leans on BentoML (1.4) or uvicorn internals, in one module.

Each is needed for a measured behaviour (no temp folder left per request, a drain that
answers every accepted request, the front reaching the model service while it drains) and
each depends on something BentoML does not promise to keep. `broken_assumptions()` lists
the ones a new BentoML no longer meets; tests/test_bentoml_internals.py asserts it is empty,
so an upgrade that breaks one fails loudly instead of silently losing the behaviour.
"""

from __future__ import annotations

import os
import shutil
import signal

# The worker processes of `bentoml serve` run this module (their command line names it).
WORKER_MODULE = "_bentoml_impl.worker.service"


def use_loopback_tcp() -> None:
    """The front reaches the model service over loopback TCP, not a Unix socket: on SIGTERM
    BentoML's supervisor (bentoml._internal.utils.circus.Arbiter.stop) deletes its Unix
    sockets' folder *before* it stops the workers, so a draining front could no longer reach
    the model service (HTTP 500s). `bentoml serve` reads BENTOML_NO_UDS after importing the
    service module, so this is called at its import."""
    os.environ.setdefault("BENTOML_NO_UDS", "1")


def unpooled_request_dirs() -> bool:
    """Remove each request's upload folder when the request ends. BentoML 1.4 keeps emptied
    `bentoml-request-*` folders in a pool (bentoml._internal.context.request_tempdir_pool)
    for reuse until the worker exits, so folders stay in TMPDIR between requests (one per
    request ever in flight at once). Call once in the front's worker; False if that internal
    pool is not there (another BentoML version)."""
    pool = _request_tempdir_pool()
    if pool is None or not hasattr(pool, "release"):
        return False
    pool.release = lambda folder: shutil.rmtree(folder, ignore_errors=True)
    pool.cleanup()
    return True


def _request_tempdir_pool():
    try:
        from bentoml._internal import context

        return context.request_tempdir_pool
    except (ImportError, AttributeError):
        return None


def uvicorn_server():
    """The uvicorn Server whose bound method is this process's SIGTERM handler (how a
    BentoML worker runs), or None: what the drain tells to exit once it is done."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return server if server is not None and hasattr(server, "should_exit") else None


def is_service_worker(cmdline: list[str], service_name: str | None = None) -> bool:
    """Whether a process command line is a `bentoml serve` worker (of `service_name`)."""
    return WORKER_MODULE in cmdline and (service_name is None or service_name in cmdline)


def broken_assumptions() -> list[str]:
    """What this module relies on and a BentoML/uvicorn upgrade no longer provides."""
    import importlib.util

    broken = []
    pool = _request_tempdir_pool()
    if pool is None or not all(hasattr(pool, a) for a in ("release", "cleanup")):
        broken.append("bentoml._internal.context.request_tempdir_pool.release/cleanup")
    if importlib.util.find_spec(WORKER_MODULE) is None:
        broken.append(f"worker module {WORKER_MODULE}")
    try:
        from bentoml._internal.utils.circus import Arbiter  # noqa: F401
    except ImportError:
        broken.append("bentoml._internal.utils.circus.Arbiter (the UDS folder removal)")
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app=None))
    if not all(hasattr(server, a) for a in ("should_exit", "force_exit", "handle_exit")):
        broken.append("uvicorn.Server.should_exit/force_exit/handle_exit")
    return broken
