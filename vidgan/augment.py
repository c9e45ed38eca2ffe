"""Differentiable augmentation for the discriminator's inputs (DiffAugment, Zhao et al. 2020).

Real and generated clips both go through `DiffAugment` before D, so D never sees an un-augmented
sample while G still gets gradients through the augmentation. One draw of parameters per clip, applied
identically to every frame: the augmentation changes how a clip looks, never how it moves.

Operations, in this order (clips in [-1, 1], layout `[N, C, T, H, W]`; images `[N, C, H, W]` too):
  brightness   add U(−0.5, 0.5)
  saturation   scale each pixel's deviation from its channel mean by U(0, 2)
  contrast     scale the deviation from the clip's mean by U(0.5, 1.5)
  translation  shift by a whole number of pixels, up to `translation` × side each way, zero fill
               (kornia's `translate`, nearest sampling so pixels are moved, not blurred)
  cutout       zero a rectangle of `cutout` × side, centred anywhere in the frame
"color" names the first three. Each operation is applied to each clip with probability `p`.
Statistics for the colour operations are taken over the whole clip, not per frame, so every frame
undergoes the same affine map. kornia's own colour functions clamp to [0, 1], which would break
[-1, 1] clips and zero the gradient of saturated pixels, so those three are written here.

Randomness: pass a `torch.Generator` for draws independent of the global RNG (reproducible per call
sequence); without one the global RNG of the input's device is used.
"""

from __future__ import annotations

from typing import Sequence

import torch
from kornia.geometry.transform import translate
from torch import nn

OPERATIONS = ("brightness", "saturation", "contrast", "translation", "cutout")  # in the order applied
GROUPS = {"color": ("brightness", "saturation", "contrast")}  # DiffAugment's policy names
DEFAULT_POLICY = "color,translation,cutout"  # DiffAugment's full policy
TRANSLATION = 0.125  # largest shift, as a fraction of the side (DiffAugment: 1/8)
CUTOUT = 0.5  # side of the cut-out rectangle, as a fraction of the frame side (DiffAugment: 1/2)


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """'color,translation' or ['color', 'translation'] → the operations, in the order they are applied."""
    names = [s.strip() for s in policy.split(",")] if isinstance(policy, str) else list(policy)
    chosen: set[str] = set()
    for name in names:
        if not name:
            continue
        if name in GROUPS:
            chosen.update(GROUPS[name])
        elif name in OPERATIONS:
            chosen.add(name)
        else:
            allowed = ", ".join([*GROUPS, *OPERATIONS])
            raise ValueError(f"unknown augmentation {name!r}; allowed: {allowed}")
    return tuple(op for op in OPERATIONS if op in chosen)


