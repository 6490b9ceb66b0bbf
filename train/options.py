"""Command-line options shared by `python -m train` and `python -m train.crossval`, and the
FitConfig they make, so a cross-validated setting is exactly what the training CLI runs."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from train.fit import FitConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = os.environ.get("GENRE_DATA_EMOTIFY", str(REPO.parent / "shared/data/emotify"))
# Epochs per family: all four train in under 20 minutes on 2 CPU cores (README "Training").
# Fixed counts, not time budgets, so a retrain reproduces the shipped models on any machine.
DEFAULT_EPOCHS = {"feedforward": 60, "lenet": 30, "cnn": 24, "lstm": 24}
# Artists balanced (0.5: a band with 16 clips counts 4x a one-clip artist, not 16x): in 5-fold
# artist-grouped cross-validation it raised the mean and, above all, the worst fold of the
# feed-forward net (66.7 -> 71.1 %, worst 44.1 -> 68.4 %) and LeNet (68.7 -> 70.1 %, worst
# 60.3 -> 67.2 %); README "Models and how good they are".
ARTIST_BALANCE = 0.5
WEIGHT_EMA = 0.0


def add_data_and_fit_options(p: argparse.ArgumentParser) -> None:
    from genre_detector.architectures import ARCHITECTURES
    p.add_argument("--data", default=DEFAULT_DATA, help="folder laid out as GENRE/*.ext "
                   "(an optional tracks.csv with path,artist columns enables the artist split)")
    p.add_argument("--models", default=",".join(ARCHITECTURES),
                   help=f"comma-separated families to train; valid: {', '.join(ARCHITECTURES)}")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs per model (default per family: {DEFAULT_EPOCHS}); early "
                   "stopping on the validation loss may end sooner")
    p.add_argument("--crops", type=int, default=8, help="random windows per track per epoch")
    p.add_argument("--artist-balance", type=float, default=ARTIST_BALANCE,
                   help="crops per track ~ (tracks by its artist) ** -this: 0 = every track "
                   "alike, 1 = every artist alike")
    p.add_argument("--weight-ema", type=float, default=WEIGHT_EMA,
                   help="per-epoch moving average of the weights (0 disables)")
    p.add_argument("--minutes", type=float, default=15.0,
                   help="safety limit on wall-clock minutes per model")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and the training")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes decoding audio")


def check_models(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn args.models into a list of known family names (or exit with the valid ones)."""
    from genre_detector.architectures import ARCHITECTURES
    args.models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
    if not args.models:
        p.error("--models names no model")
    unknown = [m for m in args.models if m not in ARCHITECTURES]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(ARCHITECTURES)}")


def fit_config(args: argparse.Namespace, name: str, **extra) -> FitConfig:
    """The FitConfig of family `name` under these options; `extra` sets any other field."""
    types = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(extra) - set(types))
    if unknown:
        raise ValueError(f"unknown FitConfig field(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(types))}")
    if "seed" in extra:
        raise ValueError("set the seed with --seed (it also chooses the folds)")
    cast = {"int": int, "float": float}
    for k, v in extra.items():   # field types are strings under `from __future__ import annotations`
        try:
            extra[k] = cast[types[k]](v)
        except (KeyError, ValueError):
            raise ValueError(f"{k}={v!r} is not a {types[k]}") from None
    return FitConfig(**{"epochs": args.epochs or DEFAULT_EPOCHS[name],
                        "crops_per_track": args.crops, "seed": args.seed,
                        "max_minutes": args.minutes, "artist_balance": args.artist_balance,
                        "weight_ema": args.weight_ema, **extra})
