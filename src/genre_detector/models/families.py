"""The registry of model families: the one place that says which models exist.

    from genre_detector.models.families import FAMILIES, family
    for f in FAMILIES.values(): print(f.name, f.display_name, f.settings.sample_rate)

Everything else is derived from it: store names (`genre-<name>`), the served batchable
methods, the training CLI's `--models` and default epochs, the research page's keys of
`POST /`, the load test and the tests. The one copy is bentofile.yaml's model list (YAML
cannot import this), which a test keeps equal to it. No Keras import here: the front
service reads this too.

Adding a model family:
  1. write its builder `f(input_shape, n_classes) -> keras.Model` (windows in, class
     probabilities out; e.g. in architectures.py);
  2. add one `Family(...)` line to FAMILIES below, naming the builder as "module:function";
  3. `python -m train --models <name>` trains it into the store; `bentoml serve` serves it;
  4. for `bentoml build`, add `genre-<name>:latest` to bentofile.yaml's models (tested).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from genre_detector.audio.features import MUSICNN_SETTINGS, FeatureSettings
from genre_detector.config import settings


@dataclass(frozen=True)
class Family:
    name: str  # store name genre-<name>, API name, CLI name
    display_name: str  # what people read
    builder: str  # "module:function" building (input_shape, n_classes)
    epochs: int = 30  # training default (fixed count: retrains reproduce)
    legacy_name: str | None = None  # the research page's key in `POST /` (None: not there)
    settings: FeatureSettings = FeatureSettings()  # its input features
    pretrained: bool = False  # a pretrained backbone with a trained head
    fit: dict = field(default_factory=dict, hash=False)  # FitConfig fields it trains with
    pooling: str = "mean"  # windows -> track: "mean" or "geometric" (scoring.pooling)
    max_batch_windows: int | None = None  # model service batch cap (None: GENRE_MAX_BATCH)

    def build(self, input_shape: tuple[int, int], n_classes: int):
        module, func = self.builder.split(":")
        return getattr(importlib.import_module(module), func)(tuple(input_shape), n_classes)


_ARCH = "genre_detector.models.architectures"
DISTILL = 0.8  # weight of the teacher's soft targets in the research families' targets
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        # The research four learn 0.2 from the labels, 0.8 from musicnn's cross-fitted soft
        # targets (train/distill.py; 0.8 beat 0.5 and none in 5-fold artist CV,
        # models/MODEL_CARD.md).
        # 2e-3 (FitConfig's default) left the feed-forward net at chance on nine genres.
        Family(
            "feedforward",
            "Feed-Forward",
            f"{_ARCH}:feedforward",
            60,
            "Feed-Forward Model",
            fit={"learning_rate": 5e-4, "distill": DISTILL},
        ),
        Family("lenet", "LeNet", f"{_ARCH}:lenet", 30, "Le-Net Model", fit={"distill": DISTILL}),
        Family("cnn", "CNN", f"{_ARCH}:cnn", 24, "CNN Model", fit={"distill": DISTILL}),
        # Learning rate 1e-3, a per-epoch weight average (0.7) and 36 epochs: 61.2 -> 65.5 %
        # in 5-fold artist CV, paired +4.2 points [+0.5, +8.2] (MODEL_CARD.md, 2026-12-04).
        Family(
            "lstm",
            "CNN+LSTM",
            f"{_ARCH}:lstm",
            36,
            "LSTM Model",
            fit={"learning_rate": 1e-3, "weight_ema": 0.7, "distill": DISTILL},
        ),
        # The stored model is the frozen backbones (window features); its track head
        # (track_head.py, no epochs) is a logistic regression on the mean and spread of those
        # features over the track, whose per-window probabilities pool geometrically to the
        # track's prediction. Settings from 5-fold artist cross-validation (MODEL_CARD.md).
        Family(
            "musicnn",
            "musicnn",
            "genre_detector.models.musicnn_backbones:build",
            0,
            settings=MUSICNN_SETTINGS,
            pretrained=True,
            pooling="geometric",
            fit={"head_c": 0.01, "class_balance": 0.75},
            # One track (5 windows) per call: ONNX Runtime's arena keeps ~57 MB of
            # activations per window of the largest batch (+286 MB at 5, +613 MB at 10,
            # +4.4 GB at 80) while the cost per window is flat (22.6 / 22.2 / 23.1 ms):
            # batching buys nothing here (`python loadtests/onnx_batch_memory.py musicnn`).
            max_batch_windows=MUSICNN_SETTINGS.max_windows,
        ),
    )
}


LEGACY_NAMES = {n: f.legacy_name for n, f in FAMILIES.items() if f.legacy_name}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def model_names() -> tuple[str, ...]:
    """Every registered family, in registry order (the default request)."""
    return tuple(FAMILIES)


def research_names() -> tuple[str, ...]:
    """The research prototype's families: the keys of `POST /`."""
    return tuple(n for n, f in FAMILIES.items() if f.legacy_name)


def display_name(name: str) -> str:
    return FAMILIES[name].display_name if name in FAMILIES else name


def register(f: Family) -> None:
    """Add a family (a plugin, a test); everything reads FAMILIES, so it is served too."""
    FAMILIES[f.name] = f


# GENRE_PLUGINS=mod1,mod2: modules imported now, each calling register(Family(...)), so a
# `bentoml serve` process serves families that live outside this package.
for _module in settings().plugins:
    importlib.import_module(_module)
