"""Recipes: one YAML file → one typed `Recipe`, the single description of a training run.

Every section is a dataclass whose fields carry their defaults and units. Loading rejects unknown keys
and wrong types at once, naming the key (`model.chanels: unknown key; model has: ...`), before any
work starts. `key=value` overrides on the command line use the same checks.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SIZES = (32, 64, 128)  # frame sides the models support
FRAMES = (8, 16, 32, 64)  # clip lengths the video models support


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key."""


@dataclass
class DataConfig:
    root: str = "UCF-101-t16-s64"  # folder written by `vidgan prepare` (relative to the working dir)
    frames: int = 16  # T, frames per clip: the model is built for it; must match the prepared clips
    size: int = 64  # S, frame side in pixels: the model is built for it; must match the prepared clips
    num_workers: int = 0  # DataLoader worker processes (0: the main process reads fastest here)


@dataclass
class ModelConfig:
    kind: str = "video"  # "video": 3D G and D (VGAN family); "image": 2D DCGAN on single frames
    z_dim: int = 100  # latent length
    g_channels: int = 64  # generator width (feature maps of its last hidden layer)
    d_channels: int = 64  # discriminator width (feature maps of its first layer)
    # video G: "volume", 3D transposed convs over the whole clip (VGAN); "frames", a 2D DCGAN G per frame
    # from a content code held for the clip and a per-frame motion code (MoCoGAN's decomposition)
    generator: str = "volume"
    # "volume" G's latent: "single", one z for the clip (VGAN); "content_motion", a content part held for the
    # clip and a motion part unrolled into a trajectory (MoCoGAN's decomposition; the "frames" G always splits)
    latent: str = "single"
    motion_dim: int = 20  # content_motion and "frames" G: the last motion_dim values of z drive the motion codes
    two_stream: bool = False  # "volume" G as VGAN's foreground + mask + static background
    d_batchnorm: bool = True  # BatchNorm in D (the canonical DCGAN); off for R1-heavy training
    spectral_norm: bool = False  # spectral normalisation on every conv of D
    d_minibatch_std: int = 0  # video D: the spread of groups of this many clips as one more map (ProGAN: 4); 0: off
    d_pack: int = 1  # video D: judge groups of this many clips at once, stacked along channels (PacGAN: 2); 1: off
    sync_batchnorm: bool = False  # share BatchNorm statistics across processes (multi-GPU)
    channels_last: bool = False  # channels_last(_3d) memory format for models and batches
    g_out_bias: bool = False  # video model: a bias in G's output layer (VGAN has none)
    # "volume" G: "zeros" pads time with zeros in its transposed convs, so the clip's first and last frames
    # fade (VGAN); "replicate" repeats the edge steps so that every frame is drawn alike
    g_time_padding: str = "zeros"
    # "volume" G's output layer: "transposed", a kernel-4 / stride-2 transposed conv (VGAN); "resize",
    # nearest ×2 upsampling and a 3×3×3 conv, free of the transposed conv's pixel checkerboard
    g_head: str = "transposed"
    image_d_frames: int = 0  # video model: K random frames per clip also judged by a 2D DCGAN D; 0: none
    # "volume" G and its D conditioned on the class labels of the prepared folder (its subfolder names):
    # conditional BatchNorm in G, a projection head in D; samples cover the classes evenly
    conditional: bool = False


