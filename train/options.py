"""Command-line options shared by `python -m train` and `python -m train.crossval`, and the
FitConfig they make, so a cross-validated setting is exactly what the training CLI runs."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from train.fit import FitConfig

REPO = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("GENRE_DATA", REPO.parent / "shared" / "data"))
# The two labelled sources and the map of their folders onto the nine genres.
DEFAULT_DATA = [str(DATA_ROOT / "emotify"), str(DATA_ROOT / "4q")]
DEFAULT_GENRE_MAP = str(DATA_ROOT / "genre_map.csv")
DEFAULTS = FitConfig()  # the shipped training settings live in FitConfig, nowhere else


def add_data_and_fit_options(p: argparse.ArgumentParser) -> None:
    from genre_detector.models.families import FAMILIES

    p.add_argument(
        "--data",
        action="append",
        default=None,
        help="a source: folder laid out as GENRE/*.ext with an optional tracks.csv "
        f"(path,artist) for the artist split; repeatable (default: {DEFAULT_DATA})",
    )
    p.add_argument(
        "--genre-map",
        default=DEFAULT_GENRE_MAP,
        help="CSV dataset,folder,genre mapping each source's folders to genres "
        "(a folder it does not name keeps its own name)",
    )
    p.add_argument(
        "--models",
        default=",".join(FAMILIES),
        help=f"comma-separated families to train; valid: {', '.join(FAMILIES)}",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per model (default per family: "
        f"{ {n: f.epochs for n, f in FAMILIES.items()} }); early "
        "stopping on the validation loss may end sooner",
    )
    # Defaults None: a family's own settings (families.py) apply unless an option is given.
    p.add_argument(
        "--crops",
        type=int,
        default=None,
        help="random windows per track per epoch "
        f"(before class balancing; default {DEFAULTS.crops_per_track})",
    )
    p.add_argument(
        "--artist-balance",
        type=float,
        default=None,
        help="crops per track ~ (tracks by its artist) ** -this: 0 = every track "
        f"alike, 1 = every artist alike (default {DEFAULTS.artist_balance})",
    )
    p.add_argument(
        "--weight-ema",
        type=float,
        default=None,
        help=f"per-epoch moving average of the weights (0 disables; default {DEFAULTS.weight_ema})",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help=f"safety limit on wall-clock minutes per model (default {DEFAULTS.max_minutes})",
    )
    p.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help="seed for the split and the training"
    )
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes decoding audio"
    )


def load_tracks(args: argparse.Namespace):
    """The labelled tracks of every --data source, genres mapped through --genre-map."""
    from train.data import list_tracks, read_genre_map

    args.data = args.data or DEFAULT_DATA
    return list_tracks(args.data, read_genre_map(args.genre_map))


def check_models(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn args.models into a list of known family names (or exit with the valid ones)."""
    from genre_detector.models.families import FAMILIES

    args.models = list(dict.fromkeys(m.strip() for m in args.models.split(",") if m.strip()))
    if not args.models:
        p.error("--models names no model")
    unknown = [m for m in args.models if m not in FAMILIES]
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(FAMILIES)}")


def _bool(v: str) -> bool:
    if str(v).lower() in {"1", "true", "yes"}:
        return True
    if str(v).lower() in {"0", "false", "no"}:
        return False
    raise ValueError(v)


def fit_config(args: argparse.Namespace, name: str, **extra) -> FitConfig:
    """The FitConfig of family `name` under these options; `extra` sets any other field."""
    types = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(extra) - set(types))
    if unknown:
        raise ValueError(
            f"unknown FitConfig field(s) {', '.join(unknown)}; valid: {', '.join(sorted(types))}"
        )
    if "seed" in extra:
        raise ValueError("set the seed with --seed (it also chooses the folds)")
    cast = {"int": int, "float": float, "bool": _bool, "str": str}
    for k, v in extra.items():  # field types are strings under `from __future__ import annotations`
        try:
            extra[k] = cast[types[k]](v)
        except (KeyError, ValueError):
            raise ValueError(f"{k}={v!r} is not a {types[k]}") from None
    if "features" in extra:
        from train.feature_blocks import block_names

        block_names(extra["features"])  # ValueError names the valid blocks
    if extra.get("head", "joint") not in ("joint", "stacked"):
        raise ValueError(f"head={extra['head']!r}: valid: joint, stacked")
    from genre_detector.models.families import family

    # Precedence: FitConfig's defaults < the family's own (registry) < options given < --set.
    given = {
        "crops_per_track": args.crops,
        "max_minutes": args.minutes,
        "artist_balance": args.artist_balance,
        "weight_ema": args.weight_ema,
    }
    return FitConfig(
        **{
            **family(name).fit,
            "epochs": args.epochs or family(name).epochs,
            "seed": args.seed,
            **{k: v for k, v in given.items() if v is not None},
            **extra,
        }
    )
