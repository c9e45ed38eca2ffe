"""`ClipDataset`: the clips of a prepared folder as a torch Dataset, read from memory maps.

A DataLoader with `collate_fn=ClipDataset.collate` reads whole batches through
`ClipDataset.__getitems__`: each clip is copied once, from its shard's memory map straight into the
batch, in memory reused from batch to batch and, in a DataLoader worker, shared with the main
process, so that the batch reaches it without another copy (data_tools.batches). With torch's
default collate the same loader still works, at the cost of one more copy of every clip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from data_tools.batches import BatchSlots, handed_over
from data_tools.layout import META, Layout, Meta, read_index
from data_tools.storage import REMAKE, check_shards


class ClipDataset(Dataset):
    """Clips written by `vidgan prepare`.

    `ds[i]` is a dict: `video` uint8 `[T, S, S, 3]` (a copy of the clip's slice of the shard's memory
    map, no decoding), `label` int, `path` str (relative to the source folder), `start` int (index of
    the clip's first frame in the video's output frame sequence). `ds.__getitems__(indices)` gathers
    a batch of them, which `ClipDataset.collate` hands on. `ds.meta` is meta.json as written. Shards
    are opened lazily in each process, so the dataset pickles into DataLoader workers without open
    handles.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        folder = Layout(self.root)
        if not folder.meta.is_file():
            raise FileNotFoundError(f"{self.root} is not a finished `vidgan prepare` output (no {META})")
        with open(folder.meta) as f:
            self.meta = json.load(f)
        try:
            meta = Meta.from_json(self.meta)
        except ValueError as e:
            raise ValueError(f"{self.root}: {e}") from None
        self.classes: list[str] = list(meta.classes)
        self.clip_shape = meta.clip_shape  # (T, S, S, 3)
        self.shard_files = [folder.shards / s.file for s in meta.shards]
        try:
            check_shards(self.root, meta.shards, self.clip_shape[1:])
        except (OSError, ValueError) as e:
            raise type(e)(f"{e}; {REMAKE}") from None
        paths, labels, starts, shards, offsets = [], [], [], [], []
        for clip in read_index(folder.index):
            paths.append(clip.path)
            labels.append(clip.label)
            starts.append(clip.start)
            shards.append(clip.shard)
            offsets.append(clip.offset)
        unique = sorted(set(paths))
        video_of = {p: i for i, p in enumerate(unique)}
        self.video_paths = unique
        # one entry per clip, each int64 [N]
        self.video_ids = np.array([video_of[p] for p in paths], dtype=np.int64)
        self.labels = np.array(labels, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.shards = np.array(shards, dtype=np.int64)
        self.offsets = np.array(offsets, dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}
        self._slots: BatchSlots | None = None  # this process's batch memory, made by the first batch

    @property
    def frames(self) -> int:
        return self.clip_shape[0]

    @property
    def size(self) -> int:
        return self.clip_shape[1]

    def __len__(self) -> int:
        return len(self.labels)

    def _shard(self, index: int) -> np.ndarray:
        shard = self._maps.get(index)
        if shard is None:
            shard = np.load(self.shard_files[index], mmap_mode="r")  # [F, S, S, 3]
            self._maps[index] = shard
        return shard

    def clip(self, i: int) -> np.ndarray:
        """The uint8 `[T, S, S, 3]` memory-mapped array of clip `i` (read-only)."""
        offset = self.offsets[i]
        return self._shard(self.shards[i])[offset : offset + self.clip_shape[0]]

    def _checked(self, indices) -> np.ndarray:
        """`indices` as int64 `[B]` in `[0, len)`; negative ones count from the end, as in `ds[i]`."""
        i = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = i[(i < -len(self)) | (i >= len(self))]
        if len(bad):
            raise IndexError(f"clip {bad[0]} out of range for {len(self)} clips")
        return i % len(self)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip {i} out of range for {len(self)} clips")
        i = int(i) % len(self)
        return {
            "video": torch.from_numpy(np.array(self.clip(i))),  # [T, S, S, 3] uint8
            "label": int(self.labels[i]),
            "path": self.video_paths[self.video_ids[i]],
            "start": int(self.starts[i]),
        }

    def __getitems__(self, indices: list[int]) -> ClipBatch:
        """The clips at `indices` as one batch, what a DataLoader's fetcher asks for: each clip is
        copied once, from its shard's memory map into the batch."""
        i = self._checked(indices)  # [B]
        shape, in_worker = (len(i), *self.clip_shape), get_worker_info() is not None
        if self._slots is None or not self._slots.fits(shape, shared=in_worker):
            self._slots = BatchSlots(shape, shared=in_worker)
        video, slot = self._slots.take(len(i))  # [B, T, S, S, 3] uint8
        out = video.numpy()
        frames = self.frames
        for k, (shard, offset) in enumerate(zip(self.shards[i].tolist(), self.offsets[i].tolist())):
            out[k] = self._shard(shard)[offset : offset + frames]
        raw = {
            "video": video,
            "label": self.labels[i],  # [B] int64
            "path": [self.video_paths[v] for v in self.video_ids[i].tolist()],
            "start": self.starts[i],  # [B] int64
        }
        return ClipBatch(raw, slot, in_worker)

    @staticmethod
    def collate(batch):
        """The DataLoader `collate_fn` for this dataset: a batch `__getitems__` gathered goes through as
        it is; anything else to torch's default collate."""
        if isinstance(batch, ClipBatch):
            return batch.collated
        return default_collate(batch)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in the receiving process
        state["_slots"] = None  # and batch memory made anew
        return state


class ClipBatch(Sequence):
    """A batch gathered by `ClipDataset.__getitems__`. `collated` is the batch as the training loop
    reads it, which `ClipDataset.collate` passes through: a dict of `video` uint8 `[B, T, S, S, 3]`,
    `label` and `start` int64 `[B]`, `path` B str (in a DataLoader worker, `InTransit` to the main
    process). As a sequence it is the batch's items, each as `ds[i]` gives it (the video a view into
    the batch), for any other collate function."""

    def __init__(self, raw: dict, slot: int | None, in_worker: bool):
        self.raw = raw  # `label` and `start` numpy arrays
        self.slot = slot  # of the batch memory that holds the video
        self.batch = None if in_worker else _handed_over(raw, slot)

    @property
    def collated(self) -> dict | InTransit:
        return self.batch if self.batch is not None else InTransit(self.raw, self.slot)

    def __len__(self) -> int:
        return len(self.raw["path"])

    def __getitem__(self, k: int) -> dict:
        if self.batch is None:  # taken apart in the worker: the slot is free again once that is done
            self.batch = _handed_over(self.raw, self.slot)
        batch = self.batch
        return {"video": batch["video"][k], "label": int(batch["label"][k]), "path": batch["path"][k],
                "start": int(batch["start"][k])}


class InTransit:
    """A batch on its way from a DataLoader worker to the main process: its video in the worker's
    shared batch memory, its labels and starts as numpy arrays, pickled with it (as tensors, each
    would cost a block of shared memory and a file descriptor sent). Unpickled, it is the batch."""

    def __init__(self, raw: dict, slot: int | None):
        self.raw, self.slot = raw, slot

    def __reduce__(self):
        return _handed_over, (self.raw, self.slot)


def _handed_over(raw: dict, slot: int | None) -> dict:
    """The batch dict as its consumer gets it, from what `__getitems__` gathered."""
    return {"video": handed_over(raw["video"], slot), "label": torch.from_numpy(raw["label"]),
            "path": raw["path"], "start": torch.from_numpy(raw["start"])}
