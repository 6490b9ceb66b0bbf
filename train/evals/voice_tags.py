"""How musicnn's voice and instrument tag scores (models.mood_heads: the reply's `voice` and
`instruments`) agree with what the shared clips are known to be. Prints the agreement; it
claims nothing beyond these clips.

    python -m train.evals.voice_tags

"instrumental" is I / (I + V), the strongest no-vocal tag against the strongest vocal tag;
female and male split the sung share (1 - instrumental) by the raw female and male tags.

Known: Emotify's classical clips are instrumental (the classical excerpts; a few may hold
voices); its pop and rock clips mostly have vocals (not annotated: a share, not a truth);
Emotify clips whose title or album names an instrument (piano, violin, guitar, cello,
harpsichord, flute, harp, string) feature it. 4Q names one clip "(Instrumental ...)".
"""

from __future__ import annotations

import csv
import re
import sys

import numpy as np

from genre_detector.models.mood_heads import INSTRUMENTS, MoodHeads, tag_columns
from train.mood_data import DATA, MUSICNN, clip_features, read_4q, read_emotify
from train.moods import track_stats

NAMED = {"piano": "piano", "violin": "violin", "guitar": "guitar", "cello": "cello",
         "harpsichord": "harpsichord", "flute": "flute", "harp": "harp",
         "string": "strings"}  # fmt: skip


def heads() -> MoodHeads:
    path = MUSICNN / "moods.npz"
    if path.exists():
        return MoodHeads.load(path)
    from genre_detector.models.musicnn import TAGS

    return MoodHeads(np.zeros((1000, 15)), np.zeros(15), tag_columns(TAGS), {})


def named_instrument(title: str) -> str | None:
    words = re.findall(r"[a-z]+", title.lower())
    found = [NAMED[w.rstrip("s")] for w in words if w.rstrip("s") in NAMED]
    return found[0] if found else None


def main() -> int:
    h = heads()
    emo = read_emotify()
    titles = {}
    with open(DATA / "emotify" / "tracks.csv", newline="") as f:
        for row in csv.DictReader(f):
            titles[row["path"]] = f"{row['title']} {row['album']}"
    stats = track_stats(clip_features([c.path for c in emo]))
    out = [h.track(s) for s in stats]
    print("voice, Emotify (instrumental: score >= 0.5):")
    for genre in ("classical", "electronic", "pop", "rock"):
        idx = [i for i, c in enumerate(emo) if c.genre == genre]
        inst = np.array([out[i]["voice"]["instrumental"] for i in idx])
        fem = np.array([out[i]["voice"]["female"] for i in idx])
        male = np.array([out[i]["voice"]["male"] for i in idx])
        print(
            f"  {genre:10s} {len(idx):3d} clips: called instrumental {np.mean(inst >= 0.5):.2f}"
            f" (median score {np.median(inst):.2f}); median female {np.median(fem):.3f},"
            f" male {np.median(male):.3f}; female > male {np.mean(fem > male):.2f}"
        )
    cls = [i for i, c in enumerate(emo) if c.genre == "classical"]
    vocal = [i for i, c in enumerate(emo) if c.genre in ("pop", "rock")]
    a = np.array([out[i]["voice"]["instrumental"] for i in cls])
    b = np.array([out[i]["voice"]["instrumental"] for i in vocal])
    auc = float(np.mean(a[:, None] > b[None, :]) + 0.5 * np.mean(a[:, None] == b[None, :]))
    print(f"  AUC instrumental score, classical vs pop+rock: {auc:.3f}")
    print("instruments named in Emotify titles/albums:")
    hits, ranks = 0, []
    names = list(INSTRUMENTS)
    for i, c in enumerate(emo):
        rel = str(c.path.relative_to(DATA / "emotify"))
        want = named_instrument(titles.get(rel, ""))
        if want is None:
            continue
        scores = out[i]["instruments"]
        order = sorted(names, key=lambda n: -scores[n])
        rank = order.index(want) + 1
        ranks.append(rank)
        hits += rank <= 3
        print(f"  {rel:24s} names {want:11s}: rank {rank:2d} of {len(names)}, "
              f"score {scores[want]:.2f} (top: {order[0]} {scores[order[0]]:.2f})")  # fmt: skip
    if ranks:
        print(f"  named instrument in the top 3: {hits}/{len(ranks)} ({hits / len(ranks):.2f}); "
              f"chance {3 / len(names):.2f}")  # fmt: skip
    titled = [c for c in read_4q() if re.search(r"instrumental", c.title, re.I)]
    for c in titled:
        s = track_stats(clip_features([c.path]))[0]
        print(f"4Q {c.title!r}: instrumental score {h.track(s)['voice']['instrumental']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
