"""Clips from a trained generator: `vidgan sample` (N MP4 files) and `vidgan interpolate` (a latent walk).

    vidgan sample RUN_OR_CHECKPOINT --num N --out DIR [--seed S] [--fps F] [--grid] [--upscale K]
                                    [--batch B] [--no-ema] [--device D] [--class NAME|INDEX]
                                    [--fix content|motion]
    vidgan interpolate RUN_OR_CHECKPOINT --steps K --out FILE.mp4 [--seed S] [--points P] [--fps F]
                                         [--class NAME|INDEX] [--fix content|motion]

The generator is rebuilt from a checkpoint's `generator_ema/` (or, with `--no-ema`, `generator/`):
`config.json` + `model.safetensors`, no pickle. The recipe saved beside it gives the frame rate.

Noise: latent i is the i-th draw of `z_dim` normals from one `torch.Generator` seeded with `--seed`,
so clip i depends on the seed and i alone — not on `--batch`, and `--num 100` begins with the clips of
`--num 10`. `interpolate` walks through the first P latents of the same sequence: with the same seed
its walk starts at `sample-00000` and passes through `sample-00001`, … . The MP4 encoder is
deterministic, so the same checkpoint, seed and device give byte-identical files.

Classes (a class-conditional generator, `model.conditional`): clip i is of class i mod classes, and
the grid shows one row per class (for N a multiple of the classes); `--class` draws every clip from one class, and the walk of
`interpolate` stays in one class (`--class`, else the first).

Content and motion (a generator whose latent has both parts: `model.latent: content_motion`, or the
frames generator): `--fix content` gives every clip the content part of the first latent, so one
appearance moves in many ways; `--fix motion` gives every clip the first latent's motion part, so many
appearances move alike. In `interpolate` the walk then changes only the other part.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from data_tools.argtypes import frame_rate, int_at_least, positive_int
from vidgan.checkpoint import CheckpointError, load_trained
from vidgan.export import clip_grid, film_strip_png, first_frame_grid_png, to_uint8_frames, write_mp4, write_png
from vidgan.models import VIDEO_GENERATORS, ConfigModule
from vidgan.recipe import Recipe

DEFAULT_FPS = 8  # frame rate when no recipe is found beside a bare generator folder (SampleConfig.fps)
DEFAULT_BATCH = 16  # clips per generator forward pass
WRITER_THREADS = 1  # files encoded at once by `vidgan sample`; see write_samples before raising it
GRID_MAX = 256  # clips shown in the --grid video and contact sheet at most (the first ones): 16 × 16
STRIP_MAX = 16  # clips shown as film strips in strip.png at most (the first ones)
NAME_DIGITS = 5  # sample-00000.mp4; more digits when N needs them
SLERP_EPS = 1e-7  # below this sin(angle), two latents are treated as parallel and mixed linearly


def is_video_model(G) -> bool:
    """True for a generator of clips `[N, C, T, H, W]`, False for one of images `[N, C, H, W]`."""
    return isinstance(G, VIDEO_GENERATORS)


def recipe_fps(recipe: Recipe | None) -> int:
    return recipe.sample.fps if recipe is not None else DEFAULT_FPS


# --- noise and generation ---------------------------------------------------------------------

def latents(num: int, z_dim: int, seed: int) -> torch.Tensor:
    """`[num, z_dim]` float32 normals on the CPU: row i is the i-th draw of z_dim from one generator
    seeded with `seed`, so the first rows do not depend on `num`. The global RNG is not touched."""
    g = torch.Generator().manual_seed(seed)
    if num == 0:
        return torch.empty(0, z_dim)
    return torch.stack([torch.randn(z_dim, generator=g) for _ in range(num)])  # [num, z_dim]


FIXABLE = ("content", "motion")  # the parts of a content/motion latent that --fix can hold


def latent_parts(G) -> tuple[int, int] | None:
    """(content length, motion length) of G's latent, content first; None for a latent without parts."""
    motion = getattr(G, "motion_dim", 0)
    return (G.z_dim - motion, motion) if motion else None


