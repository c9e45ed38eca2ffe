import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, default_collate

from data_tools import ClipDataset, PrepareOptions, prepare
from videos import frame_id, id_frame, write_lossless


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    for cls, offset in (("a", 0), ("b", 100)):
        (root / "src" / cls).mkdir(parents=True)
        for v in range(2):
            ids = [offset + 40 * v + i for i in range(20)]
            write_lossless(root / "src" / cls / f"v{v}.mkv", [id_frame(i, 32, 32) for i in ids])
    prepare(root / "src", root / "out", PrepareOptions(frames=4, size=8, stride=6, workers=1, shard_mb=1),
            progress=False)
    return root / "out"


def test_items_hold_the_clip_label_path_and_start(prepared):
    ds = ClipDataset(prepared)
    assert ds.classes == ["a", "b"] and (ds.frames, ds.size) == (4, 8)
    assert len(ds) == 4 * 3  # 20 frames, T=4, K=6 → starts 0, 6, 12
    item = ds[7]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (4, 8, 8, 3)
    assert (item["label"], item["path"], item["start"]) == (1, "b/v0.mkv", 6)
    assert [frame_id(f) for f in item["video"].numpy()] == [106, 107, 108, 109]
    assert ds[-1]["path"] == "b/v1.mkv"
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataset_pickles_without_open_maps(prepared):
    ds = ClipDataset(prepared)
    ds[0]
    assert ds._maps
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._maps == {} and torch.equal(clone[3]["video"], ds[3]["video"])


def test_two_worker_dataloader_yields_every_clip_once(prepared):
    ds = ClipDataset(prepared)
    loader = DataLoader(ds, batch_size=5, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(0))
    seen = []
    for batch in loader:
        assert batch["video"].dtype == torch.uint8 and batch["video"].shape[1:] == (4, 8, 8, 3)
        for video, label, path, start in zip(batch["video"], batch["label"], batch["path"], batch["start"]):
            first = frame_id(video[0].numpy())
            assert first == (100 if label == 1 else 0) + 40 * int(path[-5]) + int(start)
            seen.append((path, int(start)))
    assert sorted(seen) == sorted((ds[i]["path"], ds[i]["start"]) for i in range(len(ds)))


def _assert_batch_is_the_items(batch: dict, ds: ClipDataset, indices: list[int]) -> None:
    items = default_collate([ds[i] for i in indices])
    assert batch.keys() == items.keys() and batch["video"].dtype == torch.uint8
    assert torch.equal(batch["video"], items["video"])  # [B, T, S, S, 3]
    assert torch.equal(batch["label"], items["label"]) and torch.equal(batch["start"], items["start"])
    assert batch["path"] == items["path"]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("batch_size", [5, 1])
def test_a_loader_batch_is_its_items_stacked(prepared, workers, batch_size):
    ds = ClipDataset(prepared)
    order = list(RandomSampler(ds, generator=torch.Generator().manual_seed(0)))
    chunks = [order[i : i + batch_size] for i in range(0, len(ds), batch_size)]  # the last one short
    for collate in (ds.collate, None):  # the dataset's, or torch's default collate
        def loader():
            return DataLoader(ds, batch_size=batch_size, drop_last=False, num_workers=workers, collate_fn=collate,
                              sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(0)))

        held = list(loader())  # every batch kept: more than the dataset keeps memory for
        assert [len(b["path"]) for b in held] == [len(c) for c in chunks]
        for batch, chunk in zip(held, chunks):
            _assert_batch_is_the_items(batch, ds, chunk)
        first = held[0]["video"][0].permute(0, 3, 1, 2)  # [T, 3, S, S], a view outliving its batch
        del held
        for batch, chunk in zip(loader(), chunks):  # each batch dropped in turn: its memory reused
            _assert_batch_is_the_items(batch, ds, chunk)
        assert torch.equal(first, ds[chunks[0][0]]["video"].permute(0, 3, 1, 2))


def test_batch_memory_is_reused_only_once_no_tensor_uses_it(prepared):
    ds = ClipDataset(prepared)
    held = [ds.collate(ds.__getitems__([i, -1 - i])) for i in range(6)]  # more than its buffers
    views = [batch["video"][1].numpy() for batch in held]  # views outlive their batches
    del held
    for i in range(10):
        _assert_batch_is_the_items(ds.collate(ds.__getitems__([i, i + 1, 0])), ds, [i, i + 1, 0])
    assert all(np.array_equal(view, ds[-1 - i]["video"].numpy()) for i, view in enumerate(views))
    with pytest.raises(IndexError, match="clip 12 out of range for 12 clips"):
        ds.__getitems__([0, 12])


def test_shards_memory_map_with_plain_numpy(prepared):
    import csv
    import json

    meta = json.loads((prepared / "meta.json").read_text())
    shards = [np.load(prepared / "shards" / s["file"], mmap_mode="r") for s in meta["shards"]]
    with open(prepared / "index.csv", newline="") as f:
        row = list(csv.DictReader(f))[7]
    clip = shards[int(row["shard"])][int(row["offset"]) : int(row["offset"]) + meta["clip_shape"][0]]
    assert isinstance(clip, np.memmap) and clip.shape == tuple(meta["clip_shape"])
    assert np.array_equal(clip, ClipDataset(prepared).clip(7))


def test_unfinished_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished"):
        ClipDataset(tmp_path)
