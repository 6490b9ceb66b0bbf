"""Fine-tune musicnn's back-end and last mid-end layer for the nine genres: one
prepared script for a GPU machine, runnable on CPU on a tiny subset.

    python -m train.experiments.finetune_data --out .ftdata     # once, on CPU, with our audio
    KERAS_BACKEND=torch python -m train.experiments.finetune_musicnn --data .ftdata --out runs/ft
    python -m train.experiments.finetune_musicnn --data .ftdata --out /tmp/ft --tiny  # CPU smoke

The model is the Keras port itself (genre_detector.models.musicnn.build_backbone, both
backbones, pretrained weights): in each backbone only `midend3_conv` and the back-end's
`dense` train (batch normalisation stays frozen, in inference mode, unless train_bn), and a
softmax layer on the two 200-unit penultimate layers, warm-started by a logistic regression on
the frozen windows, gives the genre. So at step 0 the network is exactly the frozen port, and
the trained backbones save as `{MSD,MTT}_musicnn.weights.h5` that build_backbone loads. It
needs only numpy, scikit-learn, h5py and Keras 3 on any backend (TensorFlow here; torch or jax
on the device machine, which has no TensorFlow and none of our audio stack).

Training: random 3 s crops near the served windows (train/experiments/finetune_data.py),
class-balanced sampling with artists weighted by their clip count ** -0.5 (as train.fit),
SpecAugment (one band of up to 12 mel bands and one span of up to 20 frames set to silence),
mixup, AdamW with cosine decay, early stopping on the track-level loss of an inner split of
the training artists.
Evaluation: 5-fold artist-grouped CV (train.data.artist_folds' folds); on each held-out fold,
(a) the fine-tuned network's own head (geometric mean over the served windows), (b) the shipped
head's recipe (train.pretrained.fit_head: logistic regression on the mean and spread of the
500 window features) on the fine-tuned backbones, against (c) the same head on the frozen
backbones (the baseline) and (d) the warm-start linear probe. Then a refit on every artist
(epochs: the folds' median best epoch) gives the weights written to --out, with metrics.json,
out-of-fold probabilities (oof.npz) and the fold models' average (fold_average.npz).
`--set train_bn=true` (any Config field) and `--variant KEY=VALUE,...` (another configuration
cross-validated on the same folds afterwards, if time is left) change the recipe; --budget-s
caps the whole run (each fit gets an equal share and stops at it, best weights kept).

Its result (models/report/finetune-musicnn.json) is in models/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.experiments.finetune_data import WINDOW, eval_windows, load

BACKBONES = ("MSD_musicnn", "MTT_musicnn")
TRAINABLE = ("midend3_conv", "dense")  # per backbone (names prefixed by the backbone's)
TRAINABLE_BN = ("midend3_bn", "pool_bn", "penultimate")
PARITY_TOL = 1e-3  # max |difference| with TensorFlow's outputs on the reference windows


@dataclass
class Config:
    epochs: int = 30  # upper bound; early stopping on the inner split
    patience: int = 6
    crops_per_track: int = 4  # per training track per epoch (mean class; class-balanced)
    batch_size: int = 128
    learning_rate: float = 3e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    mixup_alpha: float = 0.4  # 0 disables
    freq_mask: int = 12  # mel bands, at most, in one masked band (0 disables)
    time_mask: int = 20  # frames, at most, in one masked span (0 disables)
    dropout: float = 0.3  # before the genre layer
    train_bn: bool = False  # also train the trainable layers' batch normalisation
    artist_balance: float = 0.5  # crops per track ~ clips_of_its_artist ** -this
    inner_splits: int = 5  # inner validation = one of these artist-grouped parts
    probe_c: float = 0.01  # warm start: window-level logistic regression's inverse L2
    head_c: float = 0.01  # the shipped head's recipe (models/MODEL_CARD.md)
    class_balance: float = 0.75
    max_steps_per_epoch: int = 0  # 0 = no cap (the tiny run caps it)
    seed: int = 0


def log(msg: str, fh=None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


# ---------------------------------------------------------------- data


def artist_folds(y, groups, n_splits: int, seed: int):
    """The folds of train.data.artist_folds (StratifiedGroupKFold on genre and artist)."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y, groups))


