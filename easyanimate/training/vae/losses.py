"""VAE losses: L1 reconstruction, KL, a VGG16 feature (perceptual) loss, and hinge GAN losses."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's vgg16().features layout, so its state dict loads as it is (no torchvision needed)
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
_TAPS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q || N(0, I)) summed over latent elements, averaged over the batch (the LDM convention)."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)
    return kl.flatten(1).sum(1).mean()


class VGGFeatureLoss(nn.Module):
    """Perceptual loss: distance of channel-normalised VGG16 features at four depths.

    Weights come from a local file (torchvision's vgg16 state dict, .pth or .safetensors); nothing is
    downloaded. Frames are compared one by one: `(B, 3, F, H, W)` in [-1, 1].
    """

    def __init__(self, weights_path: str):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        if not os.path.isfile(weights_path):
            raise FileNotFoundError(f"perceptual loss weights not found: {weights_path}")
        if weights_path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights_path)
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if int(k.split(".")[0]) <= _TAPS[-1]}
        self.features.load_state_dict(state, strict=True)
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (x.norm(dim=1, keepdim=True) + 1e-10))
        return out

    def forward(self, rec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731  (B*F, 3, H, W)
        loss = rec.new_zeros(())
        for a, b in zip(self._taps(frames(rec)), self._taps(frames(target))):
            loss = loss + (a - b).pow(2).sum(1).mean()
        return loss


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def generator_adv_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()
