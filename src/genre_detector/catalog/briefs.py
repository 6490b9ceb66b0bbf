"""A free-text brief ("calm instrumental jazz around 90 BPM") read into filters
(catalog.filters), saying which words became which filter and which were not understood.

    reading = briefs.parse("calm instrumental jazz around 90 BPM", labels)
    reading.filters          # Filters(genres=("jazz",), quadrants=(("Q4", 1.0),), ...)
    reading.as_dict()        # {"brief", "understood": [{"words", "filter", "value", ...}],
                             #  "not_understood": [...], "ignored": [...]}

The vocabulary (docs/api.md#search):
* genre names (the served labels) and a few spellings of them (hip hop, rock, r&b, edm);
* mood words: every AllMusic mood word of ../shared/data/moods/4q.csv given to at least
  MIN_CLIPS clips, mapped by the data to the smallest set of quadrants holding >= COVER of
  its clips (most words: one quadrant; "bitter": Q3 and Q2), weighted by those shares
  (catalog/brief_vocabulary.py, made by `python -m genre_detector.catalog.briefs`). Several
  mood words pool their clips' shares. The four GEMS emotions are not mood words of 4q.csv
  and no clip has both labels, so the data cannot map a mood word to GEMS: the GEMS names
  themselves (tenderness, nostalgia, calmness, power, joyful activation, ...: nouns, as in
  emotify_gems.csv) ask for that emotion at its 75th percentile over the Emotify clips;
* tempo: "slow" (40-85), "mid-tempo"/"moderate"/"medium" (85-120), "fast"/"uptempo"
  (120-200), "90 bpm" / "around 90 bpm" / "~90bpm" (90 +/- 5 %, at least 5 BPM), "85-95
  bpm", "between 85 and 95 bpm";
* keys: "A minor", "C# major", "F sharp minor", "Am", "Bbm", "8A"; "compatible" or
  "harmonic" also accepts the Camelot neighbours;
* voice: instrumental / "no vocals" / "without vocals"; vocal(s) / singing / voice; female /
  woman / "female vocals"; male / man / "male vocals";
* instruments: the tagger's instrument tags (piano, guitar, strings, ...);
* filler words (a, with, and, music, some, ...) are ignored and listed as such.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from genre_detector.catalog import filters as F
from genre_detector.catalog.filters import Filters
from genre_detector.catalog.records import GEMS, QUADRANTS
from genre_detector.errors import GenreError
from genre_detector.models import mood_heads

MAX_BRIEF = 500  # characters
MIN_CLIPS = 3  # a mood word given to fewer clips of 4q.csv says too little
COVER = 0.6  # a mood word's quadrants: the fewest holding this share of its clips
GEMS_PERCENTILE = 75

GENRE_ALIASES = {
    "hip hop": "hiphop",
    "hip-hop": "hiphop",
    "rap": "hiphop",
    "rock": "pop-rock",
    "pop": "pop-rock",
    "pop rock": "pop-rock",
    "r&b": "rnb",
    "r'n'b": "rnb",
    "metal": "pop-rock",
    "soul": "rnb",
    "edm": "electronic",
    "electronica": "electronic",
}
TEMPO_WORDS = {
    "slow": (40.0, 85.0),
    "mid-tempo": (85.0, 120.0),
    "midtempo": (85.0, 120.0),
    "moderate": (85.0, 120.0),
    "medium": (85.0, 120.0),
    "fast": (120.0, 200.0),
    "uptempo": (120.0, 200.0),
    "up-tempo": (120.0, 200.0),
}
VOICE_WORDS = {
    "instrumental": "instrumental",
    "no vocals": "instrumental",
    "no vocal": "instrumental",
    "no voice": "instrumental",
    "no singing": "instrumental",
    "without vocals": "instrumental",
    "vocal": "vocal",
    "vocals": "vocal",
    "singing": "vocal",
    "singer": "vocal",
    "voice": "vocal",
    "sung": "vocal",
    "female": "female",
    "woman": "female",
    "female vocals": "female",
    "female vocal": "female",
    "female voice": "female",
    "female singer": "female",
    "male": "male",
    "man": "male",
    "male vocals": "male",
    "male vocal": "male",
    "male voice": "male",
    "male singer": "male",
}
INSTRUMENTS = tuple(mood_heads.INSTRUMENTS)  # the tagger's instrument names
GEMS_WORDS = {g.replace("_", " "): g for g in GEMS}
# The GEMS names' adjectives, for words the AllMusic data does not already map to quadrants
# (those keep the data's reading: "calm", "sad", "tense" are mood words).
GEMS_ADJECTIVES = {
    "tender": "tenderness",
    "nostalgic": "nostalgia",
    "powerful": "power",
    "joyful": "joyful_activation",
    "solemn": "solemnity",
    "amazing": "amazement",
}
COMPATIBLE_WORDS = {"compatible", "harmonic", "harmonically"}
FILLER = set(
    "a an the and or with some of in on for to by at music track tracks song songs piece "
    "pieces something kind sort style feel feeling vibe vibes like that is are very quite "
    "bit little key tempo bpm mood around about roughly approximately but yet also "
    "sound sounds sounding please i want need looking me my our we".split()
)

_BPM_RANGE = re.compile(
    r"(?:between\s+)?(\d{2,3}(?:\.\d+)?)\s*(?:-|–|to|and)\s*(\d{2,3}(?:\.\d+)?)\s*bpm\b"
)
_BPM_ONE = re.compile(
    r"(?:(?:around|about|roughly|approximately|approx\.?|at|~)\s*)?(\d{2,3}(?:\.\d+)?)\s*bpm\b"
)
_KEY = re.compile(
    r"\b([a-g](?:#|♯|♭|b(?=\s)|\s+sharp|\s+flat|-sharp|-flat)?)\s+(major|minor|maj|min)\b"
)
_KEY_SHORT = re.compile(r"(?<![\w#])([A-G][#b♯♭]?)(m?)(?![\w#])")
_CAMELOT = re.compile(r"\b(1[0-2]|[1-9])([ab])\b")
_TOKEN = re.compile(r"[a-z0-9&'#-]+")


def _vocabulary():
    from genre_detector.catalog import brief_vocabulary

    return brief_vocabulary


@dataclass
class Reading:
    brief: str
    filters: Filters = field(default_factory=Filters)
    understood: list = field(default_factory=list)
    not_understood: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "brief": self.brief,
            "understood": self.understood,
            "not_understood": self.not_understood,
            "ignored": self.ignored,
        }


def _add(reading: Reading, words: str, name: str, value, note: str, new: Filters) -> None:
    try:
        reading.filters = reading.filters.merge(new)
    except GenreError as exc:
        raise GenreError("bad_parameter", f"q: {exc.detail} (at {words!r})") from None
    item = {"words": words, "filter": name, "value": value}
    if note:
        item["note"] = note
    reading.understood.append(item)


def parse(brief: str, labels: list[str]) -> Reading:
    """The brief read into filters. 400 bad_parameter when it is longer than MAX_BRIEF or its
    words ask for things no track can be at once (slow and fast; instrumental with a female
    voice); unknown words are listed in `not_understood`, not refused."""
    if not isinstance(brief, str):
        raise GenreError("bad_parameter", "q: a text")
    if len(brief) > MAX_BRIEF:
        raise GenreError("bad_parameter", f"q: at most {MAX_BRIEF} characters, not {len(brief)}")
    reading = Reading(brief=" ".join(brief.split()))
    original = reading.brief
    text = original.lower()
    spans: list[tuple[int, int]] = []

    def taken(m) -> bool:
        return any(a < m.end() and m.start() < b for a, b in spans)

    for m in _BPM_RANGE.finditer(text):
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
        bpm = F.parse_bpm(f"{lo}-{hi}")
        _add(reading, m.group(0), "bpm", list(bpm), "", Filters(bpm=bpm))
        spans.append(m.span())
    for m in _BPM_ONE.finditer(text):
        if taken(m):
            continue
        bpm = F.parse_bpm(m.group(1))
        note = f"{m.group(1)} BPM +/- 5 % (at least 5 BPM)"
        _add(reading, m.group(0), "bpm", list(bpm), note, Filters(bpm=bpm))
        spans.append(m.span())
    for m in _KEY.finditer(text):
        if taken(m):
            continue
        code = F.parse_key(f"{m.group(1)} {m.group(2)}")
        _add(reading, m.group(0), "key", code, "Camelot code", Filters(key=code))
        spans.append(m.span())
    for m in _KEY_SHORT.finditer(original):  # "Am", "C#", "Bbm": case tells them from words
        if taken(m) or (m.group(1) == "A" and not m.group(2)):  # "A" alone is the article
            continue
        code = F.parse_key(m.group(1) + (" minor" if m.group(2) else " major"))
        _add(reading, m.group(0), "key", code, "Camelot code", Filters(key=code))
        spans.append(m.span())
    for m in _CAMELOT.finditer(text):
        if taken(m):
            continue
        code = F.parse_key(m.group(0))
        _add(reading, m.group(0), "key", code, "Camelot code", Filters(key=code))
        spans.append(m.span())
    masked = list(text)
    for a, b in spans:
        masked[a:b] = " " * (b - a)
    tokens = _TOKEN.findall("".join(masked))
    _words(reading, tokens, labels)
    return reading


def _phrases(labels: list[str]) -> dict:
    """Every word or phrase of the vocabulary -> (filter, value)."""
    vocab = _vocabulary()
    out: dict = {word: ("gems", g) for word, g in GEMS_ADJECTIVES.items()}
    for word in vocab.MOOD_WORDS:
        out[word] = ("mood", word)
    for word, g in GEMS_WORDS.items():
        out[word] = ("gems", g)
    for word in INSTRUMENTS:
        out[word] = ("instrument", word)
        out[word + "s"] = ("instrument", word)
    for word, v in VOICE_WORDS.items():
        out[word] = ("voice", v)
    for word, r in TEMPO_WORDS.items():
        out[word] = ("bpm", r)
    for alias, label in GENRE_ALIASES.items():
        if label in labels:
            out[alias] = ("genre", label)
    for label in labels:
        out[label] = ("genre", label)
        out[label.replace("-", " ")] = ("genre", label)
    for word in COMPATIBLE_WORDS:
        out[word] = ("compatible", True)
    return out


def _words(reading: Reading, tokens: list[str], labels: list[str]) -> None:
    vocab = _vocabulary()
    phrases = _phrases(labels)
    longest = max(len(p.split()) for p in phrases)
    moods: list[str] = []
    compatible = False
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            words = " ".join(tokens[i : i + n])
            if words in phrases:
                break
        else:
            word = tokens[i]
            (reading.ignored if word in FILLER else reading.not_understood).append(word)
            i += 1
            continue
        kind, value = phrases[words]
        i += n
        if kind == "mood":
            moods.append(value)
        elif kind == "gems":
            lo = vocab.GEMS_MINIMUM[value]
            note = f"at least its {GEMS_PERCENTILE}th percentile over the Emotify clips"
            _add(reading, words, "mood", f"{value}>={lo}", note, Filters(gems=((value, lo),)))
        elif kind == "instrument":
            note = "the tagger's score >= 0.5"
            _add(reading, words, "instrument", value, note, Filters(instruments=(value,)))
        elif kind == "voice":
            _add(reading, words, "voice", value, "score >= 0.5", Filters(voice=(value,)))
        elif kind == "bpm":
            _add(reading, words, "bpm", list(value), "", Filters(bpm=value))
        elif kind == "genre":
            _add(reading, words, "genre", value, "", Filters(genres=(value,)))
        elif kind == "compatible":
            compatible = True
            reading.understood.append({"words": words, "filter": "compatible", "value": True})
    if moods:
        shares = quadrant_shares(moods)
        notes = "; ".join(
            f"{w}: " + ", ".join(f"{q} {s:.0%}" for q, s in vocab.MOOD_WORDS[w]["shares"].items())
            + f" of {vocab.MOOD_WORDS[w]['clips']} clips"
            for w in moods
        )  # fmt: skip
        _add(
            reading,
            " ".join(moods),
            "mood",
            dict(shares),
            f"4q.csv: {notes}",
            Filters(quadrants=tuple(shares)),
        )
    if compatible:
        reading.filters = replace(reading.filters, compatible=True)


def quadrant_shares(words: list[str]) -> list[tuple[str, float]]:
    """Mood words -> [(quadrant, share)]: their clips' quadrant shares pooled (each word
    weighs one), the fewest quadrants holding >= COVER of them, their shares renormalised."""
    vocab = _vocabulary()
    total: Counter = Counter()
    for w in words:
        for q, s in vocab.MOOD_WORDS[w]["shares"].items():
            total[q] += s / len(words)
    return cover(total)


def cover(shares) -> list[tuple[str, float]]:
    ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
    kept, held = [], 0.0
    for q, s in ranked:
        kept.append((q, s))
        held += s
        if held >= COVER:
            break
    return [(q, round(s / held, 3)) for q, s in kept]


# ---------------------------------------------------------------- the vocabulary's data


def build(moods_csv: Path, gems_csv: Path) -> tuple[dict, dict]:
    """(MOOD_WORDS, GEMS_MINIMUM) from the shared data: each mood word given to >= MIN_CLIPS
    clips with its clip count and quadrant shares (of its clips), and each GEMS emotion's
    75th percentile over the Emotify clips."""
    import numpy as np

    counts: dict[str, Counter] = defaultdict(Counter)
    with open(moods_csv, newline="") as f:
        for row in csv.DictReader(f):
            for w in row["moods"].split(";"):
                w = " ".join(w.strip().lower().split())
                if w and row["quadrant"] in QUADRANTS:
                    counts[w][row["quadrant"]] += 1
    words = {}
    for w, c in sorted(counts.items()):
        n = sum(c.values())
        if n < MIN_CLIPS:
            continue
        shares = {q: round(k / n, 3) for q, k in sorted(c.items(), key=lambda kv: -kv[1])}
        words[w] = {"clips": n, "shares": shares, "quadrants": dict(cover(shares))}
    with open(gems_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    gems = {
        g: round(float(np.percentile([float(r[g]) for r in rows], GEMS_PERCENTILE)), 3)
        for g in GEMS
    }
    return words, gems


def render(words: dict, gems: dict) -> str:
    lines = [
        "# ruff: noqa: E501",
        '"""Made by `python -m genre_detector.catalog.briefs` from ../shared/data/moods/4q.csv',
        "and moods/emotify_gems.csv: do not edit by hand (tests/test_briefs.py rebuilds it).",
        "",
        "MOOD_WORDS: each AllMusic mood word given to >= 3 clips: its clips, the quadrant shares",
        "of its clips, and the quadrants a brief's word asks for (the fewest holding >= 60 %).",
        'GEMS_MINIMUM: each GEMS emotion\'s 75th percentile over the Emotify clips."""',
        "",
        "# fmt: off",
        "MOOD_WORDS = {",
        *(f"    {w!r}: {v!r}," for w, v in words.items()),
        "}",
        "GEMS_MINIMUM = {",
        *(f"    {g!r}: {v!r}," for g, v in gems.items()),
        "}",
        "# fmt: on",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    from genre_detector.config import settings

    data = Path(settings().data)
    args = list(sys.argv[1:] if argv is None else argv)
    if args:
        data = Path(args[0])
    words, gems = build(data / "moods" / "4q.csv", data / "moods" / "emotify_gems.csv")
    out = Path(__file__).with_name("brief_vocabulary.py")
    out.write_text(render(words, gems))
    print(f"{len(words)} mood words, {len(gems)} GEMS minimums -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