def inner_split(y, groups, n_splits: int, seed: int):
    """(train positions, validation positions): one of n_splits artist-grouped parts, stratified
    by genre where every genre allows it (else only grouped: tiny subsets)."""
    try:
        return artist_folds(y, groups, n_splits, seed)[0]
    except ValueError:
        from sklearn.model_selection import GroupKFold

        return next(GroupKFold(n_splits=n_splits).split(np.zeros(len(y)), y, groups))


def crop_weights(y, groups, power: float):
    """train.fit.crop_weights: per-track weights ~ n_artist_tracks ** -power, mean 1 per class."""
    if not power:
        return np.ones(len(y))
    counts = Counter(groups)
    w = np.array([counts[g] ** -power for g in groups], dtype=float)
    for c in np.unique(y):
        w[y == c] /= w[y == c].mean()
    return w


def sample_crops(data, idx, cfg: Config, n_classes: int, rng):
    """One epoch of class-balanced random 3 s crops from the training tracks `idx`:
    (uint8 windows, label of each)."""
    y, groups = data["y"][idx], data["groups"][idx]
    counts = np.maximum(np.bincount(y, minlength=n_classes), 1)
    per_class = np.maximum(1, np.round(cfg.crops_per_track * counts[counts > 0].mean() / counts))
    n = np.floor(per_class[y] * crop_weights(y, groups, cfg.artist_balance) + rng.random(len(y)))
    owner = np.repeat(idx, n.astype(int))
    k = (rng.random(len(owner)) * data["n_windows"][owner]).astype(int)
    off = rng.integers(0, data["span"] - WINDOW + 1, len(owner))
    win = data["windows"]
    x = np.stack([win[i, j, :, o : o + WINDOW] for i, j, o in zip(owner, k, off)])
    order = rng.permutation(len(x))
    return x[order], data["y"][owner][order]


def spec_augment(x: np.ndarray, cfg: Config, rng) -> np.ndarray:
    """One band of mel bins and one span of frames per window set to silence (0 on the log10
    scale)."""
    n, f, t = x.shape
    if cfg.freq_mask:
        w = rng.integers(0, cfg.freq_mask + 1, n)
        a = rng.integers(0, f - w + 1)
        band = np.arange(f)[None, :]
        x = np.where(((band >= a[:, None]) & (band < (a + w)[:, None]))[:, :, None], 0.0, x)
    if cfg.time_mask:
        w = rng.integers(0, cfg.time_mask + 1, n)
        a = rng.integers(0, t - w + 1)
        span = np.arange(t)[None, :]
        x = np.where(((span >= a[:, None]) & (span < (a + w)[:, None]))[:, None, :], 0.0, x)
    return x.astype(np.float32)


def mixup(x, yy, alpha: float, rng):
    if alpha <= 0:
        return x, yy
    lam = rng.beta(alpha, alpha, (len(x), 1)).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)
    j = rng.permutation(len(x))
    return lam[:, :, None] * x + (1 - lam[:, :, None]) * x[j], lam * yy + (1 - lam) * yy[j]


# ---------------------------------------------------------------- model


def set_trainable(net, name: str, train_bn: bool) -> None:
    names = {f"{name}_{k}" for k in TRAINABLE + (TRAINABLE_BN if train_bn else ())}
    net.trainable = True
    for layer in net.layers:
        layer.trainable = layer.name in names


def build_model(n_classes: int, cfg: Config, backbones=BACKBONES, weights_dir=None):
    """(genre model: windows -> probabilities, feature model: windows -> the 500 window
    features of train.pretrained, sharing the same backbones)."""
    import keras
    from keras import layers

    from genre_detector.models import musicnn

    inp = keras.Input((musicnn.N_MELS, WINDOW), name="logmel")
    pens, feats = [], []
    for name in backbones:
        net = musicnn.build_backbone(name, weights=weights_dir is None)
        if weights_dir is not None:
            net.load_weights(Path(weights_dir) / f"{name}.weights.h5")
        set_trainable(net, name, cfg.train_bn)
        out = net(inp)
        pens.append(out["penultimate"])
        feats += [out["penultimate"], out["taggram"]]
    z = layers.Concatenate(name="penultimates")(pens) if len(pens) > 1 else pens[0]
    z = layers.Dropout(cfg.dropout, name="head_dropout")(z)
    probs = layers.Dense(n_classes, activation="softmax", name="genre")(z)
    model = keras.Model(inp, probs, name="musicnn_finetune")
    features = keras.Model(inp, layers.Concatenate(name="features")(feats), name="features")
    return model, features


