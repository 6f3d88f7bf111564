"""A 3D PatchGAN discriminator: judges overlapping space-time patches; a 1-frame image works too."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator3D(nn.Module):
    def __init__(self, in_channels: int = 3, channels: int = 32, num_layers: int = 3, groups: int = 8):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
            nn.LeakyReLU(0.2),
        ]
        c = channels
        for _ in range(1, num_layers):
            layers += [
                nn.Conv3d(c, c * 2, (3, 4, 4), (1, 2, 2), (1, 1, 1)),
                nn.GroupNorm(min(groups, c * 2), c * 2),
                nn.LeakyReLU(0.2),
            ]
            c *= 2
        layers.append(nn.Conv3d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """`(B, 3, F, H, W)` in [-1, 1] -> patch logits `(B, 1, F, H/2^n, W/2^n)`."""
        return self.net(video)
