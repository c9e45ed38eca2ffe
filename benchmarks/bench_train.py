"""Clips/s of the training step of `vidgan/train.py` against a minimal plain PyTorch loop of the same
models and batch, in the same run.

    python benchmarks/bench_train.py                     # CPU: 32² × 16 frames, channels 32, batch 16
    python benchmarks/bench_train.py --device cuda --size 64 --channels 64 --batch 64 \\
        --modes fp32 bf16 bf16+cl3d bf16+cl3d+compile    # on a GPU

The plain loop is what a user would write without vidgan: uint8 clips already on the device, a D step
(real and fake passes, a backward each) and a G step, Adam, nothing else. `vidgan/train.py` runs as
users run it (`train()` on a prepared folder of synthetic clips) with everything on: data loader,
Accelerate, EMA, the NaN watch, logging. Its rate comes from its own metrics.csv, leaving out the
first interval (start-up) and the final samples and checkpoint. Rounds alternate between the two; the
best round of each is kept. FLOPs are counted analytically from the conv shapes (bench_models.py), so a
GPU's share of its bf16 peak (`--peak-tflops`, the datasheet's dense figure) can be given.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_models import count_flops  # noqa: E402

from vidgan import losses  # noqa: E402
from vidgan.models import VideoDiscriminator, VideoGenerator, channels_last, to_channels_last  # noqa: E402
from vidgan.recipe import load_recipe  # noqa: E402


def make_dataset(root: Path, frames: int, size: int, clips: int) -> Path:
    """A prepared folder of random clips in the `vidgan prepare` format, via prepare itself."""
    from data_tools import PrepareOptions, prepare
    from data_tools.synth import write_demo_corpus

    videos = root / "videos"
    per_class = max(1, clips // (4 * 4))
    write_demo_corpus(videos, classes=4, videos_per_class=per_class, seconds=(4 * frames + 2) / 25)
    prepare(videos, root / "clips", PrepareOptions(frames=frames, size=size, workers=1), progress=False)
    return root / "clips"


def plain_loop(args, device: torch.device, mode: str, steps: int) -> float:
    """Clips/s of a bare D + G step of the same models on one fixed uint8 batch."""
    torch.manual_seed(0)
    bf16, cl3d, compiled = "bf16" in mode, "cl3d" in mode, "compile" in mode
    G = VideoGenerator(100, args.channels, args.size, args.frames).to(device)
    D = VideoDiscriminator(args.channels, args.size, args.frames).to(device)
    if cl3d:
        G, D = to_channels_last(G), to_channels_last(D)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    g_fwd, d_fwd = (torch.compile(G), torch.compile(D)) if compiled else (G, D)
    batch = torch.randint(0, 256, (args.batch, args.frames, args.size, args.size, 3), dtype=torch.uint8,
                          device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            real = batch.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1)  # [B, 3, T, S, S]
            real = channels_last(real) if cl3d else real
            with torch.no_grad():
                fake = g_fwd(torch.randn(args.batch, 100, device=device))
            losses.d_loss_real(d_fwd(real)).backward()
            losses.d_loss_fake(d_fwd(fake)).backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            D.requires_grad_(False)
            losses.g_loss(d_fwd(g_fwd(torch.randn(args.batch, 100, device=device)))).backward()
            D.requires_grad_(True)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * args.batch / (time.perf_counter() - started)


def vidgan_train(args, data: Path, run: Path, mode: str, steps: int) -> float:
    """Clips/s of `vidgan/train.py`'s steps, from its metrics.csv (start-up and final writes excluded)."""
    import os

    from vidgan.train import train

    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if "bf16" in mode else "no"
    per_log = max(1, steps // 4)  # 4 log intervals after the warm-up one
    kimg = (steps + per_log) * args.batch / 1000
    recipe = load_recipe(None, [
        f"data.root={data}", f"data.frames={args.frames}", f"data.size={args.size}",
        f"model.g_channels={args.channels}", f"model.d_channels={args.channels}",
        f"model.channels_last={'cl3d' in mode}", f"train.compile={'compile' in mode}",
        f"train.batch_size={args.batch}", f"train.kimg={kimg}", f"train.checkpoint_kimg={kimg * 10}",
        f"sample.every_kimg={kimg * 10}", "sample.count=4", "log.tensorboard=false",
        f"log.every_kimg={per_log * args.batch / 1000}", f"run.dir={run}", "seed=0"])
    train(recipe, progress_bar=False)
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rates = [float(r["clips_per_s"]) for r in csv.DictReader(f)][1:]
    return statistics.median(rates)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["fp32"],
                        help="fp32, bf16, bf16+cl3d, bf16+cl3d+compile (+ joins options)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak, for the share of peak reached")
    args = parser.parse_args()
    device = torch.device(args.device)

    G = VideoGenerator(100, args.channels, args.size, args.frames)
    D = VideoDiscriminator(args.channels, args.size, args.frames)
    z = torch.zeros(args.batch, 100)
    clip = torch.zeros(args.batch, 3, args.frames, args.size, args.size)
    g = count_flops(G, z)
    d = count_flops(D, clip)
    # one step: G forward (no grad) + 2 D passes with weight gradients, then G forward/backward and a
    # D pass that backpropagates into its input but not its weights
    step_macs = g.forward_macs + 2 * d.train_macs + g.train_macs + 2 * d.forward_macs
    print(f"device {args.device}, {args.size}² × {args.frames} frames, channels {args.channels}, "
          f"batch {args.batch}; {2 * step_macs / args.batch / 1e9:.1f} GFLOP per clip per step\n")

    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp), args.frames, args.size, clips=4 * args.batch)
        best = {}
        for round_ in range(args.rounds):
            for mode in args.modes:
                plain = plain_loop(args, device, mode, args.steps)
                ours = vidgan_train(args, data, Path(tmp) / f"run{round_}-{mode}", mode, args.steps)
                old = best.get(mode, (0.0, 0.0))
                best[mode] = (max(old[0], plain), max(old[1], ours))
    base = best[args.modes[0]][0]
    print("| mode | plain loop clips/s | vidgan/train.py clips/s | train.py / plain | × plain " + args.modes[0]
          + " | TFLOP/s (train.py) |" + (" % of peak |" if args.peak_tflops else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.peak_tflops else ""))
    for mode, (plain, ours) in best.items():
        tflops = ours * 2 * step_macs / args.batch / 1e12
        row = f"| {mode} | {plain:,.1f} | {ours:,.1f} | {ours / plain:.3f} | {ours / base:.2f} | {tflops:.3f} |"
        if args.peak_tflops:
            row += f" {100 * tflops / args.peak_tflops:.0f}% |"
        print(row)


if __name__ == "__main__":
    main()
