"""Forward + backward time of the video G and D, with the analytic FLOP count of each, so the fraction
of the machine's peak is visible.

    python benchmarks/bench_models.py --device cpu               # fp32, 64² × 16 and × 32, batch 8
    python benchmarks/bench_models.py --device cuda              # fp32, bf16, channels_last_3d, compile
    python benchmarks/bench_models.py --modes fp32 bf16+cl3d     # any precision × memory order × compile

One step is what a training step asks of each network: G maps z to a clip and backpropagates a
gradient from the clip into its weights; D maps a clip (no gradient wanted for it) to logits and
backpropagates into its weights. FLOPs are counted from the conv layer shapes (forward hooks on a copy
of the model on the meta device, so counting costs nothing): a conv's forward is one multiply-add per
(output element × kernel tap × input channel), a transposed conv's one per (input element × kernel tap
× output channel); its backward is the same again for the weight gradient and again for the input
gradient unless the input needs none (z, data). 1 MAC = 2 FLOP. BatchNorm and activations are not
counted (memory-bound, under 1% of the FLOPs). "% of GEMM" compares with a large matrix multiply in the
same precision on the same device, measured just before each row: the practical ceiling of the machine
at that moment (shared machines drift, so a figure from another run would not do).

Timing: every row is warmed up first (compilation happens there), then timed in several rounds over
all rows; each row reports its best step and the best GEMM measured next to it. Load on a shared
machine only ever adds time, and a burst of it spoils one round of a row rather than the row.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from vidgan.models import VideoDiscriminator, VideoGenerator, channels_last, count_parameters, to_channels_last

_CONVS = (nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class Flops:
    forward_macs: int  # multiply-adds of one forward pass, whole batch
    train_macs: int  # forward + weight gradient + input gradient (where the input needs one)

    @property
    def train_flops(self) -> int:
        return 2 * self.train_macs


def count_flops(model: nn.Module, example: torch.Tensor) -> Flops:
    """Analytic conv MACs of `model(example)`, from the layer shapes seen by forward hooks.

    Runs on a meta-device copy: shapes only, no arithmetic, no memory.
    """
    meta = copy.deepcopy(model).to("meta")
    x = example.detach().to("meta")  # the input needs no gradient, like z or a data clip
    fwd, train = 0, 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal fwd, train
        (inp,) = inputs
        taps = module.weight[0].numel()  # (in_channels / groups or out_channels / groups) × kernel volume
        if isinstance(module, _TRANSPOSED):
            macs = inp.numel() * taps  # every input element scatters into out_channels × kernel
        else:
            macs = output.numel() * taps  # every output element gathers in_channels × kernel
        fwd += macs
        train += macs * (3 if inp.requires_grad else 2)  # forward, weight grad, input grad if needed

    handles = [m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, _CONVS + _TRANSPOSED)]
    try:
        meta(x)
    finally:
        for h in handles:
            h.remove()
    return Flops(fwd, train)


def measure_gemm_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int = 10) -> float:
    """Achieved TFLOP/s of an n × n × n matrix multiply: the practical ceiling for this precision."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(iters + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i:  # the first is warm-up
            times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Mode:
    """How the networks run: precision, memory order, compilation."""

    bf16: bool  # bf16 autocast (weights stay fp32, as in mixed-precision training)
    cl3d: bool  # channels_last_3d weights and inputs
    compile: bool  # torch.compile

    @classmethod
    def parse(cls, text: str) -> "Mode":
        parts = text.split("+")
        unknown = set(parts) - {"fp32", "bf16", "cl3d", "compile"}
        if unknown or parts[0] not in ("fp32", "bf16"):
            raise argparse.ArgumentTypeError(f"mode {text!r}: fp32 or bf16, then optionally +cl3d, +compile")
        return cls(parts[0] == "bf16", "cl3d" in parts, "compile" in parts)

    def __str__(self) -> str:
        return "+".join(["bf16" if self.bf16 else "fp32"] + ["cl3d"] * self.cl3d + ["compile"] * self.compile)


class Row:
    """One network in one mode, ready to time: moved to the device, converted, compiled and warmed up."""

    def __init__(self, name, net, make_input, backward, mode: Mode, device: torch.device, warmup: int, frames: int):
        self.name, self.net, self.mode, self.device, self.frames = name, net, mode, device, frames
        self.make_input, self.backward = make_input, backward
        self.flops = count_flops(net, make_input().cpu())
        self.model = copy.deepcopy(net).to(device).train()
        if mode.cl3d:
            to_channels_last(self.model)
        self.run = torch.compile(self.model) if mode.compile else self.model
        self.seconds = self.gemm = 0.0  # best step time; best reference GEMM TFLOP/s next to it
        self.time_steps(warmup)  # compilation and allocator warm-up happen here, untimed

    def time_steps(self, iters: int) -> float:
        """Least seconds of one forward + backward over `iters` steps."""
        best = float("inf")
        for _ in range(iters):
            x = self.make_input()
            if self.mode.cl3d:
                x = channels_last(x)
            _sync(self.device)
            start = time.perf_counter()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.mode.bf16):
                out = self.run(x)
            self.backward(out)
            self.model.zero_grad(set_to_none=True)
            _sync(self.device)
            best = min(best, time.perf_counter() - start)
        return best

    def measure(self, iters: int, gemm_n: int) -> None:
        """One round: the reference GEMM, then the steps; keep the best of each over all rounds."""
        gemm = measure_gemm_tflops(self.device, torch.bfloat16 if self.mode.bf16 else torch.float32, gemm_n)
        self.gemm = max(self.gemm, gemm)
        seconds = self.time_steps(iters)
        self.seconds = seconds if not self.seconds else min(self.seconds, seconds)


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    load = f", load average {os.getloadavg()[0]:.1f} at the end" if hasattr(os, "getloadavg") else ""
    return f"{torch.get_num_threads()}-thread CPU ({platform.processor() or platform.machine()}{load})"


