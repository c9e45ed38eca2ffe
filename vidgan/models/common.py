"""Pieces shared by the 2D and 3D models: the DCGAN initialisation, the stability switches
(spectral norm, SyncBatchNorm, channels_last), shape checks, and rebuilding a model from its
constructor arguments.

Models stay plain `nn.Module`s: they know nothing of files, YAML or Accelerate. `ConfigModule` only
remembers the constructor arguments, so that `vidgan.checkpoint` can write a model as plain JSON
beside its weights and `build_model` can make it again from them.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

SIZES = (32, 64, 128)  # supported output sides in pixels (square frames): 3, 4 or 5 doublings from 4×4
FRAMES = (8, 16, 32, 64)  # supported clip lengths in frames

INIT_STD = 0.02  # DCGAN init: conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02)


# --- argument and shape checks ---------------------------------------------------------------

def check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a ValueError that says what is allowed when `value` is not one of `allowed`."""
    allowed = tuple(allowed)
    if value not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{owner}: {name} must be one of {choices}; got {value!r}")


def check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer; got {value!r}")


def check_shape(owner: str, what: str, x: torch.Tensor, expected: tuple[int | None, ...], layout: str) -> None:
    """Check `x` against `expected` (None = any size) and name the layout in the error.

    A plain `if` + ValueError rather than `assert`, so the check survives `python -O`.
    """
    if x.ndim != len(expected) or any(e is not None and s != e for s, e in zip(x.shape, expected)):
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{owner}: {what} must be {layout} = {want}; got shape {list(x.shape)}")


def motion_trajectory(cell: nn.GRUCell, z_motion: torch.Tensor, steps: int) -> torch.Tensor:
    """Motion codes `[N, steps, motion_dim]` from motion latents `[N, motion_dim]`: a GRU cell started
    from the latents and fed them at every step. MoCoGAN feeds fresh noise per step; here the whole
    trajectory is a function of z, so sampling, interpolation and inpainting treat the generator as any
    other."""
    h, codes = z_motion, []
    for _ in range(steps):
        h = cell(z_motion, h)
        codes.append(h)
    return torch.stack(codes, dim=1)


def num_doublings(size: int) -> int:
    """How many ×2 steps take a 4×4 map to `size` × `size` (3, 4 or 5 for 32, 64, 128)."""
    return int(math.log2(size)) - 2


# --- initialisation and stability switches ---------------------------------------------------

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def dcgan_init_(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2015), in place; use with `model.apply(dcgan_init_)`.

    Conv weights ~ N(0, 0.02), BatchNorm weights ~ N(1, 0.02), all biases 0. Draws from the global RNG,
    like any `nn.Module` constructor: seed with `torch.manual_seed` for a reproducible model.
    """
    if isinstance(module, _CONVS):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, _NORMS) and module.affine:
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)
    elif isinstance(module, ConditionalBatchNorm):
        nn.init.normal_(module.scale.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.shift.weight)


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap the weight of every conv (and class embedding) in `module` with spectral normalisation
    (Miyato et al. 2018; the projection discriminator's embedding too, Miyato & Koyama 2018).

    Uses `torch.nn.utils.parametrizations.spectral_norm`: one power iteration per training forward,
    the raw weight kept as `parametrizations.weight.original`. Returns `module`, changed in place.
    """
    convs = [m for m in module.modules() if isinstance(m, (*_CONVS, nn.Embedding))]
    for conv in convs:
        nn.utils.parametrizations.spectral_norm(conv)
    return module


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (conditional BatchNorm, de Vries et al.
    2017; the class-conditional generators of TGANv2, BigGAN and DVD-GAN): the statistics are shared by
    all classes, the affine transform is each class's own.

    `norm`: a BatchNorm without affine parameters (so `convert_sync_batchnorm` and BatchNorm statistic
    recomputation find it like any other); `scale`, `shift`: `[num_classes, C]` tables, initialised as
    DCGAN initialises BatchNorm (scale ~ N(1, 0.02), shift 0). `forward(x, y)`: x `[N, C, T, H, W]`, y `[N]`.
    """

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm3d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        view = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        return self.norm(x) * self.scale(y).view(view) + self.shift(y).view(view)


class MinibatchStd(nn.Module):
    """Append one feature map: how much the samples of a group differ, averaged over features and
    positions (Karras et al. 2018, ProGAN; StyleGAN keeps it). A discriminator that sees it can tell a
    batch of near-copies from a varied one, which turns mode collapse into a loss G feels.

    `[N, C, *S]` → `[N, C + 1, *S]`. Groups take every (N / group)-th sample; `group` shrinks to the
    largest divisor of N not above it (1 gives zeros: a lone sample has no spread).
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = min(self.group, n)
        while n % g:
            g -= 1
        y = x.float().reshape(g, n // g, *x.shape[1:])  # [G, M, C, *S]
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [M, C, *S] spread within each group
        y = y.flatten(1).mean(dim=1)  # [M]
        y = y.view(-1, 1, *([1] * (x.ndim - 2))).repeat(g, 1, *x.shape[2:])  # [N, 1, *S]
        return torch.cat([x, y.to(x.dtype)], dim=1)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm for SyncBatchNorm, so batch statistics are shared across GPUs under DDP.

    Parameters and running statistics are carried over and state-dict keys do not change, so a
    converted model saves and loads like the original. Returns the converted module.
    """
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def memory_format_for(x: torch.Tensor) -> torch.memory_format:
    """channels_last for 4-D tensors ([N, C, H, W]), channels_last_3d for 5-D ([N, C, T, H, W])."""
    if x.ndim == 4:
        return torch.channels_last
    if x.ndim == 5:
        return torch.channels_last_3d
    return torch.contiguous_format


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """`x` in channels_last (4-D) or channels_last_3d (5-D) memory order; other tensors unchanged."""
    return x.contiguous(memory_format=memory_format_for(x))


@torch.no_grad()
def to_channels_last(module: nn.Module) -> nn.Module:
    """Put every 4-D parameter in channels_last and every 5-D one in channels_last_3d, in place.

    Unlike `module.to(memory_format=...)` this handles models that mix 2D and 3D convs (the two-stream
    generator). Feed inputs through `channels_last(x)` too. Returns `module`.
    """
    for p in module.parameters():
        if p.ndim in (4, 5):
            p.data = channels_last(p.data)
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not; spectral norm's u, v are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters())


# --- rebuilding from constructor arguments -------------------------------------------------------

_REGISTRY: dict[str, type["ConfigModule"]] = {}


class ConfigModule(nn.Module):
    """An `nn.Module` that remembers its constructor arguments in `self.config` (a JSON-able dict).

    Subclasses set `self.config` in `__init__` and are registered by class name, so that
    `build_model(name, config)` can construct any of them again.
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls


def build_model(class_name: str, config: dict[str, Any]) -> ConfigModule:
    """A new `class_name(**config)`; ValueError naming the known classes for an unknown one."""
    if class_name not in _REGISTRY:
        raise ValueError(f"unknown model class {class_name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[class_name](**config)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside `torch.compile` (`_orig_mod`) and DDP / DataParallel (`module`) wrappers."""
    while not isinstance(model, ConfigModule):
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            raise TypeError(f"not a vidgan model: {type(model).__name__}")
        model = inner
    return model
