"""`vidgan prepare`: raw videos → uint8 clips in memory-mappable shards, atomically and resumably.

The output folder is described in data_tools.layout (and the README). A run goes in steps: find the
videos, fingerprint them with the options, check that --out is ours to write, decide whether a
finished or interrupted run is there to keep, plan, decode into shards (data_tools.assemble), and
write the metadata last: its presence means the dataset is complete.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import shutil
import time
from importlib import metadata
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data_tools.assemble import ShardAssembler
from data_tools.atomic import AtomicFile, atomic_write_json, is_temporary_of
from data_tools.cores import usable_cores
from data_tools.discover import Discovery, discover
from data_tools.job import VideoTask
from data_tools.layout import (ENTRIES, FORMAT, INDEX_HEADER, Layout, Meta, Plan, ShardEntry, ShardRecords,
                               VideoRecord, part_key, skipped_json)
from data_tools.storage import check_shards
from data_tools.summary import Summary
from data_tools.workers import run_tasks

BACKENDS = ("auto", "pyav", "decord")


class PrepareError(Exception):
    """A problem with the request itself (not with one video): the run cannot start."""


@dataclass(frozen=True)
class PrepareOptions:
    """How `vidgan prepare` cuts clips. The first block defines the dataset; the rest only the run."""

    frames: int = 16  # T, frames per clip
    size: int = 64  # S, side of the square output frames, pixels
    stride: int | None = None  # output frames between clip starts; None = frames (no overlap)
    fps: Fraction | None = None  # resample to this frame rate by timestamps; None keeps every frame
    max_clips: int | None = None  # clips per video at most; None = all
    backend: str = "auto"  # auto | pyav | decord
    split_file: Path | None = None  # UCF-101 trainlist0N.txt / testlist0N.txt
    shard_mb: int = 256  # a shard is closed once it holds this many MiB of frames
    workers: int | None = None  # decode processes; None = the CPUs this process may use
    strict: bool = False  # fail (non-zero exit) when any file is skipped

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise PrepareError(message)

        check(self.frames >= 1, f"--frames must be >= 1, got {self.frames}")
        check(self.size >= 2, f"--size must be >= 2, got {self.size}")
        check(self.stride is None or self.stride >= 1, f"--stride must be >= 1, got {self.stride}")
        check(self.fps is None or self.fps > 0, f"--fps must be > 0, got {self.fps}")
        check(self.max_clips is None or self.max_clips >= 1,
              f"--max-clips-per-video must be >= 1, got {self.max_clips}")
        check(self.backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        check(self.shard_mb >= 1, f"--shard-mb must be >= 1, got {self.shard_mb}")
        check(self.workers is None or self.workers >= 1, f"--workers must be >= 1, got {self.workers}")
        if self.split_file is not None:
            check(Path(self.split_file).is_file(), f"--split-file not found: {self.split_file}")

    @property
    def clip_stride(self) -> int:
        return self.stride or self.frames

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)  # (S, S, 3)

    def dataset_options(self) -> dict:
        """The options that determine the dataset's bytes (not workers, not strictness)."""
        return {
            "frames": self.frames,
            "size": self.size,
            "stride": self.clip_stride,
            "fps": None if self.fps is None else str(self.fps),
            "max_clips_per_video": self.max_clips,
            "backend": self.backend,
            "split_file": None if self.split_file is None else Path(self.split_file).name,
            "shard_mb": self.shard_mb,
        }


def default_out(src: Path, options: PrepareOptions) -> Path:
    """`<SRC>-t<T>-s<S>` beside SRC, plus a suffix for each option that differs from its default.

    `vidgan prepare ./UCF-101` → `./UCF-101-t16-s64`.
    """
    src = Path(src)
    if src.name in ("", ".", ".."):  # `vidgan prepare .` writes beside the folder, not into it
        src = src.resolve()
    name = src.name or "videos"
    parts = [name, f"t{options.frames}", f"s{options.size}"]
    if options.clip_stride != options.frames:
        parts.append(f"k{options.clip_stride}")
    if options.fps is not None:
        parts.append(f"fps{str(options.fps).replace('/', '_')}")
    if options.max_clips is not None:
        parts.append(f"m{options.max_clips}")
    if options.split_file is not None:
        parts.append(Path(options.split_file).stem)
    if options.backend != "auto":
        parts.append(options.backend)
    return src.parent / "-".join(parts)


