"""Filters on a track's descriptors, for search, similar-track queries, the owner's list and
watch conditions: one parsed form, from query parameters, a watch's JSON or a free-text brief
(catalog.briefs), merged and checked here.

    f = filters.from_params({"mood": "Q4", "bpm": "85-95", "voice": "instrumental"}, labels)
    f = f.merge(briefs.parse("calm jazz around 90 BPM", labels).filters)   # 400 if they clash
    f.as_dict()      # the reply's `filters` and a watch's stored `conditions`

What each filter keeps (a track whose value is null never meets a filter on it):
* genre: its top genre is one of the genres.
* mood: its most likely quadrant is one of the quadrants (Q1 exuberant, Q2 anxious/angry,
  Q3 sad, Q4 calm); a GEMS emotion with a minimum (`tenderness>=0.4`): that share at least.
* bpm: its tempo within [lo, hi]; with bpm_octave also within [lo/2, hi/2] or [2 lo, 2 hi]
  (a tracker's half or double tempo).
* key: its Camelot code (A minor = 8A); with compatible, also the codes next to it on the
  wheel (7A, 9A and 8B for 8A: the keys a DJ mixes into).
* voice: instrumental, female or male at a score >= 0.5; vocal: instrumental < 0.5.
* instruments: the tagger's score for each named instrument >= 0.5.

How well a track fits (the search's ranking) is the mean of one score in [0, 1] per filter
given: the probability of the asked quadrants (weighted by the words' quadrant shares), the
GEMS shares asked, 1 - |tempo - the range's centre| / its half-width, the voice scores asked,
1 for the key asked (0.75 for a neighbour), and the top genre's probability for a genre
filter; with none of these, the top genre's probability.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from genre_detector.catalog.records import GEMS, QUADRANTS
from genre_detector.errors import GenreError

VOICE_MIN = 0.5
VOICES = ("instrumental", "female", "male", "vocal")
BPM_RANGE = (20.0, 320.0)  # what a tempo filter may ask for
MAX_TEXT = 200  # characters of one structured filter value

PITCHES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
FLATS = {"DB": "C#", "EB": "D#", "GB": "F#", "AB": "G#", "BB": "A#", "CB": "B", "FB": "E"}
SHARPS = {"E#": "F", "B#": "C"}


def _bad(detail: str) -> GenreError:
    return GenreError("bad_parameter", detail)


def camelot(tonic: str, mode: str) -> str:
    """'8A' for A minor, '8B' for C major (as audio.tonality.camelot)."""
    pc = PITCHES.index(tonic)
    major_pc = pc if mode == "major" else (pc + 3) % 12
    return f"{(7 * major_pc + 7) % 12 + 1}{'B' if mode == 'major' else 'A'}"


def tonic_name(text: str) -> str | None:
    """'a', 'Bb', 'C#', 'F sharp', 'E flat' -> a sharp-spelt pitch class, or None."""
    t = text.strip().upper().replace("♯", "#").replace("♭", "B")
    t = re.sub(r"[\s-]*SHARP$", "#", t)
    t = re.sub(r"[\s-]*FLAT$", "B", t)
    t = FLATS.get(t, SHARPS.get(t, t))
    return t if t in PITCHES else None


def neighbours(code: str) -> list[str]:
    """The Camelot codes compatible with `code`: itself, one step either way, its relative."""
    n, letter = int(code[:-1]), code[-1]
    other = "A" if letter == "B" else "B"
    return [code, f"{(n - 2) % 12 + 1}{letter}", f"{n % 12 + 1}{letter}", f"{n}{other}"]


CAMELOT_RE = re.compile(r"^(1[0-2]|[1-9])([AB])$", re.I)
KEY_RE = re.compile(
    r"^([A-G](?:\s*(?:#|♯|b|♭|[\s-]sharp|[\s-]flat))?)\s*(major|minor|maj|min|m)?$", re.I
)


def parse_key(text: str) -> str:
    """'A minor', 'Am', 'C# major', 'Bb', '8A' -> its Camelot code (a tonic alone: major)."""
    t = text.strip()
    m = CAMELOT_RE.match(t)
    if m:
        return f"{int(m.group(1))}{m.group(2).upper()}"
    m = KEY_RE.match(t)
    tonic = tonic_name(m.group(1)) if m else None
    if tonic is None:
        raise _bad(f"key: a key name ('A minor', 'C# major', 'Am') or a Camelot code ('8A'), "
                   f"not {text[:40]!r}")  # fmt: skip
    mode = (m.group(2) or "major").lower()
    return camelot(tonic, "minor" if mode in {"minor", "min", "m"} else "major")


@dataclass(frozen=True)
class Filters:
    genres: tuple[str, ...] = ()
    quadrants: tuple[tuple[str, float], ...] = ()  # (quadrant, weight): any of them
    gems: tuple[tuple[str, float], ...] = ()  # (emotion, minimum): every one
    bpm: tuple[float, float] | None = None
    bpm_octave: bool = False
    key: str | None = None  # the Camelot code asked
    compatible: bool = False
    voice: tuple[str, ...] = ()
    instruments: tuple[str, ...] = ()
    why: dict = field(default_factory=dict, compare=False)  # filter -> where it came from

    def empty(self) -> bool:
        return (
            not (self.genres or self.quadrants or self.gems or self.bpm or self.key or self.voice)
            and not self.instruments
        )

    @property
    def camelot_codes(self) -> list[str]:
        if self.key is None:
            return []
        return neighbours(self.key) if self.compatible else [self.key]

    def bpm_windows(self) -> list[tuple[float, float, float]]:
        """[(lo, hi, factor)]: a tempo in [lo, hi] counts as tempo / factor."""
        if self.bpm is None:
            return []
        lo, hi = self.bpm
        out = [(lo, hi, 1.0)]
        if self.bpm_octave:
            out += [(2 * lo, 2 * hi, 2.0), (lo / 2, hi / 2, 0.5)]
        return out

    def as_dict(self) -> dict:
        out: dict = {}
        if self.genres:
            out["genre"] = list(self.genres)
        if self.quadrants:
            out["mood"] = {q: round(w, 3) for q, w in self.quadrants}
        if self.gems:
            out["gems"] = {g: lo for g, lo in self.gems}
        if self.bpm:
            out["bpm"] = [self.bpm[0], self.bpm[1]]
            out["bpm_octave"] = self.bpm_octave
        if self.key:
            out["key"] = self.key
            out["compatible"] = self.compatible
            out["key_codes"] = self.camelot_codes
        if self.voice:
            out["voice"] = list(self.voice)
        if self.instruments:
            out["instruments"] = list(self.instruments)
        return out

    @classmethod
    def from_dict(cls, d: dict | None) -> "Filters":
        """A watch's stored conditions (as_dict's form) back."""
        d = d or {}
        return cls(
            genres=tuple(d.get("genre") or ()),
            quadrants=tuple((q, float(w)) for q, w in (d.get("mood") or {}).items()),
            gems=tuple((g, float(v)) for g, v in (d.get("gems") or {}).items()),
            bpm=tuple(d["bpm"]) if d.get("bpm") else None,
            bpm_octave=bool(d.get("bpm_octave")),
            key=d.get("key"),
            compatible=bool(d.get("compatible")),
            voice=tuple(d.get("voice") or ()),
            instruments=tuple(d.get("instruments") or ()),
        )

    def merge(self, other: "Filters") -> "Filters":
        """Both sets of filters at once (a brief's beside the parameters): 400 bad_parameter
        naming the clash when no track could meet both."""
        genres = _both("genre", self.genres, other.genres)
        quadrants = self.quadrants or other.quadrants
        if self.quadrants and other.quadrants:
            mine = dict(self.quadrants)
            quadrants = tuple((q, mine[q] + w) for q, w in other.quadrants if q in mine)
            if not quadrants:
                raise _bad(
                    "contradictory filters: mood "
                    f"{'/'.join(q for q, _ in self.quadrants)} and "
                    f"{'/'.join(q for q, _ in other.quadrants)} have no quadrant in common"
                )
        gems = dict(self.gems)
        for g, lo in other.gems:
            gems[g] = max(lo, gems.get(g, 0.0))
        bpm = self.bpm or other.bpm
        octave = self.bpm_octave or other.bpm_octave
        if self.bpm and other.bpm:
            bpm = (max(self.bpm[0], other.bpm[0]), min(self.bpm[1], other.bpm[1]))
            if bpm[0] > bpm[1]:
                raise _bad(
                    f"contradictory filters: bpm {_range(self.bpm)} and {_range(other.bpm)} "
                    "do not overlap"
                )
        key = self.key or other.key
        compatible = self.compatible or other.compatible
        if self.key and other.key and self.key != other.key:
            if other.key not in neighbours(self.key) or not compatible:
                raise _bad(f"contradictory filters: key {self.key} and key {other.key}")
        voice = tuple(dict.fromkeys(self.voice + other.voice))
        check_voice(voice)
        merged = Filters(
            genres=genres,
            quadrants=quadrants,
            gems=tuple(gems.items()),
            bpm=bpm,
            bpm_octave=octave,
            key=key,
            compatible=compatible,
            voice=voice,
            instruments=tuple(dict.fromkeys(self.instruments + other.instruments)),
            why={**other.why, **self.why},
        )
        return merged


def _range(r) -> str:
    return f"{r[0]:g}-{r[1]:g}"


def _both(name: str, a: tuple, b: tuple) -> tuple:
    if a and b:
        common = tuple(x for x in a if x in b)
        if not common:
            raise _bad(f"contradictory filters: {name} {'/'.join(a)} and {'/'.join(b)}")
        return common
    return a or b


def check_voice(voice) -> None:
    v = set(voice)
    if "instrumental" in v and v & {"female", "male", "vocal"}:
        other = sorted(v & {"female", "male", "vocal"})
        raise _bad(f"contradictory filters: voice instrumental and {', '.join(other)}")


def parse_bpm(text: str) -> tuple[float, float]:
    """'85-95', '90' (90 +/- 5 %, at least 5 BPM) -> (lo, hi)."""
    t = str(text).strip().lower().removesuffix("bpm").strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:-|–|to|\.\.)\s*(\d+(?:\.\d+)?)", t)
    try:
        if m:
            lo, hi = float(m.group(1)), float(m.group(2))
        else:
            lo, hi = around(float(t))
    except ValueError:
        raise _bad(f"bpm: a range ('85-95') or a tempo ('90'), not {str(text)[:40]!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise _bad("bpm: finite numbers")
    if lo > hi:
        raise _bad(f"bpm: the range {lo:g}-{hi:g} is empty (its low end is above its high end)")
    if lo < BPM_RANGE[0] or hi > BPM_RANGE[1]:
        raise _bad(f"bpm: within {BPM_RANGE[0]:g}-{BPM_RANGE[1]:g}, not {lo:g}-{hi:g}")
    return lo, hi


def around(bpm: float) -> tuple[float, float]:
    """A tempo asked for: within 5 % of it, and at least 5 BPM either way."""
    half = max(5.0, 0.05 * bpm)
    return round(bpm - half, 1), round(bpm + half, 1)


GEMS_RE = re.compile(r"^([a-z_ ]+?)\s*(>=|=>|>|=|:)\s*(\d*\.?\d+)$")


def parse_mood(text: str) -> Filters:
    """'Q4', 'Q1,Q4', 'tenderness>=0.4', 'Q4,calmness>=0.5' -> the mood filters."""
    quadrants, gems = [], []
    for part in str(text).split(","):
        p = part.strip().lower()
        if not p:
            continue
        if p.upper() in QUADRANTS:
            quadrants.append((p.upper(), 1.0))
            continue
        m = GEMS_RE.match(p)
        name = m.group(1).strip().replace(" ", "_") if m else None
        if name not in GEMS:
            raise _bad(
                "mood: a quadrant (Q1 exuberant, Q2 anxious, Q3 sad, Q4 calm) or a GEMS "
                f"emotion with a minimum ('tenderness>=0.4'; emotions: {', '.join(GEMS)}), "
                f"not {part.strip()[:40]!r}"
            )
        value = float(m.group(3))
        if not 0 <= value <= 1:
            raise _bad(f"mood: the minimum of {name} is a share from 0 to 1, not {value:g}")
        gems.append((name, value))
    return Filters(quadrants=tuple(dict(quadrants).items()), gems=tuple(dict(gems).items()))


def parse_voice(text: str) -> tuple[str, ...]:
    voice = tuple(dict.fromkeys(v.strip().lower() for v in str(text).split(",") if v.strip()))
    bad = [v for v in voice if v not in VOICES]
    if bad:
        raise _bad(f"voice: {', '.join(VOICES)}, not {bad[0][:40]!r}")
    check_voice(voice)
    return voice


def _flag(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes"}:
        return True
    if text in {"", "0", "false", "no"}:
        return False
    raise _bad(f"{name}: true or false, not {text[:20]!r}")


def _text(params, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, list):  # a watch's JSON may give a list
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _bad(f"{name}: a text")
    value = str(value)
    if len(value) > MAX_TEXT:
        raise _bad(f"{name}: at most {MAX_TEXT} characters")
    return value


FILTER_PARAMS = ("genre", "mood", "bpm", "bpm_octave", "key", "compatible", "voice")


def from_params(params, labels: list[str], genre: bool = True) -> Filters:
    """The structured filters of query parameters (or a watch's JSON fields): genre (one or
    several, comma-separated), mood, bpm, bpm_octave, key, compatible, voice. 400
    bad_parameter naming the field for a value out of its vocabulary."""
    out, why = Filters(), {}
    genres = _text(params, "genre") if genre else None
    if genres:
        names = tuple(dict.fromkeys(g.strip() for g in genres.split(",") if g.strip()))
        bad = [g for g in names if g not in labels]
        if bad:
            raise _bad(f"genre: one of {', '.join(labels)}, not {bad[0]!r}")
        out, why["genre"] = replace(out, genres=names), "genre"
    mood = _text(params, "mood")
    if mood:
        m = parse_mood(mood)
        out = replace(out, quadrants=m.quadrants, gems=m.gems)
        why["mood"] = "mood"
    bpm = _text(params, "bpm")
    octave = _flag(params.get("bpm_octave", False), "bpm_octave")
    if bpm:
        out, why["bpm"] = replace(out, bpm=parse_bpm(bpm), bpm_octave=octave), "bpm"
    elif octave:
        raise _bad("bpm_octave: only beside bpm (a range)")
    key = _text(params, "key")
    compatible = _flag(params.get("compatible", False), "compatible")
    if key:
        out, why["key"] = replace(out, key=parse_key(key), compatible=compatible), "key"
    elif compatible:
        raise _bad("compatible: only beside key")
    voice = _text(params, "voice")
    if voice:
        out, why["voice"] = replace(out, voice=parse_voice(voice)), "voice"
    return replace(out, why=why)
