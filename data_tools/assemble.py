"""The shard assembler of `vidgan prepare`: decoded frames → shards, in the sorted order of the videos.

Shards are cut in that order as soon as they reach the run's shard size, so their contents do not
depend on the number of workers or on where an earlier run was interrupted. Each placed video's
index rows and record are written as it is placed, while the decoders work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_tools.atomic import AtomicFile, atomic_write_bytes, atomic_write_json
from data_tools.discover import VideoEntry
from data_tools.job import VideoTask
from data_tools.layout import Layout, ShardEntry, ShardRecords, VideoRecord, part_key, shard_name
from data_tools.storage import FrameFileWriter
from data_tools.summary import Summary


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


class ShardAssembler:
    """Writes the videos' frames into shards in the sorted order of the videos; commits each full
    shard. The video next in that order streams straight into the open shard, written once; a video
    that finishes ahead of its turn waits, in memory up to `hold_bytes` in all, else in a part file."""

    def __init__(self, folder: Layout, videos: list[VideoEntry], first_video: int, shard_index: int,
                 frame_shape: tuple[int, int, int], shard_bytes: int, hold_bytes: int, clip_frames: int,
                 index: AtomicFile, tally: Summary):
        self.folder = folder
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
        self.ready: dict[int, tuple[VideoRecord, _Waiting | None]] = {}
        self.direct: tuple[str, int] | None = None  # (path, first frame) of the video in the shard
        self.waiting: dict[str, _Waiting] = {}  # videos being decoded ahead of their turn
        self.hold_bytes = hold_bytes
        self.held = 0  # bytes of frames held in memory
        self.committed: list[ShardEntry] = []  # each shard committed by this run
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
            stream = self.waiting[task.rel_path] = _Waiting(self.folder.part_frames(task.key), self.frame_shape)
        if stream.part is None and self.held + batch.nbytes > self.hold_bytes:
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

    def finish(self, record: VideoRecord) -> None:
        """Place a finished video: in the open shard if it is its turn, else with those waiting."""
        path, i = record.path, self.index_of[record.path]
        if self.direct is not None and self.direct[0] == path:
            start, self.direct = self.direct[1], None
            self._check(record, self.writer.count - start)
            self._append(record, start)
        else:
            stream = self.waiting.pop(path, None)
            self._check(record, 0 if stream is None else stream.count)
            if stream is not None and stream.part is not None:
                stream.part.commit()
                atomic_write_json(self.folder.part_record(part_key(path)), record.to_json(), durable=False,
                                  indent=None)
            self.ready[i] = (record, stream)
        self.drain()
        if self.writer is not None and self.writer.unsynced_bytes:
            self.writer.sync()  # flushed as the run goes, so that no commit has much left to flush

    @staticmethod
    def _check(record: VideoRecord, received: int) -> None:
        if received != record.frames:
            raise RuntimeError(f"{record.path}: {received} frames received, its record says {record.frames}")

    def _open_shard(self) -> FrameFileWriter:
        if self.writer is None:
            self.writer = FrameFileWriter(self.folder.shard_frames(self.shard_index), self.frame_shape)
            self.paths, self.first_video = [], self.next_video
        return self.writer

    def drain(self) -> None:
        """Move waiting videos whose turn has come into the shard."""
        while self.next_video in self.ready:
            record, stream = self.ready.pop(self.next_video)
            writer = self._open_shard()
            start = writer.count
            if record.frames > 0:
                if stream is None:  # a part left by an interrupted run
                    copied = writer.append_npy(self.folder.part_frames(part_key(record.path)))
                else:
                    copied = stream.copy_to(writer)
                    self.held -= stream.held_bytes
                if copied != record.frames:
                    raise RuntimeError(f"part of {record.path} holds {copied} frames, its record {record.frames}")
            self._append(record, start)

    def _append(self, record: VideoRecord, start: int) -> None:
        placed = record.placed(start)
        self.paths.append(record.path)
        self.record_texts.append(json.dumps(placed.to_json(), sort_keys=True))
        self.index.write(placed.index_rows(self.shard_index, self.clip_frames))
        self.tally.count_video(placed)
        self.next_video += 1
        if self.writer.count >= self.shard_frames or self.next_video == len(self.videos):
            self._commit()

    def _commit(self) -> None:
        self.writer.commit()
        frames = self.writer.count
        text = ShardRecords.text(self.shard_index, self.first_video, frames, self.record_texts)
        atomic_write_bytes(self.folder.shard_records(self.shard_index), text.encode())
        for path in self.paths:
            key = part_key(path)
            self.folder.part_frames(key).unlink(missing_ok=True)
            self.folder.part_record(key).unlink(missing_ok=True)
        self.committed.append(ShardEntry(shard_name(self.shard_index, ".npy"), frames))
        self.tally.frames_stored += frames
        self.writer, self.paths, self.record_texts = None, [], []
        self.shard_index += 1

    def abort(self) -> None:
        for stream in self.waiting.values():
            stream.abort()
        if self.writer is not None:
            self.writer.abort()

