"""Where the serving image's bytes go: per layer, and per installed Python package with its
licence, measured in the image itself (`make container` builds it).

    python loadtests/image_size.py [--image genre-detector:latest] [--readme]

Prints Markdown tables; `--readme` also writes them into loadtests/README.md between the
`image-size` markers. Every dependency added to bentofile.yaml shows up here with its bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- image-size:begin -->", "<!-- image-size:end -->"
PODMAN = ["podman", "--runtime", "runc"]

# Run by the image's own Python: each installed distribution, its licence and the bytes of the
# files it installed (RECORD), and the bytes of everything else in the venv and the system.
IN_IMAGE = r"""
import json, os, importlib.metadata as md
def size(paths):
    total = 0
    for p in paths:
        try:
            total += os.lstat(p).st_size
        except OSError:
            pass
    return total
def tree(root):
    return size(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
def licence(meta):
    text = meta.get("License-Expression") or ""
    if not text:
        classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        text = ", ".join(classifiers) or (meta.get("License") or "").splitlines()[0:1]
        text = text if isinstance(text, str) else (text[0] if text else "")
    return text.strip()[:60] or "?"
rows, seen = [], 0
for dist in md.distributions():
    files = [str(dist.locate_file(f)) for f in dist.files or []]
    n = size(files)
    seen += n
    rows.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": n,
                 "licence": licence(dist.metadata)})
venv = os.environ.get("VIRTUAL_ENV", "/app/.venv")
print(json.dumps({"packages": rows, "venv": tree(venv),
                  "bento": tree(os.environ.get("BENTO_PATH", "/home/bentoml/bento"))}))
"""


def _podman(*args: str) -> str:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, check=True).stdout


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def layers(image: str) -> list[dict]:
    rows = json.loads(_podman("history", "--format", "json", image))
    out = []
    for r in reversed(rows):  # oldest first
        if not r.get("size"):
            continue
        made = re.sub(r"\s+", " ", r.get("createdBy") or r.get("CreatedBy") or "")
        if "#(nop) ADD file:" in made and not out:
            made = "the base image (python:3.11-slim)"
        elif "#(nop)" in made and not re.search(r"#\(nop\) (ADD|COPY)", made):
            # a metadata step cannot add bytes: this is where --squash put every new layer
            made = "the build's own steps, squashed (user, venv and packages, slimming, Bento)"
        out.append({"bytes": r["size"], "what": made[:90]})
    return out


def packages(image: str) -> dict:
    return json.loads(
        _podman("run", "--rm", "--entrypoint", "/app/.venv/bin/python", image, "-c", IN_IMAGE)
    )


def report(image: str) -> str:
    total = int(_podman("image", "inspect", "--format", "{{.Size}}", image).strip())
    lay = layers(image)
    inside = packages(image)
    pk = sorted(inside["packages"], key=lambda r: -r["bytes"])
    in_packages = sum(r["bytes"] for r in pk)
    lines = [
        f"Image `{image}`: **{_mb(total)} MB** (podman's size, uncompressed).",
        "",
        "| layer | MB |",
        "|---|---|",
        *(f"| `{r['what']}` | {_mb(r['bytes'])} |" for r in lay),
        "",
        f"Python packages in the image: {len(pk)}, {_mb(in_packages)} MB of the files their "
        f"RECORDs list; the venv is {_mb(inside['venv'])} MB (the rest: bytecode compiled at "
        f"install, which RECORDs leave out); the Bento with its models {_mb(inside['bento'])} MB.",
        "",
        "| package | version | MB | licence |",
        "|---|---|---|---|",
        *(
            f"| {r['name']} | {r['version']} | {_mb(r['bytes'])} | {r['licence']} |"
            for r in pk
            if r["bytes"] >= 0.5e6
        ),
        f"| {sum(r['bytes'] < 0.5e6 for r in pk)} more, each < 0.5 MB | | "
        f"{_mb(sum(r['bytes'] for r in pk if r['bytes'] < 0.5e6))} | |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", default="genre-detector:latest")
    ap.add_argument("--readme", action="store_true", help="write the tables into README.md")
    args = ap.parse_args(argv)
    text = report(args.image)
    print(text)
    if args.readme:
        doc = README.read_text()
        if BEGIN not in doc:
            sys.exit(f"{README} has no {BEGIN} marker")
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
