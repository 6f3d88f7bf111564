"""Where a model computes, also under diffusers' offload hooks.

With model or sequential CPU offload (accelerate hooks) or group offload (diffusers hooks), a model's weights are
on the CPU or on `meta` until its forward runs, so `next(model.parameters()).device` is not where its inputs must
go. The hooks know: accelerate's record an `execution_device`, diffusers' group offload an onload device.
"""

from __future__ import annotations

import torch
from torch import nn


def execution_device(module: nn.Module) -> torch.device:
    """The device `module` computes on: its offload hooks' execution / onload device, else its weights' device."""
    for sub in module.modules():
        device = getattr(getattr(sub, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    try:
        from diffusers.hooks.group_offloading import _get_group_onload_device

        return torch.device(_get_group_onload_device(module))
    except (ImportError, ValueError):
        pass
    return next(module.parameters()).device
