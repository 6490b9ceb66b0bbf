"""Print the README's table of cross-validated model numbers from models/report/crossval.json
(what `python -m train.experiments.combine_cv` writes); tests/test_readme.py keeps the
README equal to it.

    python docs/models_table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from genre_detector.models.families import display_name  # noqa: E402

CROSSVAL = REPO / "models" / "report" / "crossval.json"


def table(path: Path = CROSSVAL) -> str:
    models = json.loads(path.read_text())["models"]
    head = "| model | CV accuracy | macro-F1 | accuracy emotify / 4q | weakest recall | ECE |"
    rows = [head, "|---|---|---|---|---|---|"]
    for name, m in models.items():
        label = "**calibrated ensemble**" if name == "ensemble" else display_name(name)
        weakest = min(m["recall"], key=m["recall"].get)
        ece = m["ece_calibrated"] if isinstance(m.get("ece_calibrated"), float) else m["ece"]
        acc = f"{100 * m['accuracy']:.1f} %"
        rows.append(
            f"| {label} | {f'**{acc}**' if name == 'ensemble' else acc} | {m['macro_f1']:.3f} "
            f"| {100 * m['per_source']['emotify']:.1f} / {100 * m['per_source']['4q']:.1f} % "
            f"| {weakest} {m['recall'][weakest]:.2f} | {ece:.3f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
