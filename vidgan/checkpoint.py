"""Checkpoint folders of a run: `RUN/checkpoints/checkpoint-<clips seen>`, complete or absent.

Every rank writes its part of `Accelerator.save_state` into a hidden temporary folder; only when all
ranks are done does the main process rename it into place. A run killed at any moment therefore
leaves complete checkpoints and, at worst, a temporary folder that the next save removes.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

PREFIX = "checkpoint-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
EMA_FOLDER = "generator_ema"  # the EMA generator inside a checkpoint (what samples are made from)
RAW_FOLDER = "generator"  # the raw (last-step) generator inside a checkpoint
RECIPE_NAME = "recipe.yaml"  # the recipe beside the generators in a checkpoint, and in a run folder


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(run_dir: Path, which: str) -> Path | None:
    """`latest` → the newest complete checkpoint of the run (None if there is none); else a path."""
    if which == "latest":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(which)
    if not path.is_dir() or not _NAME.match(path.name):
        raise FileNotFoundError(f"--resume {which}: not a checkpoint folder ({PREFIX}<clips>)")
    return path


def is_checkpoint(path: Path) -> bool:
    """A checkpoint folder: named `checkpoint-<clips>`, or holding the exported generators."""
    path = Path(path)
    return bool(_NAME.match(path.name)) or (path / EMA_FOLDER).is_dir() or (path / RAW_FOLDER).is_dir()


def is_run(path: Path) -> bool:
    path = Path(path)
    return checkpoints_dir(path).is_dir() or (path / "run.json").is_file() or (path / RECIPE_NAME).is_file()


def resolve_checkpoint(path: str | Path, also: str | None = None) -> Path:
    """RUN_OR_CHECKPOINT as the commands take it: a run folder → its newest checkpoint; a checkpoint
    folder → itself. FileNotFoundError for what is missing (the folder, a run's first checkpoint) and
    ValueError for a folder that is neither, naming the path; `also` names what else the caller
    would have accepted, for that message."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run or checkpoint folder")
    if not path.is_dir():
        raise ValueError(f"{path}: a file, not a run or checkpoint folder")
    if is_checkpoint(path):
        return path
    if is_run(path):
        found = find_checkpoint(path, "latest")
        if found is None:
            raise FileNotFoundError(f"{path}: no checkpoint in {checkpoints_dir(path)} yet (a run writes one "
                                    "every train.checkpoint_kimg and at its end)")
        return found
    accepted = ["a run folder (with checkpoints/)",
                f"a checkpoint folder ({PREFIX}<clips>/ with {EMA_FOLDER}/)"]
    if also:
        accepted.append(also)
    raise ValueError(f"{path}: not {', '.join(accepted[:-1])} or {accepted[-1]}")


def save_checkpoint(accelerator, run_dir: Path, clips: int, keep: int, write_extra=None) -> Path:
    """`save_state` of every rank into `checkpoint-<clips>`, made visible by one rename; keeps the
    newest `keep` checkpoints. `write_extra(folder)` adds files on the main process before the rename.
    Call on every rank."""
    folder = checkpoints_dir(run_dir)
    final = folder / f"{PREFIX}{clips:012d}"
    tmp = folder / f".tmp-{PREFIX}{clips:012d}"
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".tmp-{PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp)
        if final.exists():  # the same point saved again (a resumed run that ends where it began)
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final
