"""`ClipDataset` through a shuffled DataLoader, batch 64, as a ratio to the gather ceiling.

    python benchmarks/bench_loader.py ../shared/bench-corpus [--frames 16] [--size 64] [--rounds 3]

DIR is a folder of videos (prepared first into a temporary folder, stride 1 for many clips) or a
folder already written by `vidgan prepare`.

The baseline is the gather ceiling: the same shuffled batches gathered in this process straight from
the shards' memory maps into one preallocated uint8 `[B, T, S, S, 3]` array, the least any loader of
these clips must do. Each DataLoader setting (0, 1 and 2 workers, with the collate `vidgan train`
gives its loader) reads at least --clips clips per round after one warm-up pass (workers started,
the shards in the page cache, as during training). A round measures the ceiling, then every
setting; each setting's ratio is to the ceiling of its own round, so that a slow spell of a shared
machine hits both sides. The table gives the median over the rounds and the range of the ratios.
Beside them, the same gather into two batches in turn: the least a loader does when its consumer
still holds the previous batch while the next is gathered, as a `for batch in loader` loop does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

WORKER_SETTINGS = (0, 1, 2)


def gather_ceiling(ds, batches: list[list[int]], clips: int, buffers: int = 1) -> float:
    """Clips/s of gathering `batches` (repeated until `clips` clips) from the shards' memory maps
    into uint8 `[B, T, S, S, 3]` arrays allocated once: one, or `buffers` taken in turn."""
    maps = [np.load(path, mmap_mode="r") for path in ds.shard_files]  # each [F, S, S, 3]
    outs = [np.empty((len(batches[0]), *ds.clip_shape), np.uint8) for _ in range(buffers)]  # [B, T, S, S, 3]
    frames = ds.clip_shape[0]
    seen, started = 0, time.perf_counter()
    while seen < clips:
        for j, batch in enumerate(batches):
            out = outs[j % buffers]
            for k, (shard, offset) in enumerate(zip(ds.shards[batch].tolist(), ds.offsets[batch].tolist())):
                out[k] = maps[shard][offset : offset + frames]
            seen += len(batch)
    return seen / (time.perf_counter() - started)


def loader_rate(loader: DataLoader, clips: int) -> float:
    """Clips/s of `loader` over at least `clips` clips."""
    seen, started = 0, time.perf_counter()
    while seen < clips:
        for batch in loader:
            seen += batch["video"].shape[0]
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--clips", type=int, default=50_000, help="clips read per setting and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from data_tools import ClipDataset, PrepareOptions, prepare
    from data_tools.layout import META

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir
        if not (root / META).exists():
            root = Path(tmp) / "prepared"
            prepare(args.dir, root, PrepareOptions(frames=args.frames, size=args.size, stride=1), progress=False)
        ds = ClipDataset(root)
        # one shuffled epoch of batches, read in the same order by the ceiling and every setting
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(0))
        batches = list(BatchSampler(sampler, args.batch, drop_last=True))
        loaders = {}
        for workers in WORKER_SETTINGS:
            loaders[workers] = DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=ds.collate,
                                          persistent_workers=workers > 0)
            loader_rate(loaders[workers], 1)  # warm up: workers started, pages cached
        ceiling: list[float] = []
        rates: dict[int | str, list[float]] = {"two": [], **{w: [] for w in WORKER_SETTINGS}}
        for _ in range(args.rounds):
            ceiling.append(gather_ceiling(ds, batches, args.clips))
            rates["two"].append(gather_ceiling(ds, batches, args.clips, buffers=2))
            for workers, loader in loaders.items():
                rates[workers].append(loader_rate(loader, args.clips))

    print(f"{len(ds)} clips of {list(ds.clip_shape)} uint8, batch {args.batch}, {os.cpu_count()} CPU cores, "
          f"{args.rounds} rounds of {args.clips:,} clips per setting\n")
    print("| reader | clips/s (median) | × the gather ceiling (median, range) |")
    print("|---|---|---|")
    print(f"| gather ceiling (main process, one preallocated batch) | {statistics.median(ceiling):,.0f} | 1.00 |")
    for setting, measured in rates.items():
        ratios = [rate / base for rate, base in zip(measured, ceiling)]
        name = "gather, two batches in turn" if setting == "two" else f"DataLoader, {setting} workers"
        print(f"| {name} | {statistics.median(measured):,.0f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
