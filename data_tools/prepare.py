"""`vidgan prepare`: raw videos → uint8 clips in memory-mappable shards, atomically and resumably.

Layout of the output folder (documented in the README):

    meta.json                 options, classes, counts, versions, shards; written last: its presence
                              means the dataset is complete
    index.csv                 one row per clip: path,label,start,shard,offset,timestamps
    skipped.json              every file left out, with the reason
    shards/shard-NNNNN.npy    uint8 [F, S, S, 3]: the stored frames of consecutive videos
    shards/shard-NNNNN.json   the records of the videos in that shard
    .work/                    videos an unfinished run set aside (deleted when the run completes)
    .lock                     held by a running `prepare`, so that a second one into the folder stops

Shards are cut in the sorted order of the videos as soon as they reach `shard_mb`, so their contents do
not depend on the number of workers or on where an earlier run was interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import hashlib
import io
import json
import os
import shutil
import time
from importlib import metadata
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data_tools.cores import usable_cores
from data_tools.discover import discover
from data_tools.job import VideoTask, part_key
from data_tools.workers import run_tasks
from data_tools.atomic import AtomicFile, atomic_write_bytes, atomic_write_json, is_temporary_of
from data_tools.storage import FrameFileWriter, check_shards

FORMAT = "vidgan-clips/1"
BACKENDS = ("auto", "pyav", "decord")
_OUR_ENTRIES = {"meta.json", "index.csv", "skipped.json", "shards", ".work", ".lock"}


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


@dataclass
class Summary:
    """What a run did. `skipped` lists (path, reason) for every file left out."""

    out: Path
    videos: int = 0  # videos considered (after the split file)
    read: int = 0  # decoded without error
    too_short: int = 0  # read, but shorter than one clip
    damaged: int = 0  # read with damaged packets skipped (kept: most of their frames came out)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    frames_decoded: int = 0  # by this run
    frames_stored: int = 0
    seconds: float = 0.0  # of this run
    workers: int = 0  # decode processes of this run
    already_done: bool = False

    def count_shard(self, shard: dict) -> None:
        """Add a shard's videos (records as in shards/*.json) to the counts."""
        self.frames_stored += shard["frames"]
        for video in shard["videos"]:
            self.count_video(video)

    def count_video(self, video: dict) -> None:
        self.videos += 1
        if video["status"] == "ok":
            self.read += 1
            self.clips += len(video["clips"])
            self.too_short += not video["clips"]
            self.damaged += bool(video.get("damaged_packets"))
        else:
            self.skipped.append((video["path"], video["reason"]))

    @property
    def frames_per_second(self) -> float:
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = []
        if self.already_done:
            lines.append(f"{self.out} is already complete: nothing to do.")
        lines += [
            f"videos read: {self.read} of {self.videos} ({self.too_short} shorter than one clip"
            + (f", {self.damaged} with damaged packets skipped)" if self.damaged else ")"),
            f"skipped: {len(self.skipped)}",
        ]
        lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        lines += [
            f"clips: {self.clips}",
            f"frames: {self.frames_decoded} decoded this run, {self.frames_stored} stored",
            f"time: {self.seconds:.1f} s, {self.frames_per_second:.0f} frames/s"
            + (f", {self.workers} worker{'s' * (self.workers > 1)}" if self.workers else ""),
            f"output: {self.out}",
        ]
        return "\n".join(lines)


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
    return name in _OUR_ENTRIES or is_temporary_of(name, _OUR_ENTRIES)


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


