"""Pieces shared by the 2D and 3D models: the DCGAN initialisation, the stability switches
(spectral norm, SyncBatchNorm, channels_last), shape checks, and save / load as safetensors.

Models stay plain `nn.Module`s: they know nothing of files, YAML or Accelerate. `ConfigModule` only
remembers the constructor arguments so a model can be written as `config.json` + `model.safetensors`
(the Hugging Face folder layout) and rebuilt from them, with no pickle anywhere.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

SIZES = (32, 64, 128)  # supported output sides in pixels (square frames): 3, 4 or 5 doublings from 4×4
FRAMES = (8, 16, 32, 64)  # supported clip lengths in frames

CONFIG_NAME = "config.json"  # constructor arguments and class name, plain JSON
WEIGHTS_NAME = "model.safetensors"  # parameters and buffers, no pickle
FORMAT_VERSION = 1  # bumped when the folder layout changes

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
    elif isinstance(module, _NORMS):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap the weight of every conv in `module` with spectral normalisation (Miyato et al. 2018).

    Uses `torch.nn.utils.parametrizations.spectral_norm`: one power iteration per training forward,
    the raw weight kept as `parametrizations.weight.original`. Returns `module`, changed in place.
    """
    convs = [m for m in module.modules() if isinstance(m, _CONVS)]
    for conv in convs:
        nn.utils.parametrizations.spectral_norm(conv)
    return module


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


# --- save / load ----------------------------------------------------------------------------

_REGISTRY: dict[str, type["ConfigModule"]] = {}


class ConfigModule(nn.Module):
    """An `nn.Module` that remembers its constructor arguments in `self.config` (a JSON-able dict).

    Subclasses set `self.config` in `__init__` and are registered by class name, so
    `load_pretrained(folder)` can rebuild any of them from `config.json`.
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `folder`; see `save_pretrained`."""
        return save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "ConfigModule":
        """Rebuild the model saved in `folder`; an error if it was saved from another class."""
        model = load_pretrained(folder, device=device)
        if not isinstance(model, cls):
            raise ValueError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


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


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Save a vidgan model as `folder/config.json` (class + constructor args) and
    `folder/model.safetensors` (state dict: parameters and buffers, on CPU, contiguous). No pickle.

    Accepts compiled or DDP-wrapped models. Returns the folder.
    """
    model = unwrap(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"class": type(model).__name__, "config": model.config, "format_version": FORMAT_VERSION}
    # Each file is written under a temporary name and renamed: a reader never sees half a file.
    weights_tmp = folder / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    config_tmp = folder / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    # safetensors refuses non-contiguous tensors (channels_last weights are); the copy keeps values exact
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_tmp), metadata={"format": "pt"})
    config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(weights_tmp, folder / WEIGHTS_NAME)
    os.replace(config_tmp, folder / CONFIG_NAME)
    return folder


def load_pretrained(folder: str | Path, device: str | torch.device = "cpu") -> ConfigModule:
    """Rebuild the model saved by `save_pretrained`: construct it from `config.json`, then load
    `model.safetensors` strictly (every key must match). Works offline; values round-trip bit-exact.
    """
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {folder}: not a folder written by save_pretrained")
    saved = json.loads(config_path.read_text())
    name = saved.get("class")
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"{config_path}: unknown model class {name!r}; known: {known}")
    model = _REGISTRY[name](**saved["config"])
    model.load_state_dict(load_file(str(weights_path), device="cpu"), strict=True)
    return model.to(device)