def trainable_weights(model) -> dict[str, np.ndarray]:
    import keras

    return {v.path: np.asarray(keras.ops.convert_to_numpy(v)) for v in model.trainable_weights}


def n_penultimate(backbones) -> int:
    return 200 * len(backbones)


# ---------------------------------------------------------------- heads and metrics


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def pool_tracks(window_probs, owner, tracks):
    """Geometric mean of each track's window probabilities (the served pooling), normalised."""
    lp = np.log(np.clip(window_probs, 1e-12, 1))
    z = np.stack([lp[owner == i].mean(axis=0) for i in tracks])
    return np.exp(log_softmax(z))


def full_classes(clf, n_classes: int):
    """(coef (K, n), intercept (K,)) of a fitted LogisticRegression over all K classes: a class
    missing from its training data (possible on tiny subsets) gets weights 0 and bias -30."""
    coef, icpt = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # scikit-learn's binary form: p(1) = sigmoid(w x + b)
        coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, icpt[0]])
    full_c = np.zeros((n_classes, coef.shape[1]))
    full_i = np.full(n_classes, -30.0)
    full_c[clf.classes_], full_i[clf.classes_] = coef, icpt
    return full_c, full_i


def fit_probe(pen, y, w, c: float, n_classes: int):
    """Window-level logistic regression on standardised features, folded into (kernel, bias)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(pen)
    clf = LogisticRegression(C=c, max_iter=3000).fit(
        scaler.transform(pen), y, sample_weight=w * len(w) / w.sum()
    )
    coef, icpt = full_classes(clf, n_classes)
    kernel = (coef / scaler.scale_).T
    return kernel.astype(np.float32), (icpt - scaler.mean_ @ kernel).astype(np.float32)


def track_weights(y, groups, n_classes, cfg: Config):
    counts = np.maximum(np.bincount(y, minlength=n_classes), 1).astype(float)
    return counts[y] ** -cfg.class_balance * crop_weights(y, groups, cfg.artist_balance)


def fit_track_head(feats, owner, train, y, groups, n_classes, cfg: Config):
    """train.pretrained.fit_head's recipe (TrackHead: mean and spread of the window features,
    standardised, class weights count ** -0.75, artists count ** -0.5, C = 0.01)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from genre_detector.models.track_head import TrackHead, statistics

    per = [feats[owner == i] for i in train]
    several = [f.std(axis=0, ddof=1) for f in per if len(f) > 1]
    fallback = np.mean(several, axis=0) if several else np.zeros(feats.shape[1])
    x = np.stack([statistics(f, fallback) for f in per])
    w = track_weights(y[train], groups[train], n_classes, cfg)
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=cfg.head_c, max_iter=5000)
    clf.fit(scaler.transform(x), y[train], sample_weight=w * len(w) / w.sum())
    coef, icpt = full_classes(clf, n_classes)
    kernel = (coef / scaler.scale_).T
    bias = icpt - scaler.mean_ @ kernel
    n = x.shape[1] // 2
    return TrackHead(kernel[:n], kernel[n:], bias, fallback)


def head_probs(head, feats, owner, tracks):
    return np.stack([head.track_probs(feats[owner == i]) for i in tracks])


def scores(y, pred, n_classes) -> dict:
    from sklearn.metrics import f1_score

    return {
        "accuracy": float(np.mean(y == pred)),
        "macro_f1": float(
            f1_score(y, pred, labels=range(n_classes), average="macro", zero_division=0)
        ),
    }


