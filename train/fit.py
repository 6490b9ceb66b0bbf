"""Fit one model family on cached log-mels: random window crops, class-balanced sampling,
early stopping on the loss of the tracks it is given to stop on (window probabilities
averaged per track). Those are never the tracks a model is scored on: train/trainer.py
holds back `FitConfig.stop_fraction` of the *training* artists for them
(train.data.stopping_split), in `python -m train` and in every cross-validation fold."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from genre_detector.audio.features import FeatureSettings, cut_windows, window_starts


@dataclass
class FitConfig:
    """How one family is trained: these defaults are the shipped settings (the training CLI
    reads them; each family's epochs come from the registry, genre_detector.models.families)."""

    epochs: int = 30  # upper bound; early stopping usually ends sooner
    patience: int = 8  # epochs without a better stopping loss before stopping
    # share of the training side's artists held back from fitting to stop on (their tracks'
    # loss picks the epoch kept); never the scored tracks. 0: no early stopping, the weights
    # after `epochs` epochs are kept and every training track is fitted on
    stop_fraction: float = 0.2
    crops_per_track: int = 4  # random windows per training track per epoch (mean class)
    batch_size: int = 32
    learning_rate: float = 2e-3
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0  # 0 disables mixing of example pairs
    # crops per track ~ n_tracks_of_its_artist ** -this: 0.5 raised the mean and the worst fold
    # in 5-fold artist cross-validation (models/MODEL_CARD.md)
    artist_balance: float = 0.5
    weight_ema: float = 0.0  # per-epoch moving average of the weights; 0 disables
    eq_db: float = (
        0.0  # random smooth EQ per training window (tilt and cosines up to this dB each); 0 off
    )
    freq_shift: int = 0  # random shift of training windows by up to +-this mel bands
    # weight of the pretrained family's soft targets in each training window's target
    # (train/distill.py); 0 trains on the labels alone
    distill: float = 0.0
    # "knowledge adjustment" (Wen et al. 2019): where the teacher's top genre is not the
    # label, swap the two probabilities, so the soft target still names the label first
    distill_keep_label: bool = False
    max_minutes: float = 15.0  # wall-clock safety limit per model
    # Pretrained families' heads (train/pretrained.py): a logistic regression on window features
    head_c: float = 1.0  # inverse L2 strength
    # the window features the head reads: "+"-joined blocks of train/feature_blocks.py
    features: str = "musicnn"
    # "joint": one regression on all features; "stacked": one per feature block and an
    # out-of-fold regression over their logits (train/pretrained.py)
    head: str = "joint"
    class_balance: float = 0.5  # class weights ~ n_tracks_of_class ** -this
    seed: int = 0


@dataclass
class FitResult:
    model: object
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    head: object = None  # a pretrained family's fitted genre_detector.models.track_head.TrackHead


def keep_label_first(soft: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft targets whose top class is the label: where the teacher's top genre is another,
    its probability and the label's are swapped (the rest, the teacher's sense of which
    genres are near, is kept)."""
    soft = np.array(soft, dtype=np.float32, copy=True)
    rows = np.arange(len(soft))
    top = soft.argmax(axis=1)
    p_top, p_label = soft[rows, top], soft[rows, y]
    soft[rows, top], soft[rows, y] = p_label, p_top
    return soft


def random_crops(mels, y, n_per_class_track, s: FeatureSettings, rng, track_weight=None):
    """Random training windows: on average `n_per_class_track[label] * track_weight[i]` per
    track (the weights are 1 unless artists are balanced, see `crop_weights`).
    Returns (windows, labels, index of each window's track)."""
    xs, ys, owner = [], [], []
    for i, (mel, label) in enumerate(zip(mels, y)):
        n = n_per_class_track[label]
        if track_weight is not None:  # stochastic rounding keeps the expected count exact
            n = int(np.floor(n * track_weight[i] + rng.random()))
        last = mel.shape[1] - s.window_frames
        for start in rng.integers(0, max(last, 0) + 1, n):
            xs.append(mel[:, start : start + s.window_frames])
            ys.append(label)
            owner.append(i)
    order = rng.permutation(len(xs))
    return np.stack(xs).astype(np.float32)[order], np.asarray(ys)[order], np.asarray(owner)[order]


def random_eq(x: np.ndarray, max_db: float, rng) -> np.ndarray:
    """Add a smooth random curve over the mel bands of each window (a tilt and three cosines,
    the k-th at most max_db / k): another microphone, mix or master, same music."""
    n, f = x.shape[0], x.shape[1]
    pos = np.linspace(0.0, 1.0, f)
    basis = np.stack([2 * pos - 1] + [np.cos(np.pi * k * pos) / k for k in (1, 2, 3)])
    curve = rng.uniform(-max_db, max_db, (n, len(basis))) @ basis
    return x + curve[:, :, None].astype(x.dtype)


def shift_bands(x: np.ndarray, max_shift: int, rng) -> np.ndarray:
    """Move each window up or down by up to max_shift mel bands (edge bands repeated)."""
    n, f = x.shape[0], x.shape[1]
    shift = rng.integers(-max_shift, max_shift + 1, n)
    idx = np.clip(np.arange(f)[None, :] - shift[:, None], 0, f - 1)
    return np.take_along_axis(x, idx[:, :, None], axis=1)


def crop_weights(y, groups, power: float) -> np.ndarray | None:
    """Per-track weights (mean 1 within each class) proportional to n_artist_tracks**-power:
    an artist with 16 clips weighs 4x one clip at power 0.5, not 16x, so a few prolific
    artists do not define a genre. None when power is 0 or there are no groups."""
    if not power or groups is None:
        return None
    counts = Counter(groups)
    w = np.array([counts[g] ** -power for g in groups], dtype=float)
    for c in np.unique(y):
        w[y == c] /= w[y == c].mean()
    return w


def track_windows(mels, s: FeatureSettings):
    """All serving-time windows of every track, plus the track index of each window."""
    wins, owner = [], []
    for i, mel in enumerate(mels):
        w = cut_windows(mel.astype(np.float32), window_starts(mel.shape[1], s), s)
        wins.append(w)
        owner += [i] * len(w)
    return np.concatenate(wins), np.asarray(owner)


def track_probs(model, windows, owner, n_tracks, batch_size=256):
    """Each track's probabilities from a Keras model's window probabilities, pooled by
    genre_detector.scoring.pooling (what the service applies to the exported model)."""
    from genre_detector.scoring.pooling import track_probabilities

    p = model.predict(windows, batch_size=batch_size, verbose=0)
    return np.stack([track_probabilities(p[owner == i]) for i in range(n_tracks)])


def new_model(name: str, s: FeatureSettings, n_classes: int, seed: int):
    """A fresh model of family `name`, its initial weights fixed by `seed`: Keras draws them
    when the layers are built, so seeding only inside `fit` leaves them to chance."""
    import keras

    from genre_detector.models.families import family

    keras.utils.set_random_seed(seed)
    return family(name).build((s.n_mels, s.window_frames), n_classes)


def fit(
    model,
    train_mels,
    y_train,
    val_mels,
    y_val,
    n_classes,
    s: FeatureSettings,
    cfg: FitConfig,
    name: str = "model",
    groups=None,
    soft_targets=None,
) -> FitResult:
    """`val_mels`/`y_val`: the tracks to stop on (the epoch with their lowest loss is kept);
    they must be neither fitted nor scored (train.data.stopping_split). Empty: no early
    stopping, the last epoch's weights are kept.
    `groups`: the artist of each training track (for `cfg.artist_balance`);
    `soft_targets`: a teacher's probabilities per training track (for `cfg.distill`)."""
    import keras

    rng = np.random.default_rng(cfg.seed)
    keras.utils.set_random_seed(cfg.seed)
    counts = np.bincount(y_train, minlength=n_classes)
    per_track = np.maximum(1, np.round(cfg.crops_per_track * counts.mean() / counts)).astype(int)
    weight = crop_weights(y_train, groups, cfg.artist_balance)
    sample, _, _ = random_crops(train_mels, y_train, per_track, s, rng, weight)
    if cfg.distill > 0 and soft_targets is None:
        raise ValueError("cfg.distill > 0 needs soft_targets (train/distill.py)")
    if cfg.distill > 0 and cfg.distill_keep_label:
        soft_targets = keep_label_first(soft_targets, y_train)
    model.get_layer("band_norm").adapt(sample[:4000])
    steps = cfg.epochs * int(np.ceil(len(sample) / cfg.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )
    stopping = len(val_mels) > 0
    val_windows, val_owner = track_windows(val_mels, s) if stopping else (None, None)
    best, best_loss, best_epoch, history, t0, ema = None, np.inf, 0, [], time.time(), None
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"train {name}", unit="epoch")
    for epoch in bar:
        x, yi, owner = random_crops(train_mels, y_train, per_track, s, rng, weight)
        yy = np.eye(n_classes, dtype=np.float32)[yi]
        if cfg.distill > 0:
            yy = (1 - cfg.distill) * yy + cfg.distill * np.asarray(soft_targets, np.float32)[owner]
        if cfg.freq_shift > 0:
            x = shift_bands(x, cfg.freq_shift, rng)
        if cfg.eq_db > 0:
            x = random_eq(x, cfg.eq_db, rng)
        if cfg.mixup_alpha > 0:
            lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, (len(x), 1)).astype(np.float32)
            lam = np.maximum(lam, 1 - lam)
            j = rng.permutation(len(x))
            x = lam[:, :, None] * x + (1 - lam[:, :, None]) * x[j]
            yy = lam * yy + (1 - lam) * yy[j]
        h = model.fit(x, yy, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=True)
        if cfg.weight_ema > 0:  # evaluate (and keep) the averaged weights
            current = model.get_weights()
            ema = (
                current
                if ema is None
                else [cfg.weight_ema * e + (1 - cfg.weight_ema) * w for e, w in zip(ema, current)]
            )
            model.set_weights(ema)
        row = {
            "epoch": epoch,
            "loss": float(h.history["loss"][0]),
            "accuracy": float(h.history["accuracy"][0]),
        }
        if stopping:  # "val_*": the stopping tracks (held-back training artists)
            probs = track_probs(model, val_windows, val_owner, len(val_mels))
            p_true = probs[np.arange(len(y_val)), y_val]
            row["val_loss"] = float(-np.mean(np.log(np.clip(p_true, 1e-7, 1))))
            row["val_accuracy"] = float((probs.argmax(1) == y_val).mean())
        history.append(row)
        if not stopping or row["val_loss"] < best_loss:
            best_loss, best, best_epoch = row.get("val_loss", np.nan), model.get_weights(), epoch
        if cfg.weight_ema > 0:
            model.set_weights(current)
        bar.set_postfix(
            loss=f"{row['loss']:.3f}",
            **{k: f"{row[k]:.3f}" for k in ("val_loss", "val_accuracy") if k in row},
            best=best_epoch,
        )
        if epoch - best_epoch >= cfg.patience or time.time() - t0 > cfg.max_minutes * 60:
            break
    model.set_weights(best)
    return FitResult(model, history, best_epoch, time.time() - t0)
