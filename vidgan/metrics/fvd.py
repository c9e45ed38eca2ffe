"""FVD, the Fréchet video distance, as StyleGAN-V computes it (`fvd2048_16f`).

The protocol (`PROTOCOL`; any change to it changes that string, and so every cache key):

- Clips are 16 frames (`CLIP_FRAMES`): the first 16 of each clip; a shorter clip is an error.
- Real clips: `num_real` (2048) clips of a folder written by `vidgan prepare`: the first `num_real`
  of a permutation of all its clip indices drawn with `numpy.random.RandomState(0)` (every clip when
  `num_real` is their number), read in index order.
- Generated clips: `num_fake` (2048) clips of the generator; clip i comes from row i of
  `torch.randn(num_fake, z_dim, generator=torch.Generator().manual_seed(seed))` (drawn on the CPU),
  so the set depends on the seed alone, not on the number of processes, the batch or the device. They
  are quantised to uint8 exactly as `vidgan sample` writes them: round((x + 1) · 127.5), clamped.
- Both sets then take one path: uint8 `[N, 16, S, S, 3]` → float → every frame resized to 224×224
  (`RESOLUTION`; bilinear, align_corners=False, no antialiasing, as TF's resize_bilinear in the
  original FVD code) → x / 127.5 − 1, in [-1, 1] → `[N, 3, 16, 224, 224]`.
- The detector is the I3D TorchScript file StyleGAN-V uses (Kinetics-400 I3D, a port of the tf.hub
  model of Unterthiner et al.), given by the user and never downloaded. It is called as
  `detector(x, rescale=False, resize=False, return_features=True)`: the clips are already resized and
  in [-1, 1]; the output is the 400 logits before the softmax. See `Detector` for other networks.
- Statistics: the mean and the maximum-likelihood covariance (÷ n) of the features, in float64;
  then the Fréchet distance of `frechet.py`.

Real statistics are cached in a file named by the SHA-256 of everything that produced them (see
`real_stats_key`), written atomically. Under Accelerate each process computes the features of its
share of the batches, and `accelerator.gather` brings them to every process in clip order; the main
process computes the statistics and the distance. Batches are dealt out whole (batch b to process
b mod world), so every clip meets the networks in the same batch whatever the number of processes,
and one process and several give the same features.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from data_tools.atomic import atomic_path
from data_tools.layout import Layout
from vidgan.metrics.frechet import GaussianStats

PROTOCOL = "vidgan-fvd/1"  # the protocol below; part of every cache key and result
CLIP_FRAMES = 16  # frames per clip seen by I3D (StyleGAN-V's fvd2048_16f)
RESOLUTION = 224  # frame side seen by I3D, pixels
NUM_REAL = 2048  # real clips, by default
NUM_FAKE = 2048  # generated clips, by default
REAL_SUBSET_SEED = 0  # seed of the permutation that picks the real clips
RESIZE = "bilinear, align_corners=False, antialias=False"  # how frames reach RESOLUTION
VALUE_RANGE = "[-1, 1]"  # range of the detector's input: uint8 v → v / 127.5 − 1
I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}  # StyleGAN-V's I3D call
CALL_MODES = ("auto", "kwargs", "plain")  # how the detector is called; see `Detector`
CACHE_PREFIX = "fvd-real-"  # cache file: <cache dir>/fvd-real-<key>.npz


class FVDError(ValueError):
    """FVD cannot be computed as asked (missing file, too few clips, clips too short, a detector that
    fails); the message says why and what to do."""


def metric_name(num_fake: int, frames: int = CLIP_FRAMES) -> str:
    """`fvd2048_16f`: StyleGAN-V's name, from the number of generated clips and the clip length."""
    return f"fvd{num_fake}_{frames}f"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """`~/.cache/vidgan/fvd` (`$XDG_CACHE_HOME/vidgan/fvd` when that is set)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vidgan" / "fvd"


# --- the detector ----------------------------------------------------------------------------------

def _refuses_keywords(error: Exception) -> bool:
    """Whether a call failed because the callee takes no such keyword arguments (TorchScript says
    `forward() expected at most 2 argument(s) but received 5 argument(s)`)."""
    text = str(error)
    return isinstance(error, TypeError) or "keyword argument" in text or (
        "expected at most" in text and "argument" in text)


class Detector:
    """The feature network FVD measures with: a TorchScript file loaded with `torch.jit.load` on
    `device`, in eval mode. The file is a program: pass only one you trust; its SHA-256 names it.

    `detector(x)`: float `[N, 3, 16, 224, 224]` in [-1, 1] → float64 features `[N, D]` (any output of
    N rows is flattened to `[N, D]`). How the network is called (`call`):

    - `auto` (default): from the TorchScript signature of `forward`, pass each of `rescale=False`,
      `resize=False`, `return_features=True` that it declares (StyleGAN-V's I3D declares all three);
      a `forward(x)` that declares none is called as `detector(x)` and must itself return features of
      such clips. A module whose signature cannot be read is tried with the three keywords first and,
      if it refuses keywords, called plainly.
    - `kwargs`: always `detector(x, rescale=False, resize=False, return_features=True)`.
    - `plain`: always `detector(x)`.

    `sha256` is the file's; `call_description` says which call was used.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", call: str = "auto"):
        if call not in CALL_MODES:
            raise FVDError(f"detector call must be one of {', '.join(CALL_MODES)}; got {call!r}")
        self.path = Path(path)
        if not self.path.is_file():
            raise FVDError(f"--i3d {path}: no such file. FVD needs StyleGAN-V's I3D TorchScript "
                           "(i3d_torchscript.pt), which vidgan never downloads: fetch it yourself and "
                           "pass its path")
        self.sha256 = sha256_file(self.path)
        self.call = call
        try:
            with warnings.catch_warnings():  # torch ≥ 2.9 calls TorchScript deprecated; loading still works
                warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
                self.module = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 — any failure here means "not a TorchScript file"
            raise FVDError(f"--i3d {path}: not a TorchScript file that torch.jit.load can read ({e})") from None
        self.kwargs: dict[str, bool] | None  # None: not known yet (decided on the first call)
        if call == "kwargs":
            self.kwargs = dict(I3D_KWARGS)
        elif call == "plain":
            self.kwargs = {}
        else:
            declared = self._declared_arguments()
            self.kwargs = None if declared is None else {k: v for k, v in I3D_KWARGS.items() if k in declared}

    def _declared_arguments(self) -> set[str] | None:
        try:
            return {a.name for a in self.module.forward.schema.arguments}
        except (AttributeError, RuntimeError):
            return None

    @property
    def call_description(self) -> str:
        if self.kwargs is None:
            return "undecided"
        return ", ".join(f"{k}={v}" for k, v in self.kwargs.items()) or "plain (x only)"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.kwargs is not None:
            return self.module(x, **self.kwargs)
        try:  # signature unknown: StyleGAN-V's keywords first, then a plain call
            out = self.module(x, **I3D_KWARGS)
            self.kwargs = dict(I3D_KWARGS)
        except Exception as e:  # noqa: BLE001
            if not _refuses_keywords(e):
                raise
            out = self.module(x)
            self.kwargs = {}
        return out

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, 3, T, 224, 224]` in [-1, 1] → features `[N, D]`, float64."""
        try:
            out = self._run(x)
        except Exception as e:  # noqa: BLE001
            raise FVDError(f"the detector {self.path} failed on clips {list(x.shape)} ({self.call_description}): "
                           f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from e
        if not isinstance(out, torch.Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0]:
            shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FVDError(f"the detector {self.path} returned {shape} for {x.shape[0]} clips; "
                           "expected features [N, D]")
        return out.reshape(x.shape[0], -1).to(torch.float64)


# --- clips -----------------------------------------------------------------------------------------

def preprocess(clips: torch.Tensor, frames: int = CLIP_FRAMES, resolution: int = RESOLUTION) -> torch.Tensor:
    """uint8 `[N, T, H, W, 3]` (T ≥ frames; on any device) → float32 `[N, 3, frames, res, res]` in
    [-1, 1]: the first `frames` frames, each resized bilinearly (align_corners=False, no antialiasing)."""
    if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 [N, T, H, W, 3]; got {clips.dtype} {list(clips.shape)}")
    n, t, h, w, _ = clips.shape
    if t < frames:
        raise FVDError(f"clips of {t} frames: FVD needs at least {frames} (it takes the first {frames})")
    x = clips[:, :frames].permute(0, 4, 1, 2, 3).float()  # [N, 3, T, H, W]
    x = x.reshape(n, 3 * frames, h, w)  # each (channel, frame) plane resized alike
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)
    x = x.div_(127.5).sub_(1.0).clamp_(-1.0, 1.0)  # in [-1, 1]
    return x.view(n, 3, frames, resolution, resolution)  # [N, 3, T, res, res]


def generated_clips_uint8(generator: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """`generator(z)`, float `[N, C, T, H, W]` in [-1, 1] → uint8 `[N, T, H, W, 3]` on z's device,
    quantised as `vidgan sample` writes it (round((x + 1) · 127.5), clamped; NaN → mid-grey; C = 1
    repeated to 3)."""
    with torch.no_grad():
        x = generator(z)
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] not in (1, 3):
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise FVDError(f"the generator returned {shape}; FVD needs clips [N, C, T, H, W] with C = 1 or 3")
    x = torch.nan_to_num(x.detach().float(), nan=0.0)
    x = ((x + 1) * 127.5).clamp_(0, 255).round_().to(torch.uint8)  # [N, C, T, H, W]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1, -1)
    return x.permute(0, 2, 3, 4, 1)  # [N, T, H, W, 3]


def latents(seed: int, count: int, z_dim: int) -> torch.Tensor:
    """The `[count, z_dim]` noise of the generated set: row i makes clip i (CPU, float32)."""
    return torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed))


def check_generator(generator: torch.nn.Module) -> tuple[int, int]:
    """(z_dim, frames) of a video generator; an FVDError for an image generator or short clips."""
    frames, z_dim = getattr(generator, "frames", None), getattr(generator, "z_dim", None)
    if frames is None or z_dim is None:
        raise FVDError(f"the generator is a {type(generator).__name__}, which makes images: FVD needs a "
                       "video generator (model.kind=video)")
    if frames < CLIP_FRAMES:
        raise FVDError(f"the generator makes clips of {frames} frames; FVD compares clips of {CLIP_FRAMES} "
                       f"frames ({metric_name(NUM_FAKE)}): train with data.frames >= {CLIP_FRAMES}")
    return int(z_dim), int(frames)


def select_real_indices(total: int, count: int) -> np.ndarray:
    """The clips of the real set: the first `count` of a `RandomState(0)` permutation of `range(total)`,
    sorted (int64)."""
    return np.sort(np.random.RandomState(REAL_SUBSET_SEED).permutation(total)[:count]).astype(np.int64)


def open_real_set(root: str | Path, num_real: int):
    """The prepared folder as a `ClipDataset` and the indices of its `num_real` clips, checked."""
    from data_tools.dataset import ClipDataset

    root = Path(root)
    try:
        dataset = ClipDataset(root)
    except (FileNotFoundError, ValueError) as e:
        raise FVDError(f"--real {root}: {e}") from None
    frames = dataset.clip_shape[0]
    if frames < CLIP_FRAMES:
        raise FVDError(f"--real {root}: holds clips of {frames} frames; FVD needs clips of at least "
                       f"{CLIP_FRAMES} (prepare them with --frames {CLIP_FRAMES})")
    if len(dataset) < num_real:
        raise FVDError(f"--real {root}: holds only {len(dataset)} clips, fewer than --num-real {num_real}; "
                       f"pass --num-real {len(dataset)} or fewer (and report the number with the result)")
    return dataset, select_real_indices(len(dataset), num_real)


# --- the real statistics cache ---------------------------------------------------------------------

def real_stats_key(root: str | Path, dataset, num_real: int, detector_sha256: str, call: str) -> tuple[str, dict]:
    """(key, description): the SHA-256 of the JSON description of everything that shapes the real
    statistics: the protocol, the prepared folder's content (SHA-256 of meta.json, which holds the
    fingerprint of its sources and options, and of index.csv), its clip shape and count, the number
    of clips taken and how, clip length, resize, value range, the detector's SHA-256 and call. The
    folder's path is not part of it: a moved or copied folder keeps its statistics."""
    root = Path(root)
    description = {
        "protocol": PROTOCOL,
        "set": "real",
        "meta_sha256": sha256_file(Layout(root).meta),
        "index_sha256": sha256_file(Layout(root).index),
        "fingerprint": dataset.meta.get("fingerprint"),
        "clip_shape": list(dataset.clip_shape),
        "clips_in_folder": len(dataset),
        "num_real": num_real,
        "subset": f"numpy RandomState({REAL_SUBSET_SEED}) permutation, first num_real",
        "clip_frames": CLIP_FRAMES,
        "resolution": RESOLUTION,
        "resize": RESIZE,
        "value_range": VALUE_RANGE,
        "detector_sha256": detector_sha256,
        "detector_call": call,
    }
    key = hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()
    return key, description


def load_cached_stats(path: Path, description: dict) -> GaussianStats | None:
    """The statistics in `path` if it exists and was made from `description`; else None (a damaged
    or mismatching file is reported and recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["description"])) != description:
                raise ValueError("its description differs from this evaluation's")
            return GaussianStats.from_state_dict({k: data[k] for k in ("count", "mean", "m2")})
    except Exception as e:  # noqa: BLE001 — any unreadable cache file is recomputed
        print(f"vidgan eval: warning: ignoring cache file {path} ({e}); recomputing", file=sys.stderr)
        return None


def save_cached_stats(path: Path, stats: GaussianStats, description: dict) -> None:
    """Write the statistics and their description under a temporary name, then rename: a reader sees
    the complete file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez is given an open file: it would add ".npz" to the temporary's name
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        np.savez(f, description=np.array(json.dumps(description, sort_keys=True)), **stats.state_dict())


# --- features under Accelerate ---------------------------------------------------------------------

def gathered_features(accelerator, detector: Detector, count: int, batch: int,
                      make_clips: Callable[[int, int], torch.Tensor], label: str = "",
                      progress: bool = False) -> torch.Tensor:
    """Features `[count, D]` (float64, CPU, in clip order, on every process) of clips `0..count-1`.

    `make_clips(a, b)` returns uint8 `[b − a, T, H, W, 3]` clips a..b-1 on the accelerator's device.
    Batch k (clips k·batch ..) is done by process k mod world; the features are gathered with
    `accelerator.gather`, padded to the same number of rows on every process."""
    from tqdm import tqdm

    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    num_batches = math.ceil(count / batch)
    mine = range(rank, num_batches, world)
    indices, parts = [], []
    bar = tqdm(total=sum(min(batch, count - k * batch) for k in mine), unit="clip", dynamic_ncols=True,
               desc=label + (f" (rank 0 of {world})" if world > 1 else ""),
               disable=not (progress and accelerator.is_main_process), file=sys.stderr)
    for k in mine:
        a, b = k * batch, min((k + 1) * batch, count)
        clips = make_clips(a, b)  # uint8 [n, T, H, W, 3]
        features = detector(preprocess(clips))  # [n, D] float64
        indices.append(torch.arange(a, b, device=device))
        parts.append(features.to(device))
        bar.update(b - a)
    bar.close()
    local_dim = parts[0].shape[1] if parts else 0
    dims = accelerator.gather(torch.tensor([local_dim], device=device)).tolist()  # [world]
    dim = max(dims)
    if any(d not in (0, dim) for d in dims) or any(p.shape[1] != dim for p in parts):
        raise FVDError(f"the detector returned features of different lengths: {sorted(set(dims))}")
    rows = math.ceil(num_batches / world) * batch  # the most rows any process can hold
    padded = torch.zeros(rows, dim, dtype=torch.float64, device=device)
    index = torch.full((rows,), -1, dtype=torch.int64, device=device)
    if parts:
        local = torch.cat(parts)
        padded[: len(local)] = local
        index[: len(local)] = torch.cat(indices)
    all_features = accelerator.gather(padded).cpu()  # [world · rows, D]
    all_index = accelerator.gather(index).cpu()  # [world · rows]
    keep = all_index >= 0
    order = torch.argsort(all_index[keep])
    if not torch.equal(all_index[keep][order], torch.arange(count)):
        raise RuntimeError(f"gathered features do not cover clips 0..{count - 1} exactly once")
    return all_features[keep][order]


# --- the metric ------------------------------------------------------------------------------------

def compute_fvd(generator: torch.nn.Module, real_root: str | Path, i3d: str | Path, *, accelerator=None,
                num_real: int = NUM_REAL, num_fake: int = NUM_FAKE, batch: int = 16, seed: int = 0,
                cache_dir: str | Path | None = None, i3d_call: str = "auto", progress: bool = False,
                log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """FVD between `num_fake` clips of `generator` and `num_real` clips of the prepared folder
    `real_root`, with the I3D TorchScript file `i3d`. Call on every process; returns the result dict
    on the main process and None on the others.

    `generator`: a video generator (`z_dim`, `frames` attributes; `[N, z_dim]` → `[N, C, T, H, W]` in
    [-1, 1]); it is put in eval mode on the accelerator's device. `batch`: clips per forward pass of
    either network, per process. `cache_dir`: where real statistics are kept (default
    `default_cache_dir()`). `log`: where the main process reports progress (default: stderr).
    """
    from accelerate import Accelerator
    from accelerate.utils import broadcast

    if accelerator is None:
        accelerator = Accelerator()
    main = accelerator.is_main_process
    if log is None:
        log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    say = log if main else (lambda message: None)
    for name, value, least in (("num_real", num_real, 2), ("num_fake", num_fake, 2), ("batch", batch, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise FVDError(f"{name} must be an integer >= {least}; got {value!r}")
    device = accelerator.device

    # Everything that can be wrong is checked before any network runs, on every process alike.
    dataset, real_indices = open_real_set(real_root, num_real)
    z_dim, _ = check_generator(generator)
    detector = Detector(i3d, device, i3d_call)
    key, description = real_stats_key(real_root, dataset, num_real, detector.sha256, i3d_call)
    cache_path = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser().absolute() / \
        f"{CACHE_PREFIX}{key}.npz"

    # (1) real statistics: from the cache (main process), else from every process's share
    real = load_cached_stats(cache_path, description) if main else None
    cached = bool(broadcast(torch.tensor([int(real is not None)], device=device), from_process=0).item())
    if cached:
        say(f"real statistics: cached ({cache_path})")
    else:
        say(f"real statistics: computing from {num_real} clips of {real_root}")

        def real_clips(a: int, b: int) -> torch.Tensor:
            clips = np.stack([dataset.clip(int(i))[:CLIP_FRAMES] for i in real_indices[a:b]])
            return torch.from_numpy(clips).to(device)  # uint8 [n, 16, S, S, 3]: normalised on the device

        features = gathered_features(accelerator, detector, num_real, batch, real_clips, "real", progress)
        if main:
            real = GaussianStats.from_features(features)
            try:
                save_cached_stats(cache_path, real, description)
                say(f"real statistics: saved to {cache_path}")
            except OSError as e:
                say(f"vidgan eval: warning: could not write the cache file {cache_path} ({e})")

    # (2) generated clips: clip i from row i of the seed's noise, whatever the process
    generator = generator.to(device).eval()
    z = latents(seed, num_fake, z_dim)
    say(f"generated clips: {num_fake} (seed {seed})")
    features = gathered_features(accelerator, detector, num_fake, batch,
                                 lambda a, b: generated_clips_uint8(generator, z[a:b].to(device)),
                                 "generated", progress)
    if not main:
        return None
    fake = GaussianStats.from_features(features)
    if fake.dim != real.dim:
        raise FVDError(f"real statistics have {real.dim} features, generated clips {fake.dim}")
    value = fake.frechet_distance(real)
    return {
        "metric": metric_name(num_fake),
        "value": value,
        "protocol": PROTOCOL,
        "num_real": num_real,
        "num_fake": num_fake,
        "clip_frames": CLIP_FRAMES,
        "resolution": RESOLUTION,
        "i3d": {"path": str(detector.path.resolve()), "sha256": detector.sha256,
                "call": detector.call_description},
        "feature_dim": fake.dim,
        "seed": seed,
        "batch": batch,
        "real": {"root": str(Path(real_root).resolve()), "clips_in_folder": len(dataset),
                 "statistics": str(cache_path), "cached": cached, "key": key},
        "world_size": accelerator.num_processes,
        "device": str(device),
    }


def result_line(result: dict[str, Any]) -> str:
    """`fvd2048_16f: 123.4567  (i3d sha256 <64 hex>, 2048 real, 2048 fake)`."""
    return (f"{result['metric']}: {result['value']:.4f}  (i3d sha256 {result['i3d']['sha256']}, "
            f"{result['num_real']} real, {result['num_fake']} fake)")
