"""What the catalog stores of a scored track: a TrackRecord built from scoring's TrackResult,
the upload's hash and names, and the embedding projected for search."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from genre_detector.errors import GenreError
from genre_detector.models import mood_heads
from genre_detector.scoring.track_result import TrackResult

CONSENT_SCOPES = ("search", "notify")
MAX_NAME = 300  # characters of a title or an artist


@dataclass(frozen=True)
class Consent:
    search: bool
    notify: bool

    @classmethod
    def parse(cls, text: str | None) -> "Consent":
        """`search,notify` -> Consent; GenreError naming a bad or missing scope. Without
        `search` nothing may be stored (consent_required)."""
        if text is not None and not isinstance(text, str):
            raise GenreError(
                "bad_parameter", 'consent: a text of comma-separated scopes ("search,notify")'
            )
        scopes = [s.strip().lower() for s in (text or "").split(",") if s.strip()]
        unknown = [s for s in scopes if s not in CONSENT_SCOPES]
        if unknown:
            raise GenreError(
                "bad_parameter",
                f"consent: unknown scope(s) {', '.join(unknown)}; valid: "
                f"{', '.join(CONSENT_SCOPES)}",
            )
        if "search" not in scopes:
            raise GenreError(
                "consent_required",
                "a track enters the catalog only with its owner's consent: send "
                "consent=search (and notify, to let watches announce it); nothing was stored",
            )
        return cls(search=True, notify="notify" in scopes)

    def scopes(self) -> list[str]:
        return [s for s in CONSENT_SCOPES if getattr(self, s)]


@dataclass(frozen=True)
class TrackRecord:
    sha256: str
    title: str
    artist: str
    duration_s: float
    top_genre: str
    top_probability: float
    probabilities: dict
    top3: list
    timeline: list
    model_tags: dict
    features: np.ndarray  # the unprojected pooled features (float32)
    embedding: np.ndarray  # projected, L2-normalised (float32)
    embedding_version: str
    descriptors: dict | None = None  # tempo and key, the reply's block (docs/api.md)

    @property
    def artist_key(self) -> str:
        return artist_key(self.artist)


# The mood heads' names (models.mood_heads: one place for them): the descriptors' blocks.
GEMS, QUADRANTS, VOICES = mood_heads.GEMS, mood_heads.QUADRANTS, mood_heads.VOICE_FIELDS
# The columns a track's descriptors fill (migration 0005): what search and watches filter on.
DESCRIPTOR_COLUMNS = (
    "bpm",
    "camelot",
    "quadrant",
    *(f"mood_{q.lower()}" for q in QUADRANTS),
    "arousal",
    "valence",
    *(f"gems_{g}" for g in GEMS),
    *(f"voice_{v}" for v in VOICES),
    "instruments",
)
INSTRUMENT_MIN = 0.5  # an instrument is listed in the `instruments` column from this score


def _number(block, name: str) -> float | None:
    value = (block or {}).get(name) if isinstance(block, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def descriptor_columns(descriptors: dict | None) -> dict:
    """The filter columns of a track from its stored `descriptors` block: None where a block
    (tempo, key, mood, gems, voice, instruments) or a value is missing. `instruments`: the
    names scoring >= INSTRUMENT_MIN, as ",piano,strings," (a LIKE finds one), or None."""
    d = descriptors if isinstance(descriptors, dict) else {}
    key, mood = d.get("key") or {}, d.get("mood") or {}
    probabilities = mood.get("probabilities") if isinstance(mood, dict) else None
    out = {
        "bpm": _number(d.get("tempo"), "bpm"),
        "camelot": key.get("camelot") if isinstance(key, dict) else None,
        "quadrant": mood.get("quadrant") if mood.get("quadrant") in QUADRANTS else None,
        "arousal": _number(mood, "arousal"),
        "valence": _number(mood, "valence"),
    }
    for q in QUADRANTS:
        out[f"mood_{q.lower()}"] = _number(probabilities, q)
    for g in GEMS:
        out[f"gems_{g}"] = _number(d.get("gems"), g)
    for v in VOICES:
        out[f"voice_{v}"] = _number(d.get("voice"), v)
    instruments = d.get("instruments")
    if isinstance(instruments, dict):
        names = sorted(
            str(n).casefold()
            for n, s in instruments.items()
            if (_number(instruments, n) or 0.0) >= INSTRUMENT_MIN and "," not in str(n)
        )
        out["instruments"] = "," + ",".join(names) + "," if names else ","
    else:
        out["instruments"] = None
    if not isinstance(out["camelot"], str):
        out["camelot"] = None
    return out


def artist_key(name: str) -> str:
    """How artists are compared: case-insensitively, spaces collapsed."""
    return " ".join(name.split()).casefold()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_name(value: str | None) -> str:
    """One line of at most MAX_NAME printable characters: control characters (NUL among
    them, which PostgreSQL cannot store) and lone surrogates dropped, spaces collapsed."""
    text = str(value or "")
    text = "".join(c for c in text if c.isprintable() or c.isspace())
    return " ".join(text.split())[:MAX_NAME]


def record_from_result(
    result: TrackResult, projection, sha256: str, title: str = "", artist: str = ""
) -> TrackRecord:
    """The stored fields of a scored track. `projection`: models.projection.Projection."""
    if result.embedding is None:
        raise GenreError(
            "bad_parameter",
            "the catalog needs the musicnn model's embedding: score with every served model",
        )
    e = result.ensemble
    return TrackRecord(
        sha256=sha256,
        title=clean_name(title),
        artist=clean_name(artist),
        duration_s=round(float(result.duration_s), 3),
        top_genre=e.top_genre,
        top_probability=float(e.top_probability),
        probabilities={g: float(p) for g, p in zip(e.labels, e.probabilities)},
        top3=[{"genre": g, "probability": p} for g, p in e.top3],
        timeline=[asdict(w) for w in result.timeline],
        model_tags=result.model_tags,
        features=np.asarray(result.embedding, dtype=np.float32),
        embedding=projection.apply(result.embedding),
        embedding_version=projection.version,
        descriptors=result.descriptors.as_dict() if result.descriptors is not None else None,
    )
