"""Trained models on disk: the one module that builds, saves, exports and loads G and D.

A run folder (`run.dir`) holds `checkpoints/checkpoint-<clips seen, 12 digits>/`, each complete or
absent. A checkpoint holds Accelerate's state (models, optimizers, RNG states, counters: what
`--resume` needs) and, beside it, what the other commands read without Accelerate or pickle:

    generator_ema/  config.json + model.safetensors   the EMA generator (samples are made from it)
    generator/      config.json + model.safetensors   the raw generator of the last step
    recipe.yaml                                       the recipe that trained them

A model folder is `config.json` (class name and constructor arguments, plain JSON) beside
`model.safetensors` (parameters and buffers), the Hugging Face layout. The discriminator is read
from Accelerate's own weights file, the one place vidgan spells that name.

Every failure to load is a `CheckpointError` whose message names the file or folder at fault;
`CheckpointNotFoundError`, its subclass, is also a FileNotFoundError.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from data_tools.atomic import atomic_path, atomic_write_json, atomic_write_text, replace
from vidgan.models import (VIDEO_GENERATORS, ConfigModule, DCGANDiscriminator, DCGANGenerator, FrameGenerator,
                           VideoDiscriminator, VideoFrameDiscriminator, VideoGenerator, build_model,
                           convert_sync_batchnorm, to_channels_last, unwrap)
from vidgan.recipe import Recipe, dump_recipe, load_recipe

PREFIX = "checkpoint-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
EMA_FOLDER = "generator_ema"  # the EMA generator inside a checkpoint (what samples are made from)
RAW_FOLDER = "generator"  # the raw (last-step) generator inside a checkpoint
RECIPE_NAME = "recipe.yaml"  # the recipe beside the generators in a checkpoint, and in a run folder
CLASSES_NAME = "classes.json"  # a checkpoint's class names, label order (the training data's subfolders)
CONFIG_NAME = "config.json"  # a model folder's class name and constructor arguments
WEIGHTS_NAME = "model.safetensors"  # a model folder's parameters and buffers
FORMAT_VERSION = 1  # of a model folder; bumped when its layout changes
# Accelerate's file for the second model `train` prepares (G first, then D) in its saved state
ACCELERATE_D_WEIGHTS = "model_1.safetensors"
WRAPPER_PREFIX = re.compile(r"^(_orig_mod\.|module\.)+")  # torch.compile / DDP prefixes of state-dict keys


class CheckpointError(ValueError):
    """A run, checkpoint or model folder that cannot be used; the message names the file at fault."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Something a checkpoint needs is missing (the folder, a run's first checkpoint, a file)."""


# --- model folders ------------------------------------------------------------------------------