@dataclass
class LossConfig:
    kind: str = "nonsaturating"  # "nonsaturating" (the DCGAN/VGAN loss) or "hinge"
    r1_gamma: float = 0.0  # weight γ of the R1 penalty γ/2·‖∇D(x)‖² on reals; 0 switches it off
    r1_every: int = 16  # apply R1 every this many steps, scaled by it (lazy regularisation)
    mask_l1: float = 0.1  # weight of the two-stream mask's L1 term (VGAN: 0.1)
    augment_p: float = 0.0  # probability of each DiffAugment operation per clip; 0 switches it off
    augment_policy: str = "color,translation,cutout"  # DiffAugment operations
    instance_noise: float = 0.0  # σ of Gaussian noise added to every clip D sees (MoCoGAN: 0.1); 0: none
    # weight of an auxiliary class loss (AC-GAN, Odena et al. 2017; needs model.conditional): a class head on
    # D learns the classes of real clips, and G is rewarded when it finds G(z, y) of class y
    class_weight: float = 0.0
    # weight λ of MSGAN's mode-seeking term (Mao et al. 2019: 1): G is pushed to map latents that differ to
    # clips that differ, against mode collapse; 0: off
    mode_seeking: float = 0.0


@dataclass
class OptimConfig:
    lr_g: float = 2e-4  # Adam learning rate of G
    lr_d: float = 2e-4  # Adam learning rate of D
    beta1: float = 0.5  # Adam β1 (DCGAN: 0.5)
    beta2: float = 0.999  # Adam β2


@dataclass
class TrainConfig:
    kimg: float = 10_000.0  # stop after this many thousand real clips shown to D (all processes)
    batch_size: int = 64  # clips per process per step
    d_steps: int = 1  # D updates, each on a fresh batch, per G update (DVD-GAN: 2); kimg counts D's batches
    g_steps: int = 1  # G updates per D update (only with d_steps 1)
    ema_kimg: float = 10.0  # half-life of G's exponential moving average, in kimg; 0: EMA = G
    # BatchNorm statistics of the EMA generator: "copy" G's running statistics at every step (they
    # belong to G's weights, not the average's), or "recompute" them for the EMA weights from its own
    # outputs before every sample grid and checkpoint
    ema_batchnorm: str = "copy"
    checkpoint_kimg: float = 100.0  # save a checkpoint every this many kimg (and at the end)
    keep_checkpoints: int = 3  # keep the newest this many checkpoints
    compile: bool = False  # torch.compile G and D (experimental: fails on torch 2.11 + CUDA, README)


@dataclass
class SampleConfig:
    every_kimg: float = 50.0  # write samples every this many kimg (and at the end)
    count: int = 16  # clips in the sample grid
    fps: int = 8  # frame rate of the sample MP4s
    seed: int = 0  # seed of the fixed noise the samples are drawn from


@dataclass
class LogConfig:
    every_kimg: float = 1.0  # log scalars every this many kimg
    tensorboard: bool = True  # TensorBoard event files under RUN/logs
    csv: bool = True  # RUN/logs/metrics.csv with the same scalars


@dataclass
class RunConfig:
    dir: str = "runs/ucf64"  # run folder: resolved recipe, logs, samples, checkpoints


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)
    seed: int = 0  # seed of model initialisation, data order and noise (each process adds its rank)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _convert(value: Any, kind: Any, key: str) -> Any:
    """`value` as type `kind`, or a RecipeError naming `key`."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `2e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported recipe field type {kind!r} for {key}")
    name = getattr(kind, "__name__", str(kind))
    raise RecipeError(f"{key}: expected {name}, got {value!r} ({type(value).__name__})")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise RecipeError(f"{path}: unknown key; {prefix.rstrip('.') or 'the recipe'} has: "
                              f"{', '.join(fields)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, f"{path}.")
        else:
            kwargs[key] = _convert(value, kind, path)
    return cls(**kwargs)


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"{dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`["train.kimg=5", "model.two_stream=true"]` → `[("train.kimg", 5), ("model.two_stream", True)]`."""
    parsed = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r}: expected key=value, e.g. train.kimg=100")
        parsed.append((key.strip(), yaml.safe_load(text) if text.strip() else ""))
    return parsed


def load_recipe(path: str | Path | None, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file (None: all defaults), apply `key=value` overrides, check everything."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe not found: {path}")
        tree = yaml.safe_load(path.read_text()) or {}
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections, got {type(tree).__name__}")
    for key, value in parse_overrides(list(overrides)):
        _set(tree, key, value)
    recipe = _build(Recipe, tree, "")
    check_recipe(recipe)
    return recipe