def paired(y, pred_a, pred_b, groups, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy of a minus b on the same tracks, with a bootstrap 95 % interval over artists."""
    da = (pred_a == y).astype(float) - (pred_b == y).astype(float)
    uniq, inv = np.unique(groups, return_inverse=True)
    per_sum = np.bincount(inv, weights=da, minlength=len(uniq))
    per_n = np.bincount(inv, minlength=len(uniq)).astype(float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(uniq), (n_boot, len(uniq)))
    boot = per_sum[picks].sum(1) / per_n[picks].sum(1)
    return {
        "difference": float(da.mean()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "fixed": int(((pred_a == y) & (pred_b != y)).sum()),
        "broken": int(((pred_a != y) & (pred_b == y)).sum()),
    }


# ---------------------------------------------------------------- training


class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.time(), budget_s

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    @property
    def left(self) -> float:
        return self.budget - self.elapsed


def finetune(
    data,
    train_idx,
    val_idx,
    cfg: Config,
    n_classes: int,
    deadline: float,
    frozen,
    fh=None,
    epochs: int | None = None,
    backbones=BACKBONES,
):
    """Fine-tune on `train_idx`; early stopping on `val_idx`'s track loss (none: run `epochs`).
    `frozen`: (features of every served window by the frozen port, the track of each).
    Returns (model, features model, best epoch, history)."""
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model, features = build_model(n_classes, cfg, backbones)
    step = data["step"]
    y, groups = data["y"], data["groups"]

    # warm start: a window-level linear probe on the frozen penultimate layers
    feats, owner = frozen
    mask = np.isin(owner, train_idx)
    tr_owner = owner[mask]
    pen = feats[mask][:, _penultimate_columns(backbones)]
    w = track_weights(y[tr_owner], groups[tr_owner], n_classes, cfg)
    kernel, bias = fit_probe(pen, y[tr_owner], w, cfg.probe_c, n_classes)
    model.get_layer("genre").set_weights([kernel, bias])

    n_epochs = epochs or cfg.epochs
    first = sample_crops(data, train_idx, cfg, n_classes, rng)
    steps = int(np.ceil(len(first[0]) / cfg.batch_size))
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, n_epochs * steps, alpha=0.1
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
    )
    if val_idx is not None and len(val_idx):
        val_x, val_owner = eval_windows(data, val_idx)
    best, best_loss, best_epoch, history = None, np.inf, 0, []
    for epoch in range(1, n_epochs + 1):
        t = time.time()
        xq, yi = first if epoch == 1 else sample_crops(data, train_idx, cfg, n_classes, rng)
        if cfg.max_steps_per_epoch:
            xq, yi = (
                xq[: cfg.max_steps_per_epoch * cfg.batch_size],
                yi[: cfg.max_steps_per_epoch * cfg.batch_size],
            )
        x = spec_augment(xq.astype(np.float32) * step, cfg, rng)
        yy = np.eye(n_classes, dtype=np.float32)[yi]
        x, yy = mixup(x, yy, cfg.mixup_alpha, rng)
        h = model.fit(x, yy, batch_size=cfg.batch_size, epochs=1, verbose=0, shuffle=True)
        rec = {"epoch": epoch, "loss": float(h.history["loss"][0]), "windows": len(x)}
        if val_idx is not None and len(val_idx):
            p = pool_tracks(model.predict(val_x, batch_size=256, verbose=0), val_owner, val_idx)
            rec["val_loss"] = float(
                -np.mean(np.log(np.clip(p[np.arange(len(val_idx)), y[val_idx]], 1e-7, 1)))
            )
            rec["val_accuracy"] = float(np.mean(p.argmax(1) == y[val_idx]))
            if rec["val_loss"] < best_loss:
                best_loss, best, best_epoch = rec["val_loss"], model.get_weights(), epoch
        else:
            best_epoch = epoch
        rec["seconds"] = round(time.time() - t, 2)
        history.append(rec)
        log(
            "  "
            + " ".join(
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()
            ),
            fh,
        )
        if val_idx is not None and len(val_idx) and epoch - best_epoch >= cfg.patience:
            break
        if time.time() > deadline:
            log(f"  time cap reached after epoch {epoch}", fh)
            break
    if best is not None:
        model.set_weights(best)
    return model, features, best_epoch, history


def _penultimate_columns(backbones) -> np.ndarray:
    """Columns of the window features (per backbone: 200 penultimate units, then 50 tags)
    that are penultimate units."""
    cols = []
    for b in range(len(backbones)):
        cols += list(range(b * 250, b * 250 + 200))
    return np.asarray(cols)


def check_parity(data, fh=None) -> dict:
    """The frozen port on this backend against TensorFlow's outputs stored with the data."""
    from genre_detector.models.musicnn import build_backbone

    ref = data.get("parity")
    if ref is None:
        return {"checked": False}
    out = {"checked": True}
    for name in BACKBONES:
        got = build_backbone(name).predict(ref["windows"], verbose=0)
        for k in ("taggram", "penultimate"):
            out[f"{name}/{k}"] = float(np.abs(np.asarray(got[k]) - ref[f"{name}/{k}"]).max())
    out["max_abs_diff"] = max(v for k, v in out.items() if "/" in k)
    out["ok"] = out["max_abs_diff"] <= PARITY_TOL
    log(f"parity with TensorFlow: {out}", fh)
    return out


def backend_setup() -> dict:
    import keras

    info = {"backend": keras.backend.backend(), "keras": keras.__version__}
    if info["backend"] == "torch":
        import torch

        # plain fp32 (no TF32), so parity and training compute what the CPU port does
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        info["torch"] = torch.__version__
        info["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    elif info["backend"] == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "highest")
        info["jax"] = jax.__version__
        info["device"] = str(jax.devices()[0])
    return info


METHODS = ("finetuned", "finetuned_head", "frozen_head", "frozen_probe")


def cross_validate(data, folds, cfg: Config, frozen, per_fit: float, clock: Clock, fh, on_fold):
    """Fine-tune on each fold's training artists (early stopping on an inner artist split) and
    predict its held-out tracks four ways (METHODS). Returns (fold records, out-of-fold
    probabilities per method, fold index of each track, trainable weights of each fold model,
    best epoch of each)."""
    y, groups = data["y"], data["groups"]
    n_classes = len(data["genres"])
    frozen_feats, owner = frozen
    all_x, _ = eval_windows(data)
    pen_cols = _penultimate_columns(BACKBONES)
    oof = {m: np.full((len(y), n_classes), np.nan, np.float32) for m in METHODS}
    fold_of = np.full(len(y), -1)
    records, fold_weights, best_epochs = [], [], []
    for k, (tr, te) in enumerate(folds):
        if clock.left < 0.6 * per_fit:
            log(f"fold {k}: skipped, {clock.left:.0f}s left", fh)
            break
        t = time.time()
        inner = inner_split(y[tr], groups[tr], cfg.inner_splits, cfg.seed + 1 + k)
        inner_tr, inner_val = tr[inner[0]], tr[inner[1]]
        log(
            f"fold {k}: train {len(tr)} (inner {len(inner_tr)} + val {len(inner_val)}), "
            f"test {len(te)}",
            fh,
        )
        model, feats_model, best_epoch, history = finetune(
            data,
            inner_tr,
            inner_val,
            cfg,
            n_classes,
            deadline=time.time() + per_fit * 0.85,
            frozen=frozen,
            fh=fh,
        )
        best_epochs.append(best_epoch)
        fold_weights.append(trainable_weights(model))
        te_x, te_owner = eval_windows(data, te)
        p = model.predict(te_x, batch_size=256, verbose=0)
        oof["finetuned"][te] = pool_tracks(p, te_owner, te)
        ft_feats = feats_model.predict(all_x, batch_size=256, verbose=0)
        head = fit_track_head(ft_feats, owner, tr, y, groups, n_classes, cfg)
        oof["finetuned_head"][te] = head_probs(head, ft_feats, owner, te)
        head = fit_track_head(frozen_feats, owner, tr, y, groups, n_classes, cfg)
        oof["frozen_head"][te] = head_probs(head, frozen_feats, owner, te)
        tr_mask = np.isin(owner, tr)
        tr_y, tr_g = y[owner[tr_mask]], groups[owner[tr_mask]]
        kern, b = fit_probe(
            frozen_feats[tr_mask][:, pen_cols],
            tr_y,
            track_weights(tr_y, tr_g, n_classes, cfg),
            cfg.probe_c,
            n_classes,
        )
        z = frozen_feats[:, pen_cols] @ kern + b
        oof["frozen_probe"][te] = pool_tracks(np.exp(log_softmax(z)), owner, te)
        fold_of[te] = k
        rec = {
            "fold": k,
            "n_train": int(len(tr)),
            "n_test": int(len(te)),
            "best_epoch": best_epoch,
            "seconds": round(time.time() - t, 1),
            "history": history,
        }
        for m in METHODS:
            rec[m] = scores(y[te], oof[m][te].argmax(1), n_classes)
        records.append(rec)
        log(
            f"fold {k} done in {rec['seconds']}s (accuracy/macro-F1): "
            + ", ".join(f"{m} {rec[m]['accuracy']:.3f}/{rec[m]['macro_f1']:.3f}" for m in METHODS),
            fh,
        )
        on_fold(records)
    return records, oof, fold_of, fold_weights, best_epochs


def summarize(data, records, oof, fold_of) -> dict:
    """Pooled and per-fold means of every method, recall per genre, and paired differences
    against the frozen baseline (bootstrap over artists)."""
    y, groups, genres = data["y"], data["groups"], list(data["genres"])
    done = fold_of >= 0
    summary = {}
    for m in METHODS:
        pred = oof[m][done].argmax(1)
        summary[m] = {
            "pooled": scores(y[done], pred, len(genres)),
            "mean_fold_accuracy": float(np.mean([r[m]["accuracy"] for r in records])),
            "mean_fold_macro_f1": float(np.mean([r[m]["macro_f1"] for r in records])),
            "recall": {
                g: float(np.mean(pred[y[done] == c] == c)) if (y[done] == c).any() else None
                for c, g in enumerate(genres)
            },
        }
    base = oof["frozen_head"][done].argmax(1)
    for m in ("finetuned", "finetuned_head", "frozen_probe"):
        summary[m]["vs_frozen_head"] = paired(y[done], oof[m][done].argmax(1), base, groups[done])
    return summary


def run(args) -> dict:
    cfg = Config(**args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / "log.txt", "a")
    clock = Clock(args.budget_s)
    info = backend_setup()
    log(f"backend {info}; config {dataclasses.asdict(cfg)}", fh)
    data = load(args.data)
    y, groups, genres = data["y"], data["groups"], list(data["genres"])
    n_classes = len(genres)
    log(f"{len(y)} tracks, {len(set(groups))} artists, windows {data['windows'].shape}", fh)
    metrics: dict = {
        "backend": info,
        "config": dataclasses.asdict(cfg),
        "genres": genres,
        "n_tracks": int(len(y)),
        "folds": [],
        "args": {k: v for k, v in vars(args).items() if k not in ("set", "variant")},
    }

    def dump():
        metrics["seconds"] = round(clock.elapsed, 1)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))

    metrics["parity"] = check_parity(data, fh)
    dump()
    if metrics["parity"].get("checked") and not metrics["parity"]["ok"]:
        log("parity failed: stopping before any training", fh)
        return metrics

    # frozen features of every served window (the baseline's and the warm start's inputs)
    all_x, owner = eval_windows(data)
    t = time.time()
    _, frozen_model = build_model(n_classes, cfg)
    frozen_feats = frozen_model.predict(all_x, batch_size=256, verbose=0)
    frozen = (frozen_feats, owner)
    log(f"frozen features {frozen_feats.shape} in {time.time() - t:.1f}s", fh)

    folds = artist_folds(y, groups, args.folds, cfg.seed)
    if args.max_folds:
        folds = folds[: args.max_folds]
    n_fits = len(folds) + (0 if args.no_refit else 1)
    per_fit = max((args.budget_s * args.main_share - clock.elapsed) / n_fits, 1.0)

    def on_fold(records):
        metrics["folds"] = records
        dump()

    t_cv = time.time()
    records, oof, fold_of, fold_weights, best_epochs = cross_validate(
        data, folds, cfg, frozen, per_fit, clock, fh, on_fold
    )
    metrics["cv_seconds"] = round(time.time() - t_cv, 1)
    if records:
        metrics["summary"] = summarize(data, records, oof, fold_of)
        np.savez(
            out / "oof.npz",
            y=y,
            fold=fold_of,
            rel=data["rel"],
            groups=groups,
            **{m: v for m, v in oof.items()},
        )
    avg = None
    if fold_weights:  # the fold models' average ("soup" of the trainable layers)
        avg = {p: np.mean([fw[p] for fw in fold_weights], axis=0) for p in fold_weights[0]}
        np.savez(out / "fold_average.npz", **avg)
    dump()
    _final(args, data, cfg, frozen, per_fit, clock, fh, best_epochs, avg, out, metrics)
    dump()
    metrics["variants"] = {}  # filled as each variant ends (dump writes them as they come)
    cv = (folds, oof, fold_of, metrics["cv_seconds"])
    _variants(args, data, cfg, cv, frozen, per_fit, clock, fh, metrics["variants"], dump)
    dump()
    log(f"done in {clock.elapsed:.0f}s", fh)
    fh.close()
    return metrics


