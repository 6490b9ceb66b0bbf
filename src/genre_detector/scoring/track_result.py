"""The one way from model outputs to a verdict: `score_track` -> `TrackResult`.

    result = score_track(batches, outputs, infos, calibration)
    result.ensemble.top_genre, result.models["cnn"].verdict.top3, result.timeline
    result.embedding            # the track's pooled musicnn backbone features (or None)
    result.descriptors          # tempo and key (scoring.descriptors), whatever the models;
                                # mood, GEMS, voice and instruments when musicnn scored it

Every place that turns audio into a result calls it: the service (serve.replies renders the
HTTP reply), the batch tagger in-process and on Ray (batch.library renders a row), and
`python -m train.evaluate` (reads the probabilities). Nothing here runs a model or does I/O:
callers run the ONNX Runtime sessions (runtime.model_set, or the service's model service)
and hand their raw window outputs over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genre_detector.audio.features import FeatureSettings, WindowBatch
from genre_detector.models.calibration import Calibration
from genre_detector.models.track_head import statistics
from genre_detector.scoring.descriptors import (
    Descriptors,
    MoodInput,
    describe,
    window_moods,
    window_values,
)
from genre_detector.scoring.pooling import between_genres, timeline, track_probabilities

TOP_K = 3


@dataclass(frozen=True)
class Verdict:
    """Probabilities over `labels` (renormalised to sum to 1) and what follows from them."""

    labels: list[str]
    probabilities: np.ndarray  # (n_labels,) float64

    @classmethod
    def of(cls, probs, labels: list[str]) -> "Verdict":
        p = np.asarray(probs, dtype=np.float64)
        return cls(list(labels), p / p.sum())

    @property
    def order(self) -> np.ndarray:
        return np.argsort(-self.probabilities)

    @property
    def top_genre(self) -> str:
        return self.labels[int(self.order[0])]

    @property
    def top_probability(self) -> float:
        return float(self.probabilities[self.order[0]])

    @property
    def top3(self) -> list[tuple[str, float]]:
        return [(self.labels[i], float(self.probabilities[i])) for i in self.order[:TOP_K]]

    def as_dict(self) -> dict:
        """probabilities, top_genre, top_probability, top3 (the reply's verdict fields)."""
        return {
            "probabilities": {g: float(p) for g, p in zip(self.labels, self.probabilities)},
            "top_genre": self.top_genre,
            "top_probability": self.top_probability,
            "top3": [{"genre": g, "probability": p} for g, p in self.top3],
        }


@dataclass(frozen=True)
class ModelScore:
    """One model's result for one track."""

    name: str
    tag: str
    raw: np.ndarray  # uncalibrated track probabilities (what the ensemble pools)
    verdict: Verdict  # calibrated
    window_probs: np.ndarray  # (n_windows, n_labels) uncalibrated, for the timeline


@dataclass(frozen=True)
class TimelineWindow:
    start_s: float
    end_s: float
    top_genre: str
    probability: float
    bpm: float | None = None  # the window's tempo (scoring.descriptors.window_values)
    key: str | None = None  # its key, "A minor"
    mood: str | None = None  # its arousal-valence quadrant (Q1-Q4), when musicnn scored it
    arousal: float | None = None
    valence: float | None = None


@dataclass(frozen=True)
class TrackResult:
    labels: list[str]
    duration_s: float
    sample_rate: int  # of the finest window grid (the timeline's)
    n_windows: int
    models: dict[str, ModelScore]
    ensemble: Verdict
    agreeing_models: int  # models whose top genre is the ensemble's
    between_genres: list[str]  # [top, runner-up] when the runner-up is close, else []
    calibrated: bool  # whether the ensemble of exactly these models is the fitted one
    timeline: list[TimelineWindow]
    # The statistics-pooled backbone features of the track-head model (musicnn): [mean, spread]
    # over its windows, float32; None when no model with a track head scored the track.
    embedding: np.ndarray | None = field(default=None, compare=False)
    embedding_model: str | None = None
    # Tempo and key of the track (null where the batches carry no audio.analysis, e.g.
    # windows cut from stored log-mels), mood, GEMS, voice and instruments (null without
    # musicnn's mood heads); None with neither.
    descriptors: Descriptors | None = None

    @property
    def model_tags(self) -> dict[str, str]:
        return {n: m.tag for n, m in self.models.items()}


def score_track(
    batches: dict[FeatureSettings, WindowBatch],
    outputs: dict[str, np.ndarray],
    infos: dict,
    calibration: Calibration | None,
) -> TrackResult:
    """The result for one track. batches: its windows per feature settings; outputs: model
    name -> what the model returned for those windows (class probabilities, or window
    features for a family with a track head); infos: name -> runtime.store.ModelInfo."""
    if not outputs:
        raise ValueError("score_track needs the outputs of at least one model")
    labels = list(infos[next(iter(outputs))].labels)
    cal = calibration or Calibration(labels)
    spans, window_probs, models = {}, {}, {}
    embedding = embedding_model = moods = None
    for name, out in outputs.items():
        info, batch = infos[name], batches[infos[name].settings]
        spans[name] = (batch.start_s, batch.end_s)
        window_probs[name] = np.asarray(info.window_probs(out, batch.start_s))
        raw = track_probabilities(window_probs[name], info.pooling)
        models[name] = ModelScore(
            name, info.tag, raw, Verdict.of(cal.model(name, raw), labels), window_probs[name]
        )
        if info.head is not None and embedding is None and len(out):
            embedding_model = name
            embedding = statistics(
                out, info.head.std_fallback, batch.start_s, info.settings.window_seconds
            ).astype(np.float32)
            if info.moods is not None:
                moods = MoodInput(info.moods, out, embedding, batch.start_s, batch.end_s)
    ensemble = Verdict.of(cal.ensemble({n: m.raw for n, m in models.items()}), labels)
    finest = max(outputs, key=lambda n: len(batches[infos[n].settings].windows))
    first = batches[infos[next(iter(outputs))].settings]
    found = next((b.analysis for b in batches.values() if b.analysis is not None), None)
    descriptors = describe(found, moods)
    windows = timeline(window_probs, spans, cal.ensemble, labels)
    starts, ends = [w["start_s"] for w in windows], [w["end_s"] for w in windows]
    per_window = window_values(found, descriptors, starts, ends)
    mood_windows = window_moods(moods, starts, ends)
    return TrackResult(
        labels=labels,
        duration_s=float(first.duration_s),
        sample_rate=int(infos[finest].settings.sample_rate),
        n_windows=int(max(len(s[0]) for s in spans.values())),
        models=models,
        ensemble=ensemble,
        agreeing_models=sum(m.verdict.top_genre == ensemble.top_genre for m in models.values()),
        between_genres=between_genres(ensemble.probabilities, labels),
        calibrated=bool(cal.weights) and cal.covers(models),
        timeline=[
            TimelineWindow(**w, bpm=b, key=k, mood=m, arousal=a, valence=v)
            for w, (b, k), (m, a, v) in zip(windows, per_window, mood_windows)
        ],
        embedding=embedding,
        embedding_model=embedding_model,
        descriptors=descriptors,
    )


def shown_metrics(name: str, info, calibration: Calibration | None) -> dict:
    """The held-out metrics to show next to a model's probabilities: those of the calibrated
    model (what the reply's probabilities are) when the calibration measured them, else the
    model card's (then the probabilities are uncalibrated too)."""
    measured = (calibration.metrics if calibration else {}).get("models_calibrated", {})
    return dict(measured.get(name) or info.metrics)
