"""Clips/s of `vidgan sample` (N MP4 files from a checkpoint) against writing the same uint8 frames with
PyAV directly, in the same run.

    python benchmarks/bench_export.py                          # 64 clips of 16 × 64², 5 rounds
    python benchmarks/bench_export.py --num 256 --device cuda  # generation on a GPU

The checkpoint is a freshly constructed, untrained `VideoGenerator` (z 100, `--channels` wide, 16 × 64²)
written with `save_model` into a checkpoint folder beside a recipe, so `vidgan sample` reads it as
it reads a trained one. The frames every chain encodes are the same: the clips this generator makes
from the latents `vidgan sample --seed 0` draws.

Chains:
- raw PyAV, vidgan's x264 settings: per clip, `av.open` an MP4, a libx264 stream with the same options
  as vidgan's (`crf` 18, `preset` medium, 1 thread, yuv420p, +faststart), `VideoFrame.from_ndarray`
  (rgb24) → `encode` (PyAV's implicit conversion to yuv420p) → mux. The baseline.
- raw PyAV, x264 defaults: the same loop without options (crf 23, threads auto), for reference.
- raw PyAV + bit-exact conversion: the baseline loop with the explicit RGB → yuv420p conversion that
  `write_mp4` does (BT.709, limited range, bilinear + accurate rounding + bit-exact, one thread), to
  show what that conversion costs.
- vidgan write only: `vidgan.export.write_mp4` on the same frames, clip by clip — the writing part of
  `vidgan sample` (explicit BT.709 conversion with bit-exact rounding, colour tags, atomic rename).
- vidgan generate only: latents → G → uint8 frames, nothing written.
- `vidgan sample`: the whole command in this process (`main_sample`): load the checkpoint, generate,
  write N files (one writer thread encoding while the generator makes the next batch).

Timing: one warm-up pass of every chain, then `--rounds` rounds in which the chains take turns; each
chain keeps its best round (load on a shared machine only ever adds time). Output folders are deleted
between rounds, outside the timed part.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from vidgan import export
from vidgan.models import VideoGenerator
from vidgan.recipe import Recipe, dump_recipe
from vidgan.checkpoint import load_trained, save_model
from vidgan.sample import generate, latents, main_sample


def make_checkpoint(root: Path, channels: int, size: int, frames: int, fps: int) -> Path:
    """A checkpoint folder holding an untrained generator (EMA and raw) and its recipe."""
    torch.manual_seed(0)
    G = VideoGenerator(100, channels, size, frames)
    folder = root / "run" / "checkpoints" / "checkpoint-000000000000"
    save_model(G, folder / "generator_ema")
    save_model(G, folder / "generator")
    recipe = Recipe()
    recipe.data.size, recipe.data.frames, recipe.model.g_channels, recipe.sample.fps = size, frames, channels, fps
    (folder / "recipe.yaml").write_text(dump_recipe(recipe))
    return folder


def raw_pyav(frames: np.ndarray, out: Path, fps: int, vidgan_options: bool, exact_convert: bool = False) -> None:
    """What a user writes without vidgan: one MP4 per clip, PyAV's implicit RGB → yuv420p (or, with
    `exact_convert`, the explicit BT.709 bit-exact conversion vidgan's write_mp4 does)."""
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    exact = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
    rate = Fraction(fps)
    for i, clip in enumerate(frames):  # [T, H, W, 3]
        options = {"movflags": "+faststart"} if vidgan_options else {}
        with av.open(str(out / f"raw-{i:05d}.mp4"), "w", format="mp4", container_options=options) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
            if vidgan_options:
                stream.options = {"crf": str(export.CRF), "preset": export.PRESET,
                                  "threads": str(export.ENCODER_THREADS)}
            for array in clip:
                frame = av.VideoFrame.from_ndarray(array, format="rgb24")
                if exact_convert:
                    frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                           dst_color_range=ColorRange.MPEG, interpolation=exact, threads=1)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())


def vidgan_write(frames: np.ndarray, out: Path, fps: int) -> None:
    for i, clip in enumerate(frames):
        export.write_mp4(out / f"sample-{i:05d}.mp4", clip, fps)


def vidgan_generate(checkpoint: Path, num: int, batch: int, device: str) -> np.ndarray:
    G = load_trained(checkpoint, device=device).generator
    parts = [export.to_uint8_frames(x) for x in generate(G, latents(num, G.z_dim, 0), batch)]
    return np.concatenate(parts)  # [N, T, H, W, 3]


def vidgan_sample(checkpoint: Path, out: Path, num: int, batch: int, device: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # its one-line summary
        status = main_sample([str(checkpoint), "--num", str(num), "--batch", str(batch), "--device", device,
                              "--quiet", "--out", str(out)])
    if status != 0:
        raise SystemExit(f"vidgan sample failed with status {status}")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=64, help="clips per round [64]")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64, help="generator width [64, the ucf64 model's]")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        checkpoint = make_checkpoint(root, args.channels, args.size, args.frames, args.fps)
        frames = vidgan_generate(checkpoint, args.num, args.batch, args.device)
        chains = {
            "raw PyAV, vidgan's x264 settings": lambda out: raw_pyav(frames, out, args.fps, True),
            "raw PyAV, x264 defaults": lambda out: raw_pyav(frames, out, args.fps, False),
            "raw PyAV, vidgan's settings + bit-exact BT.709 conversion": lambda out: raw_pyav(
                frames, out, args.fps, True, exact_convert=True),
            "vidgan write only (export.write_mp4)": lambda out: vidgan_write(frames, out, args.fps),
            "vidgan generate only (no files)": lambda out: vidgan_generate(checkpoint, args.num, args.batch,
                                                                           args.device),
            "`vidgan sample` (load + generate + write)": lambda out: vidgan_sample(checkpoint, out, args.num,
                                                                                   args.batch, args.device),
        }
        best = {name: float("inf") for name in chains}
        for round_ in range(args.rounds + 1):  # round 0 warms up and is not counted
            for name, run in chains.items():
                out = root / "out"
                out.mkdir()
                _sync(args.device)
                start = time.perf_counter()
                run(out)
                _sync(args.device)
                seconds = time.perf_counter() - start
                shutil.rmtree(out)
                if round_:
                    best[name] = min(best[name], seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    baseline = args.num / best["raw PyAV, vidgan's x264 settings"]
    cpu = platform.processor() or platform.machine()
    print(f"{args.num} clips of {args.frames} × {args.size}², generator channels {args.channels}, batch "
          f"{args.batch}, device {args.device}; best of {args.rounds} rounds; {cpu}, "
          f"{torch.get_num_threads()} torch threads; torch {torch.__version__}, PyAV {av.__version__}\n")
    print("| chain | clips/s | × raw PyAV (vidgan's settings) |")
    print("|---|---|---|")
    for name, seconds in best.items():
        rate = args.num / seconds
        print(f"| {name} | {rate:,.1f} | {rate / baseline:.2f} |")


if __name__ == "__main__":
    main()