def hold(G, z: torch.Tensor, part: str | None) -> torch.Tensor:
    """Latents `z` `[N, z_dim]` with `part` ("content" or "motion") of every row set to row 0's: one
    appearance in many motions, or one motion of many appearances. `part` None returns z unchanged;
    ValueError for a G whose latent has no such parts."""
    if part is None:
        return z
    if part not in FIXABLE:
        raise ValueError(f"--fix {part}: give one of {', '.join(FIXABLE)}")
    parts = latent_parts(G)
    if parts is None:
        raise ValueError(f"--fix {part} needs a generator whose latent has a content and a motion part "
                         "(model.latent: content_motion, or model.generator: frames); this one has one z")
    content = parts[0]
    held = slice(0, content) if part == "content" else slice(content, None)
    z = z.clone()
    z[:, held] = z[:1, held]
    return z


def num_classes(G) -> int:
    """The classes a class-conditional generator draws from; 0 for an unconditional one."""
    return getattr(G, "num_classes", 0)


def class_labels(G, num: int, label: int | None = None) -> torch.Tensor | None:
    """The labels `[num]` of num clips of G: all `label`, or clip i of class i mod classes; None for an
    unconditional G (ValueError when it is asked for a class)."""
    classes = num_classes(G)
    if not classes:
        if label is not None:
            raise ValueError("--class needs a class-conditional generator (model.conditional: true); "
                             "this one is unconditional")
        return None
    if label is None:
        return torch.arange(num) % classes
    if not 0 <= label < classes:
        raise ValueError(f"--class {label}: the generator has classes 0 to {classes - 1}")
    return torch.full((num,), label, dtype=torch.long)


def generate(G, z: torch.Tensor, batch: int = DEFAULT_BATCH,
             labels: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Float clips `[b, C, T, H, W]` (images `[b, C, H, W]`) in [-1, 1] on G's device, `batch` latents
    of `z` `[N, z_dim]` (and of `labels` `[N]`, for a class-conditional G) at a time. G must be in eval
    mode (BatchNorm then uses its running statistics, so a clip does not depend on the others in its
    batch)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    device = next(G.parameters()).device
    label_chunks = labels.split(batch) if labels is not None else [None] * len(z.split(batch))
    with torch.inference_mode():
        for chunk, y in zip(z.split(batch), label_chunks):
            yield (G(chunk.to(device)) if y is None else G(chunk.to(device), y.to(device))).float()


def sample_clips(G, num: int, seed: int = 0, batch: int = DEFAULT_BATCH, label: int | None = None,
                 fix: str | None = None) -> torch.Tensor:
    """`num` clips `[num, C, T, H, W]` (images `[num, C, H, W]`) float32 in [-1, 1] on the CPU, from
    latents(num, G.z_dim, seed) (with one part held: `hold(G, z, fix)`) and class_labels(G, num, label).
    The same seed gives the same clips whatever `batch` is."""
    labels = class_labels(G, num, label)
    parts = [x.cpu() for x in generate(G, hold(G, latents(num, G.z_dim, seed), fix), batch, labels)]
    return torch.cat(parts)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1) along the great circle between their
    directions (White 2016, "Sampling Generative Networks"): the path keeps the norm a Gaussian
    latent typically has, where a straight line would pass through improbably short vectors."""
    a64, b64 = a.double(), b.double()
    cos = (a64 / a64.norm()) @ (b64 / b64.norm())
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if so.abs() < SLERP_EPS:  # (anti)parallel: any great circle would do; mix linearly
        return ((1 - t) * a64 + t * b64).to(a.dtype)
    return (torch.sin((1 - t) * omega) / so * a64 + torch.sin(t * omega) / so * b64).to(a.dtype)


def interpolation_latents(z_dim: int, seed: int, points: int = 2, steps: int = 8) -> torch.Tensor:
    """A walk through `latents(points, z_dim, seed)`: `steps` slerp steps per segment, both ends
    included, so `[(points − 1) · steps + 1, z_dim]`; row k · steps is exactly latent k."""
    if points < 2 or steps < 1:
        raise ValueError(f"need points >= 2 and steps >= 1; got points={points}, steps={steps}")
    anchors = latents(points, z_dim, seed)  # [points, z_dim]
    walk = [anchors[k] if i == 0 else slerp(anchors[k], anchors[k + 1], i / steps)
            for k in range(points - 1) for i in range(steps)]
    walk.append(anchors[-1])
    return torch.stack(walk)  # [(points - 1) · steps + 1, z_dim]


# --- writing ----------------------------------------------------------------------------------

def upscale_frames(frames: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour enlargement by `k` of uint8 frames `[..., H, W, 3]` → `[..., H·k, W·k, 3]`."""
    if k == 1:
        return frames
    return frames.repeat(k, axis=-3).repeat(k, axis=-2)


