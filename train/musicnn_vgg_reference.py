"""Reference outputs of the ORIGINAL musicnn 0.1.0 VGG networks, to prove the Keras port.

Runs in the same separate virtual environment as train/musicnn_reference.py (see its
docstring for the recipe; nothing from genre_detector is imported), from the repository
root:

    TF_USE_LEGACY_KERAS=1 /tmp/refvenv/bin/python -m train.musicnn_vgg_reference

(--data ROOT, default $GENRE_DATA or ../shared/data; --out, default
tests/data/musicnn_vgg_reference.npz.) The clips and their log-mel patches are those of
train/musicnn_reference.py (CLIPS and log_mel_patches, imported from it: the non-overlapping
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

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from train.musicnn_reference import CLIPS, INPUT_SECONDS, REPO, log_mel_patches, save_reference

BACKBONES = ("MSD_vgg", "MTT_vgg")


def run_original(name: str, batches: list[np.ndarray], n_frames: int):
    """[(taggram, pool5)] per batch, from musicnn's own graph and checkpoint."""
    import warnings

    import musicnn
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import models

    warnings.filterwarnings("ignore", message=r".*is deprecated", category=UserWarning)
    tf.compat.v1.disable_eager_execution()
    labels = config.MSD_LABELS if "MSD" in name else config.MTT_LABELS
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, _pool1, _pool2, _pool3, _pool4, pool5 = models.define_model(
            x, is_training, name, len(labels)
        )
        normalized_y = tf.nn.sigmoid(y)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        saver = tf.compat.v1.train.Saver()
        saver.restore(sess, os.path.dirname(musicnn.__file__) + "/" + name + "/")
        return [
            sess.run([normalized_y, pool5], feed_dict={x: b, is_training: False}) for b in batches
        ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data")),
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "tests" / "data" / "musicnn_vgg_reference.npz"
    )
    args = ap.parse_args(argv)
    import librosa
    import musicnn  # noqa: F401
    from musicnn import configuration as config

    n_frames = (
        librosa.time_to_frames(
            INPUT_SECONDS, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP
        )
        + 1
    )
    assert n_frames == 187, n_frames
    batches = [log_mel_patches(args.data / clip, n_frames) for clip in CLIPS]
    arrays: dict[str, np.ndarray] = {}
    for name in BACKBONES:
        labels = config.MSD_LABELS if "MSD" in name else config.MTT_LABELS
        for clip, (taggram, pool5) in zip(CLIPS, run_original(name, batches, n_frames)):
            assert pool5.shape[1:] == (2, 1, 128), pool5.shape
            arrays[f"{clip}|{name}|taggram"] = taggram.astype(np.float32)
            arrays[f"{clip}|{name}|pool5"] = pool5.astype(np.float32)
            top = labels[int(taggram.mean(0).argmax())]
            print(f"{clip} {name}: {len(taggram)} patches, top tag {top}")
    save_reference(args.out, arrays, "train.musicnn_vgg_reference", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
