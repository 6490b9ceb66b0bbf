"""Tempo and key against librosa 0.11, side by side on the same clips.

    python -m train.evals.describe_bench                 # GTZAN ten + synthetic, a table
    python -m train.evals.describe_bench --json out.json --profiles

For this project (genre_detector.audio.analysis + scoring.descriptors, what score_track
reports) and for librosa (feature.tempo on its onset strength; chroma_stft summed and
correlated with Krumhansl's profiles, the usual recipe), on the ten annotated GTZAN samples
(shared/data/gtzan-samples/annotations.csv) and on synthetic audio with a known tempo and key
(train.evals.synthetic_audio): tempo Acc1 (within 4 %), Acc2 (also at x2, x1/2, x3, x1/3),
the MIREX weighted key score (1 same key, 0.5 a fifth above, 0.3 relative, 0.2 parallel), and
CPU ms per 30 s of audio (tempo + key from the decoded waveform; the best of 3 runs).
Ten clips are a smoke test; the synthetic cases are the rest.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from train.evals.synthetic_audio import PITCH_CLASSES, SAMPLE_RATE, synthetic_cases

GTZAN = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "gtzan-samples"


def tempo_hits(est: float | None, ref: float) -> tuple[bool, bool]:
    """(Acc1, Acc2): within 4 % of the reference; also at 2, 1/2, 3 or 1/3 of it."""
    if est is None:
        return False, False
    near = [abs(est / (ref * f) - 1) <= 0.04 for f in (1, 2, 0.5, 3, 1 / 3)]
    return near[0], any(near)


def key_score(est: tuple | None, ref: tuple) -> float:
    """MIREX weighted score of (tonic, mode) against the reference (tonic, mode)."""
    if not est or est[0] is None:
        return 0.0
    e, r = PITCH_CLASSES.index(est[0]), PITCH_CLASSES.index(ref[0])
    if est == ref:
        return 1.0
    if est[1] == ref[1] and (e - r) % 12 == 7:
        return 0.5
    if ref[1] == "major" and est[1] == "minor" and (e - r) % 12 == 9:
        return 0.3
    if ref[1] == "minor" and est[1] == "major" and (e - r) % 12 == 3:
        return 0.3
    if e == r:
        return 0.2
    return 0.0


def ours(wave: np.ndarray, sr: int) -> dict:
    from genre_detector.audio.analysis import analyse
    from genre_detector.scoring.descriptors import describe

    d = describe(analyse(wave, sr))
    return {
        "bpm": d.tempo.bpm,
        "alternative_bpm": d.tempo.alternative_bpm,
        "tempo_confidence": d.tempo.confidence,
        "key": (d.key.tonic, d.key.mode),
        "key_confidence": d.key.confidence,
    }


KRUMHANSL = (
    (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
    (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
)


def librosa_estimate(wave: np.ndarray, sr: int) -> dict:
    import librosa

    env = librosa.onset.onset_strength(y=wave, sr=sr)
    bpm = float(librosa.feature.tempo(onset_envelope=env, sr=sr)[0])
    chroma = librosa.feature.chroma_stft(y=wave, sr=sr).sum(axis=1)
    best, key = -2.0, (None, None)
    if np.any(chroma):
        c = (chroma - chroma.mean()) / (chroma.std() + 1e-12)
        for m, mode in enumerate(("major", "minor")):
            p = np.asarray(KRUMHANSL[m])
            for t in range(12):
                q = np.roll(p, t)
                r = float(np.dot(c, (q - q.mean()) / q.std())) / 12
                if r > best:
                    best, key = r, (PITCH_CLASSES[t], mode)
    return {"bpm": bpm, "key": key}


def cpu_ms(fn, wave, sr, runs: int = 3) -> float:
    """Best-of-`runs` process CPU time of fn(wave, sr), in ms per 30 s of audio."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        fn(wave, sr)
        best = min(best, time.process_time() - t0)
    return 1000.0 * best * 30.0 / (len(wave) / sr)


def gtzan_cases(folder: Path = GTZAN, read=None) -> list[dict]:
    """The annotated GTZAN clips; `read(path) -> (wave, sr)` (default: the service's decode;
    describe_peers passes soundfile's, for a venv without this project's decoders)."""
    if read is None:
        from genre_detector.audio.decode import decode as read

    out = []
    with open(folder / "annotations.csv") as f:
        for row in csv.DictReader(f):
            wave, sr = read(str(folder / row["file"]))
            key = (row["tonic"], row["mode"]) if row["tonic"] else None
            out.append({"name": row["file"], "wave": wave, "sr": sr, "bpm": float(row["bpm"]),
                        "key": key})  # fmt: skip
    return out