def sample_name(index: int, num: int, suffix: str) -> str:
    digits = max(NAME_DIGITS, len(str(max(num - 1, 0))))
    return f"sample-{index:0{digits}d}{suffix}"


def write_samples(G, out_dir: str | Path, num: int, seed: int = 0, fps: int | float | Fraction = DEFAULT_FPS,
                  batch: int = DEFAULT_BATCH, grid: bool = False, upscale: int = 1,
                  progress: bool | None = None, label: int | None = None, fix: str | None = None) -> list[Path]:
    """Generate `num` clips and write each to `out_dir/sample-00000.mp4`, … (H.264 yuv420p MP4 at
    `fps`); an image generator writes `sample-00000.png`, … . `grid` adds `grid.mp4` (video models)
    and `grid.png` (first frames) of the first min(num, GRID_MAX) clips, and for a video model
    `strip.png` (film strips of the first STRIP_MAX clips, every other frame). `upscale` enlarges every
    output by pixel repetition. `progress`: a tqdm bar (None: only on a terminal). A class-conditional
    G draws clip i from class i mod classes, its grid one row per class, or all from class `label`.
    `fix` holds the content or motion part of every latent at the first one's (`hold`).
    Files of the same names are replaced, each atomically. Returns the per-sample paths, in order.

    One background thread encodes while the generator makes the next batch (PyAV releases the GIL
    while x264 works); at most about 2 batches of frames wait for it. Never more than one: with two
    x264 encoders at work at once in one process, a file written later from the same frames has been
    seen to come out with other bytes (under heavy CPU load; cause not found), which would break
    "same seed, same bytes".
    """
    if num < 1 or upscale < 1:
        raise ValueError(f"need num >= 1 and upscale >= 1; got num={num}, upscale={upscale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video = is_video_model(G)
    suffix = ".mp4" if video else ".png"
    labels = class_labels(G, num, label)
    z = hold(G, latents(num, G.z_dim, seed), fix)  # [num, z_dim]
    kept = []  # uint8 [b, T, H, W, 3] of the first GRID_MAX clips, for the grid
    paths: list[Path] = []
    max_pending = 2 * batch  # clips handed to the writer and not yet written

    def write_one(path: Path, clip) -> None:  # clip: uint8 [T, H·k, W·k, 3]
        if video:
            write_mp4(path, clip, fps)
        else:
            write_png(path, clip[0])  # [H·k, W·k, 3]

    bar = tqdm(total=num, unit="clip", disable=None if progress is None else not progress, dynamic_ncols=True)
    pending: set = set()

    def drain(limit: int) -> None:
        nonlocal pending
        while len(pending) > limit:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # re-raises a writer's error here
                bar.update(1)

    with ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="vidgan-write") as pool:
        try:
            for clips in generate(G, z, batch, labels):
                frames = to_uint8_frames(clips)  # [b, T, H, W, 3], T = 1 for images
                if grid and len(paths) < GRID_MAX:
                    kept.append(frames[: GRID_MAX - len(paths)])
                for clip in upscale_frames(frames, upscale):  # [T, H·k, W·k, 3]
                    path = out_dir / sample_name(len(paths), num, suffix)
                    pending.add(pool.submit(write_one, path, clip))
                    paths.append(path)
                drain(max_pending)
            drain(0)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()
    if grid:
        shown = np.concatenate(kept)  # [min(num, GRID_MAX), T, H, W, 3]
        nrow = None  # near-square
        if labels is not None and label is None:  # one row per class: clip i is of class i mod classes
            order = torch.argsort(labels[: len(shown)], stable=True).numpy()
            shown, nrow = shown[order], -(-len(shown) // num_classes(G))
        first_frame_grid_png(out_dir / "grid.png", shown, nrow=nrow, upscale=upscale)
        if video:
            write_mp4(out_dir / "grid.mp4", clip_grid(shown, nrow=nrow, upscale=upscale), fps)
            film_strip_png(out_dir / "strip.png", shown[:STRIP_MAX], upscale=upscale)
    return paths


def write_interpolation(G, out_path: str | Path, seed: int = 0, points: int = 2, steps: int = 8,
                        fps: int | float | Fraction = DEFAULT_FPS, batch: int = DEFAULT_BATCH,
                        upscale: int = 1, label: int | None = None, fix: str | None = None) -> tuple[Path, int]:
    """One MP4 of a latent walk (`interpolation_latents`): for a video model, the clip of every step
    played one after the other ((points − 1)·steps + 1 clips of T frames); for an image model, one
    frame per step. A class-conditional G walks within class `label` (None: the first). `fix` holds the
    content or motion part at the walk's start, so that only the other part changes (`hold`).
    Returns `(path, frames written)`."""
    if upscale < 1:
        raise ValueError(f"upscale must be >= 1; got {upscale}")
    z = hold(G, interpolation_latents(G.z_dim, seed, points, steps), fix)  # [S, z_dim]
    labels = class_labels(G, len(z), 0 if label is None and num_classes(G) else label)
    frames = np.concatenate([to_uint8_frames(x) for x in generate(G, z, batch, labels)])  # [S, T, H, W, 3]
    frames = upscale_frames(frames.reshape(-1, *frames.shape[2:]), upscale)  # [S·T, H·k, W·k, 3]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(out_path, frames, fps), len(frames)


# --- command line -----------------------------------------------------------------------------

SAMPLE_HELP = "write MP4 clips from a trained generator"
SAMPLE_DESCRIPTION = ("Write N clips from a trained generator as H.264 MP4 files (yuv420p, +faststart: "
                      "they play in a web browser), or PNGs for an image model. The same checkpoint, "
                      "seed and device give byte-identical files.")
INTERPOLATE_HELP = "write an MP4 of a walk between noise vectors"
INTERPOLATE_DESCRIPTION = ("Write one MP4 of a walk through P random noise vectors (spherical "
                           "interpolation, K steps per segment): each step's clip plays after the "
                           "previous one; for an image model each step is one frame.")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, metavar="RUN_OR_CHECKPOINT",
                   help="run folder (its newest checkpoint), checkpoint folder, or generator folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise [0]")
    p.add_argument("--fps", type=frame_rate, default=None, metavar="F",
                   help="frame rate of the MP4 [the recipe's sample.fps]")
    p.add_argument("--upscale", type=positive_int, default=1, metavar="K",
                   help="enlarge K× with nearest neighbour, for viewing [1]")
    p.add_argument("--batch", type=positive_int, default=DEFAULT_BATCH, metavar="B",
                   help=f"latents per generator pass; does not change the output [{DEFAULT_BATCH}]")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of its EMA")
    p.add_argument("--device", default="auto", help="torch device [auto: cuda if available, else cpu]")
    p.add_argument("--class", dest="label", default=None, metavar="NAME|INDEX",
                   help="a class-conditional generator: draw from this class (its name, the training "
                        "data's subfolder, or its index) [sample: every class in turn; interpolate: the first]")
    p.add_argument("--fix", choices=FIXABLE, default=None,
                   help="a generator with a content and a motion latent: hold this part at the first "
                        "latent's and vary the other (content: one appearance, many motions)")


