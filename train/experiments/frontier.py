"""Accuracy against CPU per 30 s track for the musicnn configurations tried, and today's
budget: the default request may cost at most BUDGET x today's (decode + both feature sets
+ the five models).

    python -m train.experiments.frontier runs/blocks-musicnn.json runs/blocks-int8.json \\
        runs/blocks-musicnn-vgg.json ...                 # train.crossval results of musicnn

Each result's musicnn settings (`features`, `head`) name the graphs a request would run:
`musicnn` = the shipped models/musicnn/model.onnx, `musicnn-int8` = the dynamic int8 graph
(`python -m train.experiments.quantize_musicnn`), `vgg` = both VGG taggers exported to ONNX
here (once, cached under .cache/quant). Cost, measured in this run on one real 30 s clip: CPU
(process) milliseconds, median of --repeats, of decode, features, the four research models (their
shipped ONNX graphs) and each musicnn configuration's graphs on its 5 windows, with the
service's session options and threads. Accuracy: each result's accuracy over its repeats,
with the artist-bootstrap interval (train.intervals), and the paired difference against
the first result (same fold seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[2]
BUDGET = 1.25
SHIPPED = "musicnn"  # the features the served model reads (FitConfig.features' default)
CLIP = "gtzan-samples/blues.00000.wav"  # 30 s
QUANT = REPO / ".cache" / "quant"
RESEARCH = ("feedforward", "lenet", "cnn", "lstm")


def vgg_graph() -> Path:
    """Both VGG taggers as one ONNX graph, exported once per version of their weights and
    code (train.vgg_embed.fingerprint; TensorFlow only here), written atomically."""
    import tempfile

    from genre_detector.audio.features import MUSICNN_SETTINGS
    from genre_detector.models.onnx_export import export_onnx
    from train.vgg_embed import _pair, fingerprint

    model = _pair()
    out = QUANT / f"vgg-{fingerprint(model)}.onnx"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "vgg.keras"
        model.save(keras_file)
        export_onnx(keras_file, Path(tmp) / "vgg.onnx", MUSICNN_SETTINGS)
        os.replace(Path(tmp) / "vgg.onnx", out.with_suffix(".tmp"))
    out.with_suffix(".tmp").replace(out)
    return out


def graphs_of(features: str) -> list[Path]:
    from train.experiments.quantize_musicnn import FP32, INT8
    from train.feature_blocks import block_names

    paths = {"musicnn": FP32, "musicnn-int8": INT8}
    out = [paths[n] if n in paths else vgg_graph() for n in block_names(features)]
    missing = [str(p) for p in out if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{missing}: run `python -m train.experiments.quantize_musicnn` first"
        )
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm up
    out = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        out.append(1000 * (time.process_time() - c0))
    return float(np.median(out))


def stage_costs(data: Path, graph_sets: dict[str, list[Path]], repeats: int) -> dict:
    """CPU ms per 30 s track: fixed stages, and each musicnn configuration's graphs."""
    import onnxruntime as ort

    from genre_detector.audio.decode import decode
    from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings
    from genre_detector.audio.features import extract_feature_sets as features
    from genre_detector.runtime.onnx_predictor import session_options

    def session(path):
        return ort.InferenceSession(
            str(path), sess_options=session_options(), providers=["CPUExecutionProvider"]
        )

    raw = (data / CLIP).read_bytes()
    wave, sr = decode(raw)
    sets = [FeatureSettings(), MUSICNN_SETTINGS]
    batches = features((wave, sr), sets)
    research = [session(REPO / "models" / n / "model.onnx") for n in RESEARCH]
    small = batches[sets[0]].windows.astype(np.float32)
    music = batches[MUSICNN_SETTINGS].windows.astype(np.float32)
    out = {
        "windows": {"research": len(small), "musicnn": len(music)},
        "decode": _median_ms(lambda: decode(raw), repeats),
        "features": _median_ms(lambda: features((wave, sr), sets), repeats),
        "research_four": _median_ms(
            lambda: [s.run(None, {s.get_inputs()[0].name: small}) for s in research], repeats
        ),
        "musicnn": {},
    }
    for name, paths in graph_sets.items():
        ss = [session(p) for p in paths]
        out["musicnn"][name] = _median_ms(
            lambda ss=ss: [s.run(None, {s.get_inputs()[0].name: music}) for s in ss], repeats
        )
    return out


def main(argv=None) -> int:
    from train.experiments.compare import compare
    from train.intervals import accuracy_interval, correctness, repeats_of

    p = argparse.ArgumentParser(
        prog="python -m train.experiments.frontier",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", type=Path, help="train.crossval results (musicnn)")
    p.add_argument(
        "--data", type=Path, default=Path(os.environ.get("GENRE_DATA", REPO.parent / "shared/data"))
    )
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", type=Path, help="write the table here")
    args = p.parse_args(argv)
    runs = {path: json.loads(path.read_text()) for path in args.runs}
    configs, features = {}, {}
    for path, run in runs.items():
        cfg = run["settings"]["musicnn"]
        features[path] = cfg.get("features", "musicnn")
        configs[path] = (
            f"{features[path]} / {cfg.get('head', 'joint')} head, C {cfg['head_c']}, "
            f"classes^-{cfg['class_balance']}"
        )
    # each graph set measured once; today's request always runs the shipped graph
    graph_sets = {f: graphs_of(f) for f in dict.fromkeys([SHIPPED, *features.values()])}
    cost = stage_costs(args.data, graph_sets, args.repeats)
    fixed = cost["decode"] + cost["features"] + cost["research_four"]
    today = fixed + cost["musicnn"][SHIPPED]
    print(
        f"CPU ms per 30 s track ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}): decode "
        f"{cost['decode']:.0f}, features {cost['features']:.0f}, research four "
        f"{cost['research_four']:.0f}; today's request {today:.0f}, budget x{BUDGET} = "
        f"{BUDGET * today:.0f}"
    )
    base = runs[args.runs[0]]
    rows = []
    print(
        "| musicnn features / head | CPU ms (musicnn) | request / today | accuracy [95 %] "
        "| vs first, paired [95 %] (fold seeds) | macro-F1 (repeat 1) |"
    )
    print("|---|---|---|---|---|---|")
    for path, run in runs.items():
        seeds = [r["seed"] for r in repeats_of(run)]
        c = correctness(run, "musicnn", seeds)
        ok = ~np.isnan(c).any(0)
        groups = [t["artist"].casefold() for t, k in zip(run["tracks"], ok) if k]
        acc = accuracy_interval(c[:, ok].mean(0), groups)
        paired = compare(base, "musicnn", run, "musicnn")  # on the fold seeds both ran
        d = paired["difference"]
        ms = cost["musicnn"][features[path]]
        row = {
            "run": str(path),
            "config": configs[path],
            "musicnn_ms": ms,
            "request_ratio": (fixed + ms) / today,
            "accuracy": acc,
            "paired_vs_first": {**d, "seeds": paired["seeds"]},
            "macro_f1": run["models"]["musicnn"].get("pooled", {}).get("macro_f1"),
            "repeats": len(seeds),
        }
        rows.append(row)
        print(
            f"| {configs[path]} | {ms:.0f} | {row['request_ratio']:.2f} | "
            f"{100 * acc['accuracy']:.1f} % [{100 * acc['low']:.1f}, {100 * acc['high']:.1f}] | "
            f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] "
            f"({', '.join(map(str, paired['seeds']))}) | "
            f"{row['macro_f1'] or float('nan'):.3f} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cost": cost, "budget": BUDGET, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