def save_model(model: torch.nn.Module, folder: str | Path) -> Path:
    """Write a vidgan model (compiled or DDP-wrapped too) as `folder/config.json` + `folder/
    model.safetensors` (state dict on the CPU, contiguous; no pickle), each file atomically.
    Returns the folder."""
    model = unwrap(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # safetensors refuses non-contiguous tensors (channels_last weights are); the copy keeps values exact
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    atomic_write_json(folder / CONFIG_NAME, {"class": type(model).__name__, "config": model.config,
                                             "format_version": FORMAT_VERSION}, durable=False, indent=2)
    return folder


def load_model(folder: str | Path, device: str | torch.device = "cpu",
               expect: type[ConfigModule] | None = None) -> ConfigModule:
    """Rebuild the model saved by `save_model`: construct it from `config.json`, then load
    `model.safetensors` strictly (every key must match); values round-trip bit-exact. `expect`: the
    class it must be. Returned in train mode, as a new module is."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointNotFoundError(f"no {path.name} in {folder}: not a model folder written by vidgan")
    try:
        saved = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: corrupt or truncated, not valid JSON ({e})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or "class" not in saved:
        raise CheckpointError(f"{config_path}: not a vidgan model config (needs 'class' and 'config')")
    try:
        model = build_model(saved["class"], saved["config"])
    except (TypeError, ValueError) as e:  # unknown class, bad constructor arguments
        raise CheckpointError(f"{config_path}: cannot build the model ({e})") from None
    if expect is not None and not isinstance(model, expect):
        raise CheckpointError(f"{folder} holds a {type(model).__name__}, not a {expect.__name__}")
    try:
        model.load_state_dict(load_file(str(weights_path), device="cpu"), strict=True)
    except SafetensorError as e:
        raise CheckpointError(f"{weights_path}: corrupt or truncated safetensors file ({e})") from None
    except RuntimeError as e:  # missing, unexpected or mis-shaped tensors
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{weights_path}: the weights do not fit the model described by {config_path} "
                              f"({first})") from None
    return model.to(device)


def is_model_folder(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file()


# --- building -------------------------------------------------------------------------------------

def build_models(recipe: Recipe, num_classes: int = 1) -> tuple[ConfigModule, ConfigModule]:
    """G and D as the recipe describes them, newly initialised from the global RNG (plain modules,
    not yet prepared by Accelerate). `num_classes`: the classes of the training data, for a
    class-conditional recipe (`model.conditional`)."""
    m, d = recipe.model, recipe.data
    classes = num_classes if m.conditional else 0
    class_head = recipe.loss.class_weight > 0
    if m.kind == "video":
        if m.generator == "frames":
            G = FrameGenerator(m.z_dim, m.g_channels, d.size, d.frames, m.motion_dim, out_bias=m.g_out_bias)
        else:
            G = VideoGenerator(m.z_dim, m.g_channels, d.size, d.frames, m.two_stream, out_bias=m.g_out_bias,
                               time_padding=m.g_time_padding, head=m.g_head, num_classes=classes,
                               latent=m.latent, motion_dim=m.motion_dim)
        if m.image_d_frames:
            D = VideoFrameDiscriminator(m.d_channels, d.size, d.frames, m.image_d_frames, batchnorm=m.d_batchnorm,
                                        spectral_norm=m.spectral_norm, minibatch_std=m.d_minibatch_std,
                                        num_classes=classes, class_head=class_head)
        else:
            D = VideoDiscriminator(m.d_channels, d.size, d.frames, batchnorm=m.d_batchnorm,
                                   spectral_norm=m.spectral_norm, minibatch_std=m.d_minibatch_std,
                                   num_classes=classes, class_head=class_head, pack=m.d_pack)
    else:
        G = DCGANGenerator(m.z_dim, m.g_channels, d.size)
        D = DCGANDiscriminator(m.d_channels, d.size, batchnorm=m.d_batchnorm, spectral_norm=m.spectral_norm)
    if m.sync_batchnorm:
        G, D = convert_sync_batchnorm(G), convert_sync_batchnorm(D)
    if m.channels_last:
        G, D = to_channels_last(G), to_channels_last(D)
    return G, D


# --- checkpoint folders ---------------------------------------------------------------------------

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
        raise CheckpointNotFoundError(f"--resume {which}: not a checkpoint folder ({PREFIX}<clips>)")
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
    folder → itself. `also` names what else the caller would have accepted, for the message."""
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"{path}: no such run or checkpoint folder")
    if not path.is_dir():
        raise CheckpointError(f"{path}: a file, not a run or checkpoint folder")
    if is_checkpoint(path):
        return path
    if is_run(path):
        found = find_checkpoint(path, "latest")
        if found is None:
            raise CheckpointNotFoundError(f"{path}: no checkpoint in {checkpoints_dir(path)} yet (a run writes "
                                          "one every train.checkpoint_kimg and at its end)")
        return found
    accepted = ["a run folder (with checkpoints/)", f"a checkpoint folder ({PREFIX}<clips>/ with {EMA_FOLDER}/)"]
    if also:
        accepted.append(also)
    raise CheckpointError(f"{path}: not {', '.join(accepted[:-1])} or {accepted[-1]}")


def save_checkpoint(accelerator, run_dir: Path, clips: int, keep: int, recipe: Recipe,
                    ema: torch.nn.Module, generator: torch.nn.Module, classes: list[str]) -> Path:
    """`save_state` of every rank into `checkpoint-<clips>`, the generators, the recipe and the data's
    class names beside it, made visible by one rename; keeps the newest `keep` checkpoints. Call on
    every rank."""
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
        save_model(ema, tmp / EMA_FOLDER)
        save_model(generator, tmp / RAW_FOLDER)
        atomic_write_text(tmp / RECIPE_NAME, dump_recipe(recipe))
        atomic_write_json(tmp / CLASSES_NAME, list(classes), durable=False)
        if final.exists():  # the same point saved again (a resumed run that ends where it began)
            shutil.rmtree(final)
        replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# --- loading a trained run ------------------------------------------------------------------------

@dataclass(frozen=True)
class Trained:
    """What a command reads from a run: the generator (and discriminator if asked for), both in eval
    mode without gradients, and the recipe that trained them."""

    generator: ConfigModule  # one of VIDEO_GENERATORS (clips [N, 3, T, S, S]) or DCGANGenerator (images)
    discriminator: ConfigModule | None  # only with `with_discriminator`
    recipe: Recipe | None  # None for a generator folder that no checkpoint holds
    folder: Path  # the checkpoint folder, or the generator folder when no checkpoint holds it
    generator_folder: Path  # where the generator's config.json + model.safetensors are
    checkpoint: Path | None  # the checkpoint folder, None for a generator folder on its own
    classes: list[str] | None = None  # class names by label, when the checkpoint records them

    @property
    def is_video(self) -> bool:
        return isinstance(self.generator, VIDEO_GENERATORS)


