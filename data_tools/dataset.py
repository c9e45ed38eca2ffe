"""`ClipDataset`: the clips of a prepared folder as a torch Dataset, read from memory maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data_tools.layout import META, Layout, Meta, read_index
from data_tools.storage import REMAKE, check_shards


class ClipDataset(Dataset):
    """Clips written by `vidgan prepare`.

    `ds[i]` is a dict: `video` uint8 `[T, S, S, 3]` (a view of the shard's memory map wrapped as a
    tensor, no decoding), `label` int, `path` str (relative to the source folder), `start` int (index of
    the clip's first frame in the video's output frame sequence). `ds.meta` is meta.json as written.
    Shards are opened lazily in each process, so the dataset pickles into DataLoader workers without
    open handles.
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

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are reopened in the receiving process
        return state
