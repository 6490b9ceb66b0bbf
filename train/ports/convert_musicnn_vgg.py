"""Convert musicnn's pretrained TF1 VGG checkpoints (MSD_vgg, MTT_vgg) to Keras 3 weights.

    python -m train.ports.convert_musicnn_vgg                  # pip-downloads musicnn==0.1.0
    python -m train.ports.convert_musicnn_vgg --wheel musicnn-0.1.0-py3-none-any.whl  # or unpacked

Writes models/musicnn/{MSD,MTT}_vgg.weights.h5 (for
genre_detector.models.musicnn_vgg.build_vgg). A conversion-time step only: nothing downloads
at run time. Every checkpoint variable except Adam's slots and beta powers must be used
exactly once, and every Keras weight must be set, or the conversion fails. (The licence
notice in models/musicnn/LICENSE is written by train.ports.convert_musicnn.)
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from train.ports.convert_musicnn import convert_all, parse_args

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


def main(argv: list[str] | None = None) -> int:
    from genre_detector.models.musicnn_vgg import VGG_BACKBONES, build_vgg

    args = parse_args(argv, __doc__)
    with tempfile.TemporaryDirectory(prefix="musicnn-vgg-convert-") as scratch_name:
        convert_all(args, VGG_BACKBONES, Path(scratch_name), build_vgg, LAYER_TO_SCOPE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
