"""Reference outputs of the ORIGINAL musicnn 0.1.0 networks, to prove the Keras port.

Runs in its own virtual environment (the original is TF1 code; nothing from genre_detector
is imported), from the repository root:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 librosa==0.11.0 \\
        numpy==2.4.6 soundfile
    /tmp/refvenv/bin/pip install --no-deps musicnn==0.1.0
    TF_USE_LEGACY_KERAS=1 /tmp/refvenv/bin/python -m train.ports.musicnn_reference

(--data ROOT, default $GENRE_DATA or ../shared/data; --out, default
tests/data/musicnn_reference.npz.) For each clip in CLIPS and each backbone it does what
musicnn.extractor.extractor(file, model, input_length=3, input_overlap=False) does, with
two deliberate differences:

* batch_data's log-mel is kept in float32: the original casts the mel power to float16
  before log10(10000 x + 1), which overflows to inf under numpy 2 (10000 x > 65504);
* every 187-frame patch gets its own outputs: 0.1.0's extractor returns the first
  patch's `penultimate` (and other features) for every later patch (it concatenates the
  stale first-batch variables), so the graph is built here with musicnn.models.define_model
  and restored with tf.compat.v1.train.Saver exactly as extractor.py does, and both the
  sigmoid taggram and the penultimate are fetched for all patches.

Audio is read with librosa.load(path, sr=16000), as the original does. Patches are the
non-overlapping full 187-frame patches from frame 0 (batch_data with overlap = n_frames).
The .npz holds float32 arrays "<clip>|<backbone>|taggram" (patches, 50) and
"<clip>|<backbone>|penultimate" (patches, 200), plus JSON strings "clips" (paths relative to
the data root), "command" (the command line, as an array) and "versions". No audio or
spectrograms, so it stays small.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CLIPS = ("gtzan-samples/blues.00000.wav", "emotify/classical/1.mp3", "4q/jazz/MT0000315392.mp3")
BACKBONES = ("MSD_musicnn", "MTT_musicnn")
INPUT_SECONDS = 3


def log_mel_patches(path: Path, n_frames: int) -> np.ndarray:
    """musicnn.extractor.batch_data(path, n_frames, overlap=n_frames), float32 log-mel."""
    import librosa
    from musicnn import configuration as config

    audio, sr = librosa.load(path, sr=config.SR)
    audio_rep = librosa.feature.melspectrogram(
        y=audio, sr=sr, hop_length=config.FFT_HOP, n_fft=config.FFT_SIZE, n_mels=config.N_MELS
    ).T
    audio_rep = audio_rep.astype(np.float32)  # the original: np.float16 (see above)
    audio_rep = np.log10(10000 * audio_rep + 1)
    starts = range(0, audio_rep.shape[0] - n_frames + 1, n_frames)
    return np.stack([audio_rep[t : t + n_frames, :] for t in starts])  # (patches, time, freq)


def run_original(name: str, batches: list[np.ndarray], n_frames: int):
    """[(taggram, last feature)] per batch, from musicnn's own graph and checkpoint: the
    last of define_model's outputs is musicnn's penultimate layer, or a VGG's pool5."""
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
        y, *_, last = models.define_model(x, is_training, name, len(labels))
        normalized_y = tf.nn.sigmoid(y)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        saver = tf.compat.v1.train.Saver()
        saver.restore(sess, os.path.dirname(musicnn.__file__) + "/" + name + "/")
        return [
            sess.run([normalized_y, last], feed_dict={x: b, is_training: False}) for b in batches
        ]


def save_reference(out: Path, arrays: dict[str, np.ndarray], module: str, argv) -> None:
    """Write the reference arrays with the clips, the command line and the versions."""
    import librosa
    import soundfile
    import soxr
    import tensorflow as tf

    argv = sys.argv[1:] if argv is None else argv
    command = [
        f"TF_USE_LEGACY_KERAS={os.environ.get('TF_USE_LEGACY_KERAS', '')}",
        sys.executable,
        "-m",
        module,
        *argv,
    ]
    versions = {
        "musicnn": "0.1.0",
        "tensorflow": tf.__version__,
        "librosa": librosa.__version__,
        "numpy": np.__version__,
        "soxr": soxr.__version__,
        "soundfile": soundfile.__version__,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        **arrays,
        clips=np.array(json.dumps(list(CLIPS))),
        command=np.array(json.dumps(command)),
        versions=np.array(json.dumps(versions)),
    )
    print(f"-> {out} ({out.stat().st_size / 1e3:.0f} kB)")


def make_reference(
    argv, doc: str, module: str, backbones, feature: str, out: Path, shape=None
) -> int:
    """Run the original `backbones` on CLIPS and save their taggram and last feature (named
    `feature` in the file, of per-patch `shape` when given) with save_reference: the main
    of this and of train/ports/musicnn_vgg_reference.py."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data")),
    )
    ap.add_argument("--out", type=Path, default=out)
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
    for name in backbones:
        labels = config.MSD_LABELS if "MSD" in name else config.MTT_LABELS
        for clip, (taggram, last) in zip(CLIPS, run_original(name, batches, n_frames)):
            assert shape is None or last.shape[1:] == shape, last.shape
            arrays[f"{clip}|{name}|taggram"] = taggram.astype(np.float32)
            arrays[f"{clip}|{name}|{feature}"] = last.astype(np.float32)
            top = labels[int(taggram.mean(0).argmax())]
            print(f"{clip} {name}: {len(taggram)} patches, top tag {top}")
    save_reference(args.out, arrays, module, argv)
    return 0


def main(argv: list[str] | None = None) -> int:
    out = REPO / "tests" / "data" / "musicnn_reference.npz"
    return make_reference(
        argv, __doc__, "train.ports.musicnn_reference", BACKBONES, "penultimate", out
    )


if __name__ == "__main__":
    sys.exit(main())
