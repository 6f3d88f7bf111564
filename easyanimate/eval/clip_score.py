"""CLIP score of a video against its prompt, with a CLIP model from a local folder (nothing is downloaded).

Score = 100 * max(cos(image features, text features), 0), averaged over frames (the torchmetrics convention).
"""

from __future__ import annotations

import numpy as np
import torch


class CLIPScorer:
    def __init__(self, folder: str, device: str = "cpu"):
        from transformers import AutoProcessor, CLIPModel

        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        self.device = device

    @torch.no_grad()
    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        """`(F, H, W, 3)` uint8 -> `(F, D)` image embeddings (unnormalised)."""
        pixels = self.processor(images=list(frames), return_tensors="pt").pixel_values.to(self.device)
        return self._features(self.model.get_image_features(pixel_values=pixels)).cpu().numpy()

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> np.ndarray:
        tokens = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        out = self.model.get_text_features(
            input_ids=tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device)
        )
        return self._features(out).cpu().numpy()

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers 5 returns a model output from get_*_features; older versions a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def __call__(self, frames: np.ndarray, prompt: str) -> float:
        img = self.frame_features(frames)
        txt = self.text_features([prompt])[0]
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        txt = txt / np.linalg.norm(txt)
        return float(np.mean(100.0 * np.clip(img @ txt, 0, None)))
