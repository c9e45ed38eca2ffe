"""Semantic inpainting with a trained GAN (Yeh et al. 2017): `vidgan inpaint`.

    vidgan inpaint RUN_OR_CHECKPOINT --input FILE --mask MASK.png|frames:a-b --out FILE
                   [--steps 500] [--restarts 4] [--lam 0.003] [--seed 0] [--blend poisson|paste]

Given an image or a clip of which only some pixels are known, search the latent z whose G(z) best
explains the known part (`vidgan.projection`: a weighted L1 fit, the contextual loss, plus λ times
the discriminator's prior loss), then fill the holes from G(z). The weights W are the importance
weights of Yeh et al.: a known pixel weighs the fraction of unknown pixels in the 7×7 window around
it (an unknown pixel weighs 0), a box filter on each frame, so the pixels that border a hole count
most. A frame whose known pixels have no hole within the window (a
whole known frame beside missing ones, as `frames:a-b` gives) weighs each known pixel 1: otherwise
nothing would tie z to it.

Blending: known pixels are copied from the input, exactly. Holes get G(z) plus a correction u that is
harmonic in the hole (Δu = 0, solved by conjugate gradients) and equals y − G(z) on the known pixels
around it: Poisson blending (Pérez et al. 2003) with G(z)'s gradients as the guidance field, which
removes a colour or brightness offset between G(z) and its surroundings. For clips the Laplacian joins
neighbouring frames too, so whole missing frames take the offset of the frames around them.
`--blend paste` copies G(z) into the holes unchanged.

Inputs: a 2D (image) checkpoint takes a PNG or JPEG, a 3D (video) checkpoint any video PyAV decodes
(its first T frames). Both are shown upright (EXIF orientation, display rotation), cropped to the
centred square and area-resized to the model's side, as `vidgan prepare` does. The mask is a PNG,
white = known, black = hole, either of the model's size or of the input's (then cropped and resized
the same way; a model pixel is known only if every input pixel it covers is), one mask for all
frames of a clip; or `frames:a-b`, frames a..b (0-based, inclusive) missing. Output: a PNG (image)
or an MP4 at the recipe's `sample.fps` (clip), at the model's size.

Layouts: images `[N, C, H, W]`, clips `[N, C, T, H, W]`, float in [-1, 1]; masks the same shape or
broadcastable to it, 1 = known, 0 = hole; latents `[N, z_dim]`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data_tools.read import Geometry, ReadError, open_image, read_image, read_video, resize_mask
from vidgan.checkpoint import CheckpointError, load_trained
from vidgan.export import to_uint8_frames, write_mp4, write_png
from vidgan.projection import LAM, LR, RESTARTS, STEPS, add_search_arguments, check_search, project

WINDOW = 7  # side of the box filter of the importance weights, pixels (Yeh et al.: 7)
CG_TOL = 1e-5  # Poisson blending: stop when the residual is this fraction of the right-hand side
MASK_THRESHOLD = 128  # a mask PNG pixel is known when its grey value is at least this (0..255)
BLENDS = ("poisson", "paste")


class InpaintError(RuntimeError):
    """An input the command cannot use (unreadable, wrong kind, mask of the wrong size); the message
    says why."""


# --- the search --------------------------------------------------------------------------------

def importance_weights(mask: torch.Tensor, window: int = WINDOW) -> torch.Tensor:
    """Yeh et al.'s weights for a binary mask `[N, C, (T,) H, W]` (1 = known): each known pixel weighs
    the fraction of unknown pixels in the `window`×`window` box around it (a box filter per frame; the
    box is cut at the image border and averages what is left), unknown pixels 0. A frame whose known
    pixels have no unknown pixel within reach weighs each known pixel 1. Same shape as `mask`."""
    shape = mask.shape
    frames = mask.float().reshape(-1, 1, shape[-2], shape[-1])  # every frame of every channel: [F, 1, H, W]
    hole_fraction = F.avg_pool2d(1 - frames, window, stride=1, padding=window // 2,
                                 count_include_pad=False)  # [F, 1, H, W]
    weights = frames * hole_fraction
    lonely = weights.flatten(1).sum(1) == 0  # [F]: no hole near any known pixel (or no known pixel)
    weights = torch.where(lonely[:, None, None, None], frames, weights)
    return weights.reshape(shape)


def inpaint(G, D, known: torch.Tensor, mask: torch.Tensor, steps: int = STEPS, restarts: int = RESTARTS,
            lam: float = LAM, seed: int = 0, *, lr: float = LR, blend: str = "poisson",
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fill the holes of `known` with the generator's best explanation of the rest.

    known: `[N, C, H, W]` (image G) or `[N, C, T, H, W]` (video G), float in [-1, 1]; what is under a
      hole is ignored. mask: broadcastable to `known`, 1 (or True) = known, 0 = hole; thresholded at 0.5.
    Searches z with `vidgan.projection.project` (`restarts` starts of `steps` Adam steps, drawn from
    `seed`; a class-conditional G searches the class too) under the importance weights; D may be None
    when `lam` is 0. Returns `(filled, generated, z)`: `filled` like `known`, equal to it on known
    pixels and blended from G(z) in the holes (`blend`: "poisson" or "paste"); `generated` = G(z)
    `[N, C, (T,) H, W]`; z `[N, z_dim]`; all on `known`'s device. G and D are left as they were.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}; got {blend!r}")
    check_search(steps, restarts, lam, lr, D)
    if not isinstance(known, torch.Tensor) or not known.is_floating_point() or known.ndim not in (4, 5):
        raise ValueError("known must be a float tensor [N, C, H, W] or [N, C, T, H, W] in [-1, 1]; got "
                         f"{getattr(known, 'shape', type(known).__name__)}")
    mask = torch.as_tensor(mask, device=known.device)
    try:
        mask = (mask.float() >= 0.5).float().expand(known.shape).contiguous()  # [N, C, (T,) H, W]
    except RuntimeError:
        raise ValueError(f"mask of shape {list(mask.shape)} does not broadcast to known's shape "
                         f"{list(known.shape)}") from None
    device = next(G.parameters()).device
    y = known.detach().to(device, torch.float32)
    m = mask.to(device)
    found = project(G, D, y, importance_weights(m), steps, restarts, lam, seed, lr=lr, progress=progress,
                    desc="inpaint")
    generated = found.generated
    filled = poisson_blend(y, generated, m) if blend == "poisson" else m * y + (1 - m) * generated
    filled = filled.clamp(-1, 1)
    filled = torch.where(m.bool(), y, filled)  # known pixels exactly as given
    out = known.device
    return filled.to(out, known.dtype), generated.to(out), found.z.to(out)


def _neighbour_sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum of each element's axis neighbours along `dims` (2 per axis), zero outside the grid."""
    out = torch.zeros_like(x)
    for d in dims:
        size = x.shape[d]
        if size < 2:
            continue
        out.narrow(d, 1, size - 1).add_(x.narrow(d, 0, size - 1))
        out.narrow(d, 0, size - 1).add_(x.narrow(d, 1, size - 1))
    return out