def networks(args: argparse.Namespace, frames: int, device: torch.device):
    """(name, model, make_input, backward) for the G and the D of one clip length."""
    G = VideoGenerator(args.z_dim, args.channels, args.size, frames)
    D = VideoDiscriminator(args.channels, args.size, frames)
    z_shape = (args.batch, args.z_dim)  # [N, z_dim]
    clip_shape = (args.batch, 3, frames, args.size, args.size)  # [N, C, T, H, W]
    return [
        # G: z → clip, then a clip-shaped gradient back into G's weights
        ("G", G, lambda: torch.randn(z_shape, device=device), lambda out: out.backward(torch.ones_like(out))),
        # D: clip (no gradient for the input) → logits, backward into D's weights
        ("D", D, lambda: torch.rand(clip_shape, device=device) * 2 - 1, lambda out: out.float().sum().backward()),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32], help="clip lengths to time")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--channels", type=int, default=64, help="base width of G and D")
    parser.add_argument("--z-dim", type=int, default=100, help="latent length")
    parser.add_argument("--batch", type=int, default=8, help="clips per step")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over all rows; the best step is reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per row (compilation happens here)")
    parser.add_argument(
        "--modes",
        type=Mode.parse,
        nargs="+",
        default=None,
        help="fp32 | bf16, each optionally +cl3d and/or +compile; "
        "default: fp32 on CPU, fp32 bf16 bf16+cl3d bf16+compile bf16+cl3d+compile on CUDA",
    )
    parser.add_argument(
        "--gemm-size", type=int, default=None, help="side of the reference matmul (default 2048 CPU, 8192 GPU)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="datasheet peak, adds a '%% of peak' column")
    parser.add_argument("--output", default=None, help="also write the markdown section to this file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    modes = args.modes or (
        [Mode.parse(m) for m in ("fp32", "bf16", "bf16+cl3d", "bf16+compile", "bf16+cl3d+compile")]
        if device.type == "cuda"
        else [Mode.parse("fp32")]
    )
    gemm_n = args.gemm_size or (8192 if device.type == "cuda" else 2048)
    torch.manual_seed(0)

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest conv algorithms
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means IEEE fp32, for convs and the GEMM alike
        torch.backends.cudnn.allow_tf32 = False
    header = (
        "| net | clip | mode | params | fwd GMAC / clip | step GFLOP | ms / step | clips / s | TFLOP/s "
        "| GEMM TFLOP/s | % of GEMM |"
    )
    rule = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if args.peak_tflops:
        header += " % of peak |"
        rule += "---:|"
    rows = [
        Row(name, net, make_input, backward, mode, device, args.warmup, frames)
        for frames in args.frames
        for name, net, make_input, backward in networks(args, frames, device)
        for mode in modes
    ]
    # rounds over all rows, best of each kept: a burst of load on a shared machine spoils one round of a
    # row, not the row
    for r in range(args.rounds):
        for row in rows:
            row.measure(args.iters, gemm_n)
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    table = [header, rule]
    for row in rows:
        tflops = row.flops.train_flops / row.seconds / 1e12
        line = (
            f"| {row.name} | {args.size}² × {row.frames} | {row.mode} | {count_parameters(row.net) / 1e6:.2f} M "
            f"| {row.flops.forward_macs / args.batch / 1e9:.2f} | {row.flops.train_flops / 1e9:.1f} "
            f"| {row.seconds * 1e3:.0f} | {args.batch / row.seconds:.1f} | {tflops:.3f} "
            f"| {row.gemm:.3f} | {100 * tflops / row.gemm:.0f}% |"
        )
        if args.peak_tflops:
            line += f" {100 * tflops / args.peak_tflops:.1f}% |"
        table.append(line)
    print("\n".join(table))

    notes = [
        "",
        f"Machine: {machine_name(device)}; torch {torch.__version__}; batch {args.batch}, channels {args.channels}, "
        f"z {args.z_dim}; best step of {args.rounds} rounds × {args.iters} steps, after {args.warmup} warm-up.",
        f"GEMM: the best {gemm_n}² matmul in the row's precision, measured just before the row in each round.",
    ]
    print("\n".join(notes))
    if args.output:
        command = "python benchmarks/bench_models.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.output, "w") as f:
            f.write(f"```\n{command}\n```\n\n" + "\n".join(table + notes) + "\n")


if __name__ == "__main__":
    main()
