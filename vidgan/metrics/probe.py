"""The meter's probe: a small 3D CNN that tells a labelled corpus's classes apart from 8-frame windows.

What the probe sees of a clip: each frame area-resized to 32×32, and beside its three colour channels
a fourth, the foreground, |frame − the clip's per-pixel temporal median| averaged over colour. The
foreground channel puts what moves in front of what stays, as the LeNet of the MNIST-GAN literature is
put in front of digits. A clip of T ≥ 8 frames is read as windows of 8 frames, 4 apart.

Layout: clips `[N, 3, T, H, W]` in [-1, 1]; probe input `[N, 4, 8, 32, 32]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIDE = 32  # the probe's frame side in pixels
WINDOW = 8  # frames per window
WINDOW_STRIDE = 4  # frames between window starts
FEATURES = 128  # length of the feature vector the Fréchet distance is computed on


def window_starts(frames: int) -> list[int]:
    """First frames of the windows of a clip of `frames` frames (the last window ends at the clip's end)."""
    if frames < WINDOW:
        raise ValueError(f"clips of {frames} frames: the meter reads windows of {WINDOW} frames")
    starts = list(range(0, frames - WINDOW + 1, WINDOW_STRIDE))
    return starts if starts[-1] == frames - WINDOW else starts + [frames - WINDOW]


def probe_view(clips: torch.Tensor) -> torch.Tensor:
    """Clips `[N, 3, T, H, W]` in [-1, 1] → `[N, 4, T, 32, 32]`: colour and foreground at the probe's side."""
    n, c, t, h, w = clips.shape
    if c != 3:
        raise ValueError(f"clips must be [N, 3, T, H, W]; got {list(clips.shape)}")
    x = clips.float().clamp(-1, 1)
    if (h, w) != (SIDE, SIDE):
        x = x.transpose(1, 2).reshape(n * t, c, h, w)  # each frame resized alike
        x = F.interpolate(x, size=(SIDE, SIDE), mode="area" if h >= SIDE else "bilinear")
        x = x.reshape(n, t, c, SIDE, SIDE).transpose(1, 2)  # [N, 3, T, 32, 32]
    foreground = (x - x.median(dim=2, keepdim=True).values).abs().mean(dim=1, keepdim=True)  # [N, 1, T, 32, 32]
    return torch.cat([x, foreground - 1], dim=1)  # [N, 4, T, 32, 32], foreground in [-1, 1]


def foreground_tracks(view: torch.Tensor, threshold: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """The centre of mass of each frame's foreground, `[N, T, 2]` (x, y in pixels at 32²), and whether the
    frame has any foreground above `threshold` (in [0, 2]), `[N, T]`, from a `probe_view` `[N, 4, T, 32, 32]`."""
    weight = ((view[:, 3] + 1) - threshold).clamp(min=0)  # [N, T, 32, 32]
    total = weight.sum(dim=(2, 3))  # [N, T]
    grid = torch.arange(SIDE, dtype=view.dtype, device=view.device)
    x = (weight.sum(dim=2) * grid).sum(dim=2) / total.clamp(min=1e-6)  # [N, T]
    y = (weight.sum(dim=3) * grid).sum(dim=2) / total.clamp(min=1e-6)
    return torch.stack([x, y], dim=2), total > 1.0


class Probe(nn.Module):
    """Window `[N, 4, 8, 32, 32]` → (logits `[N, classes]`, features `[N, 128]`).

    (2+1)D, as R(2+1)D factorises a 3D conv: three 2D conv blocks on every frame (16, 32, 64 maps,
    each halving the side; BatchNorm, ReLU) and a global average over space, then a conv over time
    and an average over it. The features are that average; a linear layer gives the logits. (2D
    convolutions run several times faster than 3D ones on a CPU.)"""

    def __init__(self, classes: int):
        super().__init__()
        self.classes = classes

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.space = nn.Sequential(
            *block(4, 16),  # [N·T, 16, 16, 16]
            *block(16, 32),  # [N·T, 32, 8, 8]
            *block(32, 64),  # [N·T, 64, 4, 4]
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # [N·T, 64]
        )
        self.time = nn.Sequential(nn.Conv1d(64, FEATURES, 3, padding=1), nn.ReLU(True))  # [N, 128, T]
        self.head = nn.Linear(FEATURES, classes)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, t, h, w = windows.shape
        per_frame = self.space(windows.transpose(1, 2).reshape(n * t, c, h, w))  # [N·T, 128]
        features = self.time(per_frame.view(n, t, -1).transpose(1, 2)).mean(dim=2)  # [N, 128]
        return self.head(features), features