def _final(args, data, cfg, frozen, per_fit, clock, fh, best_epochs, avg, out, metrics) -> None:
    """The weights written to --out: a refit on every track for the folds' median best epoch
    (when time is left), else the fold models' average `avg`; records which in metrics."""
    y, genres = data["y"], list(data["genres"])
    final = None
    if not args.no_refit and best_epochs:
        epochs = max(1, int(np.median(best_epochs)))
        if clock.left > 0.6 * per_fit:
            log(f"refit on all {len(y)} tracks for {epochs} epochs", fh)
            t = time.time()
            final, _, _, history = finetune(
                data,
                np.arange(len(y)),
                None,
                cfg,
                len(genres),
                deadline=time.time() + max(min(per_fit, clock.left - 20), 5),
                frozen=frozen,
                fh=fh,
                epochs=epochs,
            )
            metrics["refit"] = {
                "epochs": epochs,
                "seconds": round(time.time() - t, 1),
                "history": history,
            }
        else:
            log(f"refit skipped: {clock.left:.0f}s left", fh)
    if final is None and avg is not None:  # the fold average instead
        import keras

        keras.backend.clear_session()
        final, _ = build_model(len(genres), cfg)
        for v in final.trainable_weights:
            v.assign(avg[v.path])
        metrics["shipped"] = "fold_average"
    else:
        metrics["shipped"] = "refit" if final is not None else None
    if final is not None:
        for name in BACKBONES:
            final.get_layer(name).save_weights(str(out / f"{name}.weights.h5"))
        kern, b = final.get_layer("genre").get_weights()
        np.savez(
            out / "genre_head.npz",
            kernel=kern,
            bias=b,
            genres=np.array(genres),
            backbones=np.array(BACKBONES),
        )