@functools.cache
def _versions() -> dict:
    """Versions of what makes the frames (read from the installed metadata: importing decord in this
    process would cost more than a small video's decoding). Read once: they are those of the code
    this process and its workers run."""
    import av

    def installed(name: str, unknown):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return unknown

    return {"numpy": np.__version__, "av": av.__version__,
            "ffmpeg": getattr(av, "ffmpeg_version_info", "unknown"),
            "vidgan": installed("vidgan", "unknown"), "decord": installed("decord", None)}


def _changed_versions(before: dict | None, now: dict) -> str:
    """What differs, as `av 17.0.0 (now 18.1.0), ...`."""
    before = before or {}
    changed = [f"{k} {before.get(k, 'unknown')} (now {v})"
               for k, v in sorted(now.items()) if before.get(k) != v]
    return ", ".join(changed) or "versions it did not record"


def _is_ours(name: str) -> bool:
    """Whether an entry of an output folder is one `prepare` writes, or the temporary of one that a
    killed run left (`.index.csv.tmp-<pid>`: see data_tools.atomic)."""
    return name in ENTRIES or is_temporary_of(name, ENTRIES)


def _remove_temporaries(*folders: Path) -> None:
    for folder in folders:
        if folder.is_dir():
            for p in folder.glob(".*.tmp-*"):
                p.unlink(missing_ok=True)


def _load_json(path: Path):
    with open(path) as f:
        return json.load(f)


class _ProgressBar(tqdm):
    monitor_interval = 0  # no monitor thread: the process stays single-threaded, safe to fork


HOLD_BYTES = 256 * 2**20  # frames of videos finished ahead of their turn kept in memory, at most


@contextlib.contextmanager
def _exclusive(folder: Layout) -> Iterator[None]:
    """Hold the folder for this run, so that a second `prepare` into it stops at once rather than
    delete the first one's temporaries under it. A POSIX record lock on `.lock`: the kernel drops it
    when this process ends, however it ends, and forked workers do not inherit it. (No lock where
    there is no fcntl, i.e. on Windows.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder.lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder this process cannot write (a read-only mount): no run can write
        yield  # into it either, and a finished dataset is still recognised as such
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise PrepareError(f"{folder.root} is being written by another `vidgan prepare`; wait for it "
                                   "to end or stop it") from None
            # a file system without record locks (some network and FUSE mounts): run unlocked
        yield
    finally:
        os.close(fd)


def _dispatch_order(tasks: list[VideoTask], sizes: list[int], workers: int) -> list[VideoTask]:
    """Sorted order, so that each video tends to finish in its turn and stream straight into its
    shard; but a video big enough to leave one worker decoding it alone at the end starts first."""
    big = sum(sizes) / (4 * workers)
    order = sorted(range(len(tasks)), key=lambda i: (-sizes[i], i) if sizes[i] > big else (0, i))
    return [tasks[i] for i in order]


def prepare(src: Path, out: Path | None = None, options: PrepareOptions | None = None,
            overwrite: bool = False, progress: bool = True, log=print) -> Summary:
    """Run `vidgan prepare`; see data_tools.layout for the output and the README for the options."""
    options = options or PrepareOptions()
    src = Path(src)
    if not src.is_dir():
        raise PrepareError(f"source folder not found: {src}")
    folder = Layout(Path(out) if out is not None else default_out(src, options))
    found = _discover(src, options)
    fingerprint = _fingerprint(options, found)
    _claim(folder, overwrite)
    with _exclusive(folder):
        start_over = overwrite
        meta = _finished_meta(folder, fingerprint, overwrite)
        if meta is not None:
            try:
                check_shards(folder.root, meta.shards, options.frame_shape)
            except (OSError, ValueError) as e:  # finished once, damaged since: made again
                log(f"{e}: {folder.root} was finished once, and is made anew")
                start_over = True
            else:
                return _already_done(folder, meta, found)
        versions = _versions()
        if start_over or _must_start_over(folder, fingerprint, versions, log):
            _clear(folder)
        _begin(folder, Plan(fingerprint, options.dataset_options(), versions))
        summary, shards = _assemble(src, folder, options, found, progress)
        _write_metadata(folder, Meta(
            fingerprint=fingerprint, source=str(src.resolve()), options=options.dataset_options(),
            clip_shape=(options.frames, *options.frame_shape), classes=found.classes,
            counts=summary.counts(), shards=shards, versions=versions), summary)
        return summary


def _discover(src: Path, options: PrepareOptions) -> Discovery:
    """The videos under `src` (after the split file); when there are none, say why, and write nothing."""
    found = discover(src, options.split_file)
    if not found.videos:
        if found.excluded:
            why = "; ".join(f"{path}: {reason}" for path, reason in found.excluded[:3])
            more = f" and {len(found.excluded) - 3} more" if len(found.excluded) > 3 else ""
            raise PrepareError(f"no video to prepare under {src}: {why}{more}")
        raise PrepareError(f"no video found under {src}: of its {found.files_seen} file(s), none is a "
                           "video by its extension or first bytes")
    return found


def _fingerprint(options: PrepareOptions, found: Discovery) -> str:
    """What identifies a dataset: the format, the options that shape its bytes, the classes and each
    video's path, label and size. A rerun with the same fingerprint finds its work done or resumes it."""
    return hashlib.sha256(json.dumps({
        "format": FORMAT, "options": options.dataset_options(), "classes": found.classes,
        "videos": [[v.rel_path, v.label, v.size] for v in found.videos],
    }, sort_keys=True).encode()).hexdigest()