class _Waiting:
    """The frames of a video that is not in its turn yet: held in memory while the run's budget
    allows, else in a part file (which, with its record beside it, also survives an interruption)."""

    def __init__(self, path: Path, frame_shape: tuple[int, ...]):
        self.path, self.frame_shape = path, frame_shape
        self.batches: list[np.ndarray] = []  # each [n, S, S, 3]
        self.part: FrameFileWriter | None = None
        self.count = 0

    @property
    def held_bytes(self) -> int:
        return sum(b.nbytes for b in self.batches)

    def write(self, batch: np.ndarray) -> None:
        if self.part is not None:
            self.part.write(batch)
        else:
            self.batches.append(batch.copy())  # the batch's buffer is reused for the next one
        self.count += len(batch)

    def spill(self) -> None:
        self.part = FrameFileWriter(self.path, self.frame_shape, durable=False)
        for batch in self.batches:
            self.part.write(batch)
        self.batches = []

    def copy_to(self, writer: FrameFileWriter) -> int:
        """Append the frames to `writer`; returns their number."""
        if self.part is None:
            for batch in self.batches:
                writer.write(batch)
            return self.count
        return writer.append_npy(self.path)

    def abort(self) -> None:
        if self.part is not None:
            self.part.abort()


class _ShardAssembler:
    """Writes the videos' frames into shards in the sorted order of the videos; commits each full
    shard. The video next in that order streams straight into the open shard, written once; a video
    that finishes ahead of its turn waits, in memory up to `HOLD_BYTES` in all, else in a part file."""

    def __init__(self, out: Path, parts: Path, videos: list, first_video: int, shard_index: int,
                 frame_shape: tuple[int, int, int], shard_bytes: int, clip_frames: int,
                 index: AtomicFile, tally: Summary):
        self.shards = out / "shards"
        self.parts = parts
        self.videos = videos
        self.index_of = {v.rel_path: i for i, v in enumerate(videos)}
        self.next_video = first_video
        self.shard_index = shard_index
        self.frame_shape = frame_shape
        self.shard_frames = max(1, shard_bytes // int(np.prod(frame_shape)))
        self.writer: FrameFileWriter | None = None
        self.paths: list[str] = []  # videos of the open shard
        self.first_video = first_video
        # finished videos waiting for their turn: record, and frames (None: in a part of an earlier run)
        self.ready: dict[int, tuple[dict, _Waiting | None]] = {}
        self.direct: tuple[str, int] | None = None  # (path, first frame) of the video in the shard
        self.waiting: dict[str, _Waiting] = {}  # videos being decoded ahead of their turn
        self.held = 0  # bytes of frames held in memory
        self.committed: list[dict] = []  # file and frames of each shard committed by this run
        # Each placed video is counted, and its index rows and record serialised, while the decoders
        # work, so that the end of the run has little left to do; only the open shard's records are
        # kept, so that memory does not grow with the dataset.
        self.clip_frames = clip_frames
        self.index = index  # text file: index.csv rows, in order
        self.tally = tally
        self.record_texts: list[str] = []  # JSON of each video record of the open shard

    # frames of videos being decoded (the FrameReceiver of data_tools.workers)

    def frames(self, task: VideoTask, batch: np.ndarray) -> None:
        if self.direct is not None and self.direct[0] == task.rel_path:
            self.writer.write(batch)
            return
        stream = self.waiting.get(task.rel_path)
        if stream is None:
            if self.index_of[task.rel_path] == self.next_video:
                self.direct = (task.rel_path, self._open_shard().count)
                self.writer.write(batch)
                return
            stream = self.waiting[task.rel_path] = _Waiting(self.parts / f"{task.key}.npy", self.frame_shape)
        if stream.part is None and self.held + batch.nbytes > HOLD_BYTES:
            self.held -= stream.held_bytes
            stream.spill()
        stream.write(batch)
        if stream.part is None:
            self.held += batch.nbytes

    def discard(self, task: VideoTask) -> None:
        if self.direct is not None and self.direct[0] == task.rel_path:
            self.writer.truncate(self.direct[1])
            self.direct = None
        elif task.rel_path in self.waiting:
            stream = self.waiting.pop(task.rel_path)
            self.held -= stream.held_bytes
            stream.abort()

    # records

    def finish(self, record: dict) -> None:
        """Place a finished video: in the open shard if it is its turn, else with those waiting."""
        path, i = record["path"], self.index_of[record["path"]]
        if self.direct is not None and self.direct[0] == path:
            start, self.direct = self.direct[1], None
            self._check(record, self.writer.count - start)
            self._append(record, start)
        else:
            stream = self.waiting.pop(path, None)
            self._check(record, 0 if stream is None else stream.count)
            if stream is not None and stream.part is not None:
                stream.part.commit()
                atomic_write_json(self.parts / f"{part_key(path)}.json", record, durable=False, indent=None)
            self.ready[i] = (record, stream)
        self.drain()
        if self.writer is not None and self.writer.unsynced_bytes:
            self.writer.sync()  # flushed as the run goes, so that no commit has much left to flush

    @staticmethod
    def _check(record: dict, received: int) -> None:
        if received != record["frames"]:
            raise RuntimeError(f"{record['path']}: {received} frames received, "
                               f"its record says {record['frames']}")

    def _open_shard(self) -> FrameFileWriter:
        if self.writer is None:
            self.writer = FrameFileWriter(self.shards / f"shard-{self.shard_index:05d}.npy", self.frame_shape)
            self.paths, self.first_video = [], self.next_video
        return self.writer

    def drain(self) -> None:
        """Move waiting videos whose turn has come into the shard."""
        while self.next_video in self.ready:
            record, stream = self.ready.pop(self.next_video)
            writer = self._open_shard()
            start = writer.count
            if record["status"] == "ok" and record["frames"] > 0:
                if stream is None:  # a part left by an interrupted run
                    copied = writer.append_npy(self.parts / f"{part_key(record['path'])}.npy")
                else:
                    copied = stream.copy_to(writer)
                    self.held -= stream.held_bytes
                if copied != record["frames"]:
                    raise RuntimeError(f"part of {record['path']} holds {copied} frames, "
                                       f"its record {record['frames']}")
            self._append(record, start)

    def _append(self, record: dict, start: int) -> None:
        placed = dict(record, shard_offset=start)
        self.paths.append(record["path"])
        self.record_texts.append(json.dumps(placed, sort_keys=True))
        self.index.write(_video_index_rows(placed, self.shard_index, self.clip_frames))
        self.tally.count_video(placed)
        self.next_video += 1
        if self.writer.count >= self.shard_frames or self.next_video == len(self.videos):
            self._commit()

    def _commit(self) -> None:
        self.writer.commit()
        shard = {"index": self.shard_index, "file": f"shard-{self.shard_index:05d}.npy",
                 "first_video": self.first_video, "frames": self.writer.count}
        # json.dumps(shard with its "videos", sort_keys=True), from the records serialised as they
        # were placed ("videos" sorts after the other keys)
        head = json.dumps(shard, sort_keys=True)
        text = f'{head[:-1]}, "videos": [{", ".join(self.record_texts)}]}}\n'
        atomic_write_bytes(self.shards / f"shard-{self.shard_index:05d}.json", text.encode())
        for path in self.paths:
            key = part_key(path)
            (self.parts / f"{key}.npy").unlink(missing_ok=True)
            (self.parts / f"{key}.json").unlink(missing_ok=True)
        self.committed.append({"file": shard["file"], "frames": shard["frames"]})
        self.tally.frames_stored += shard["frames"]
        self.writer, self.paths, self.record_texts = None, [], []
        self.shard_index += 1

    def abort(self) -> None:
        for stream in self.waiting.values():
            stream.abort()
        if self.writer is not None:
            self.writer.abort()


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold `out` for this run, so that a second `prepare` into it stops at once rather than delete
    the first one's temporaries under it. A POSIX record lock on `out/.lock`: the kernel drops it
    when this process ends, however it ends, and forked workers do not inherit it. (No lock where
    there is no fcntl, i.e. on Windows.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder this process cannot write (a read-only mount): no run can write
        yield  # into it either, and a finished dataset is still recognised as such
        return
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise PrepareError(f"{out} is being written by another `vidgan prepare`; wait for it "
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


INDEX_HEADER = "path,label,start,shard,offset,timestamps\n"


def _video_index_rows(video: dict, shard_index: int, frames: int) -> str:
    """The index.csv rows of one placed video record: one per clip."""
    buf = io.StringIO()
    rows = csv.writer(buf, lineterminator="\n")
    for start, offset in video["clips"]:
        times = video["times"][offset : offset + frames]
        rows.writerow([video["path"], video["label"], start, shard_index, video["shard_offset"] + offset,
                       " ".join(f"{t:.6f}" for t in times)])
    return buf.getvalue()


def prepare(src: Path, out: Path | None = None, options: PrepareOptions | None = None,
            overwrite: bool = False, progress: bool = True, log=print) -> Summary:
    """Run `vidgan prepare`; see the module docstring for the output and the README for the options."""
    options = options or PrepareOptions()
    src = Path(src)
    if not src.is_dir():
        raise PrepareError(f"source folder not found: {src}")
    out = Path(out) if out is not None else default_out(src, options)
    found = discover(src, options.split_file)
    if not found.videos:  # nothing to prepare: say why, and write nothing
        if found.excluded:
            why = "; ".join(f"{path}: {reason}" for path, reason in found.excluded[:3])
            more = f" and {len(found.excluded) - 3} more" if len(found.excluded) > 3 else ""
            raise PrepareError(f"no video to prepare under {src}: {why}{more}")
        raise PrepareError(f"no video found under {src}: of its {found.files_seen} file(s), none is a "
                           "video by its extension or first bytes")
    fingerprint = hashlib.sha256(json.dumps({
        "format": FORMAT, "options": options.dataset_options(), "classes": found.classes,
        "videos": [[v.rel_path, v.label, v.size] for v in found.videos],
    }, sort_keys=True).encode()).hexdigest()

    meta_path, work = out / "meta.json", out / ".work"
    shards_dir, parts = out / "shards", out / ".work" / "parts"
    if out.exists():
        if not out.is_dir():
            raise PrepareError(f"--out {out} exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
        if foreign and not overwrite:
            raise PrepareError(f"--out {out} holds files vidgan did not write ({', '.join(foreign[:3])}); "
                               "choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    frame_shape = (options.size, options.size, 3)
    with _exclusive(out):
        start_over = overwrite
        if meta_path.exists():
            meta = _load_json(meta_path)
            if meta.get("fingerprint") == fingerprint and not overwrite:
                try:
                    check_shards(out, meta["shards"], frame_shape)
                except (OSError, ValueError) as e:  # finished once, damaged since: made again
                    log(f"{e}: {out} was finished once, and is made anew")
                    start_over = True
                else:
                    summary = Summary(out=out, already_done=True)
                    for shard in meta["shards"]:  # one at a time: a large dataset's records are many
                        summary.count_shard(_load_json(shards_dir / f"{shard['file'][:-4]}.json"))
                    summary.skipped = sorted(summary.skipped + found.excluded)
                    shutil.rmtree(work, ignore_errors=True)  # left by a run killed just after its metadata
                    return summary
            elif not overwrite:
                raise PrepareError(f"{out} holds a dataset prepared from other videos or options; "
                                   "choose another --out or pass --overwrite to replace it")
        plan_path = work / "plan.json"
        plan = _load_json(plan_path) if plan_path.exists() and not start_over else None
        if plan is not None and plan.get("fingerprint") != fingerprint and not overwrite:
            raise PrepareError(f"{out} holds an interrupted run over other videos or options; "
                               "choose another --out or pass --overwrite to start over")
        versions = _versions()
        if plan is not None and plan.get("versions") != versions and not overwrite:
            # Its frames came from another decoder or converter: resuming would mix the two.
            changed = _changed_versions(plan.get("versions"), versions)
            log(f"{out}: the interrupted run decoded with {changed}; starting over, so that every "
                "frame comes from the same decoder")
            start_over = True
        if start_over and out.exists():
            for target in out.iterdir():
                if target.name == ".lock":  # held by this run: a new file would be another lock
                    continue
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        parts.mkdir(parents=True, exist_ok=True)
        shards_dir.mkdir(parents=True, exist_ok=True)
        _remove_temporaries(out, shards_dir, parts, work)
        atomic_write_json(plan_path, {"fingerprint": fingerprint, "options": options.dataset_options(),
                                      "versions": versions})

        summary = Summary(out=out)  # counts each video as it is placed
        # rows written as videos are placed
        index = AtomicFile(out / "index.csv", "w", encoding="utf-8", newline="", buffering=2**20)
        try:
            index.write(INDEX_HEADER)
            committed, covered = _count_committed(shards_dir, summary, index, options.frames)
            assembler = _ShardAssembler(out, parts, found.videos, covered, len(committed), frame_shape,
                                        options.shard_mb * 2**20, options.frames, index, summary)
            tasks = _tasks_left(src, found.videos, covered, parts, assembler, options)
            workers = min(options.workers or usable_cores(), max(1, len(tasks)))
            tasks = _dispatch_order(tasks, [found.videos[assembler.index_of[t.rel_path]].size for t in tasks],
                                    workers)
            started = time.perf_counter()
            decoded = _decode(tasks, workers, assembler, len(found.videos), progress)
        except BaseException:
            index.abort()
            raise

        shards = committed + assembler.committed
        summary.skipped = sorted(summary.skipped + found.excluded)
        summary.frames_decoded, summary.seconds = decoded, time.perf_counter() - started
        summary.workers = workers if tasks else 0
        index.commit()
        atomic_write_json(out / "skipped.json",
                          [{"path": p, "reason": r} for p, r in sorted(summary.skipped)])
        atomic_write_json(meta_path, {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "source": str(src.resolve()),
            "options": options.dataset_options(),
            "clip_shape": [options.frames, options.size, options.size, 3],
            "classes": found.classes,
            "counts": {"videos": summary.videos, "read": summary.read, "too_short": summary.too_short,
                       "skipped": len(summary.skipped), "clips": summary.clips,
                       "frames_stored": summary.frames_stored},
            "shards": shards,
            "versions": versions,
        })
        shutil.rmtree(work, ignore_errors=True)
        return summary


def _count_committed(shards_dir: Path, summary: Summary, index: AtomicFile,
                     clip_frames: int) -> tuple[list[dict], int]:
    """Count and index the shards an interrupted run committed, one at a time (a prefix of the
    sorted videos); returns the file and frames of each, and how many videos they hold."""
    committed: list[dict] = []
    covered = 0
    while (path := shards_dir / f"shard-{len(committed):05d}.json").exists():
        shard = _load_json(path)
        summary.count_shard(shard)
        for video in shard["videos"]:
            index.write(_video_index_rows(video, shard["index"], clip_frames))
        committed.append({"file": shard["file"], "frames": shard["frames"]})
        covered = shard["first_video"] + len(shard["videos"])
    return committed, covered


def _tasks_left(src: Path, videos: list, covered: int, parts: Path, assembler: _ShardAssembler,
                options: PrepareOptions) -> list[VideoTask]:
    """The videos after the committed shards still to decode, in sorted order. Those an interrupted
    run finished (a record, and their frames in a part file) go to the assembler instead."""
    tasks: list[VideoTask] = []
    for i in range(covered, len(videos)):
        v = videos[i]
        key = part_key(v.rel_path)
        record_path = parts / f"{key}.json"
        if record_path.exists():  # finished by an interrupted run, waiting for its turn
            record = _load_json(record_path)
            if record["status"] != "ok" or record["frames"] == 0 or (parts / f"{key}.npy").exists():
                assembler.ready[i] = (record, None)
                continue
        tasks.append(VideoTask(
            source=str((src / v.rel_path).absolute()), rel_path=v.rel_path, label=v.label,
            frames=options.frames, stride=options.clip_stride, size=options.size,
            fps=None if options.fps is None else str(options.fps), max_clips=options.max_clips,
            backend=options.backend))
    return tasks


def _decode(tasks: list[VideoTask], workers: int, assembler: _ShardAssembler, total: int,
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
            decoded += record["decoded_frames"]
            if record["status"] != "ok":
                bar.write(f"skipped {record['path']}: {record['reason']}")
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
