"""The package's rooms along the flow of data, checked on the source (every import, lazy ones
inside functions included):

    config, errors, numerics  ->  audio  ->  models  ->  runtime  ->  scoring  ->  catalog
                                                                      ->  serve | batch

A module imports only from its own room or rooms to its left (serve and batch use the
catalog's public functions; the catalog never imports them); serve and batch never import
each other; no module imports itself back through others (no cycles); loadtests/ never
imports tests/. __main__ (the command line) sits on top and may import anything.

Beside the package, the same checks on train/ and loadtests/: no cycles, the package never
imports them, and the training pipeline (the modules at the top of train/, and collect/)
imports nothing from the rooms below it that only measure (train/experiments/, train/ports/,
train/evals/).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "src" / "genre_detector"
RANK = {
    "config": 0,
    "errors": 0,
    "numerics": 0,
    "audio": 1,
    "models": 2,
    "runtime": 3,
    "scoring": 4,
    "catalog": 5,
    "serve": 6,
    "batch": 6,
    "__main__": 9,
}


def _module_of(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists_under(base: Path, module: str) -> bool:
    path = base.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports_under(path: Path, base: Path, roots: tuple[str, ...]) -> set[str]:
    """The modules of `roots` (top-level packages under `base`) that the file imports
    anywhere (absolute or relative, lazy ones inside functions included)."""
    me = _module_of(path, base).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in roots}
        elif isinstance(node, ast.ImportFrom):
            base_name = node.module or ""
            if node.level:
                up = package[: len(package) - node.level + 1]
                base_name = ".".join(up + ([base_name] if base_name else []))
            if base_name.split(".")[0] not in roots:
                continue
            for a in node.names:  # `from genre_detector.audio import melspec` names a module
                sub = f"{base_name}.{a.name}"
                found.add(sub if _exists_under(base, sub) else base_name)
    return found


def _module_name(path: Path) -> str:
    return _module_of(path, PKG.parent)


def _imports(path: Path) -> set[str]:
    """genre_detector modules imported anywhere in the file."""
    return _imports_under(path, PKG.parent, ("genre_detector",))


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i != m and i in MODULES} for m, p in MODULES.items()}


def test_every_module_is_in_a_room():
    assert {_room(m) for m in MODULES} - {"__init__"} <= set(RANK)
    flat = [m for m in MODULES if m.count(".") == 1 and _room(m) not in RANK]
    assert flat == []


def wrong_way(module: str, targets) -> list[str]:
    """The targets `module` may not import: a room to its right, or a sibling room."""
    room = _room(module)
    if room in {"__init__", "__main__"}:
        return []
    bad = []
    for target in sorted(targets):
        other = _room(target)
        if other == "__init__":
            continue
        if RANK[other] > RANK[room] or (RANK[other] == RANK[room] and other != room):
            bad.append(target)
    return bad


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n) :] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_pipeline(module):
    assert wrong_way(module, GRAPH[module]) == []


def test_no_import_cycles():
    assert find_cycles(GRAPH) == []


def test_the_checks_catch_what_they_look_for():
    """A check that cannot fail is no check: upward, sideways and cyclic imports are seen."""
    assert wrong_way("genre_detector.audio.features", {"genre_detector.serve.replies"})
    assert wrong_way("genre_detector.serve.service", {"genre_detector.batch.tagger"})
    assert not wrong_way("genre_detector.serve.service", {"genre_detector.scoring.pooling"})
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_loadtests_do_not_import_tests():
    offenders = []
    for path in (REPO / "loadtests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert offenders == []


# ---------------------------------------------------------------- train/ and loadtests/

SCRIPT_ROOTS = ("train", "loadtests")
MEASURING = {"experiments", "ports", "evals"}  # train/'s rooms the pipeline never imports


SCRIPTS = {_module_of(p, REPO): p for root in SCRIPT_ROOTS for p in (REPO / root).rglob("*.py")}
SCRIPT_GRAPH = {
    m: {i for i in _imports_under(p, REPO, SCRIPT_ROOTS) if i != m and i in SCRIPTS}
    for m, p in SCRIPTS.items()
}


def measuring_imports(module: str, targets) -> list[str]:
    """What a training-pipeline module imports from experiments/, ports/ or evals/."""

    def measuring(m: str) -> bool:
        parts = m.split(".")
        return parts[0] == "train" and len(parts) > 1 and parts[1] in MEASURING

    if not module.startswith("train") or measuring(module):
        return []
    return sorted(t for t in targets if measuring(t))


def test_train_and_loadtests_have_no_import_cycles():
    assert find_cycles(SCRIPT_GRAPH) == []


@pytest.mark.parametrize("module", sorted(m for m in SCRIPTS if m.startswith("train")))
def test_the_training_pipeline_imports_no_experiment(module):
    assert measuring_imports(module, SCRIPT_GRAPH[module]) == []


def test_the_package_imports_neither_train_nor_loadtests():
    offenders = []
    for m, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{m}: {n}" for n in names if n.split(".")[0] in SCRIPT_ROOTS]
    assert offenders == []


def test_the_script_checks_catch_what_they_look_for():
    assert measuring_imports("train.feature_blocks", {"train.experiments.quantize_musicnn"})
    assert measuring_imports("train.collect.soundcloud", {"train.evals.search_quality"})
    assert not measuring_imports("train.experiments.frontier", {"train.experiments.compare"})
    assert not measuring_imports("train.crossval", {"train.intervals", "train.data"})
    assert SCRIPT_GRAPH["train.experiments.quantize_musicnn"] >= {"train.feature_blocks"}
    assert SCRIPT_GRAPH["train.collect.__main__"] >= {"train.collect.soundcloud"}
    assert SCRIPT_GRAPH["loadtests.soak"] >= {"loadtests.benchmark", "loadtests.latency"}
