"""Start `bentoml serve` on a free port the way users do, and stop it (for the load tests,
the benchmarks and the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ready(proc: subprocess.Popen, url: str, timeout: float, what: str, logs) -> float:
    """Seconds until GET url answers 200; raises with the tail of logs() if proc exits first
    or timeout passes."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{logs()[-4000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.time() - t0
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout} s:\n{logs()[-4000:]}")


class ServedService:
    """`bentoml serve TARGET` on a free port of 127.0.0.1. By default the checkout's service
    with this interpreter's bentoml and environment; a built Bento is served by passing its
    folder as `target`, another venv's `bentoml`, and `inherit_env=False` (only `env`)."""

    def __init__(
        self,
        env: dict | None = None,
        target: str = "service:GenreDetector",
        cwd: Path = REPO,
        bentoml: Path | None = None,
        inherit_env: bool = True,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="bentoml-serve-", suffix=".log", delete=False)
        bentoml = bentoml or Path(sys.executable).with_name("bentoml")
        self.proc = subprocess.Popen(
            [str(bentoml), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd,
            env={**(os.environ if inherit_env else {}), **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pin(self, cpus: set[int]) -> int:
        """Keep `bentoml serve` and its workers, every thread of them, on `cpus` (Linux);
        the number of threads moved. A load generator on the other CPUs then no longer
        competes with the service for a core."""
        import psutil

        root = psutil.Process(self.proc.pid)
        moved = 0
        for p in [root, *root.children(recursive=True)]:
            for thread in p.threads():
                try:
                    os.sched_setaffinity(thread.id, cpus)
                    moved += 1
                except ProcessLookupError:
                    pass
        return moved

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) used so far by `bentoml serve` and its workers; 0 once
        it is gone."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def wait_ready(self, timeout: float = 180) -> float:
        return wait_http_ready(self.proc, f"{self.url}/readyz", timeout, "bentoml serve", self.logs)

    def logs(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
