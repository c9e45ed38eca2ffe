"""Clips per second out of `ClipDataset` through a shuffled DataLoader, batch 64.

    python benchmarks/bench_loader.py ../shared/bench-corpus [--frames 16] [--size 64]

DIR is a folder of videos (prepared first into a temporary folder, stride 1 for many clips) or a
folder already written by `vidgan prepare`. Each worker setting reads at least --clips clips after one
warm-up pass over the dataset (the page cache then holds the shards, as during training).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def measure(ds, workers: int, batch: int, clips: int) -> float:
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    for _ in loader:  # warm up: workers started, pages cached
        pass
    seen, started = 0, time.perf_counter()
    while seen < clips:
        for item in loader:
            seen += item["video"].shape[0]
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clips", type=int, default=50_000, help="clips read per setting")
    args = parser.parse_args()

    from data_tools import ClipDataset, PrepareOptions, prepare

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir
        if not (root / "meta.json").exists():
            root = Path(tmp) / "prepared"
            prepare(args.dir, root, PrepareOptions(frames=args.frames, size=args.size, stride=1), progress=False)
        ds = ClipDataset(root)
        print(f"{len(ds)} clips of {list(ds.clip_shape)} uint8, batch {args.batch}, {os.cpu_count()} CPU cores\n")
        print("| DataLoader workers | clips/s |")
        print("|---|---|")
        for workers in (0, 1, 2):
            print(f"| {workers} | {measure(ds, workers, args.batch, args.clips):,.0f} |")


if __name__ == "__main__":
    main()