def _variants(args, data, cfg, cv, frozen, per_fit, clock, fh, variants: dict, dump) -> None:
    """Each --variant into `variants`: a whole cross-validation on the main one's folds while
    time is left, paired against its out-of-fold predictions (cv: folds, oof, fold_of and
    the seconds it took)."""
    y, groups = data["y"], data["groups"]
    folds, oof, fold_of, cv_seconds = cv
    for spec in args.variant or []:
        override = parse_set(spec.split(","))
        need = cv_seconds * 1.1
        if clock.left < need:
            log(f"variant {spec}: skipped ({clock.left:.0f}s left, a CV took {need:.0f}s)", fh)
            continue
        vcfg = dataclasses.replace(cfg, **override)
        log(f"variant {spec}", fh)
        v_records, v_oof, v_fold_of, _, _ = cross_validate(
            data, folds, vcfg, frozen, per_fit, clock, fh, lambda r: None
        )
        if not v_records:
            continue
        v_sum = summarize(data, v_records, v_oof, v_fold_of)
        done = (v_fold_of >= 0) & (fold_of >= 0)
        for m in ("finetuned", "finetuned_head"):
            v_sum[m]["vs_main_config"] = paired(
                y[done], v_oof[m][done].argmax(1), oof[m][done].argmax(1), groups[done]
            )
        variants[spec] = {
            "summary": {m: v_sum[m] for m in ("finetuned", "finetuned_head")},
            "folds": [
                {k: r[k] for k in ("fold", "best_epoch", "seconds", "finetuned", "finetuned_head")}
                for r in v_records
            ],
        }
        dump()


