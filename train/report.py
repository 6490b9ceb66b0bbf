"""Run report: JSON + Markdown with training-curve and confusion-matrix PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [h["loss"] for h in history], label="train (windows)")
    b.plot(ep, [h["accuracy"] for h in history], label="train (windows)")
    if all("val_loss" in h for h in history):  # the stopping tracks, not the scored ones
        a.plot(ep, [h["val_loss"] for h in history], label="stopping artists (tracks)")
        b.plot(ep, [h["val_accuracy"] for h in history], label="stopping artists (tracks)")
    a.set_title("loss"), a.set_xlabel("epoch"), a.legend()
    b.set_title("accuracy"), b.set_xlabel("epoch"), b.set_ylim(0, 1), b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                cm[i, j],
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _n_stop(report: dict) -> str:
    stop = report["split"].get("stop_tracks") or {}
    sizes = sorted({len(v) for v in stop.values()})
    return f"{' / '.join(map(str, sizes))} tracks" if sizes else "none in this run"


def write_report(out_dir: Path, report: dict) -> tuple[Path, Path]:
    """report = {"labels", "split", "models": {name: {...metrics, history, tag}}, "ensemble"}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = report["labels"]
    lines = [
        f"# Training run {report['run_id']}",
        "",
        f"Data: `{report['data']}` ({report['split']['n_train']} training tracks, "
        f"{report['split']['n_val']} validation tracks, split by {report['split']['by']}; "
        f"fingerprint {report['data_fingerprint']}). Total time {report['seconds']:.0f} s.",
        "",
        "The validation tracks are used for nothing but these numbers (and the calibration): "
        "the research families stop early on artists held back from the training side "
        f'({_n_stop(report)}), so "epochs" is the epoch kept by that stopping and "train '
        'accuracy" is on the tracks fitted.',
        "",
        "| model | val accuracy | val macro-F1 | train accuracy | "
        + " | ".join(f"recall {g}" for g in labels)
        + " | epochs | seconds | tag |",
        "|---" * (7 + len(labels)) + "|",
    ]
    rows = dict(report["models"])
    if report.get("ensemble"):
        rows["ensemble"] = report["ensemble"]
    for name, r in rows.items():
        v = r["val"]
        recalls = " | ".join(f"{v['per_genre'][g]['recall']:.2f}" for g in labels)
        lines.append(
            f"| {name} | {v['accuracy']:.3f} | {v['macro_f1']:.3f} | "
            f"{r.get('train', {}).get('accuracy', float('nan')):.3f} | {recalls} | "
            f"{r.get('best_epoch', '-')} | {r.get('seconds', 0):.0f} | "
            f"{r.get('tag', '-')} |"
        )
        plot_confusion(
            v["confusion"], labels, out_dir / f"confusion_{name}.png", f"{name}: validation tracks"
        )
        if r.get("history"):
            plot_curves(r["history"], out_dir / f"curves_{name}.png", name)
    lines += [
        f"\n**{n} not stored:** {r['inference_check']}"
        for n, r in report["models"].items()
        if not r.get("inference_check", "ok").startswith("ok")
    ]
    lines += (
        [""]
        + [f"![{n}](confusion_{n}.png)" for n in rows]
        + [f"![{n}](curves_{n}.png)" for n, r in report["models"].items() if r.get("history")]
    )
    md, js = out_dir / "report.md", out_dir / "report.json"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(report, indent=1))
    return js, md
