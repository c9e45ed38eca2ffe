"""Video style transfer with a content/motion generator: `vidgan transfer`.

    vidgan transfer RUN_OR_CHECKPOINT --content A.mp4|A.png --motion B.mp4 --out C.mp4
                    [--side-by-side] [--resize] [--steps 500] [--restarts 4] [--lam 0.003] [--seed 0]

The generator's latent has a content part, held for the whole clip, and a motion part
(`model.latent: content_motion`, or the frames generator). Each input is projected onto the generator
(`vidgan.projection`: the latent whose clip best matches it, pixel for pixel), then the clip of A's
content part and B's motion part is rendered: A's object moving as B's does. An image given as
`--content` stands for a still clip of itself. A class-conditional generator's class is searched with
the latent, and the result takes A's.

Inputs must be of the model's frame size, as `vidgan prepare --size S` writes them; `--resize` crops
any other video or image to its centred square and scales it (exactly as `prepare` does). A longer
clip gives its first T frames. Every check comes before any work: a bad input writes nothing.

Layouts: clips `[N, C, T, H, W]` float in [-1, 1]; frames `[T, H, W, 3]` uint8; latents `[N, z_dim]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from data_tools.read import ReadError, read_image, read_video
from vidgan.checkpoint import CheckpointError, load_trained
from vidgan.export import to_uint8_frames, write_mp4
from vidgan.projection import LAM, LR, RESTARTS, STEPS, add_search_arguments, check_search, project
from vidgan.sample import latent_parts, recipe_fps


class TransferError(RuntimeError):
    """An input or checkpoint the command cannot use; the message says why."""


class Transfer(NamedTuple):
    """N transfers: pair i renders content clip i (A) with the motion of motion clip i (B)."""

    clip: torch.Tensor  # [N, C, T, H, W]: A's content with B's motion
    fits: torch.Tensor  # [2N, C, T, H, W]: G's clips of the A's latents, then of the B's
    found: torch.Tensor  # [2N, z_dim]: the A's latents, then the B's
    z: torch.Tensor  # [N, z_dim]: the results' latents, A's content part ‖ B's motion part
    labels: torch.Tensor | None  # [N]: the results' classes, the A's (a class-conditional G), else None
    error: torch.Tensor  # [2N]: mean absolute difference of each fit from its input, in [0, 2]


def transfer(G, D, content: torch.Tensor, motion: torch.Tensor, steps: int = STEPS, restarts: int = RESTARTS,
             lam: float = LAM, seed: int = 0, progress: bool = False) -> Transfer:
    """Render the content of each clip of `content` with the motion of the same clip of `motion` (both
    `[N, C, T, H, W]` in [-1, 1], G's shape): project all 2N clips onto G at once, then join each A's
    content part of z to its B's motion part. G must have a content/motion latent
    (`vidgan.sample.latent_parts`)."""
    if content.shape != motion.shape:
        raise ValueError(f"content {list(content.shape)} and motion {list(motion.shape)} must have one shape")
    parts = latent_parts(G)
    if parts is None:
        raise ValueError("transfer needs a generator whose latent has a content and a motion part")
    n = content.shape[0]
    targets = torch.cat([content, motion])  # [2N, C, T, H, W]
    found = project(G, D, targets, torch.ones_like(targets), steps, restarts, lam, seed, progress=progress,
                    desc="transfer")
    split = parts[0]
    z = torch.cat([found.z[:n, :split], found.z[n:, split:]], dim=1)  # [N, z_dim]
    labels = None if found.labels is None else found.labels[:n]  # A's class: a class is content
    was_training = G.training
    with torch.no_grad():
        clip = (G.eval()(z) if labels is None else G.eval()(z, labels)).float()
    G.train(was_training)
    error = (found.generated - targets.to(found.generated.device)).abs().flatten(1).mean(1)
    return Transfer(clip, found.generated, found.z, z, labels, error)


# --- inputs ------------------------------------------------------------------------------------

def load_input(path: Path, flag: str, size: int, frames: int, resize: bool, image_ok: bool) -> np.ndarray:
    """An input file as uint8 RGB frames `[T, S, S, 3]` (an image: itself T times), or a TransferError
    in the command's words."""
    if not path.is_file():
        raise TransferError(f"{flag} {path}: no such file")
    try:
        pixels, geometry = read_video(path, size, frames)
    except ReadError as e:
        if e.found == "image" and image_ok:
            try:
                image, geometry = read_image(path, size)
            except ReadError as e2:
                raise TransferError(f"{flag} {path}: {e2.reason}") from None
            pixels = np.broadcast_to(image, (frames, *image.shape))  # a still clip of it
        elif e.found == "image":
            raise TransferError(f"{flag} {path} is an image; motion comes from a video") from None
        elif e.found == "short":
            raise TransferError(f"{flag} {path} has {e.frames} frames, but the model makes clips of {frames}: "
                                f"give a clip of at least {frames} frames (its first {frames} are used)") from None
        else:
            raise TransferError(f"{flag} {path}: {e.reason}") from None
    if not resize and (geometry.width, geometry.height, geometry.rotation, geometry.sar) != (size, size, 0, 1):
        shown = f"{geometry.width}×{geometry.height}" + (f", rotated {geometry.rotation}°" if geometry.rotation else "")
        raise TransferError(f"{flag} {path} is {shown}, but the model makes {size}×{size} frames: give "
                            f"--resize to crop its centred square and scale it to {size}×{size}, as "
                            f"`vidgan prepare --size {size}` does")
    return np.ascontiguousarray(pixels)


def as_clip(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames `[T, H, W, 3]` → one clip `[1, 3, T, H, W]` in [-1, 1]."""
    return torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]


# --- command line --------------------------------------------------------------------------------

def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan transfer` on `p`; `args.run(args)` runs it."""
    p.description = ("Render the content of one clip (or image) with the motion of another: both are "
                     "projected onto a generator whose latent has a content and a motion part, and the "
                     "clip of A's content and B's motion is written as an MP4.")
    p.add_argument("checkpoint", type=Path, metavar="RUN_OR_CHECKPOINT",
                   help="run folder (its newest checkpoint) or checkpoint folder")
    p.add_argument("--content", type=Path, required=True, metavar="A",
                   help="the video (or image) whose content, the object and its look, is kept")
    p.add_argument("--motion", type=Path, required=True, metavar="B", help="the video whose motion is kept")
    p.add_argument("--out", type=Path, required=True, metavar="C.mp4", help="the MP4 to write")
    p.add_argument("--side-by-side", action="store_true", help="write A | B | result side by side in one MP4")
    p.add_argument("--resize", action="store_true",
                   help="crop inputs of another size to their centred square and scale them to the model's")
    add_search_arguments(p)
    p.set_defaults(run=run_transfer)
    return p


def transfer_files(checkpoint: str | Path, content: str | Path, motion: str | Path, out: str | Path, *,
                   side_by_side: bool = False, resize: bool = False, steps: int = STEPS,
                   restarts: int = RESTARTS, lam: float = LAM, seed: int = 0, device: str | None = None,
                   progress: bool = False) -> Transfer:
    """`vidgan transfer` as a function: check everything, search, write `out`."""
    out, content, motion = Path(out), Path(content), Path(motion)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        trained = load_trained(checkpoint, with_discriminator=lam > 0, device=device)
    except CheckpointError as e:
        raise TransferError(str(e)) from None
    G = trained.generator
    if not trained.is_video or latent_parts(G) is None:
        raise TransferError(f"{trained.folder}: its generator has one latent for the whole clip; transfer needs "
                            "one with a content and a motion part (train with model.latent: content_motion)")
    try:
        check_search(steps, restarts, lam, LR, trained.discriminator)
    except ValueError as e:
        raise TransferError(str(e)) from None
    if out.suffix.lower() != ".mp4":
        raise TransferError(f"--out {out}: transfer writes an MP4 (.mp4)")
    if not out.parent.is_dir():
        raise TransferError(f"--out {out}: no folder {out.parent}")
    a = load_input(content, "--content", G.size, G.frames, resize, image_ok=True)  # [T, S, S, 3]
    b = load_input(motion, "--motion", G.size, G.frames, resize, image_ok=False)

    result = transfer(G, trained.discriminator, as_clip(a).to(device), as_clip(b).to(device), steps, restarts,
                      lam, seed, progress)
    frames = to_uint8_frames(result.clip)[0]  # [T, S, S, 3]
    if side_by_side:
        frames = np.concatenate([a, b, frames], axis=2)  # [T, S, 3·S, 3]: A | B | result
    write_mp4(out, frames, recipe_fps(trained.recipe))
    fit_a, fit_b = (result.error * 127.5).tolist()
    print(f"wrote {out}: the content of {content.name} with the motion of {motion.name} "
          f"({trained.folder.name}; G's fits are off by {fit_a:.1f} and {fit_b:.1f}/255 on average)")
    return result


def run_transfer(args: argparse.Namespace) -> int:
    """The command: 0 when the file was written, 1 for an input or checkpoint it cannot use."""
    try:
        transfer_files(args.checkpoint, args.content, args.motion, args.out, side_by_side=args.side_by_side,
                       resize=args.resize, steps=args.steps, restarts=args.restarts, lam=args.lam, seed=args.seed,
                       device=args.device, progress=not args.quiet)
    except TransferError as e:
        print(f"vidgan transfer: error: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="vidgan transfer")).parse_args(argv)
    return run_transfer(args)


if __name__ == "__main__":
    sys.exit(main())
