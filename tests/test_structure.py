"""The package's import graph: no circle, and no import from a lower layer to a higher one.

Layers, lowest first: models, data (and the top-level config loader) -> diffusion -> pipeline -> training, eval,
ui, preprocess. Nothing imports training/ but training itself.
"""

from __future__ import annotations

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "easyanimate")
LAYER = {"": 0, "models": 0, "data": 0, "config": 0, "diffusion": 1, "pipeline": 2}  # the rest: 3


def _modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                mod = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
                found[mod] = path
    return found


def _imports(mod: str, path: str) -> set[str]:
    package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):  # function-level imports count too
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            out.update(n for n in names if n in _modules()) or out.add(target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {t for t in out if t.startswith("easyanimate.") or t == "easyanimate"}


def _part(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t in _imports(m, p) if t in modules and t != m} for m, p in modules.items()}


def test_no_import_goes_up_a_layer_or_into_training():
    bad = []
    for mod, targets in _graph().items():
        for target in targets:
            src, dst = _part(mod), _part(target)
            if LAYER.get(dst, 3) > LAYER.get(src, 3) or (dst == "training" and src != "training"):
                bad.append(f"{mod} -> {target}")
    assert not bad, bad


def test_no_import_circle():
    # a package's __init__ re-exporting its own modules is not a circle: edges into package inits are left out
    inits = {m for m, p in _modules().items() if p.endswith("__init__.py")}
    graph = {m: {t for t in ts if t not in inits} for m, ts in _graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, cycles
