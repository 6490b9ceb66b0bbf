"""Paired comparison of two configurations on the same artist-grouped folds, with bootstrap
intervals over artists.

    python -m train.crossval --repeats 3 --json runs/a.json                  # configuration A
    python -m train.crossval --repeats 3 --set mixup_alpha=0.3 --json runs/b.json   # B
    python -m train.experiments.compare runs/a.json runs/b.json        # every model in both
    python -m train.experiments.compare runs/a.json:cnn runs/b.json:cnn --json runs/a-vs-b.json
    python -m train.experiments.compare runs/a.json:musicnn runs/a.json:ensemble  # one run

Each file is a `train.crossval` result; with `--repeats N` it holds N cross-validations
whose folds come from the seeds --seed, --seed + 1, ... Only repeats with the same seed
(hence the same folds: refused otherwise) are paired, and only tracks scored in every one
of them. Every track's correctness is averaged over the repeats; the difference of
accuracies (B - A) is then the mean over repeats of the paired per-repeat differences.

The 95 % intervals resample *artists*, not tracks (train/intervals.py); the same resampling
gives each configuration's accuracy and per-genre recall with their intervals. An interval that
excludes 0 is the evidence to keep a change; one that includes 0 says the folds cannot tell.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from train.intervals import (
    N_BOOT,
    accuracy_interval,
    correctness,
    paired_difference,
    ratio_intervals,
    recall_intervals,
    repeats_of,
)


def compare(run_a: dict, name_a: str, run_b: dict, name_b: str, n_boot=N_BOOT) -> dict:
    """Paired comparison of model `name_a` of run_a with `name_b` of run_b (see module doc)."""
    if run_a["labels"] != run_b["labels"] or [
        (t["path"], t["genre"], t["artist"]) for t in run_a["tracks"]
    ] != [(t["path"], t["genre"], t["artist"]) for t in run_b["tracks"]]:
        raise ValueError("the two runs have other tracks or labels: not comparable")
    rep_a = {r["seed"]: r for r in repeats_of(run_a)}
    rep_b = {r["seed"]: r for r in repeats_of(run_b)}
    seeds = sorted(set(rep_a) & set(rep_b))
    if not seeds:
        raise ValueError(f"no fold seed in common (A: {sorted(rep_a)}, B: {sorted(rep_b)})")
    for s in seeds:
        if rep_a[s]["folds"] != rep_b[s]["folds"]:
            raise ValueError(f"seed {s}: the two runs' folds differ: not comparable")
    for name, reps in ((name_a, rep_a), (name_b, rep_b)):
        missing = [s for s in seeds if name not in reps[s]["probs"]]
        if missing:
            raise ValueError(f"no out-of-fold predictions of {name!r} for seeds {missing}")
    ca, cb = correctness(run_a, name_a, seeds), correctness(run_b, name_b, seeds)
    scored = ~(np.isnan(ca).any(0) | np.isnan(cb).any(0))
    if not scored.any():
        raise ValueError("no track was scored in every repeat of both runs")
    labels = run_a["labels"]
    tracks = [t for t, ok in zip(run_a["tracks"], scored) if ok]
    groups = [t["artist"].casefold() for t in tracks]  # as train.data.Track.group
    y = np.array([labels.index(t["genre"]) for t in tracks])
    ca, cb = ca[:, scored], cb[:, scored]
    ma, mb = ca.mean(0), cb.mean(0)  # per track, over the repeats
    return {
        "a": name_a,
        "b": name_b,
        "seeds": seeds,
        "n_tracks": int(scored.sum()),
        "n_artists": len(set(groups)),
        "n_boot": n_boot,
        "per_repeat": [
            {"seed": s, "accuracy_a": float(ra.mean()), "accuracy_b": float(rb.mean())}
            for s, ra, rb in zip(seeds, ca, cb)
        ],
        "accuracy_a": accuracy_interval(ma, groups, n_boot),
        "accuracy_b": accuracy_interval(mb, groups, n_boot),
        "difference": paired_difference(ma, mb, groups, n_boot),
        "recall_a": recall_intervals(ma, y, labels, groups, n_boot),
        "recall_b": recall_intervals(mb, y, labels, groups, n_boot),
        "recall_difference": {
            g: {k: v for k, v in zip(("difference", "low", "high"), row)}
            for g, row in _recall_differences(ma, mb, y, labels, groups, n_boot).items()
        },
    }


def _recall_differences(ma, mb, y, labels, groups, n_boot) -> dict:
    member = (np.asarray(y)[:, None] == np.arange(len(labels))[None, :]).astype(float)
    d, lo, hi = ratio_intervals((mb - ma)[:, None] * member, member, groups, n_boot)
    return {
        g: (float(d[k]), float(lo[k]), float(hi[k]))
        for k, g in enumerate(labels)
        if member[:, k].any()
    }


def _pct(d: dict, key: str) -> str:
    return f"{100 * d[key]:.1f} % [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"


def format_result(r: dict) -> str:
    d = r["difference"]
    lines = [
        f"{r['a']} (A) vs {r['b']} (B): {r['n_tracks']} tracks by {r['n_artists']} artists, "
        f"fold seeds {r['seeds']}",
        f"  accuracy A {_pct(r['accuracy_a'], 'accuracy')}, B {_pct(r['accuracy_b'], 'accuracy')}",
        f"  B - A {100 * d['difference']:+.1f} points, 95 % interval over artists "
        f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        + ("  (excludes 0)" if d["low"] > 0 or d["high"] < 0 else "  (includes 0)"),
        "  per repeat (A / B): "
        + ", ".join(
            f"seed {p['seed']} {100 * p['accuracy_a']:.1f} / {100 * p['accuracy_b']:.1f}"
            for p in r["per_repeat"]
        ),
        "  recall per genre, A / B / B - A [95 % interval]:",
    ]
    for g, a in r["recall_a"].items():
        b, rd = r["recall_b"][g], r["recall_difference"][g]
        lines.append(
            f"    {g:12s} {a['recall']:.2f} [{a['low']:.2f}, {a['high']:.2f}]  "
            f"{b['recall']:.2f} [{b['low']:.2f}, {b['high']:.2f}]  "
            f"{rd['difference']:+.2f} [{rd['low']:+.2f}, {rd['high']:+.2f}]  "
            f"({a['n_tracks']} tracks)"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m train.experiments.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", help="A: RUN.json or RUN.json:MODEL (a train.crossval result)")
    p.add_argument("b", help="B: RUN.json or RUN.json:MODEL")
    p.add_argument("--boot", type=int, default=N_BOOT, help="bootstrap resamples of artists")
    p.add_argument("--json", type=Path, help="write the comparisons here")
    args = p.parse_args(argv)

    def parse(spec):
        path, sep, name = spec.rpartition(":")
        if not sep or not name or "/" in name or name.endswith(".json"):
            path, name = spec, None
        return json.loads(Path(path).read_text()), name

    (run_a, name_a), (run_b, name_b) = parse(args.a), parse(args.b)
    if (name_a is None) != (name_b is None):
        p.error("name a model on both sides (RUN.json:MODEL) or on neither")
    pairs = (
        [(name_a, name_b)] if name_a else [(n, n) for n in run_a["models"] if n in run_b["models"]]
    )
    if not pairs:
        p.error("the two runs have no model in common")
    results = []
    for na, nb in pairs:
        try:
            r = compare(run_a, na, run_b, nb, args.boot)
        except ValueError as exc:
            p.error(f"{na} vs {nb}: {exc}")
        results.append(r)
        print(format_result(r), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {"a": args.a, "b": args.b, "comparisons": results}
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
