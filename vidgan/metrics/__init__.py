"""Metrics of generated clips, registered by name (the stylegan habit): `get_metric("fvd")`.

- `frechet.py`: the Fréchet distance between Gaussians and mergeable float64 feature statistics.
- `fvd.py`: FVD as StyleGAN-V computes it (`fvd2048_16f`), real statistics cached under a hash.

Importing this package loads no torch: a metric's module is imported when it is asked for, so
`vidgan --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Callable

# name → "module:function"; the function is called on every process and returns the result on the main one
_METRICS: dict[str, str] = {
    "fvd": "vidgan.metrics.fvd:compute_fvd",
}

_LAZY = {  # public names re-exported from the submodules, imported on first use
    "frechet_distance": "vidgan.metrics.frechet",
    "GaussianStats": "vidgan.metrics.frechet",
    "compute_fvd": "vidgan.metrics.fvd",
    "FVDError": "vidgan.metrics.fvd",
}

__all__ = ["FVDError", "GaussianStats", "compute_fvd", "frechet_distance", "get_metric", "metric_names",
           "register_metric"]


def register_metric(name: str, target: str | Callable) -> None:
    """Register a metric under `name`: a callable, or `"module:function"` imported when first asked for."""
    if not isinstance(target, str) and not callable(target):
        raise TypeError(f"metric {name!r}: expected a callable or 'module:function', got {target!r}")
    _METRICS[name] = target


def metric_names() -> list[str]:
    return sorted(_METRICS)


def get_metric(name: str) -> Callable:
    """The metric registered under `name`; a KeyError that lists the known names otherwise."""
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(metric_names())}")
    target = _METRICS[name]
    if isinstance(target, str):
        module, _, function = target.partition(":")
        target = getattr(importlib.import_module(module), function)
    return target


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vidgan.metrics' has no attribute {name!r}")
