"""Mood, GEMS emotions, voice and instruments from musicnn's window features (NumPy only; the
front service, the tagger, `catalog reindex` and training share it).

    heads = MoodHeads.load(path)                      # moods.npz beside musicnn's head.npz
    heads.track(stats)        # {"mood", "gems", "voice", "instruments"} of a track
    heads.windows(features, stats)   # per window: (quadrant, arousal, valence)

`stats` is the track's pooled features [mean, spread] over its windows (scoring's
`TrackResult.embedding`, what the catalog keeps), `features` its (n_windows, 500) window
outputs: per backbone (MSD, then MTT) the 200 penultimate units and the 50 tag scores.

The heads are one linear map of the statistics, trained by `python -m train moods`
(train/moods.py): columns 0-3 the calibrated logits of the four arousal-valence quadrants
(Q1 exuberant, Q2 anxious, Q3 sad, Q4 calm), 4 and 5 the logits of high arousal and of
positive valence, 6-14 the share of listeners feeling each GEMS emotion (clipped to
[0, 1]). A window gets the map of its own features with the track's spread, so the
windows' logits average to the track's. Voice and instruments are not trained here: they
are musicnn's own tag scores (the mean over windows, of the strongest of synonymous tags).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MOODS_FILE = "moods.npz"
QUADRANTS = ("Q1", "Q2", "Q3", "Q4")
GEMS = (
    "amazement",
    "solemnity",
    "tenderness",
    "nostalgia",
    "calmness",
    "power",
    "joyful_activation",
    "tension",
    "sadness",
)
# The taggers' outputs in the window features: (first column, tag names) per backbone.
# Voice: the strongest of each group's synonymous tags (MTT splits one idea over several);
# "instrumental" is the no-vocal group's share of it and the vocal group's strongest tags,
# I / (I + V): the raw no-vocal tags stay under 0.2 even on classical music (on Emotify
# classical scores 0.95 of its clips >= 0.5, pop 0.13, rock 0.04: train/evals/voice_tags.py).
NO_VOCAL = ("MSD:instrumental", "MTT:no vocals", "MTT:no vocal", "MTT:no voice")
VOCAL = ("MTT:vocal", "MTT:vocals", "MTT:singing", "MTT:voice", "MTT:female", "MTT:male",
         "MTT:woman", "MTT:man", "MTT:male vocal", "MTT:female vocal", "MTT:male voice",
         "MTT:female voice", "MSD:female vocalists", "MSD:male vocalists",
         "MSD:female vocalist", "MTT:choir", "MTT:opera", "MTT:choral")  # fmt: skip
VOICE = {
    "female": (
        "MSD:female vocalists",
        "MSD:female vocalist",
        "MTT:female",
        "MTT:woman",
        "MTT:female vocal",
        "MTT:female voice",
    ),  # fmt: skip
    "male": ("MSD:male vocalists", "MTT:male", "MTT:man", "MTT:male vocal", "MTT:male voice"),
}
VOICE_FIELDS = ("instrumental", *VOICE)  # the reply's `voice` block, in order
INSTRUMENTS = {
    "piano": ("MTT:piano",),
    "guitar": ("MTT:guitar", "MSD:guitar"),
    "strings": ("MTT:strings",),
    "violin": ("MTT:violin",),
    "cello": ("MTT:cello",),
    "drums": ("MTT:drums",),
    "synth": ("MTT:synth",),
    "flute": ("MTT:flute",),
    "harp": ("MTT:harp",),
    "harpsichord": ("MTT:harpsichord",),
    "sitar": ("MTT:sitar",),
    "choir": ("MTT:choir", "MTT:choral"),
}


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class MoodHeads:
    kernel: np.ndarray  # (2 * n_features, 15): [mean, spread] -> the 15 outputs above
    bias: np.ndarray  # (15,)
    tag_columns: dict  # "MSD:instrumental" -> its column among the window features
    card: dict  # metrics, data, notice (json in the file)

    @property
    def n_features(self) -> int:
        return self.kernel.shape[0] // 2

    def _index(self, groups: dict) -> dict[str, np.ndarray]:
        return {k: np.array([self.tag_columns[t] for t in tags]) for k, tags in groups.items()}

    def __post_init__(self):
        self._voice = self._index(VOICE)
        self._sung = self._index({"no": NO_VOCAL, "yes": VOCAL})
        self._instruments = self._index(INSTRUMENTS)

    def logits(self, stats) -> np.ndarray:
        s = np.asarray(stats, dtype=np.float64)
        if s.shape[-1] != self.kernel.shape[0]:
            raise ValueError(
                f"mood heads take {self.kernel.shape[0]} pooled features, got {s.shape[-1]}"
            )
        return s @ self.kernel + self.bias

    def track(self, stats) -> dict:
        """The reply's mood, gems, voice and instruments blocks for one track's statistics."""
        z = self.logits(stats)
        p = _softmax(z[:4])
        mean = np.asarray(stats, dtype=np.float64)[: self.n_features]
        return {
            "mood": {
                "quadrant": QUADRANTS[int(np.argmax(p))],
                "probabilities": {q: round(float(v), 3) for q, v in zip(QUADRANTS, p)},
                "arousal": round(float(_sigmoid(z[4])), 3),
                "valence": round(float(_sigmoid(z[5])), 3),
            },
            "gems": {g: round(float(v), 3) for g, v in zip(GEMS, np.clip(z[6:15], 0.0, 1.0))},
            "voice": self._voices(mean),
            "instruments": {
                k: round(float(mean[c].max()), 3) for k, c in self._instruments.items()
            },
        }

    def _voices(self, mean: np.ndarray) -> dict:
        """instrumental, female, male: shares of one whole. The sung share (1 - instrumental)
        is split by the strongest female and male tags, f / (f + m): the raw tags stay at
        0.05-0.3 on singing, so as scores no clip would ever reach 0.5 (the filters' and
        watches' threshold) and "male voice" would find nothing."""
        no, yes = (float(mean[self._sung[k]].max()) for k in ("no", "yes"))
        instrumental = no / max(no + yes, 1e-9)
        f, m = (float(mean[self._voice[k]].max()) for k in ("female", "male"))
        sung = (1.0 - instrumental) / max(f + m, 1e-9)
        return {
            "instrumental": round(instrumental, 3),
            "female": round(sung * f, 3),
            "male": round(sung * m, 3),
        }

    def windows(self, features, stats) -> list[tuple[str, float, float]]:
        """(quadrant, arousal, valence) of each window: its own features, the track's spread."""
        f = np.asarray(features, dtype=np.float64)
        d = self.n_features
        z = f @ self.kernel[:d] + np.asarray(stats, dtype=np.float64)[d:] @ self.kernel[d:]
        z = z + self.bias
        return [
            (QUADRANTS[int(np.argmax(r[:4]))], round(float(_sigmoid(r[4])), 3),
             round(float(_sigmoid(r[5])), 3))
            for r in z
        ]  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        names = sorted(self.tag_columns, key=self.tag_columns.get)
        with open(path, "wb") as f:
            np.savez(
                f,
                kernel=self.kernel.astype(np.float32),
                bias=self.bias.astype(np.float32),
                tag_names=np.array(names),
                tag_cols=np.array([self.tag_columns[n] for n in names]),
                card=np.array(json.dumps(self.card)),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MoodHeads":
        with np.load(path) as z:
            cols = {str(n): int(c) for n, c in zip(z["tag_names"], z["tag_cols"])}
            return cls(
                z["kernel"].astype(np.float64),
                z["bias"].astype(np.float64),
                cols,
                json.loads(str(z["card"])),
            )


def tag_columns(tags: dict[str, list[str]], order=("MSD_musicnn", "MTT_musicnn")) -> dict:
    """'MSD:<tag>' -> column in the window features (per backbone: 200 penultimate units, then
    its tags), from the taggers' tag lists (models.musicnn.TAGS, at training time)."""
    out, offset = {}, 0
    for name in order:
        offset += 200
        for i, t in enumerate(tags[name]):
            out[f"{name.split('_')[0]}:{t}"] = offset + i
        offset += len(tags[name])
    return out
