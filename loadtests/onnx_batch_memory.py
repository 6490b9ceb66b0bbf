"""Memory and time of one stored model's ONNX Runtime session against its batch size.

    python loadtests/onnx_batch_memory.py musicnn            # the session as served (arena on)
    python loadtests/onnx_batch_memory.py musicnn --no-arena

Runs batches of random windows of increasing size through `model.onnx` of the store entry
(BENTOML_HOME) with the service's session options, and prints per batch size the best of
five runs in ms per window and the process RSS above the loaded session. ONNX Runtime's
memory arena keeps the largest batch's activations, so this shows what a batch cap
(families.Family.max_batch_windows) buys.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "src")]


def main(argv=None) -> int:
    import onnxruntime as ort
    import psutil

    from genre_detector.runtime.onnx_predictor import session_options
    from genre_detector.runtime.store import ONNX_FILE, resolve, store_name

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="family name, e.g. musicnn")
    p.add_argument("--batches", default="5,10,20,40,80", help="windows per call")
    p.add_argument("--no-arena", action="store_true", help="ONNX Runtime's CPU arena off")
    args = p.parse_args(argv)
    opts = session_options()
    opts.enable_cpu_mem_arena = not args.no_arena
    path = resolve(f"{store_name(args.model)}:latest").path_of(ONNX_FILE)
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    proc = psutil.Process()
    base = proc.memory_info().rss
    print(f"{args.model}, arena {'off' if args.no_arena else 'on'}, input {inp.shape}")
    for b in (int(x) for x in args.batches.split(",")):
        x = np.random.default_rng(0).random((b, *inp.shape[1:]), dtype=np.float32)
        session.run(None, {inp.name: x})
        times = []
        for _ in range(5):
            t = time.perf_counter()
            session.run(None, {inp.name: x})
            times.append(time.perf_counter() - t)
        best = min(times)
        print(
            f"  {b:4d} windows: {best / b * 1000:6.1f} ms/window, "
            f"RSS +{(proc.memory_info().rss - base) / 2**20:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
