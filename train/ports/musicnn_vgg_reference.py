"""Reference outputs of the ORIGINAL musicnn 0.1.0 VGG networks, to prove the Keras port.

Runs in the same separate virtual environment as train/ports/musicnn_reference.py (see its
docstring for the recipe; nothing from genre_detector is imported), from the repository
root:

    TF_USE_LEGACY_KERAS=1 /tmp/refvenv/bin/python -m train.ports.musicnn_vgg_reference

(--data ROOT, default $GENRE_DATA or ../shared/data; --out, default
tests/data/musicnn_vgg_reference.npz.) The clips and their log-mel patches are those of
train/ports/musicnn_reference.py (CLIPS and log_mel_patches, imported from it: the non-overlapping
187-frame patches of musicnn.extractor.batch_data, with the log-mel kept in float32). For
each backbone the graph is built with musicnn.models.define_model and restored with
tf.compat.v1.train.Saver exactly as musicnn.extractor.extractor(file, model,
input_length=3) does, and the sigmoid taggram and the pool5 map are fetched for every patch
(0.1.0's extractor refuses MSD_vgg only when its checkpoint fails to restore; the wheel
ships it and it restores).

The .npz holds float32 arrays "<clip>|<backbone>|taggram" (patches, 50) and
"<clip>|<backbone>|pool5" (patches, 2, 1, 128) — the port's "embedding" is computed from
pool5 by the test ([max, mean] over time and frequency per channel) — plus JSON strings
"clips", "command" and "versions". No audio or spectrograms, so it stays small.
"""

from __future__ import annotations

import sys

from train.ports.musicnn_reference import REPO, make_reference

BACKBONES = ("MSD_vgg", "MTT_vgg")


def main(argv: list[str] | None = None) -> int:
    out = REPO / "tests" / "data" / "musicnn_vgg_reference.npz"
    module = "train.ports.musicnn_vgg_reference"
    return make_reference(argv, __doc__, module, BACKBONES, "pool5", out, shape=(2, 1, 128))


if __name__ == "__main__":
    sys.exit(main())
