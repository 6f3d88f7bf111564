"""pyproject.toml declares what the package needs: inference imports nothing a plain `pip install .` lacks, each
extra covers its part, and the pins in requirements*.txt satisfy the declared ranges."""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata

import tomllib
from conftest import ROOT, run_python
from packaging.requirements import Requirement

# imported when present, never required: httpx's brotli decoder, pandas' pyarrow (under gradio)
OPTIONAL = {"brotli", "brotlicffi", "pyarrow"}
# what a user of each install imports (entry points and the modules behind them)
IMPORTS = {
    None: ["easyanimate.pipeline.predict", "easyanimate.pipeline.loading", "easyanimate.eval"],
    "train": ["easyanimate.training.trainer", "easyanimate.training.vae.trainer", "tensorboard"],
    "preprocess": ["easyanimate.preprocess.engine", "easyanimate.data.synthetic_raw"],
    "ui": ["easyanimate.ui.app"],
}


def project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]


def closure(requirements: list[str]) -> set[str]:
    """The distributions these requirements install, with everything they require in turn."""
    names = {"easyanimate"}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = metadata.distribution(req.name).metadata["Name"].lower().replace("_", "-")
        if name in names:
            continue
        names.add(name)
        for dep in metadata.requires(req.name) or []:
            dep_req = Requirement(dep)
            if dep_req.marker is None or dep_req.marker.evaluate({"extra": ""}):
                todo.append(dep_req)
        for extra in req.extras:  # ray[data]: the extra's requirements too
            for dep in metadata.requires(req.name) or []:
                dep_req = Requirement(dep)
                if dep_req.marker is not None and dep_req.marker.evaluate({"extra": extra}):
                    todo.append(dep_req)
    return names


def imported_distributions(modules: list[str]) -> set[str]:
    """The installed distributions whose modules a fresh interpreter loads when importing `modules`."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in sys.modules})))"
    )
    res = run_python("-c", code, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    top = json.loads(res.stdout.strip().splitlines()[-1])
    owners = metadata.packages_distributions()
    return {d.lower().replace("_", "-") for name in top for d in owners.get(name, [])}


def test_inference_and_each_extra_import_only_what_they_declare():
    p = project()
    assert p["dependencies"], "pyproject.toml declares no dependencies: pip install . cannot import"
    declared = list(p["dependencies"])
    for extra, modules in IMPORTS.items():
        needs = declared + (p["optional-dependencies"][extra] if extra else [])
        missing = imported_distributions(modules) - closure(needs) - OPTIONAL
        assert not missing, (
            f"[{extra or 'core'}] imports {sorted(missing)}, which pyproject.toml does not install"
        )


def test_inference_does_not_pull_the_heavy_extras():
    """A plain install has no Ray, pyarrow, pandas or gradio, and inference never imports them."""
    core = closure(project()["dependencies"])
    assert not core & {"ray", "pyarrow", "pandas", "gradio", "deepspeed", "tensorboard"}, core
    loaded = imported_distributions(IMPORTS[None])
    assert not loaded & {"ray", "pyarrow", "pandas", "gradio"}, loaded


def pins() -> dict[str, str]:
    found = {}
    for name in os.listdir(ROOT):
        if re.fullmatch(r"requirements(-\w+)?\.txt", name):
            with open(os.path.join(ROOT, name)) as fh:
                for line in fh:
                    line = line.split("#")[0].strip()
                    if line and not line.startswith("-r"):
                        req = Requirement(line)
                        found[req.name.lower().replace("_", "-")] = str(req.specifier).removeprefix("==")
    return found


def test_pins_satisfy_the_declared_ranges_and_unused_pins_are_gone():
    p = project()
    declared = [
        *p["dependencies"],
        *(r for e, rs in p["optional-dependencies"].items() if e != "dev" for r in rs),
    ]
    pinned = pins()
    for text in declared:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is declared in pyproject.toml but pinned in no requirements file"
        assert req.specifier.contains(pinned[name].split("+")[0], prereleases=True), (name, pinned[name])
    for unused in ("einops", "omegaconf", "imageio", "imageio-ffmpeg"):  # never imported
        assert unused not in pinned
    assert "torchvision" not in pinned and sys.version_info >= (3, 10)