def configure_sample(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan sample` on `p`; `args.run(args)` runs it."""
    p.description = SAMPLE_DESCRIPTION
    _add_common(p)
    p.add_argument("--num", type=positive_int, default=16, metavar="N", help="clips to write [16]")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder for sample-00000.mp4, … (PNGs for an image model)")
    p.add_argument("--grid", action="store_true",
                   help=f"also grid.mp4 and grid.png (PNG only for an image model) of the first "
                        f"min(N, {GRID_MAX}) clips")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_sample)
    return p


def configure_interpolate(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan interpolate` on `p`; `args.run(args)` runs it."""
    p.description = INTERPOLATE_DESCRIPTION
    _add_common(p)
    p.add_argument("--steps", type=positive_int, required=True, metavar="K",
                   help="slerp steps from one noise vector to the next")
    p.add_argument("--points", type=int_at_least(2), default=2, metavar="P",
                   help="random noise vectors the walk passes through [2]")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.mp4", help="the MP4 to write")
    p.set_defaults(run=run_interpolate)
    return p


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)  # a RuntimeError for a name torch does not know
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here")
    return name


def resolve_class(G, label: str | None, classes: list[str] | None) -> int | None:
    """`--class` as a label: a class name the checkpoint records, or an index; ValueError naming the
    classes otherwise."""
    if label is None:
        return None
    if not num_classes(G):
        class_labels(G, 1, 0)  # raises: an unconditional generator
    if classes and label in classes:
        return classes.index(label)
    named = f" ({', '.join(classes)})" if classes else ""
    if not label.lstrip("-").isdigit():
        raise ValueError(f"--class {label}: not a class of this generator; give a name{named} or an index "
                         f"0 to {num_classes(G) - 1}")
    index = int(label)
    class_labels(G, 1, index)  # raises for an index out of range
    return index


def _open(args, command: str) -> tuple[ConfigModule, Path, Fraction | int, int | None] | None:
    """(G, the folder it came from, fps, the --class label) for the command, or None after printing the
    error."""
    try:
        trained = load_trained(args.checkpoint, which="raw" if args.no_ema else "ema", device=_device(args.device))
        label = resolve_class(trained.generator, args.label, trained.classes)
        hold(trained.generator, torch.zeros(1, trained.generator.z_dim), args.fix)  # refuses a G without parts
    except (CheckpointError, ValueError, RuntimeError) as e:
        print(f"vidgan {command}: error: {e}", file=sys.stderr)
        return None
    fps = args.fps if args.fps is not None else recipe_fps(trained.recipe)
    return trained.generator, trained.folder, fps, label


def _run(args, command: str, write: Callable[[ConfigModule, Fraction | int, int | None], str]) -> int:
    """Load the generator, `write(G, fps, label)` the output, print what was written and where it came
    from; the exit status: 2 for a generator that cannot be loaded (or a --class it lacks), 1 for a
    failed write."""
    opened = _open(args, command)
    if opened is None:
        return 2
    G, folder, fps, label = opened
    try:
        written = write(G, fps, label)
    except OSError as e:
        print(f"vidgan {command}: error: {e}", file=sys.stderr)
        return 1
    which = "generator" if args.no_ema else "EMA generator"
    shape = f"{G.frames} frames of {G.size}×{G.size}" if is_video_model(G) else f"{G.size}×{G.size} images"
    print(f"{written} from the {which} of {folder} ({shape})")
    return 0


def run_sample(args) -> int:
    def write(G, fps, label) -> str:
        paths = write_samples(G, args.out, args.num, seed=args.seed, fps=fps, batch=args.batch, grid=args.grid,
                              upscale=args.upscale, progress=False if args.quiet else None, label=label,
                              fix=args.fix)
        video = is_video_model(G)
        kind = f"MP4 clips at {fps} fps" if video else "PNG images"
        grid = (" and grid.mp4, grid.png, strip.png" if video else " and grid.png") if args.grid else ""
        return f"wrote {len(paths)} {kind}{grid} to {args.out}"

    return _run(args, "sample", write)


def run_interpolate(args) -> int:
    def write(G, fps, label) -> str:
        path, frames = write_interpolation(G, args.out, seed=args.seed, points=args.points, steps=args.steps,
                                           fps=fps, batch=args.batch, upscale=args.upscale, label=label,
                                           fix=args.fix)
        return (f"wrote {path}: {frames} frames at {fps} fps, {(args.points - 1) * args.steps + 1} steps "
                f"through {args.points} noise vectors,")

    return _run(args, "interpolate", write)


def main_sample(argv: list[str] | None = None) -> int:
    """`vidgan sample ARGS` in this process; returns the exit status."""
    args = configure_sample(argparse.ArgumentParser(prog="vidgan sample")).parse_args(argv)
    return args.run(args)


def main_interpolate(argv: list[str] | None = None) -> int:
    """`vidgan interpolate ARGS` in this process; returns the exit status."""
    args = configure_interpolate(argparse.ArgumentParser(prog="vidgan interpolate")).parse_args(argv)
    return args.run(args)
