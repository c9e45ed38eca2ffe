"""Decode videos in worker processes that stream their frames back to this process, the only writer.

A worker is one process with one decoding thread, fed one video at a time (and one queued) over its
own pipe. The frames of complete clips come back in batches of about 512 KiB through a few buffers of
memory that both processes map, so the pipe carries only short messages and no frame is copied in
transit. The caller's receiver decides where the frames go, so that a video which is next in the
dataset's order is written straight from those buffers into its shard, and no worker writes to the
disk.

A native crash (a segfault in FFmpeg or decord on a hostile file) kills only its worker. The video it
was decoding is known exactly: its frames so far are dropped and it gets a second try in a fresh
worker; a second crash convicts the file, which is recorded as skipped with the reason.
"""

from __future__ import annotations

import importlib
import mmap
import multiprocessing
import pickle
import sys
import threading
import traceback
from collections import deque
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from typing import Iterator, Protocol

import numpy as np

from data_tools.job import VideoTask, record_crash, run_task, worker_init
from data_tools.layout import VideoRecord

BATCH_BYTES = 2**19  # frames travel in batches of at most about this many bytes
BATCH_BUFFERS = 3  # per worker: it waits for the main process only when all three are unwritten
MAX_TRIES = 2  # a video whose decoder kills its worker this many times is skipped
PARENT_CHECK_SECONDS = 0.5  # a worker waiting for a buffer looks this often whether the main process lives
_FRAMES_TAG = b"F"  # a full batch's message: this byte and its frame count (no pickle starts with it)


class FrameReceiver(Protocol):
    """The main process's side: where the frames of each task go."""

    def frames(self, task: VideoTask, batch: np.ndarray) -> None:
        """The next frames of `task`, `[n, S, S, 3]` uint8 (valid only during the call)."""

    def discard(self, task: VideoTask) -> None:
        """Drop every frame received for `task` so far (it is being decoded again)."""


_DECODERS = ["data_tools.backends.pyav", "data_tools.backends.decord_backend"]


def pool_context():
    """`fork` where it is safe (a single-threaded parent on Linux): workers then start in
    milliseconds with the decoders already imported. Otherwise `forkserver` (one fresh interpreter
    that imports the decoders once, then forks the workers) or, where that does not exist, `spawn`."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        for name in _DECODERS:  # imported here once, not in every worker
            importlib.import_module(name)
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["data_tools.workers", *_DECODERS])
        return context
    return multiprocessing.get_context("spawn")


class _BatchBuffers:
    """A worker's outgoing frame batches: `count` buffers of `buffer_bytes` in memory that the worker
    and the main process both map, used in turn. The worker takes the next one (waiting while all
    are with the main process), fills it and says how many frames it holds; the main process writes
    them out and gives the buffer back. Under fork the memory is an anonymous shared mapping that
    the worker inherits; otherwise a named shared-memory block, unlinked once the worker has opened it."""

    def __init__(self, context, count: int, buffer_bytes: int):
        self.count, self.buffer_bytes = count, buffer_bytes
        self.free = context.Semaphore(count)  # buffers the worker may fill
        self.turn = 0  # the buffer the next batch uses (each process counts its own)
        self.held: int | None = None  # (worker) the buffer taken and not sent yet
        self.views: dict[tuple, np.ndarray] = {}  # (worker) each buffer as frames of a shape
        self.named: shared_memory.SharedMemory | None = None
        self.mapped: mmap.mmap | None = None
        self.unlinked = False
        if context.get_start_method() == "fork":
            self.mapped = mmap.mmap(-1, count * buffer_bytes)
        else:
            self.named = shared_memory.SharedMemory(create=True, size=count * buffer_bytes)

    def _view(self, index: int, frames: int, frame_shape: tuple[int, ...]) -> np.ndarray:
        memory = self.mapped if self.mapped is not None else self.named.buf
        return np.ndarray((frames, *frame_shape), np.uint8, memory, index * self.buffer_bytes)

    def take(self, frame_shape: tuple[int, ...]) -> np.ndarray:
        """(worker) The buffer to fill next, `[B, S, S, 3]` with as many whole frames as it holds;
        the one already taken while it is not sent. Raises EOFError when the main process dies while
        holding them all: it will give none back."""
        if self.held is None:
            while not self.free.acquire(timeout=PARENT_CHECK_SECONDS):
                parent = multiprocessing.parent_process()
                if parent is not None and not parent.is_alive():
                    raise EOFError("the main process has gone")
            self.held, self.turn = self.turn, (self.turn + 1) % self.count
        # Made once per buffer and frame shape: between batches of decoding, numpy's calls run cold
        # (about 35 µs a batch, against 10 for the lookup).
        view = self.views.get((self.held, frame_shape))
        if view is None:
            view = self.views[self.held, frame_shape] = self._view(
                self.held, self.buffer_bytes // int(np.prod(frame_shape)), frame_shape)
        return view

    def sent(self) -> None:
        """(worker) The buffer taken is the main process's now."""
        self.held = None

    def received(self, frames: int, frame_shape: tuple[int, ...]) -> np.ndarray:
        """(main) The next batch sent, `[frames, S, S, 3]`; `give_back()` once it is written, with
        no view of it left."""
        index, self.turn = self.turn, (self.turn + 1) % self.count
        return self._view(index, frames, frame_shape)

    def give_back(self) -> None:
        self.free.release()

    def unlink(self) -> None:
        """(main) Remove the block's name, once the worker has it open (or is gone)."""
        if self.named is not None and not self.unlinked:
            self.unlinked = True
            self.named.unlink()

    def close(self) -> None:
        self.unlink()
        try:
            if self.named is not None:
                self.named.close()
            if self.mapped is not None:
                self.mapped.close()
        except BufferError:  # a batch still viewed by an error's traceback: freed with it
            pass