def synthetic_set() -> list[dict]:
    """The synthetic cases in the form gtzan_cases gives."""
    return [
        {
            "name": c.name,
            "wave": c.wave,
            "sr": SAMPLE_RATE,
            "bpm": c.bpm,
            "key": (c.tonic, c.mode) if c.tonic else None,
        }  # fmt: skip
        for c in synthetic_cases()
    ]


def run(gtzan: list[dict], synthetic: list[dict]) -> dict:
    systems = {"genre_detector": ours, "librosa 0.11": librosa_estimate}
    librosa_estimate(np.zeros(SAMPLE_RATE * 4, np.float32) + 1e-3, SAMPLE_RATE)  # numba warm-up
    ours(np.zeros(SAMPLE_RATE * 4, np.float32), SAMPLE_RATE)
    report = {}
    for set_name, cases in (("gtzan", gtzan), ("synthetic", synthetic)):
        if not cases:
            continue
        for sys_name, fn in systems.items():
            rows = []
            for c in cases:
                est = fn(c["wave"], c["sr"])
                row = {"name": c["name"], "est_bpm": est["bpm"], "est_key": est["key"]}
                if c["bpm"] is not None:
                    row["acc1"], row["acc2"] = tempo_hits(est["bpm"], c["bpm"])
                if c["key"] is not None:
                    row["key_score"] = key_score(est["key"], c["key"])
                row["ms"] = cpu_ms(fn, c["wave"], c["sr"])
                row.update({k: v for k, v in est.items() if k.endswith("confidence")})
                rows.append(row)
            report[(set_name, sys_name)] = rows
    return report


def summary(rows: list[dict]) -> dict:
    tempo = [r for r in rows if "acc1" in r]
    keys = [r for r in rows if "key_score" in r]
    return {
        "n_tempo": len(tempo),
        "acc1": float(np.mean([r["acc1"] for r in tempo])) if tempo else None,
        "acc2": float(np.mean([r["acc2"] for r in tempo])) if tempo else None,
        "n_key": len(keys),
        "mirex": float(np.mean([r["key_score"] for r in keys])) if keys else None,
        "ms_per_30s": float(np.median([r["ms"] for r in rows])),
    }


def table(report: dict) -> str:
    lines = [
        "| clips | system | tempo n | Acc1 | Acc2 | key n | MIREX weighted | CPU ms / 30 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (set_name, sys_name), rows in report.items():
        s = summary(rows)
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(
            f"| {set_name} | {sys_name} | {s['n_tempo']} | {f(s['acc1'])} | {f(s['acc2'])} | "
            f"{s['n_key']} | {f(s['mirex'])} | {s['ms_per_30s']:.1f} |"
        )
    return "\n".join(lines)


def details(report: dict) -> str:
    lines = []
    for (set_name, sys_name), rows in report.items():
        lines.append(f"\n{set_name} / {sys_name}")
        for r in rows:
            bpm = "-" if r["est_bpm"] is None else f"{r['est_bpm']:.1f}"
            key = " ".join(k for k in (r["est_key"] or ()) if k) or "-"
            marks = "".join(
                [
                    f" acc1={int(r['acc1'])} acc2={int(r['acc2'])}" if "acc1" in r else "",
                    f" key={r['key_score']:.1f}" if "key_score" in r else "",
                ]
            )
            conf = " ".join(f"{k}={v:.2f}" for k, v in r.items() if k.endswith("confidence"))
            lines.append(f"  {r['name']:<28} {bpm:>6} {key:<10}{marks} {conf}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gtzan", type=Path, default=GTZAN, help="folder with annotations.csv")
    p.add_argument("--details", action="store_true", help="one line per clip and system")
    p.add_argument("--json", type=Path, help="write the per-clip results here")
    args = p.parse_args(argv)
    report = run(gtzan_cases(args.gtzan), synthetic_set())
    print(table(report))
    if args.details:
        print(details(report))
    if args.json:
        out = {f"{a}/{b}": rows for (a, b), rows in report.items()}
        args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
