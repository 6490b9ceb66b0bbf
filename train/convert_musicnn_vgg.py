"""Convert musicnn's pretrained TF1 VGG checkpoints (MSD_vgg, MTT_vgg) to Keras 3 weights.

    python -m train.convert_musicnn_vgg                  # pip-downloads musicnn==0.1.0
    python -m train.convert_musicnn_vgg --wheel musicnn-0.1.0-py3-none-any.whl  # or unpacked

Writes models/musicnn/{MSD,MTT}_vgg.weights.h5 (for
genre_detector.models.musicnn_vgg.build_vgg). A conversion-time step only: nothing downloads
at run time. Every checkpoint variable except Adam's slots and beta powers must be used
exactly once, and every Keras weight must be set, or the conversion fails. (The licence
notice in models/musicnn/LICENSE is written by train.convert_musicnn.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from train.convert_musicnn import OPTIMIZER_STATE, _download_wheel, _package_dir, read_checkpoint

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Keras layer (after the "<backbone>_" prefix) -> TF1 variable scope in the checkpoint:
# musicnn/models.py's vgg() names its convs "1CNN".."5CNN"; the batch normalisations are
# numbered in creation order (input, then after each conv); the output dense is "dense".
LAYER_TO_SCOPE = {
    "input_bn": "batch_normalization",
    **{f"conv{i}": f"{i}CNN" for i in range(1, 6)},
    **{f"bn{i}": f"batch_normalization_{i}" for i in range(1, 6)},
    "logits": "dense",
}


def convert(name: str, ckpt: dict[str, np.ndarray], out: Path) -> int:
    """Set every weight of build_vgg(name) from `ckpt`; save; return the parameter count."""
    from genre_detector.models.musicnn_vgg import build_vgg

    model = build_vgg(name, weights=False)
    wanted = {k for k in ckpt if not any(s in k for s in OPTIMIZER_STATE)}
    used: list[str] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        scope = LAYER_TO_SCOPE[layer.name.removeprefix(f"{name}_")]
        values = []
        for w in layer.weights:
            key = f"{scope}/{w.name}"
            value = ckpt[key]
            assert value.shape == tuple(w.shape), (key, value.shape, w.shape)
            values.append(value)
            used.append(key)
        layer.set_weights(values)
    assert len(used) == len(set(used)), "a checkpoint variable was used twice"
    assert set(used) == wanted, f"unused: {sorted(wanted - set(used))}"
    n_set = sum(len(layer.weights) for layer in model.layers)
    assert n_set == len(used) == len(model.weights), (n_set, len(used), len(model.weights))
    model.save_weights(out)
    reloaded = build_vgg(name, weights=False)
    reloaded.load_weights(out)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    return model.count_params()


def main(argv: list[str] | None = None) -> int:
    from genre_detector.models.musicnn import WEIGHTS_DIR
    from genre_detector.models.musicnn_vgg import VGG_BACKBONES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--wheel",
        type=Path,
        help="musicnn-0.1.0 wheel or unpacked folder (default: pip download musicnn==0.1.0)",
    )
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"default: {WEIGHTS_DIR}")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="musicnn-vgg-convert-") as scratch_name:
        scratch = Path(scratch_name)
        wheel = args.wheel or _download_wheel(scratch)
        package = _package_dir(wheel, scratch)
        args.out.mkdir(parents=True, exist_ok=True)
        for name in VGG_BACKBONES:
            out = args.out / f"{name}.weights.h5"
            n = convert(name, read_checkpoint(package / name, scratch), out)
            print(f"{name}: {n:,} parameters -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