class _FrameSender:
    """A worker's frame sink: fills the batch buffers and announces each full batch on the pipe; a
    video's last batch goes with its record."""

    def __init__(self, conn: Connection, buffers: _BatchBuffers, frame_shape: tuple[int, ...]):
        self.conn, self.buffers, self.frame_shape = conn, buffers, frame_shape
        self.batch = buffers.take(frame_shape)  # [B, S, S, 3]
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        self.batch[self.count] = frame
        self.count += 1
        if self.count == len(self.batch):
            # raw bytes, not a pickle: the commonest message, and each costs the decoder its time
            self.conn.send_bytes(_FRAMES_TAG + self.count.to_bytes(4, "little"))
            self._next_buffer()

    def finish(self, record: VideoRecord) -> None:
        """Send the video's record with the frames written since the last full batch."""
        self.conn.send(("done", record, self.count))
        if self.count:
            self._next_buffer()

    def _next_buffer(self) -> None:
        self.buffers.sent()
        self.batch, self.count = self.buffers.take(self.frame_shape), 0

    def discard(self) -> None:
        self.count = 0  # the buffer being filled is reused
        self.conn.send(("discard",))


def _worker_main(conn: Connection, parent_end: Connection, buffers: _BatchBuffers) -> None:
    """A worker's life: tasks in, frames and records out, until told to stop or the pipe closes."""
    parent_end.close()  # a forked copy of the main process's end: the pipe closes when the main dies
    worker_init()
    try:
        conn.send(("ready",))
        sender = None
        while True:
            task = conn.recv()
            if task is None:
                return
            shape = (task.size, task.size, 3)
            if sender is None or sender.frame_shape != shape:
                sender = _FrameSender(conn, buffers, shape)
            try:
                record = run_task(task, sender)
            except (ConnectionError, EOFError):  # the main process has gone
                raise
            except Exception:  # a bug, not a bad file (those come back as records): stop the run
                conn.send(("error", traceback.format_exc()))
                return
            sender.finish(record)
    except (EOFError, ConnectionError):  # the main process has gone: nobody is left to tell
        return


class _Worker:
    """The main process's handle on one worker: its pipe and the tasks sent to it, oldest first."""

    def __init__(self, context, batch_bytes: int):
        self.conn, child = context.Pipe()
        self.buffers = _BatchBuffers(context, BATCH_BUFFERS, batch_bytes)
        self.process = context.Process(target=_worker_main, args=(child, self.conn, self.buffers),
                                       daemon=True)
        self.process.start()
        child.close()
        self.tasks: deque[VideoTask] = deque()
        self.started = False  # said "ready": a death from now on is its decoder's
        self.told_to_stop = False

    def top_up(self, pending: deque, depth: int = 2) -> None:
        """Keep a second task queued behind the one being decoded, so the worker never waits. With
        no task left to give, tell it to stop after its last, so that it exits while the main
        process finishes the dataset."""
        while pending and len(self.tasks) < depth:
            self.tasks.append(pending.popleft())
            self.conn.send(self.tasks[-1])
        if not pending and not self.told_to_stop:
            self.conn.send(None)
            self.told_to_stop = True

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        elif not self.told_to_stop:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.conn.close()
        self.process.join()
        self.buffers.close()