def parse_set(items) -> dict:
    types = {f.name: f.type for f in dataclasses.fields(Config)}
    cast = {"int": int, "float": float, "bool": lambda v: str(v).lower() in {"1", "true", "yes"}}
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if k not in types:
            raise SystemExit(f"unknown setting {k!r}; valid: {', '.join(types)}")
        out[k] = cast[types[k]](v)
    return out


TINY = {
    "epochs": 2,
    "patience": 1,
    "crops_per_track": 1,
    "batch_size": 4,
    "max_steps_per_epoch": 2,
    "inner_splits": 2,
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default=".ftdata", help="folder written by train.experiments.finetune_data"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--max-folds", type=int, default=0, help="run only the first N folds")
    p.add_argument("--no-refit", action="store_true")
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="wall-clock budget of the whole run"
    )
    p.add_argument(
        "--main-share",
        type=float,
        default=1.0,
        help="share of the budget for the main configuration's CV and refit (rest: variants)",
    )
    p.add_argument(
        "--variant",
        action="append",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="another configuration cross-validated on the same folds afterwards, time allowing",
    )
    p.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: 2 folds, 2 epochs of 2 steps"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a Config field")
    args = p.parse_args(argv)
    args.set = parse_set(args.set)
    if args.tiny:
        args.set = {**TINY, **args.set}
        args.folds = min(args.folds, 2)
    metrics = run(args)
    return metrics


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = main()
    # 3: this backend does not compute what TensorFlow computes (the device command then tries
    # another backend)
    sys.exit(3 if result["parity"].get("checked") and not result["parity"]["ok"] else 0)
