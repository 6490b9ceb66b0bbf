"""Int8 quantization of the served musicnn backbones with ONNX Runtime, measured.

    python -m train.experiments.quantize_musicnn    # .cache/quant/musicnn-int8*.onnx, cost table
    python -m train.crossval --models musicnn --repeats 3 --set features=musicnn-int8 \\
        --json runs/musicnn-int8.json        # accuracy with the int8 (dynamic) features
    python -m train.experiments.compare runs/musicnn-fp32.json runs/musicnn-int8.json     # paired

Two quantizations of models/musicnn/model.onnx (after `quant_pre_process`: ONNX shape
inference and graph cleanup), Conv and MatMul only:

* static (`quantize_static`, QDQ): weights int8 per output channel, activations uint8 (the
  u8s8 pair VNNI runs), scales calibrated (MinMax) on every 3 s window of the ten GTZAN
  sample clips: audio outside the cross-validated corpus, so they learn nothing about the
  scored tracks;
* dynamic (`quantize_dynamic`): weights uint8, activations quantized per batch at run time
  (ConvInteger / DynamicQuantizeMatMul): no calibration data. `INT8` is this one.

Cost: CPU (process) and wall milliseconds per 30 s track (its 5 served windows in one batch)
for fp32 and both int8 graphs, with the service's session options, interleaved in one run so
the ratios are fair; for 1 and 2 threads, with the CPU's VNNI flags. Agreement: relative L2
error of the int8 features against fp32 on the calibration windows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from train.feature_blocks import INT8, onnx_window_features  # INT8: the dynamic graph

REPO = Path(__file__).resolve().parents[2]
FP32 = REPO / "models" / "musicnn" / "model.onnx"
INT8_STATIC = INT8.parent / "musicnn-int8-static.onnx"
CALIBRATION_CLIPS = "gtzan-samples"


def calibration_windows(data_root: Path) -> np.ndarray:
    """Every non-overlapping 3 s musicnn window of the GTZAN sample clips (96, 187) each."""
    from genre_detector.audio.decode import load_audio
    from genre_detector.audio.features import MUSICNN_SETTINGS, cut_windows, log_mel

    s = MUSICNN_SETTINGS
    out = []
    for path in sorted((data_root / CALIBRATION_CLIPS).glob("*.wav")):
        mel = log_mel(load_audio(str(path), sample_rate=s.sample_rate), s)
        starts = np.arange(0, mel.shape[1] - s.window_frames + 1, s.window_frames)
        out.append(cut_windows(mel, starts, s))
    if not out:
        raise FileNotFoundError(f"no calibration clips in {data_root / CALIBRATION_CLIPS}")
    return np.concatenate(out).astype(np.float32)


def cpu_has_vnni() -> bool:
    """Whether this x86 CPU has VNNI (AVX512-VNNI or AVX-VNNI): ONNX Runtime's u8s8 int8
    kernels saturate without it, and its quantization guide then says to quantize with
    reduce_range (7-bit weights)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantize(src: Path, windows: np.ndarray, static: Path, dynamic: Path) -> None:
    """Write the static (calibrated on `windows`) and the dynamic int8 graphs of `src`
    (with reduce_range on a CPU without VNNI, where u8s8 saturates: on a Zen 3 the static
    graph's relative error against fp32 on five real windows is 0.286 without it, 0.094
    with it; the dynamic graph's 0.073 and 0.091)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{name: windows[i : i + 10]} for i in range(0, len(windows), 10)])

        def get_next(self):
            return next(self._it, None)

    static.parent.mkdir(parents=True, exist_ok=True)
    pre = static.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    ops = ["Conv", "MatMul"]
    quantize_static(
        str(pre),
        str(static),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=ops,
        reduce_range=not cpu_has_vnni(),
    )
    quantize_dynamic(
        str(pre),
        str(dynamic),
        weight_type=QuantType.QUInt8,
        op_types_to_quantize=ops,
        reduce_range=not cpu_has_vnni(),
    )
    pre.unlink()


def cost(paths: dict[str, Path], threads: int, repeats: int = 20) -> dict[str, dict]:
    """Per 30 s track (5 windows in one batch): median CPU and wall ms per session."""
    import onnxruntime as ort

    from genre_detector.audio.features import MUSICNN_SETTINGS as s
    from genre_detector.runtime.onnx_predictor import session_options

    x = np.random.default_rng(0).random((5, s.n_mels, s.window_frames), dtype=np.float32) * 4
    sessions = {
        k: ort.InferenceSession(
            str(p), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        for k, p in paths.items()
    }
    feeds = {k: {sess.get_inputs()[0].name: x} for k, sess in sessions.items()}
    for k, sess in sessions.items():  # warm up
        for _ in range(3):
            sess.run(None, feeds[k])
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in sessions}
    for _ in range(repeats):  # interleaved, so drift in load hits both alike
        for k, sess in sessions.items():
            c0, w0 = time.process_time(), time.perf_counter()
            sess.run(None, feeds[k])
            samples[k]["cpu"].append(1000 * (time.process_time() - c0))
            samples[k]["wall"].append(1000 * (time.perf_counter() - w0))
    return {k: {m: float(np.median(v)) for m, v in d.items()} for k, d in samples.items()}


def vnni_flags() -> list[str]:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    except (OSError, IndexError):
        return []
    return sorted({f for f in flags if "vnni" in f})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.experiments.quantize_musicnn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data")),
    )
    p.add_argument("--out", type=Path, default=INT8)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the cost table here")
    args = p.parse_args(argv)
    windows = calibration_windows(args.data)
    t0 = time.time()
    static = args.out.with_name(args.out.stem + "-static.onnx")
    quantize(FP32, windows, static, args.out)
    graphs = {"fp32": FP32, "int8 static": static, "int8 dynamic": args.out}
    print(
        f"quantized {FP32.relative_to(REPO)} ({FP32.stat().st_size / 1e6:.1f} MB; static "
        f"calibrated on {len(windows)} windows) in {time.time() - t0:.0f} s: "
        + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in graphs.items())
    )
    clips = [np.concatenate(list(windows[i : i + 5]), axis=1) for i in range(0, 50, 5)]
    ref = np.concatenate(list(onnx_window_features(FP32, clips)))
    table = {"vnni": vnni_flags(), "relative_l2": {}, "threads": {}}
    for k in ("int8 static", "int8 dynamic"):
        got = np.concatenate(list(onnx_window_features(graphs[k], clips)))
        table["relative_l2"][k] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    print(
        "features against fp32 on 50 calibration windows, relative L2 error: "
        + ", ".join(f"{k} {v:.4f}" for k, v in table["relative_l2"].items())
    )
    print(f"CPU: {os.cpu_count()} cores, VNNI flags: {', '.join(table['vnni']) or 'none'}")
    for threads in (1, 2):
        c = cost(graphs, threads, args.repeats)
        table["threads"][threads] = c
        print(
            f"  {threads} thread(s), ms per 30 s track (5 windows), CPU / wall: "
            + ", ".join(
                f"{k} {v['cpu']:.0f} / {v['wall']:.0f} ({v['cpu'] / c['fp32']['cpu']:.2f}x)"
                for k, v in c.items()
            )
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