def _claim(folder: Layout, overwrite: bool) -> None:
    """Make --out, unless it holds files that `prepare` did not write (and `overwrite` is off)."""
    out = folder.root
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"--out {out} exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
        if foreign and not overwrite:
            raise PrepareError(f"--out {out} holds files vidgan did not write ({', '.join(foreign[:3])}); "
                               "choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)


def _finished_meta(folder: Layout, fingerprint: str, overwrite: bool) -> Meta | None:
    """The metadata of the same dataset finished in `folder` before; None when there is none, or
    when it is to be overwritten. A finished dataset of other videos or options is not replaced
    without `overwrite`."""
    if not folder.meta.exists():
        return None
    meta = _load_json(folder.meta)
    if meta.get("fingerprint") == fingerprint and not overwrite:  # (the fingerprint holds the format)
        return Meta.from_json(meta)
    if not overwrite:
        raise PrepareError(f"{folder.root} holds a dataset prepared from other videos or options; "
                           "choose another --out or pass --overwrite to replace it")
    return None


def _already_done(folder: Layout, meta: Meta, found: Discovery) -> Summary:
    """The summary of a finished dataset, counted from its shards' records."""
    summary = Summary(out=folder.root, already_done=True)
    for i in range(len(meta.shards)):  # one at a time: a large dataset's records are many
        summary.count_shard(ShardRecords.from_json(_load_json(folder.shard_records(i))))
    summary.skipped = sorted(summary.skipped + found.excluded)
    shutil.rmtree(folder.work, ignore_errors=True)  # left by a run killed just after its metadata
    return summary


def _must_start_over(folder: Layout, fingerprint: str, versions: dict, log) -> bool:
    """Whether to delete what a run interrupted in `folder` left rather than resume it: yes when it
    decoded with other versions. One over other videos or options is not replaced without --overwrite."""
    if not folder.plan.exists():
        return False
    plan = Plan.from_json(_load_json(folder.plan))
    if plan.fingerprint != fingerprint:
        raise PrepareError(f"{folder.root} holds an interrupted run over other videos or options; "
                           "choose another --out or pass --overwrite to start over")
    if plan.versions != versions:
        # Its frames came from another decoder or converter: resuming would mix the two.
        changed = _changed_versions(plan.versions, versions)
        log(f"{folder.root}: the interrupted run decoded with {changed}; starting over, so that every "
            "frame comes from the same decoder")
        return True
    return False


def _clear(folder: Layout) -> None:
    """Delete everything in `folder` but its lock, held by this run (a new file would be another lock)."""
    for target in folder.root.iterdir():
        if target.name == folder.lock.name:
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _begin(folder: Layout, plan: Plan) -> None:
    """Make the run's folders, delete the temporaries of a killed run, and record the plan."""
    folder.parts.mkdir(parents=True, exist_ok=True)
    folder.shards.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(folder.root, folder.shards, folder.parts, folder.work)
    atomic_write_json(folder.plan, plan.to_json())


def _assemble(src: Path, folder: Layout, options: PrepareOptions, found: Discovery,
              progress: bool) -> tuple[Summary, list[ShardEntry]]:
    """Decode what is left into shards after those an interrupted run committed, writing index.csv as
    the videos are placed; returns the run's summary and every shard."""
    summary = Summary(out=folder.root)  # counts each video as it is placed
    index = AtomicFile(folder.index, "w", encoding="utf-8", newline="", buffering=2**20)
    try:
        index.write(INDEX_HEADER)
        committed, covered = _count_committed(folder, summary, index, options.frames)
        assembler = ShardAssembler(folder, found.videos, covered, len(committed), options.frame_shape,
                                   options.shard_mb * 2**20, HOLD_BYTES, options.frames, index, summary)
        tasks = _tasks_left(src, found.videos, covered, folder, assembler, options)
        workers = min(options.workers or usable_cores(), max(1, len(tasks)))
        tasks = _dispatch_order(tasks, [found.videos[assembler.index_of[t.rel_path]].size for t in tasks],
                                workers)
        started = time.perf_counter()
        decoded = _decode(tasks, workers, assembler, len(found.videos), progress)
    except BaseException:
        index.abort()
        raise
    summary.skipped = sorted(summary.skipped + found.excluded)
    summary.frames_decoded, summary.seconds = decoded, time.perf_counter() - started
    summary.workers = workers if tasks else 0
    index.commit()
    return summary, committed + assembler.committed


def _write_metadata(folder: Layout, meta: Meta, summary: Summary) -> None:
    """skipped.json, then meta.json, which marks the dataset complete; then the run's work is deleted."""
    atomic_write_json(folder.skipped, skipped_json(summary.skipped))
    atomic_write_json(folder.meta, meta.to_json())
    shutil.rmtree(folder.work, ignore_errors=True)


def _count_committed(folder: Layout, summary: Summary, index: AtomicFile,
                     clip_frames: int) -> tuple[list[ShardEntry], int]:
    """Count and index the shards an interrupted run committed, one at a time (a prefix of the
    sorted videos); returns each, and how many videos they hold."""
    committed: list[ShardEntry] = []
    covered = 0
    while (path := folder.shard_records(len(committed))).exists():
        shard = ShardRecords.from_json(_load_json(path))
        summary.count_shard(shard)
        for video in shard.videos:
            index.write(video.index_rows(shard.index, clip_frames))
        committed.append(shard.entry)
        covered = shard.first_video + len(shard.videos)
    return committed, covered


def _tasks_left(src: Path, videos: list, covered: int, folder: Layout, assembler: ShardAssembler,
                options: PrepareOptions) -> list[VideoTask]:
    """The videos after the committed shards still to decode, in sorted order. Those an interrupted
    run finished (a record, and their frames in a part file) go to the assembler instead."""
    tasks: list[VideoTask] = []
    for i in range(covered, len(videos)):
        v = videos[i]
        key = part_key(v.rel_path)
        if folder.part_record(key).exists():  # finished by an interrupted run, waiting for its turn
            record = VideoRecord.from_json(_load_json(folder.part_record(key)))
            if record.frames == 0 or folder.part_frames(key).exists():
                assembler.ready[i] = (record, None)
                continue
        tasks.append(VideoTask(
            source=str((src / v.rel_path).absolute()), rel_path=v.rel_path, label=v.label,
            frames=options.frames, stride=options.clip_stride, size=options.size,
            fps=None if options.fps is None else str(options.fps), max_clips=options.max_clips,
            backend=options.backend))
    return tasks


def _decode(tasks: list[VideoTask], workers: int, assembler: ShardAssembler, total: int,
            progress: bool) -> int:
    """Decode `tasks` in `workers` processes into the assembler's shards, with a progress bar over
    all `total` videos; returns the frames decoded."""
    started = time.perf_counter()
    decoded = 0
    bar = _ProgressBar(total=total, initial=total - len(tasks), unit="video", disable=not progress,
                       dynamic_ncols=True, desc="prepare")
    try:
        assembler.drain()
        for record in run_tasks(tasks, workers, assembler):
            decoded += record.decoded_frames
            if record.status != "ok":
                bar.write(f"skipped {record.path}: {record.reason}")
            assembler.finish(record)
            elapsed = time.perf_counter() - started
            # shown with the bar's next redraw, which tqdm spaces (a redraw per video costs the main
            # process about 0.3 ms each: seconds over a dataset of short videos)
            bar.set_postfix_str(f"{decoded / max(elapsed, 1e-9):.0f} frames/s", refresh=False)
            bar.update(1)
    except BaseException:
        assembler.abort()
        raise
    finally:
        bar.close()
    return decoded
