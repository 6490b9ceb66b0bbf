"""The rows of a tagging run: one per track, and the summary counted over them.

    row = row_from_result(path, result)   # a scoring.TrackResult (in-process and Ray engines)
    row = row_from_reply(path, reply)     # the service's /predict reply (--url)
    row = error_row(path, reason, detail) # a file that cannot be used
    summary = Summary(labels); summary.add(row); print(summary.report(seconds))

Every engine's rows have these keys, so batch.writers writes them all the same way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from genre_detector.scoring.descriptors import as_block


def compact_timeline(windows: list[dict], duration_s: float) -> str:
    """'0-4.5:rock;4.5-60:pop': runs of windows with the same genre, cut where a run starts."""
    runs: list[list] = []
    for w in windows:
        if runs and runs[-1][1] == w["top_genre"]:
            continue
        runs.append([w["start_s"], w["top_genre"]])
    ends = [r[0] for r in runs[1:]] + [duration_s]
    return ";".join(f"{round(a, 1):g}-{round(b, 1):g}:{g}" for (a, g), b in zip(runs, ends))


def _row(
    path, duration_s, n_windows, top: dict, probabilities: dict, timeline, tags, descriptors
) -> dict:
    """A row; top: model (and "ensemble") -> (genre, probability); descriptors: the tempo and
    key block (docs/api.md), written as tempo_* and key_* columns."""
    row = {"path": path, "duration_s": round(float(duration_s), 3), "n_windows": int(n_windows)}
    for name, (genre, p) in top.items():
        row[f"{name}_genre"] = genre
        row[f"{name}_probability"] = round(float(p), 4)
    row["probabilities"] = {g: round(float(p), 4) for g, p in probabilities.items()}
    row["descriptors"] = descriptors
    row["timeline"] = compact_timeline(timeline, float(duration_s))
    row["model_tags"] = dict(tags)
    row["error"] = ""
    return row


def row_from_result(path: str, result) -> dict:
    """A row from a scoring.TrackResult (the in-process and Ray engines)."""
    top = {n: (m.verdict.top_genre, m.verdict.top_probability) for n, m in result.models.items()}
    top["ensemble"] = (result.ensemble.top_genre, result.ensemble.top_probability)
    e = result.ensemble
    return _row(
        path,
        result.duration_s,
        result.n_windows,
        top,
        dict(zip(e.labels, e.probabilities)),
        [{"start_s": w.start_s, "top_genre": w.top_genre} for w in result.timeline],
        result.model_tags,
        as_block(result.descriptors),
    )


def row_from_reply(path: str, reply: dict) -> dict:
    """A row from the service's /predict reply (the remote engine: a client of the service)."""
    verdicts = [*reply["models"].items(), ("ensemble", reply["ensemble"])]
    return _row(
        path,
        reply["duration_s"],
        reply["n_windows"],
        {n: (m["top_genre"], m["top_probability"]) for n, m in verdicts},
        reply["ensemble"]["probabilities"],
        reply["timeline"],
        reply["model_tags"],
        reply.get("descriptors") or as_block(None),
    )


def error_row(path: str, reason: str, detail: str) -> dict:
    detail = " ".join(str(detail).split())  # one line, whatever the message held
    return {"path": path, "error": f"{reason}: {detail}"}


def error_reason(row: dict) -> str:
    return row["error"].split(":", 1)[0] if row.get("error") else ""


class Summary:
    """Running counts over rows (nothing kept per track): successes, failures by reason,
    and with labels_from_folders accuracy per model against each file's parent folder."""

    def __init__(self, labels: list[str], labels_from_folders: bool = False):
        self.labels, self.check = set(labels), labels_from_folders
        self.ok, self.resumed, self.failed = 0, 0, Counter()
        self.catalog_added: int | None = None  # tracks new to the catalog (tag --catalog)
        self.scored, self.correct, self.models = 0, Counter(), []

    def add(self, row: dict, resumed: bool = False) -> None:
        if resumed:
            self.resumed += 1
        elif row.get("error"):
            self.failed[error_reason(row)] += 1
        else:
            self.ok += 1
        truth = Path(row["path"]).parent.name
        if not self.check or row.get("error") or truth not in self.labels:
            return
        self.scored += 1
        for key, genre in row.items():
            if key.endswith("_genre"):
                name = key[: -len("_genre")]
                if name not in self.models:
                    self.models.append(name)
                self.correct[name] += genre == truth

    def report(self, seconds: float) -> str:
        done = self.ok + sum(self.failed.values())
        why = ", ".join(f"{r} {n}" for r, n in self.failed.most_common())
        lines = [
            f"tagged {done} tracks in {seconds:.1f} s ({done / max(seconds, 1e-9):.2f} "
            f"tracks/s): {self.ok} ok, {sum(self.failed.values())} failed"
            + (f" ({why})" if why else "")
            + (f"; {self.resumed} already in the output" if self.resumed else "")
        ]
        if self.catalog_added is not None:
            lines.append(f"catalog: {self.catalog_added} new tracks stored")
        if self.check:
            acc = ", ".join(f"{m} {self.correct[m] / self.scored:.3f}" for m in self.models)
            lines.append(
                f"accuracy over {self.scored} tracks whose folder is a label: " + (acc or "-")
            )
        return "\n".join(lines)