def load_trained(path: str | Path, which: str = "ema", with_discriminator: bool = False,
                 device: str | torch.device = "cpu", kind: str | None = None) -> Trained:
    """The trained models of a run folder (its newest checkpoint), a checkpoint folder, or (without
    `with_discriminator`) a generator folder given directly. `which`: the EMA generator (`ema`) or
    the raw one (`raw`); not consulted for a generator folder. `kind` ("video" or "image") makes a
    generator of the other kind an error. The generator must agree with the recipe saved beside it."""
    if which not in ("ema", "raw") or kind not in (None, "video", "image"):
        raise ValueError(f"which must be 'ema' or 'raw' and kind 'video', 'image' or None; got {which!r}, {kind!r}")
    path = Path(path)
    # (a checkpoint's top level holds Accelerate's own model.safetensors: look for its generators first)
    if not with_discriminator and path.is_dir() and not is_checkpoint(path) and is_model_folder(path):
        generator_folder = path
        checkpoint = path.parent if (path.parent / RECIPE_NAME).is_file() else None
    else:
        also = None if with_discriminator else f"a generator folder (with {CONFIG_NAME} and {WEIGHTS_NAME})"
        checkpoint = resolve_checkpoint(path, also)
        generator_folder = checkpoint / (EMA_FOLDER if which == "ema" else RAW_FOLDER)
        if not generator_folder.is_dir():
            raise CheckpointNotFoundError(f"{checkpoint}: no {generator_folder.name}/ folder: not a complete "
                                          "checkpoint, or one written before generators were exported")
    G = load_model(generator_folder, device).eval().requires_grad_(False)
    recipe = _recipe_in(checkpoint, required=with_discriminator)
    _check_generator(G, generator_folder, recipe, kind)
    num_classes = getattr(G, "num_classes", 0) or 1
    D = _load_discriminator(checkpoint, recipe, num_classes, device) if with_discriminator else None
    return Trained(G, D, recipe, checkpoint or generator_folder, generator_folder, checkpoint,
                   _classes_in(checkpoint))


def _recipe_in(checkpoint: Path | None, required: bool) -> Recipe | None:
    path = None if checkpoint is None else checkpoint / RECIPE_NAME
    if path is None or not path.is_file():
        if required:
            raise CheckpointNotFoundError(f"{checkpoint}: no {RECIPE_NAME}: not a complete checkpoint")
        return None
    try:
        return load_recipe(path)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:  # RecipeError is a ValueError
        raise CheckpointError(f"{path}: unreadable recipe ({e})") from None


def _classes_in(checkpoint: Path | None) -> list[str] | None:
    """The class names a checkpoint records (None: none recorded, or unreadable: labels are then
    given as numbers)."""
    path = None if checkpoint is None else checkpoint / CLASSES_NAME
    if path is None or not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    return [str(name) for name in names] if isinstance(names, list) else None


def _check_generator(G: ConfigModule, folder: Path, recipe: Recipe | None, kind: str | None) -> None:
    """G must be a generator, of `kind` if given, and agree with the recipe saved beside it."""
    if isinstance(G, VIDEO_GENERATORS):
        have = "video"
    elif isinstance(G, DCGANGenerator):
        have = "image"
    else:
        raise CheckpointError(f"{folder} holds a {type(G).__name__}, not a generator")
    if kind is not None and have != kind:
        raise CheckpointError(f"{folder} holds a {type(G).__name__} ({have} model); a {kind} model is needed here")
    if recipe is not None:
        m, d = recipe.model, recipe.data
        frames_differ = have == "video" and G.frames != d.frames
        if m.kind != have or G.z_dim != m.z_dim or G.size != d.size or frames_differ:
            raise CheckpointError(f"{folder} holds a {type(G).__name__} {G.config} that does not match its "
                                  f"recipe (model.kind={m.kind}, model.z_dim={m.z_dim}, data.size={d.size}, "
                                  f"data.frames={d.frames})")


def _load_discriminator(checkpoint: Path, recipe: Recipe, num_classes: int,
                        device: str | torch.device) -> ConfigModule:
    """D as the recipe builds it (for `num_classes` classes when conditional), with the weights of
    Accelerate's saved state."""
    weights = checkpoint / ACCELERATE_D_WEIGHTS
    if not weights.is_file():
        raise CheckpointNotFoundError(f"{checkpoint}: no {weights.name}: not a complete checkpoint")
    plain = copy.deepcopy(recipe)  # the same state-dict keys without the multi-GPU / memory switches
    plain.model.sync_batchnorm = plain.model.channels_last = False
    with torch.random.fork_rng(devices=[]):  # building D draws its init from the global RNG: leave it be
        D = build_models(plain, num_classes)[1]
    try:
        state = {WRAPPER_PREFIX.sub("", k): v for k, v in load_file(str(weights), device="cpu").items()}
        D.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as e:  # corrupt file, or weights of another architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{weights}: cannot load the discriminator the recipe describes ({first})") from None
    return D.to(device).eval().requires_grad_(False)
