"""One video → its stored frames and its record: the unit of work a `vidgan prepare` worker runs.

The frames go to a sink as they are converted (in a worker: a pipe back to the process that writes
the shards); the record says what the video gave. Workers import neither torch nor vidgan: they start
fast and stay small.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from data_tools.backends import base
from data_tools.extract import check_complete, extract
from data_tools.layout import VideoRecord, part_key
from data_tools.sampling import ClipPlan


@dataclass(frozen=True)
class VideoTask:
    """Everything a worker needs to turn one source video into a part (picklable, no handles)."""

    source: str  # absolute path of the video
    rel_path: str  # relative to SRC, POSIX separators
    label: int
    frames: int
    stride: int
    size: int
    fps: str | None  # a fraction as text, e.g. "30000/1001"; None keeps every decoded frame
    max_clips: int | None
    backend: str  # "auto", "pyav" or "decord"

    @property
    def key(self) -> str:
        return part_key(self.rel_path)


class FrameSink(Protocol):
    """Where a video's stored frames go, in order."""

    def write(self, frame: np.ndarray) -> None:  # [S, S, 3] uint8
        ...

    def discard(self) -> None:  # drop every frame written for this video so far
        ...


def _backends(name: str):
    from data_tools.backends import decord_backend, pyav

    if name == "pyav":
        return [("pyav", pyav.iter_frames)]
    if name == "decord":
        if not decord_backend.available():
            raise RuntimeError("--backend decord: decord is not installed (it exists for x86_64 only)")
        return [("decord", decord_backend.iter_frames)]
    # auto: PyAV's fused filter graph is the faster chain (BENCHMARKS.md); decord reads what it can't.
    chain = [("pyav", pyav.iter_frames)]
    if decord_backend.available():
        chain.append(("decord", decord_backend.iter_frames))
    return chain


def _readable_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if not path.is_file():
        return "not a regular file"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None


def run_task(task: VideoTask, sink: FrameSink) -> VideoRecord:
    """Decode one video, writing the frames of its complete clips to `sink`; return its record."""
    plan = ClipPlan(task.frames, task.stride, task.max_clips)
    fps = Fraction(task.fps) if task.fps else None
    problem = _readable_problem(Path(task.source))
    if problem is not None:
        return VideoRecord.skipped(task.rel_path, task.label, problem)
    reasons = []
    for name, iter_frames in _backends(task.backend):
        stats = base.ReadStats()
        try:
            result = extract(iter_frames(task.source, task.size, stats), plan, fps, sink.write, stats)
            check_complete(result, stats)
        except base.DecodeError as e:
            sink.discard()
            reasons.append(e.reason if not reasons else f"{name}: {e.reason}")
            if e.definitive:
                break
            continue
        return VideoRecord(
            path=task.rel_path, label=task.label, status="ok", backend=name,
            decoded_frames=result.decoded_frames, output_frames=result.output_frames,
            frames=len(result.stored_times),
            clips=[[s, o] for s, o in zip(result.clip_starts, result.clip_offsets)],
            times=[round(t, 6) for t in result.stored_times],
            damaged_packets=stats.damaged_packets)  # kept, as a player plays it; the summary says so
    return VideoRecord.skipped(task.rel_path, task.label, "; ".join(reasons))


def record_crash(task: VideoTask) -> VideoRecord:
    """The record of a video whose decoding killed its worker process."""
    return VideoRecord.skipped(task.rel_path, task.label, "the decoder crashed on this file (its worker process died)")


def worker_init() -> None:
    """A worker is one decode thread: leave the rest of the machine to the others. Ctrl-C is the
    main process's to handle (it stops the workers), not a crash of the video being decoded."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
