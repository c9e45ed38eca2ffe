"""What the quality meter counts: its scores of a prepared folder's held-out real clips as they are,
blurred, grainy, and of clips with no object at all (uniform noise, an untrained generator's).

    python benchmarks/bench_meter.py PREPARED_DIR [--clips 256]

Prints a Markdown table: one row per kind of clip, with the fraction recognisable, the fraction read
as no object, and the Inception-style score. The meter is trained (or read from its cache) as
`vidgan eval` does it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from data_tools.dataset import ClipDataset
from vidgan.metrics.artefacts import blur
from vidgan.metrics.meter import meter_for, split_by_video
from vidgan.models import VideoGenerator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="a labelled prepared folder")
    p.add_argument("--clips", type=int, default=256, help="held-out clips to score, at most")
    args = p.parse_args(argv)

    meter = meter_for(args.root)
    dataset = ClipDataset(args.root)
    _, held = split_by_video(dataset)
    held = held[torch.randperm(len(held), generator=torch.Generator().manual_seed(0))[: args.clips].numpy()]
    video = np.stack([dataset[int(i)]["video"] for i in held])  # [N, T, S, S, 3] uint8
    real = torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [N, 3, T, S, S]
    n, _, frames, size, _ = real.shape
    draw = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = VideoGenerator(z_dim=100, channels=32, size=size, frames=frames).eval()(torch.randn(n, 100))
    kinds = {"real, as they are": real}
    for sigma in (0.5, 0.8, 1.0, 1.5, 2.0):
        kinds[f"real, blurred σ {sigma} px"] = blur(real, torch.full((n,), sigma))
    for sigma in (0.05, 0.1):
        kinds[f"real, Gaussian noise σ {sigma}"] = (real + sigma * torch.randn(real.shape, generator=draw)).clamp(-1, 1)
    kinds["uniform noise"] = torch.rand(real.shape, generator=draw) * 2 - 1
    kinds["an untrained VideoGenerator (channels 32)"] = untrained

    print(f"{args.root}: probe accuracy {meter.accuracy:.3f}, {n} held-out clips\n")
    print("| clips | recognisable | no object | Inception-style score |")
    print("|---|---|---|---|")
    for name, clips in kinds.items():
        s = meter.score(clips)
        print(f"| {name} | {s['recognisable']:.2f} | {s['no_object']:.2f} | {s['inception_score']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