def poisson_blend(known: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor,
                  max_iter: int | None = None) -> torch.Tensor:
    """Known pixels from `known`; holes from `generated` + u, u harmonic in the holes and equal to
    `known − generated` on the known pixels: Poisson blending with G's gradients as guidance.

    All `[N, C, (T,) H, W]`, mask 1 = known. The discrete Laplace equation over the axis neighbours
    (H, W, and T for clips; no flux across the border) is solved on the hole pixels by conjugate
    gradients, each channel of each sample its own system. A hole region that touches no known pixel
    gets u = 0 (plain G(z)).
    """
    shape = known.shape
    spatial = shape[2:]
    flat = lambda t: t.reshape(-1, *spatial).float()  # noqa: E731  [N·C, (T,) H, W]
    m, y, g = flat(mask.expand(shape)), flat(known), flat(generated)
    hole = 1 - m
    dims = tuple(range(1, m.ndim))
    diff = m * (y - g)  # [N·C, ...]: the offset to continue into the holes
    degree = _neighbour_sum(torch.ones_like(m), dims)  # neighbours inside the grid

    def apply(u: torch.Tensor) -> torch.Tensor:  # the Laplacian restricted to hole pixels (SPD there)
        return hole * (degree * u - _neighbour_sum(hole * u, dims))

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).flatten(1).sum(1).view(-1, *[1] * len(spatial))  # [N·C, 1, ...]

    b = hole * _neighbour_sum(diff, dims)  # known neighbours moved to the right-hand side
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = dot(r, r)
    stop = (CG_TOL ** 2) * rr.clamp_min(1e-20)
    max_iter = max_iter if max_iter is not None else 4 * sum(spatial) + 100  # ~side iterations suffice
    for _ in range(max_iter):
        if bool((rr <= stop).all()):
            break
        Ap = apply(p)
        pAp = dot(p, Ap)
        alpha = torch.where(pAp > 0, rr / pAp.clamp_min(1e-30), torch.zeros_like(pAp))
        u = u + alpha * p
        r = r - alpha * Ap
        rr_new = dot(r, r)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    filled = m * y + hole * (g + u)
    return filled.reshape(shape).to(known.dtype)


