"""`.npy` frame files written as frames stream in, complete or absent, and their checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from data_tools.atomic import AtomicFile
from data_tools.layout import Layout, ShardEntry

NPY_HEADER_BYTES = 128  # fixed, so the final shape can be written in place once it is known


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    """A version 1.0 `.npy` header padded to `NPY_HEADER_BYTES` (numpy reads any 64-aligned length)."""
    body = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    prefix = b"\x93NUMPY\x01\x00"
    pad = NPY_HEADER_BYTES - len(prefix) - 2 - len(body) - 1
    if pad < 0:
        raise ValueError(f"shape {shape} does not fit a {NPY_HEADER_BYTES}-byte header")
    text = (body + " " * pad + "\n").encode("latin1")
    return prefix + len(text).to_bytes(2, "little") + text


# What to do about a damaged prepared folder
REMAKE = "run the same `vidgan prepare` command again: it makes the folder anew"


def check_shards(root: Path, shards: list[ShardEntry], frame_shape: tuple[int, ...]) -> None:
    """Raise, naming the file, when a shard listed in a prepared folder's metadata is missing or does
    not hold the frames it should (a copy cut short, a file edited or deleted): better at once than
    as an obscure memory-map error halfway through training. Reads only the headers."""
    frame_bytes = int(np.prod(frame_shape))
    folder = Layout(Path(root))
    for shard in shards:
        path = folder.shards / shard.file
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, _ = read_header(f)
                data_start = f.tell()
            size = os.path.getsize(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing") from None
        except ValueError as e:
            raise ValueError(f"{path} is not a NumPy array file ({e})") from None
        expected_shape = (shard.frames, *frame_shape)
        expected_size = data_start + shard.frames * frame_bytes
        if tuple(shape) != expected_shape or size != expected_size:
            raise ValueError(f"{path} is damaged: {size} bytes of shape {tuple(shape)}, where "
                             f"{expected_size} bytes of shape {expected_shape} are expected")


def _copy_range(src: Path, offset: int, dst, size: int) -> None:
    """Append `size` bytes of file `src` from `offset` to the open file `dst`, inside the kernel
    where it can (no copy through Python)."""
    dst.flush()
    end = os.fstat(dst.fileno()).st_size
    with open(src, "rb", buffering=0) as f:
        done = 0
        try:
            while done < size:
                n = os.copy_file_range(f.fileno(), dst.fileno(), size - done, offset + done, end + done)
                if n == 0:
                    raise OSError("copy_file_range copied nothing")
                done += n
        except (AttributeError, OSError):  # not Linux, or a file system that refuses it
            f.seek(offset + done)
            dst.seek(end + done)
            shutil.copyfileobj(f, dst, 16 * 2**20)
    dst.seek(0, os.SEEK_END)


class FrameFileWriter:
    """Appends uint8 frames `[S, S, 3]` to a temporary `.npy`; `commit()` sets the shape and renames.

    Until the rename, the final name does not exist; an interrupted writer leaves only a temporary
    file that the next run deletes.
    """

    # Frames arrive in batches of about 1 MiB (data_tools.workers): a smaller buffer lets those go
    # straight to the kernel instead of through one more copy; single frames are still gathered.
    buffer_bytes = 256 * 2**10

    def __init__(self, path: Path, frame_shape: tuple[int, ...], durable: bool = True):
        self.path = Path(path)
        self.durable = durable
        self.target = AtomicFile(self.path, "wb", durable=durable, buffering=self.buffer_bytes)
        self.file = self.target.file
        self.frame_shape = tuple(frame_shape)
        self.frame_bytes = int(np.prod(frame_shape))
        self.count = 0
        self.synced = 0  # frames flushed to the disk by sync()
        self.file.write(npy_header((0, *self.frame_shape)))

    def write(self, frames: np.ndarray) -> None:
        """Append one frame `[S, S, 3]` or a batch `[F, S, S, 3]`."""
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        if frames.shape == self.frame_shape:
            frames = frames[None]
        if frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frame shape {frames.shape[1:]} != {self.frame_shape}")
        self.file.write(frames.data)
        self.count += len(frames)

    def append_npy(self, path: Path) -> int:
        """Append the frames of a `.npy` written by another FrameFileWriter; returns their number."""
        with open(path, "rb") as src:
            header = src.read(NPY_HEADER_BYTES)
            size = os.fstat(src.fileno()).st_size - NPY_HEADER_BYTES
        frames, rest = divmod(size, self.frame_bytes)
        if rest or header[:6] != b"\x93NUMPY":
            raise ValueError(f"{path} is not a frame file of shape [F, {self.frame_shape}]")
        _copy_range(path, NPY_HEADER_BYTES, self.file, size)
        self.count += frames
        return frames

    def truncate(self, count: int) -> None:
        """Drop every frame after the first `count`."""
        self.file.flush()
        self.file.truncate(NPY_HEADER_BYTES + count * self.frame_bytes)
        self.file.seek(0, os.SEEK_END)
        self.count = count
        self.synced = min(self.synced, count)

    @property
    def unsynced_bytes(self) -> int:
        return (self.count - self.synced) * self.frame_bytes

    def sync(self) -> None:
        """Flush the frames so far to the disk (durable writers only), so that the commit has little
        left to flush: called between videos, while the decoders work."""
        if self.durable:
            self.file.flush()
            os.fdatasync(self.file.fileno()) if hasattr(os, "fdatasync") else os.fsync(self.file.fileno())
        self.synced = self.count

    def commit(self) -> None:
        self.file.seek(0)
        self.file.write(npy_header((self.count, *self.frame_shape)))
        self.target.commit()

    def abort(self) -> None:
        self.target.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False
