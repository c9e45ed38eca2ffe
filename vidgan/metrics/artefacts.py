"""Clips that show no object: what a failing generator draws. The meter's probe learns them as one more
class, "no object", so that a texture, a speckle or a smear is not read as a member of a real class
with confidence (a classifier trained on real clips alone is sure of many things it never saw).

Four kinds, drawn with equal odds, each over a random dark background with a random tint per colour
channel:
- speckle: independent noise per pixel and frame;
- blobs: noise drawn at 2×2 to 8×8 and resized up, fixed or redrawn every frame;
- lattices: stripes and checkerboards of 2–6 px period drifting over time (transposed-conv artefacts);
- smears: real clips blurred until their objects lose their shape (Gaussian σ 2–3.5 px at 32²).

Its real classes, in turn, are taught on clips made a little worse (`roughen`: blurred by up to 1 px,
noise of σ up to 0.15), so that an object drawn slightly soft or grainy still counts as its class.

Layout: clips `[N, 3, T, H, W]` in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("speckle", "blobs", "lattices", "smears")


def blur(clips: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each clip `[N, C, T, H, W]` blurred in space by a Gaussian of its own σ `[N]` (pixels)."""
    n, c, t, h, w = clips.shape
    radius = int(math.ceil(3 * sigma.max().item()))
    offsets = torch.arange(-radius, radius + 1, dtype=clips.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)  # [N, K]
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    x = clips.permute(0, 2, 1, 3, 4).reshape(1, n * t * c, h, w)  # one channel per clip, frame and colour
    k = kernel.repeat_interleave(t * c, dim=0)  # [N·T·C, K]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k[:, None, None, :], groups=n * t * c)  # along W
    x = F.conv2d(x, k[:, None, :, None], groups=n * t * c)  # along H
    return x.reshape(n, t, c, h, w).permute(0, 2, 1, 3, 4)


def artefact_clips(reals: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """As many object-free clips as `reals` `[N, 3, T, H, W]` (in [-1, 1]), of the same shape; the
    smears are made from `reals`, the rest drawn from `generator`."""
    n, c, t, h, w = reals.shape

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    kind = torch.randint(len(KINDS), (n,), generator=generator)  # [N]
    pattern = torch.empty(n, 1, t, h, w)
    # speckle: [-1, 1] per pixel and frame
    pattern[:] = uniform(-1, 1, n, 1, t, h, w)
    # blobs: coarse noise resized up, fixed over the clip or redrawn every frame
    blobs = kind == 1
    for i in blobs.nonzero().flatten().tolist():
        side = 2 ** int(torch.randint(1, 4, (1,), generator=generator))  # 2, 4 or 8
        steps = t if torch.rand(1, generator=generator).item() < 0.5 else 1
        coarse = uniform(-1, 1, steps, 1, side, side)
        smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # [steps, 1, H, W]
        pattern[i, 0] = smooth[:, 0].expand(t, h, w)
    # lattices: cos(2π(fx·x + fy·y) + drift·t), a period of 2–6 px in x and in y (or stripes)
    lattices = kind == 2
    for i in lattices.nonzero().flatten().tolist():
        fx, fy = (1 / uniform(2, 6, 2)).tolist()
        if torch.rand(1, generator=generator).item() < 0.5:  # stripes: one direction only
            fx, fy = (fx, 0.0) if torch.rand(1, generator=generator).item() < 0.5 else (0.0, fy)
        start = uniform(0, 2 * math.pi, 1).item()
        drift = uniform(-1, 1, 1).item()  # radians a frame
        phase = start + drift * torch.arange(t, dtype=torch.float32)[:, None, None]  # [T, 1, 1]
        y = torch.arange(h, dtype=torch.float32)[:, None]  # [H, 1]
        x = torch.arange(w, dtype=torch.float32)[None, :]  # [1, W]
        pattern[i, 0] = torch.cos(2 * math.pi * fx * x + phase) * torch.cos(2 * math.pi * fy * y + phase)  # [T, H, W]
    background = uniform(-1, -0.3, n, 1, 1, 1, 1)
    amplitude = uniform(0.1, 0.8, n, 1, 1, 1, 1)
    tint = uniform(0.5, 1.0, n, c, 1, 1, 1)  # a colour cast per channel
    clips = (background + amplitude * tint * (pattern + 1)).clamp(-1, 1)  # [N, C, T, H, W]
    # smears: the real clips blurred
    smears = kind == 3
    if smears.any():
        sigma = uniform(2.0, 3.5, int(smears.sum()))
        clips[smears] = blur(reals[smears].float(), sigma).clamp(-1, 1)
    return clips


def roughen(clips: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Clips `[N, 3, T, H, W]` in [-1, 1], each with even odds blurred (σ up to 1 px) and, apart, with
    even odds given Gaussian noise (σ up to 0.15): still recognisably what they were."""
    n = clips.shape[0]
    sigma = torch.rand(n, generator=generator) * (torch.rand(n, generator=generator) < 0.5)  # [N], 0: none
    out = clips.float()
    blurred = sigma > 0.05
    if blurred.any():
        out = out.clone()
        out[blurred] = blur(out[blurred], sigma[blurred])
    grain = 0.15 * torch.rand(n, generator=generator) * (torch.rand(n, generator=generator) < 0.5)  # [N]
    return (out + grain[:, None, None, None, None] * torch.randn(out.shape, generator=generator)).clamp(-1, 1)
