"""Every place the service leans on BentoML (1.4) or uvicorn internals, in one module.

Each is needed for a measured behaviour (no temp folder left per request, a drain that
answers every accepted request, the front reaching the model service while it drains, a
429 that costs a third of what it did) and
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


_OUTERMOST: dict[str, list] = {}  # service name -> [(middleware class, options)], outermost first
_WRAPPED: set[str] = set()  # the services whose app this process wrapped


def outermost_applied(service_name: str) -> bool:
    """Whether this process built `service_name`'s app with its outermost middleware (a
    BentoML that builds its apps another way would silently skip them: the service warns)."""
    return service_name in _WRAPPED


def add_outermost_middleware(service_name: str, middleware_cls, **options) -> None:
    """Wrap the ASGI app of the service named `service_name` in `middleware_cls` outside
    everything BentoML puts around it (its request metrics, tracing, access log, timeout,
    concurrency limit and Starlette's error middleware). `Service.add_asgi_middleware`
    puts a middleware inside all of those, so a reply the middleware sends itself still
    pays for each of them: BudgetGate's 429s cost the service 1.1-1.3 ms of CPU there and
    0.34-0.41 ms outside (loadtests/refusal_cost.py). BentoML 1.4 builds a service's app in
    ServiceAppFactory.__call__ (`Service.to_asgi`), which this wraps once per process."""
    mine = _OUTERMOST.setdefault(service_name, [])
    if all(cls is not middleware_cls for cls, _ in mine):  # a second import adds nothing
        mine.append((middleware_cls, options))
    factory = _service_app_factory()
    if factory is None or getattr(factory.__call__, "_genre_outermost", False):
        return
    build = factory.__call__

    def call(self):
        app = build(self)
        name = getattr(self.service, "name", None)
        if name in _OUTERMOST:
            for cls, opts in reversed(_OUTERMOST[name]):
                app = cls(app, **opts)
            _WRAPPED.add(name)
        return app

    call._genre_outermost = True
    factory.__call__ = call


def _service_app_factory():
    try:
        from _bentoml_impl.server.app import ServiceAppFactory

        return ServiceAppFactory
    except ImportError:
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
    import inspect

    import bentoml

    factory = _service_app_factory()
    if (
        factory is None
        or "service" not in inspect.signature(factory.__init__).parameters
        or "ServiceAppFactory" not in inspect.getsource(bentoml.Service.to_asgi)
    ):
        broken.append("Service.to_asgi -> _bentoml_impl.server.app.ServiceAppFactory(service)()")
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app=None))
    if not all(hasattr(server, a) for a in ("should_exit", "force_exit", "handle_exit")):
        broken.append("uvicorn.Server.should_exit/force_exit/handle_exit")
    return broken
