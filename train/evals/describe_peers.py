"""Essentia's tempo and key on describe_bench's clips: a development-time comparison only.

    python -m venv /tmp/essentia && /tmp/essentia/bin/pip install essentia soundfile
    /tmp/essentia/bin/python -m train.evals.describe_peers

Essentia is AGPL: it runs here, in a venv of its own, and nothing in src/ (or the serving
image) imports it. It needs NumPy and soundfile only from this project's side (the synthetic
cases and the metrics of train.evals.describe_bench, GTZAN read with soundfile). Printed in
describe_bench's table format (RhythmExtractor2013 "multifeature" at 44.1 kHz; KeyExtractor
with its default profile and with "edma"); CPU ms per 30 s as there.
"""

from __future__ import annotations

import time

import numpy as np

from train.evals.describe_bench import (
    GTZAN,
    gtzan_cases,
    key_score,
    synthetic_set,
    table,
    tempo_hits,
)

SHARPS = {"Bb": "A#", "Eb": "D#", "Ab": "G#", "Db": "C#", "Gb": "F#"}  # Essentia writes flats


def _systems():
    import essentia.standard as es

    rhythm = es.RhythmExtractor2013(method="multifeature")
    keys = {"essentia (bgate)": es.KeyExtractor(), "essentia (edma)": es.KeyExtractor(
        profileType="edma")}  # fmt: skip

    def make(key_fn):
        def run(wave, sr):
            x = es.Resample(inputSampleRate=sr, outputSampleRate=44100)(wave.astype(np.float32))
            bpm = float(rhythm(x)[0]) if np.any(x) else None
            key, scale, _ = key_fn(x)
            return {"bpm": bpm, "key": (SHARPS.get(key, key), scale)}

        return run

    return {name: make(fn) for name, fn in keys.items()}


def main() -> None:
    import soundfile as sf

    gtzan = gtzan_cases(GTZAN, read=lambda path: sf.read(path, dtype="float32"))
    synthetic = synthetic_set()
    report = {}
    for set_name, cases in (("gtzan", gtzan), ("synthetic", synthetic)):
        for sys_name, fn in _systems().items():
            rows = []
            for c in cases:
                t0 = time.process_time()
                est = fn(c["wave"], c["sr"])
                ms = 1000 * (time.process_time() - t0) * 30.0 / (len(c["wave"]) / c["sr"])
                row = {"name": c["name"], "ms": ms}
                if c["bpm"] is not None:
                    row["acc1"], row["acc2"] = tempo_hits(est["bpm"], c["bpm"])
                if c["key"] is not None:
                    row["key_score"] = key_score(est["key"], c["key"])
                rows.append(row)
            report[(set_name, sys_name)] = rows
    print(table(report))


if __name__ == "__main__":
    main()
