"""Our pipeline folders load with diffusers' own `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`.

diffusers resolves a plain `_class_name` among its own classes (it has an unrelated `EasyAnimatePipeline`), so a
folder we save names its class as `[module, class]` and carries that module: one import line that hands diffusers
our installed class. That is diffusers' documented custom-pipeline layout; the components load from their
`easyanimate.models...` libraries as usual (the package must be installed). Our own
`EasyAnimatePipeline.from_pretrained` reads that name as its own class and never imports the module.
"""

from __future__ import annotations

import json
import os

ENTRY_MODULE = "easyanimate_pipeline"
ENTRY_SOURCE = (
    "# Lets diffusers' DiffusionPipeline.from_pretrained(<this folder>, trust_remote_code=True) load this\n"
    "# folder with EasyAnimate's pipeline (pip install easyanimate); written by its save_pretrained.\n"
    "from easyanimate.pipeline.pipeline_easyanimate import EasyAnimatePipeline  # noqa: F401\n"
)


def entry_class_name(class_name: str) -> list[str]:
    """The `_class_name` a folder we save gives: `[module, class]`."""
    return [ENTRY_MODULE, class_name]


def write_entry(folder: str, class_name: str) -> None:
    """Name the pipeline class as `[module, class]` in `model_index.json` and write the module beside it."""
    index = os.path.join(folder, "model_index.json")
    with open(index) as fh:
        config = json.load(fh)
    config["_class_name"] = entry_class_name(class_name)
    tmp = index + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, index)
    with open(os.path.join(folder, ENTRY_MODULE + ".py"), "w") as fh:
        fh.write(ENTRY_SOURCE)