# --- inputs ------------------------------------------------------------------------------------

def load_image(path: str | Path, size: int) -> tuple[np.ndarray, Geometry]:
    """An image file → uint8 RGB `[S, S, 3]` (upright, centred square, area-resized) and its geometry
    (data_tools.read_image), its problems in the command's words."""
    try:
        return read_image(path, size)
    except ReadError as e:
        raise _input_error(e, Path(path), None) from None


def load_clip(path: str | Path, size: int, frames: int) -> tuple[np.ndarray, Geometry]:
    """A video file → its first `frames` frames as uint8 RGB `[T, S, S, 3]`, decoded exactly as `vidgan
    prepare` decodes (data_tools.read_video), and its geometry."""
    try:
        return read_video(path, size, frames)
    except ReadError as e:
        raise _input_error(e, Path(path), frames) from None


def _input_error(e: ReadError, path: Path, frames: int | None) -> InpaintError:
    """Why `--input` cannot be used, saying which kind of input the checkpoint takes."""
    if e.found == "missing":
        return InpaintError(f"--input {path}: no such file")
    if e.found == "video":
        return InpaintError(f"--input {path} is a video, but the checkpoint holds an image (2D) model: "
                            "give a PNG or JPEG image")
    if e.found == "image":
        return InpaintError(f"--input {path} is an image, but the checkpoint holds a video (3D) model: "
                            "give a video")
    if e.found == "short":
        return InpaintError(f"--input {path} has {e.frames} frames, but the model makes clips of {frames}")
    return InpaintError(e.reason)


def parse_frames_spec(text: str) -> tuple[int, int] | None:
    """`frames:a-b` (or `frames:a`) → (a, b), 0-based inclusive; None when `text` is not of that form."""
    match = re.fullmatch(r"frames:(\d+)(?:-(\d+))?", text.strip())
    if match is None:
        return None
    a = int(match.group(1))
    b = int(match.group(2)) if match.group(2) is not None else a
    return a, b


def load_mask(spec: str | Path, size: int, frames: int | None, geometry: Geometry) -> np.ndarray:
    """The known pixels as a float32 array of 0/1: `[S, S]` from a mask PNG (white = known), or `[T]`
    from `frames:a-b` (those frames missing; clips only). A mask PNG is of the model's size, or of the
    input's (then transformed like the input; a model pixel is known only if all it covers is)."""
    text = str(spec)
    span = parse_frames_spec(text) if text.startswith("frames:") else None
    if text.startswith("frames:"):
        if span is None:
            raise InpaintError(f"--mask {text}: expected frames:a-b (0-based, inclusive), e.g. frames:3-5")
        if frames is None:
            raise InpaintError(f"--mask {text}: missing frames need a video (3D) checkpoint; this one makes "
                               "images: give a mask PNG")
        a, b = span
        if not a <= b < frames:
            raise InpaintError(f"--mask {text}: need 0 <= a <= b < {frames} (the model's clip length)")
        if b - a + 1 == frames:
            raise InpaintError(f"--mask {text}: every frame would be missing; at least one must be known")
        known = np.ones(frames, np.float32)
        known[a: b + 1] = 0
        return known
    path = Path(text)
    if not path.is_file():
        raise InpaintError(f"--mask {path}: no such file")
    try:
        image = open_image(path)
    except ReadError as e:
        raise InpaintError(e.reason) from None
    grey = np.asarray(image.convert("L"))  # [h, w] uint8
    known = (grey >= MASK_THRESHOLD).astype(np.float32)
    h, w = known.shape
    if (w, h) == (size, size):
        pass
    elif (w, h) == (geometry.width, geometry.height) and geometry.rotation == 0:
        known = (resize_mask(known, geometry, size) > 1 - 1e-4).astype(np.float32)
    else:
        input_size = "" if geometry.rotation or (geometry.width, geometry.height) == (size, size) else \
            f" or the input's {geometry.width}×{geometry.height}"
        raise InpaintError(f"--mask {path} is {w}×{h}, but it must match the model's {size}×{size}{input_size}")
    if not known.any():
        raise InpaintError(f"--mask {path}: no pixel is known (white = known, black = hole)")
    return known


# --- the command -------------------------------------------------------------------------------

