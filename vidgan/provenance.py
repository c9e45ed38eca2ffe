"""What produced a file: the versions of vidgan and its main packages, and the git commit of the
code. Written into run folders (`recipe.yaml`, `run.json`) and evaluation results."""

from __future__ import annotations

import functools
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def git_commit() -> str:
    """The short commit of the checkout vidgan runs from, or "unknown" (an installed wheel, no git)."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _installed(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def versions() -> dict:
    """vidgan, torch (with its build, e.g. `2.14.1+cu130`), accelerate and Python versions and the git
    commit, read once per process."""
    import accelerate
    import torch

    return {"vidgan": _installed("vidgan"), "torch": torch.__version__, "accelerate": accelerate.__version__,
            "python": sys.version.split()[0], "git_commit": git_commit()}