def _check_p(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability p must be in [0, 1]; got {p!r}")
    return float(p)


class _Draw:
    """Per-clip random numbers from a generator (on its own device) or the global RNG of `device`."""

    def __init__(self, n: int, device: torch.device, generator: torch.Generator | None):
        self.n, self.device, self.generator = n, device, generator
        self.source = generator.device if generator is not None else device

    def uniform(self, low: float, high: float) -> torch.Tensor:  # [N]
        u = torch.rand(self.n, generator=self.generator, device=self.source)
        return (low + (high - low) * u).to(self.device)

    def integers(self, low: int, high: int) -> torch.Tensor:  # [N], low ≤ k < high
        k = torch.randint(low, high, (self.n,), generator=self.generator, device=self.source)
        return k.to(self.device)

    def coin(self, p: float) -> torch.Tensor:  # [N] bool, True with probability p
        return self.uniform(0.0, 1.0) < p


def diff_augment(
    x: torch.Tensor,
    policy: str | Sequence[str] = DEFAULT_POLICY,
    p: float = 1.0,
    generator: torch.Generator | None = None,
    translation: float = TRANSLATION,
    cutout: float = CUTOUT,
) -> torch.Tensor:
    """Augment clips `[N, C, T, H, W]` (or images `[N, C, H, W]`); same shape out, differentiable in x.

    See the module docstring for the operations. `p` = 0 or an empty policy returns `x` itself.
    """
    ops = parse_policy(policy)
    p = _check_p(p)
    if x.ndim == 4:  # [N, C, H, W] → a one-frame clip
        return diff_augment(x[:, :, None], ops, p, generator, translation, cutout)[:, :, 0]
    if x.ndim != 5:
        raise ValueError(f"diff_augment: input must be [N, C, T, H, W] or [N, C, H, W]; got shape {list(x.shape)}")
    if p == 0.0 or not ops:
        return x
    n, c, t, h, w = x.shape
    draw = _Draw(n, x.device, generator)

    def per_clip(v: torch.Tensor) -> torch.Tensor:  # [N] → [N, 1, 1, 1, 1], broadcast over C, T, H, W
        return v.to(x.dtype).view(n, 1, 1, 1, 1)

    for op in ops:
        applied = draw.coin(p)  # [N] bool: this clip gets this operation
        if op == "brightness":
            shift = draw.uniform(-0.5, 0.5) * applied
            x = x + per_clip(shift)
        elif op == "saturation":
            factor = torch.where(applied, draw.uniform(0.0, 2.0), 1.0)
            mean = x.mean(dim=1, keepdim=True)  # [N, 1, T, H, W], grey level of each pixel
            x = (x - mean) * per_clip(factor) + mean
        elif op == "contrast":
            factor = torch.where(applied, draw.uniform(0.5, 1.5), 1.0)
            mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)  # [N, 1, 1, 1, 1], over the whole clip
            x = (x - mean) * per_clip(factor) + mean
        elif op == "translation":
            max_dy, max_dx = int(h * translation + 0.5), int(w * translation + 0.5)  # pixels
            dy = draw.integers(-max_dy, max_dy + 1) * applied
            dx = draw.integers(-max_dx, max_dx + 1) * applied
            shift = torch.stack([dx, dy], dim=1).to(x.dtype).repeat_interleave(t, dim=0)  # [N·T, 2]
            frames = x.transpose(1, 2).reshape(n * t, c, h, w)  # [N·T, C, H, W], clip-major
            frames = translate(frames, shift, mode="nearest", padding_mode="zeros", align_corners=True)
            x = frames.reshape(n, t, c, h, w).transpose(1, 2)  # [N, C, T, H, W]
        elif op == "cutout":
            size_y, size_x = int(h * cutout + 0.5), int(w * cutout + 0.5)  # pixels
            top = draw.integers(0, h) - size_y // 2  # [N], rectangle centre anywhere in the frame
            left = draw.integers(0, w) - size_x // 2
            rows = torch.arange(h, device=x.device)
            cols = torch.arange(w, device=x.device)
            in_y = (rows >= top[:, None]) & (rows < top[:, None] + size_y)  # [N, H]
            in_x = (cols >= left[:, None]) & (cols < left[:, None] + size_x)  # [N, W]
            cut = in_y[:, :, None] & in_x[:, None, :] & applied[:, None, None]  # [N, H, W]
            x = x * (~cut).to(x.dtype)[:, None, None]  # [N, 1, 1, H, W]: every channel and frame
    return x


class DiffAugment(nn.Module):
    """`diff_augment` as a module, off by default (`p` = 0 returns its input unchanged).

    Args:
      policy: operations or groups, e.g. "color,translation,cutout" (the default) or ["translation"].
      p: probability that each operation is applied to each clip; may be changed between steps
        (e.g. by an adaptive schedule).
      translation, cutout: the sizes above, as fractions of the frame side.
    `forward(x, generator=None)`: `x` is `[N, C, T, H, W]` or `[N, C, H, W]`.
    """

    def __init__(
        self,
        policy: str | Sequence[str] = DEFAULT_POLICY,
        p: float = 0.0,
        translation: float = TRANSLATION,
        cutout: float = CUTOUT,
    ):
        super().__init__()
        self.ops = parse_policy(policy)  # operations applied, in order
        self.p = p  # per-operation, per-clip probability
        self.translation = translation  # largest shift, fraction of the side
        self.cutout = cutout  # cut-out side, fraction of the frame side

    @property
    def p(self) -> float:
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        self._p = _check_p(value)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return diff_augment(x, self.ops, self.p, generator, self.translation, self.cutout)

    def extra_repr(self) -> str:
        return f"ops={','.join(self.ops)}, p={self.p}, translation={self.translation}, cutout={self.cutout}"