HELP = "fill holes or missing frames with a trained GAN (Yeh et al. 2017)"


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan inpaint` on `p`; `args.run(args)` runs it."""
    p.description = ("Search the latent whose generated image or clip best explains the known pixels "
                     "(contextual loss + the discriminator's prior), then blend it into the holes and "
                     "write a PNG or MP4.")
    p.add_argument("checkpoint", type=Path, metavar="RUN_OR_CHECKPOINT",
                   help="run folder (its newest checkpoint) or checkpoint folder")
    p.add_argument("--input", type=Path, required=True, metavar="FILE",
                   help="PNG/JPEG image (2D checkpoint) or video (3D checkpoint; its first T frames)")
    p.add_argument("--mask", required=True, metavar="FILE|frames:a-b",
                   help="PNG, white = known, black = hole (the model's size or the input's; one for all "
                        "frames), or frames:a-b = frames a..b (0-based, inclusive) missing")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="output .png (image) or .mp4 (clip)")
    p.add_argument("--blend", choices=BLENDS, default="poisson",
                   help="poisson: G(z) with its offset to the surroundings removed; paste: G(z) as is [poisson]")
    add_search_arguments(p)
    p.set_defaults(run=run_inpaint)
    return p


def run_inpaint(args: argparse.Namespace) -> int:
    """The command: 0 when the file was written, 1 for an input or checkpoint it cannot use."""
    try:
        inpaint_file(args.checkpoint, args.input, args.mask, args.out, steps=args.steps, restarts=args.restarts,
                     lam=args.lam, seed=args.seed, blend=args.blend, device=args.device,
                     progress=not args.quiet)
    except InpaintError as e:
        print(f"vidgan inpaint: error: {e}", file=sys.stderr)
        return 1
    return 0


def inpaint_file(checkpoint: str | Path, input_path: str | Path, mask: str | Path, out: str | Path, *,
                 steps: int = STEPS, restarts: int = RESTARTS, lam: float = LAM, seed: int = 0,
                 blend: str = "poisson", device: str | None = None, progress: bool = False) -> Path:
    """`vidgan inpaint` as a function: read, search, blend, write `out`; returns `out`."""
    out = Path(out)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        trained = load_trained(checkpoint, with_discriminator=True, device=device)
    except CheckpointError as e:
        raise InpaintError(str(e)) from None
    G, video = trained.generator, trained.is_video
    if lam > 0 and getattr(trained.discriminator, "pack", 1) > 1:
        raise InpaintError(f"{trained.folder}: its discriminator judges groups of {trained.discriminator.pack} "
                           "clips (model.d_pack), not one: run with --lam 0")
    want = ".mp4" if video else ".png"
    if out.suffix.lower() != want:
        raise InpaintError(f"--out {out}: {'a video (3D)' if video else 'an image (2D)'} checkpoint writes {want}")
    if not out.parent.is_dir():
        raise InpaintError(f"--out {out}: no folder {out.parent}")
    size, frames = G.size, (G.frames if video else None)
    pixels, geometry = (load_clip(input_path, size, frames) if video else load_image(input_path, size))
    known_np = load_mask(mask, size, frames, geometry)

    x = torch.from_numpy(pixels).to(device).float().div_(127.5).sub_(1.0)  # [T, S, S, 3] or [S, S, 3]
    known_mask = torch.from_numpy(known_np).to(device)
    if video:
        x = x.permute(3, 0, 1, 2)[None]  # [1, 3, T, S, S]
        m = known_mask.view(1, 1, -1, 1, 1) if known_mask.ndim == 1 else known_mask.view(1, 1, 1, size, size)
    else:
        x = x.permute(2, 0, 1)[None]  # [1, 3, S, S]
        m = known_mask.view(1, 1, size, size)
    filled, generated, _ = inpaint(G, trained.discriminator, x, m, steps=steps, restarts=restarts, lam=lam,
                                   seed=seed, blend=blend, progress=progress)
    frames_out = to_uint8_frames(filled)[0]  # [T, S, S, 3]
    if video:
        write_mp4(out, frames_out, trained.recipe.sample.fps)
    else:
        write_png(out, frames_out[0])
    m_full = m.expand_as(x)
    fit = ((generated - x).abs() * m_full).sum() / m_full.sum() * 127.5
    print(f"wrote {out} ({trained.folder.name}; G(z) is off the known pixels by {fit.item():.1f}/255 on average)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="vidgan inpaint")).parse_args(argv)
    return run_inpaint(args)


if __name__ == "__main__":
    sys.exit(main())
