"""Graceful drain on SIGTERM for both services of `bentoml serve` (GENRE_DRAIN_SECONDS).

BentoML's supervisor sends SIGTERM to every service's workers at once; uvicorn alone would
stop the model service while the front still has requests for it. install_drain_handler
replaces uvicorn's handler in each worker (the BentoML/uvicorn details it relies on are in
serve.bentoml_internals).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from genre_detector.serve.bentoml_internals import is_service_worker, uvicorn_server
from genre_detector.serve.http_boundary import DRAIN, drain_seconds

logger = logging.getLogger("bentoml.genre_detector")


def _front_alive(model_service: str) -> bool:
    """Whether a worker of another service (the front) still runs beside this process under
    the same `bentoml serve` supervisor."""
    import psutil

    try:
        me = psutil.Process()
        siblings = me.parent().children() if me.parent() else []
    except psutil.Error:
        return False
    for p in siblings:
        try:
            cmd = p.cmdline()
            if p.pid == me.pid or p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        if is_service_worker(cmd) and not is_service_worker(cmd, model_service):
            return True
    return False


def install_drain_handler(role: str, model_service: str) -> bool:
    """Replace uvicorn's SIGTERM handler in this worker with a drain (BentoML's supervisor
    sends SIGTERM to every service's workers at once, and uvicorn alone would stop the model
    service while the front still has requests for it):

    * front: /readyz turns 503 and new requests get 503 at once (http_boundary.DRAIN); once
      the accepted requests are answered, or after GENRE_DRAIN_SECONDS, uvicorn exits.
    * model: keeps serving until no front worker is left beside it (or the drain limit plus
      5 s has passed), then uvicorn exits after the batches in flight.

    False (and uvicorn's own handling) when the worker is not run by uvicorn's Server."""
    server = uvicorn_server()
    if server is None:
        logger.warning(
            "SIGTERM handler is not uvicorn's (%r): no graceful drain",
            signal.getsignal(signal.SIGTERM),
        )
        return False
    limit = drain_seconds()
    started = threading.Event()

    def wait_front() -> None:
        DRAIN.draining = True
        t0, deadline = time.monotonic(), time.monotonic() + limit
        logger.info("SIGTERM: draining %d request(s), at most %g s", DRAIN.in_flight, limit)
        while DRAIN.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        left = DRAIN.in_flight
        logger.info(
            "drained in %.1f s (%d request(s) cut off): exiting", time.monotonic() - t0, left
        )
        server.should_exit = True
        if left:
            server.force_exit = True

    def wait_model() -> None:
        t0, deadline = time.monotonic(), time.monotonic() + limit + 5
        logger.info("SIGTERM: model service serves until the front has drained")
        while _front_alive(model_service) and time.monotonic() < deadline:
            time.sleep(0.1)
        logger.info("front gone after %.1f s: model service exiting", time.monotonic() - t0)
        server.should_exit = True

    def on_sigterm(signum, frame) -> None:
        if not started.is_set():
            started.set()
            threading.Thread(
                target=wait_front if role == "front" else wait_model,
                name=f"drain-{role}",
                daemon=True,
            ).start()

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        logger.warning("cannot install the SIGTERM drain handler outside the main thread")
        return False
    return True