def run_tasks(tasks: list[VideoTask], workers: int, receiver: FrameReceiver) -> Iterator[VideoRecord]:
    """Decode every task in `workers` processes, in the given order of dispatch; frames go to
    `receiver`. Yields each task's record, in completion order, once all its frames are delivered."""
    pending = deque(tasks)
    if not pending:
        return
    context = pool_context()
    crashes: dict[str, int] = {}
    batch_bytes = max(BATCH_BYTES, *(task.size**2 * 3 for task in pending))  # a frame at least
    pool: list[_Worker] = []
    clean = False
    try:
        for _ in range(min(workers, len(pending))):  # each decodes while the next one is forked
            pool.append(_Worker(context, batch_bytes))
            pool[-1].top_up(pending, depth=1)
        for worker in pool:  # then a second task each, so that no worker waits between videos
            worker.top_up(pending)
        while any(worker.tasks for worker in pool):
            by_conn = {worker.conn: worker for worker in pool if worker.tasks}
            for conn in wait(list(by_conn)):
                worker = by_conn[conn]
                task = worker.tasks[0]
                message = _receive(conn)
                if message is None and not worker.started:
                    worker.process.join()
                    raise RuntimeError(
                        f"a decode worker process could not start (exit code {worker.process.exitcode}; "
                        f"start method {context.get_start_method()}). Under 'spawn' and 'forkserver' the "
                        "script that calls prepare() needs an `if __name__ == \"__main__\":` guard.")
                if message is None:  # the worker died: its decoder crashed
                    pool.remove(worker)
                    yield from _after_crash(worker, pool, context, pending, crashes, receiver, batch_bytes)
                elif message[0] == "ready":
                    worker.started = True
                    worker.buffers.unlink()  # the worker has its shared memory open
                elif message[0] == "frames":
                    _deliver(worker, task, message[1], receiver)
                elif message[0] == "discard":
                    receiver.discard(task)
                elif message[0] == "error":
                    raise RuntimeError(f"decoding {task.rel_path} failed in its worker:\n{message[1]}")
                else:  # ("done", record, frames of its last batch)
                    if message[2]:
                        _deliver(worker, task, message[2], receiver)
                    worker.tasks.popleft()
                    worker.top_up(pending)
                    yield message[1]
        clean = True
    finally:
        for worker in pool:
            worker.stop(kill=not clean)


def _deliver(worker: _Worker, task: VideoTask, frames: int, receiver: FrameReceiver) -> None:
    """Hand the worker's next batch of `frames` frames to the receiver, then the buffer back."""
    batch = worker.buffers.received(frames, (task.size, task.size, 3))
    receiver.frames(task, batch)
    del batch
    worker.buffers.give_back()


def _receive(conn: Connection) -> tuple | None:
    """A worker's next message; None when the worker has died."""
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):
        return None
    if data[:1] == _FRAMES_TAG:
        return ("frames", int.from_bytes(data[1:], "little"))
    return pickle.loads(data)


def _after_crash(worker: _Worker, pool: list[_Worker], context, pending: deque,
                 crashes: dict[str, int], receiver: FrameReceiver, batch_bytes: int) -> Iterator[VideoRecord]:
    """Retry or convict the video that killed `worker`; its other task goes back in the queue."""
    worker.stop(kill=True)
    culprit, *innocent = worker.tasks
    receiver.discard(culprit)
    pending.extendleft(reversed(innocent))
    crashes[culprit.rel_path] = crashes.get(culprit.rel_path, 0) + 1
    if crashes[culprit.rel_path] < MAX_TRIES:
        pending.appendleft(culprit)
    else:
        yield record_crash(culprit)
    if pending:
        fresh = _Worker(context, batch_bytes)
        fresh.top_up(pending)
        pool.append(fresh)
