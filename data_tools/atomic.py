"""Files that are complete or absent: the one way vidgan writes a file or folder that others read.

Everything is written under a temporary name beside its target (`.NAME.tmp-<pid>`, the pid keeping
two processes apart) and renamed into place, so a reader sees the old file or the new one, never
half of one, and a killed writer leaves only a temporary that the next run can recognise and
delete. `durable` also flushes the data and the rename to the disk, so that the file survives a
power cut; it costs a sync, so scratch files that a rerun can redo skip it.

- `atomic_write_bytes`, `atomic_write_text`, `atomic_write_json`: a whole file from memory.
- `atomic_path`: a temporary path for writers that want a file name (PyAV, safetensors, numpy).
- `AtomicFile`: an open file written bit by bit, for files too big to build in memory first.
- `replace`: the rename itself, for a folder assembled under a temporary name.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Iterator

TMP_MARK = ".tmp-"  # between the target's name and the writer's pid in a temporary's name


def temporary_path(path: str | Path, keep_suffix: bool = False) -> Path:
    """`dir/.NAME.tmp-<pid>` beside `path`; with `keep_suffix`, the target's suffix follows, for
    writers that pick the format from the name (`.clip.mp4.tmp-12.mp4`)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}{path.suffix if keep_suffix else ''}")


def is_temporary_of(name: str, targets: set[str] | frozenset[str]) -> bool:
    """Whether `name` is the temporary of one of `targets` left by a writer (no suffix kept)."""
    target, mark, pid = name[1:].rpartition(TMP_MARK)
    return name.startswith(".") and bool(mark) and target in targets and pid.isdigit()


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk, where the system allows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: str | Path, path: str | Path, durable: bool = False) -> None:
    """Rename the finished `tmp` (a file, or a folder when `path` does not exist) to `path`."""
    os.replace(tmp, path)
    if durable:
        fsync_dir(Path(path).parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path to write the file into; renamed to `path` when the block ends without an
    error, deleted when it raises."""
    path = Path(path)
    tmp = temporary_path(path, keep_suffix)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        replace(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` whole or not at all."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        replace(tmp, path, durable)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> None:
    """Write `text` (UTF-8) to `path` whole or not at all."""
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def atomic_write_json(path: str | Path, obj, durable: bool = True, indent: int | None = 1) -> None:
    """`obj` as JSON with sorted keys and a final newline. `indent=None` writes one line with the C
    encoder: for big machine-read files (an indent selects Python's own encoder, about 10× slower)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=indent, sort_keys=True) + "\n").encode(), durable)


class AtomicFile:
    """A file written through `self.file` under a temporary name; `commit()` renames it into place,
    `abort()` deletes it. As a context manager, an error in the block aborts."""

    def __init__(self, path: str | Path, mode: str = "wb", durable: bool = True, **open_kwargs):
        self.path = Path(path)
        self.durable = durable
        self.tmp = temporary_path(self.path)
        self.file: IO = open(self.tmp, mode, **open_kwargs)

    def write(self, data) -> None:
        self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        if self.durable:
            os.fsync(self.file.fileno())
        self.file.close()
        replace(self.tmp, self.path, self.durable)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "AtomicFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        return False
