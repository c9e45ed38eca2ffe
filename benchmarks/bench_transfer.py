"""`vidgan transfer` measured with the quality meter: do results keep A's content and take B's motion?

    python benchmarks/bench_transfer.py RUN --real PREPARED [--pairs 32] [--steps 300] [--restarts 4]
        [--seed 0] [--out FILE.json] [--strip FILE.png]

RUN is a run (or checkpoint) of a content/motion generator trained on PREPARED's corpus (e.g. by
bench_quality.py with `model.latent=content_motion`). Pairs (A, B) of real held-out clips of different
classes (the meter's held-out videos, drawn with --seed) go through `vidgan.transfer.transfer`, all in
one search. The meter's probe then reads the results:

- content: the fraction of results recognisable as A's class (the meter's `class_match` against A's
  labels), beside the fraction recognisable as B's class;
- motion: the mean distance of each result's object track from B's and from A's (pixels at 32²,
  frames where both have an object), and the fraction of pairs whose result is nearer B's;
- the projections' fit: G's clips of A and B against the clips, in /255 per pixel.

`--strip` draws the first four pairs as film strips, three rows each: A, B, the result.

A generator that keeps its parts apart scores content near its recognisable fraction, a result track
near B's and far from A's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import atomic_write_json
from data_tools.dataset import ClipDataset
from vidgan.checkpoint import load_trained
from vidgan.export import film_strip_png, to_uint8_frames
from vidgan.metrics.meter import meter_for, read_clips, split_by_video
from vidgan.transfer import transfer


def real_pairs(root: Path, pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A clips, B clips `[P, 3, T, S, S]` in [-1, 1], A labels, B labels `[P]`): held-out clips, each
    pair of two classes."""
    dataset = ClipDataset(root)
    _, held = split_by_video(dataset)
    rng = np.random.default_rng(seed)
    labels = dataset.labels[held]
    a = rng.choice(held, pairs, replace=False)
    b = np.array([rng.choice(held[labels != dataset.labels[i]]) for i in a])

    def clips(indices: np.ndarray) -> torch.Tensor:
        video = np.stack([dataset[int(i)]["video"] for i in indices])  # [P, T, S, S, 3]
        return torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1

    return clips(a), clips(b), torch.from_numpy(dataset.labels[a]), torch.from_numpy(dataset.labels[b])


def track_distance(x: dict, y: dict) -> torch.Tensor:
    """Mean distance `[P]` between the object tracks of two readings, over frames where both have one."""
    both = x["present"] & y["present"]  # [P, T]
    distance = (x["track"] - y["track"]).norm(dim=2)  # [P, T]
    return (distance * both).sum(1) / both.sum(1).clamp(min=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="run or checkpoint folder of a content/motion generator")
    p.add_argument("--real", type=Path, required=True, help="the prepared folder it was trained on")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--restarts", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    p.add_argument("--strip", type=Path, default=None, help="film strips of the first 4 pairs: A, B, result")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    trained = load_trained(args.run)
    meter = meter_for(args.real)
    a, b, label_a, label_b = real_pairs(args.real, args.pairs, args.seed)
    result = transfer(trained.generator, None, a, b, args.steps, args.restarts, lam=0.0, seed=args.seed,
                      progress=True)
    reading = {name: read_clips(meter.probe, clips) for name, clips in (("out", result.clip), ("a", a), ("b", b))}
    to_b, to_a = track_distance(reading["out"], reading["b"]), track_distance(reading["out"], reading["a"])
    figures = {
        "run": str(trained.folder), "real": str(args.real), "pairs": args.pairs, "steps": args.steps,
        "restarts": args.restarts, "seed": args.seed,
        "content_as_a": meter.score(result.clip, label_a)["class_match"],
        "content_as_b": meter.score(result.clip, label_b)["class_match"],
        "track_to_b": to_b.mean().item(), "track_to_a": to_a.mean().item(),
        "nearer_b": (to_b < to_a).double().mean().item(),
        "fit_a": result.error[: args.pairs].mean().item() * 127.5,
        "fit_b": result.error[args.pairs:].mean().item() * 127.5,
        "real_track_a_to_b": track_distance(reading["a"], reading["b"]).mean().item(),
    }
    print(f"content: recognisable as A's class {figures['content_as_a']:.2f} (as B's {figures['content_as_b']:.2f}); "
          f"motion: track {figures['track_to_b']:.1f} px from B's, {figures['track_to_a']:.1f} from A's "
          f"(A to B {figures['real_track_a_to_b']:.1f}), nearer B in {figures['nearer_b']:.2f}; "
          f"fits {figures['fit_a']:.1f} and {figures['fit_b']:.1f}/255")
    if args.out is not None:
        atomic_write_json(args.out, figures)
    if args.strip is not None:
        shown = min(4, args.pairs)
        rows = torch.stack([a[:shown], b[:shown], result.clip[:shown].cpu()], dim=1).flatten(0, 1)  # [3·k, C, T, H, W]
        film_strip_png(args.strip, to_uint8_frames(rows), upscale=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
