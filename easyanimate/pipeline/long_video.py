"""Long videos: generate in segments, each continuing from the last frames of the previous one.

Segment i > 0 keeps the previous segment's last `overlap` frames as its first frames: an inpaint (InP) model
gets them as kept frames in its mask; a plain text-to-video model gets their latents re-imposed (noised to the
current step) at every denoising step. The overlapping frames are cross-faded. Only one segment is ever in the
model, so memory is that of one segment; the output grows by `num_frames - overlap` frames per segment.
"""

from __future__ import annotations

import torch


def segment_count(total_frames: int, num_frames: int, overlap: int) -> int:
    """Segments needed for at least `total_frames` frames."""
    if total_frames <= num_frames:
        return 1
    step = num_frames - overlap
    return 1 + -(-(total_frames - num_frames) // step)


def crossfade(previous_tail: torch.Tensor, new_head: torch.Tensor) -> torch.Tensor:
    """Blend two `(B, 3, K, H, W)` clips frame by frame, from all-previous to all-new."""
    k = previous_tail.shape[2]
    w = torch.linspace(0, 1, k + 2, device=new_head.device)[1:-1].view(1, 1, k, 1, 1)
    return previous_tail * (1 - w) + new_head * w


@torch.no_grad()
def generate_long_video(
    pipe,
    prompt: str,
    total_frames: int,
    num_frames: int = 17,
    overlap: int = 5,
    generator: torch.Generator | None = None,
    **kwargs,
) -> torch.Tensor:
    """`(1, 3, >= total_frames, H, W)` in [0, 1]. `overlap` must be a frame count the VAE takes (1 + rj for
    ours) and smaller than `num_frames`; with upstream's block VAEs the segments also advance by whole blocks,
    so the kept frames are the first latents' frames."""
    rule = pipe.shape_rule
    if not rule.frames_ok(overlap) or overlap >= num_frames:
        raise ValueError(
            f"overlap must be {rule.frames_form} frames and < num_frames={num_frames}, got {overlap}"
        )
    if rule.frame_block and (num_frames - overlap) % rule.frame_block:
        raise ValueError(
            f"num_frames - overlap must be a multiple of {rule.frame_block} for this VAE, got "
            f"{num_frames} - {overlap}"
        )
    video: torch.Tensor | None = None
    for _ in range(segment_count(total_frames, num_frames, overlap)):
        extra = {}
        if video is not None:
            tail = video[:, :, -overlap:]  # (1, 3, K, H, W) in [0, 1]
            head = tail[0] * 2 - 1
            if pipe.is_inpaint_model:
                extra["head_frames"] = head
            else:
                extra["known_latents"] = pipe.vae.encode_latents(head[None])
        segment = pipe(
            prompt, num_frames=num_frames, generator=generator, output_type="pt", **kwargs, **extra
        ).frames.cpu()
        if video is None:
            video = segment
        else:
            blended = crossfade(video[:, :, -overlap:], segment[:, :, :overlap])
            video = torch.cat([video[:, :, :-overlap], blended, segment[:, :, overlap:]], dim=2)
    return video