def check_recipe(r: Recipe) -> None:
    """Impossible values fail here, in the first second, naming the key."""

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise RecipeError(f"{key}: {message}")

    need(r.model.kind in ("video", "image"), "model.kind", f"'video' or 'image', got {r.model.kind!r}")
    need(r.data.size in SIZES, "data.size", f"one of {', '.join(map(str, SIZES))}, got {r.data.size}")
    if r.model.kind == "video":
        need(r.data.frames in FRAMES, "data.frames",
             f"one of {', '.join(map(str, FRAMES))} for the video model, got {r.data.frames}")
    need(r.data.num_workers >= 0, "data.num_workers", f">= 0, got {r.data.num_workers}")
    for key in ("z_dim", "g_channels", "d_channels"):
        need(getattr(r.model, key) >= 1, f"model.{key}", f">= 1, got {getattr(r.model, key)}")
    need(not (r.model.two_stream and r.model.kind == "image"), "model.two_stream",
         "only for model.kind=video")
    need(r.model.generator in ("volume", "frames"), "model.generator",
         f"'volume' or 'frames', got {r.model.generator!r}")
    need(r.model.generator == "volume" or r.model.kind == "video", "model.generator", "only for model.kind=video")
    need(not (r.model.two_stream and r.model.generator == "frames"), "model.two_stream",
         "only for model.generator=volume")
    need(r.model.latent in ("single", "content_motion"), "model.latent",
         f"'single' or 'content_motion', got {r.model.latent!r}")
    need(r.model.latent == "single" or (r.model.kind == "video" and r.model.generator == "volume"), "model.latent",
         "only for model.generator=volume (the frames G always has a content and a motion part)")
    need((r.model.generator != "frames" and r.model.latent == "single") or 1 <= r.model.motion_dim < r.model.z_dim,
         "model.motion_dim", f"in [1, model.z_dim), got {r.model.motion_dim}")
    need(r.model.g_time_padding in ("zeros", "replicate"), "model.g_time_padding",
         f"'zeros' or 'replicate', got {r.model.g_time_padding!r}")
    need(r.model.g_time_padding == "zeros" or (r.model.kind == "video" and r.model.generator == "volume"),
         "model.g_time_padding", "only for model.generator=volume")
    need(r.model.g_head in ("transposed", "resize"), "model.g_head",
         f"'transposed' or 'resize', got {r.model.g_head!r}")
    need(r.model.g_head == "transposed" or (r.model.kind == "video" and r.model.generator == "volume"),
         "model.g_head", "only for model.generator=volume")
    need(not r.model.conditional or (r.model.kind == "video" and r.model.generator == "volume"),
         "model.conditional", "only for model.generator=volume")
    need(r.loss.kind in ("nonsaturating", "hinge"), "loss.kind",
         f"'nonsaturating' or 'hinge', got {r.loss.kind!r}")
    need(not (r.model.g_out_bias and r.model.kind == "image"), "model.g_out_bias", "only for model.kind=video")
    need(r.model.image_d_frames >= 0, "model.image_d_frames", f">= 0, got {r.model.image_d_frames}")
    need(r.model.image_d_frames == 0 or r.model.kind == "video", "model.image_d_frames", "only for model.kind=video")
    need(r.model.image_d_frames <= r.data.frames, "model.image_d_frames",
         f"at most data.frames ({r.data.frames}), got {r.model.image_d_frames}")
    need(r.model.d_minibatch_std >= 0, "model.d_minibatch_std", f">= 0, got {r.model.d_minibatch_std}")
    need(r.model.d_pack >= 1, "model.d_pack", f">= 1, got {r.model.d_pack}")
    if r.model.d_pack > 1:
        need(r.model.kind == "video" and r.model.image_d_frames == 0 and not r.model.conditional, "model.d_pack",
             "only for model.kind=video without model.image_d_frames or model.conditional")
        need(r.train.batch_size % r.model.d_pack == 0, "model.d_pack",
             f"must divide train.batch_size ({r.train.batch_size}), got {r.model.d_pack}")
    need(r.model.d_minibatch_std == 0 or r.model.kind == "video", "model.d_minibatch_std",
         "only for model.kind=video")
    need(r.loss.instance_noise >= 0, "loss.instance_noise", f">= 0, got {r.loss.instance_noise}")
    need(r.loss.class_weight >= 0, "loss.class_weight", f">= 0, got {r.loss.class_weight}")
    need(r.loss.mode_seeking >= 0, "loss.mode_seeking", f">= 0, got {r.loss.mode_seeking}")
    need(r.loss.mode_seeking == 0 or r.train.batch_size >= 2, "loss.mode_seeking", "needs train.batch_size >= 2")
    need(r.loss.class_weight == 0 or r.model.conditional, "loss.class_weight", "needs model.conditional: true")
    need(r.train.ema_batchnorm in ("copy", "recompute"), "train.ema_batchnorm",
         f"'copy' or 'recompute', got {r.train.ema_batchnorm!r}")
    need(r.loss.r1_gamma >= 0, "loss.r1_gamma", f">= 0, got {r.loss.r1_gamma}")
    need(r.loss.r1_every >= 1, "loss.r1_every", f">= 1, got {r.loss.r1_every}")
    need(0 <= r.loss.augment_p <= 1, "loss.augment_p", f"in [0, 1], got {r.loss.augment_p}")
    for key in ("lr_g", "lr_d"):
        need(getattr(r.optim, key) > 0, f"optim.{key}", f"> 0, got {getattr(r.optim, key)}")
    for key in ("beta1", "beta2"):
        need(0 <= getattr(r.optim, key) < 1, f"optim.{key}", f"in [0, 1), got {getattr(r.optim, key)}")
    need(r.train.kimg > 0, "train.kimg", f"> 0, got {r.train.kimg}")
    need(r.train.batch_size >= 1, "train.batch_size", f">= 1, got {r.train.batch_size}")
    for key in ("d_steps", "g_steps"):
        need(getattr(r.train, key) >= 1, f"train.{key}", f">= 1, got {getattr(r.train, key)}")
    need(r.train.d_steps == 1 or r.train.g_steps == 1, "train.g_steps",
         f"more G steps need train.d_steps 1, got d_steps {r.train.d_steps} and g_steps {r.train.g_steps}")
    need(r.train.ema_kimg >= 0, "train.ema_kimg", f">= 0, got {r.train.ema_kimg}")
    need(r.train.checkpoint_kimg > 0, "train.checkpoint_kimg", f"> 0, got {r.train.checkpoint_kimg}")
    need(r.train.keep_checkpoints >= 1, "train.keep_checkpoints", f">= 1, got {r.train.keep_checkpoints}")
    need(r.sample.every_kimg > 0, "sample.every_kimg", f"> 0, got {r.sample.every_kimg}")
    need(r.sample.count >= 1, "sample.count", f">= 1, got {r.sample.count}")
    need(r.sample.fps >= 1, "sample.fps", f">= 1, got {r.sample.fps}")
    need(r.log.every_kimg > 0, "log.every_kimg", f"> 0, got {r.log.every_kimg}")
    need(bool(r.run.dir), "run.dir", "must not be empty")


def dump_recipe(recipe: Recipe, facts: dict | None = None) -> str:
    """The resolved recipe as YAML that `load_recipe` reads back, `facts` (versions, git commit)
    written above it as comments."""
    header = "".join(f"# {key}: {value}\n" for key, value in (facts or {}).items())
    return header + yaml.safe_dump(recipe.to_dict(), sort_keys=False)
