"""Memory for batches of clips, kept and reused from batch to batch.

Memory a process has not touched yet costs a page fault per 4 KiB on its first write: 3,072 for a
batch of 64 clips of 16×64×64×3, which on a virtual machine take several times as long as copying
the clips. So `ClipDataset` gathers each batch into one of a few buffers it keeps (`BatchSlots`),
and takes a buffer again only once no tensor uses the batch in it. The tensor handed out is made by
`torch.from_numpy` from a numpy view of the buffer: torch holds that view as long as any tensor
shares the memory, and a finalizer on the view marks the buffer free when it goes.

In a DataLoader worker the buffers lie in shared memory, so that a batch reaches the main process
without a copy: torch sends the memory's file descriptor, and the main process, which maps the
buffers once and keeps them mapped while a batch in them lives, rebuilds a view. There the batch is
handed over (`handed_over`, on unpickling: data_tools.dataset.InTransit), and the finalizer frees
the slot in the busy flags at the head of the shared memory, which the worker reads.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import torch

SLOTS = 4  # buffers per process: the batches a loader queues and its consumer holds at once
_HEAD = 4096  # bytes before the first buffer: the busy flags, one byte a slot (buffers page-aligned)


def _uint8(nbytes: int, shared: bool) -> torch.Tensor:
    """Uninitialised uint8 memory `[nbytes]`; `shared`: in shared memory, where torch's own collate
    puts a worker's batches, so that sending it to another process copies nothing."""
    if not shared:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))


class BatchSlots:
    """`SLOTS` buffers for batches of up to `shape` = (B, T, S, S, 3) uint8 clips, in one block of
    memory that begins with their busy flags."""

    def __init__(self, shape: tuple[int, ...], shared: bool):
        self.shape, self.shared = tuple(shape), shared
        memory = _uint8(_HEAD + SLOTS * math.prod(shape), shared)
        self.busy = memory[:SLOTS].numpy()  # [SLOTS] uint8: 1 while a batch in the slot is in use
        self.busy[:] = 0
        self.buffers = memory[_HEAD:].view(SLOTS, *shape)  # [SLOTS, B, T, S, S, 3]
        self.lock = threading.Lock()  # one slot to one batch, whichever thread asks

    def fits(self, shape: tuple[int, ...], shared: bool) -> bool:
        return shared == self.shared and shape[1:] == self.shape[1:] and shape[0] <= self.shape[0]

    def take(self, batch: int) -> tuple[torch.Tensor, int | None]:
        """Memory for `batch` clips, `[batch, T, S, S, 3]`, and its slot: a free slot, marked busy;
        fresh memory (slot None) when every slot is in use."""
        with self.lock:
            free = np.flatnonzero(self.busy == 0)
            if len(free):
                slot = int(free[0])
                self.busy[slot] = 1
                return self.buffers[slot, :batch], slot
        return _uint8(batch * math.prod(self.shape[1:]), self.shared).view(batch, *self.shape[1:]), None


def handed_over(video: torch.Tensor, slot: int | None) -> torch.Tensor:
    """`video`, a view of slot `slot` of a `BatchSlots` block, as a tensor whose end frees the slot
    (memory of its own, slot None, as it is)."""
    if slot is None:
        return video
    view = video.numpy()  # its base is `video`, which keeps the block's memory
    flags = torch.empty(0, dtype=torch.uint8).set_(video.untyped_storage(), 0, (SLOTS,)).numpy()
    weakref.finalize(view, flags.__setitem__, slot, 0).atexit = False
    return torch.from_numpy(view)  # torch holds `view` while any tensor shares its memory
