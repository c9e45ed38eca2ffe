"""Decode videos in worker processes that stream their frames back to this process, the only writer.

A worker is one process with one decoding thread, fed one video at a time (and one queued) over its
own pipe; the frames of complete clips come back over the same pipe in batches of about 1 MiB. The
caller's receiver decides where they go, so that a video which is next in the dataset's order is
written straight into its shard, once, and no worker writes to the disk.

A native crash (a segfault in FFmpeg or decord on a hostile file) kills only its worker. The video it
was decoding is known exactly: its frames so far are dropped and it gets a second try in a fresh
worker; a second crash convicts the file, which is recorded as skipped with the reason.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Iterator, Protocol

import numpy as np

from data_tools.job import VideoTask, record_crash, run_task, worker_init

BATCH_BYTES = 2**20  # frames travel in batches of at most about this many bytes
PIPE_BUFFER_BYTES = 4 * 2**20  # asked of the kernel for each pipe; it may grant less
MAX_TRIES = 2  # a video whose decoder kills its worker this many times is skipped


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


def _widen_pipe(conn: Connection) -> int:
    """Ask for a socket buffer that holds several batches, so that a worker's send is one copy into
    the kernel rather than a wait for the main process to read (a 1 MiB send through Linux's default
    buffer costs about 5× the copy). Returns the batch size in bytes that the granted buffer fits."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:  # a duplicate: closing it keeps conn
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BUFFER_BYTES)
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    except (OSError, ValueError, AttributeError):  # not a socket (Windows pipes): keep the default
        return BATCH_BYTES
    return max(64 * 2**10, min(BATCH_BYTES, granted // 4))


class _FrameSender:
    """A worker's frame sink: gathers frames into a batch and sends full batches down the pipe."""

    def __init__(self, conn: Connection, frame_shape: tuple[int, ...], batch_bytes: int):
        self.conn = conn
        count = max(1, batch_bytes // int(np.prod(frame_shape)))
        self.batch = np.empty((count, *frame_shape), np.uint8)  # [B, S, S, 3]
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        self.batch[self.count] = frame
        self.count += 1
        if self.count == len(self.batch):
            self.flush()

    def flush(self) -> None:
        if self.count:
            self.conn.send(("frames", self.count))
            self.conn.send_bytes(self.batch[: self.count].reshape(-1))  # 1-D: sent by its bytes
            self.count = 0

    def discard(self) -> None:
        self.count = 0
        self.conn.send(("discard",))


def _worker_main(conn: Connection, parent_end: Connection, batch_bytes: int) -> None:
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
            if sender is None or sender.batch.shape[1:] != shape:
                sender = _FrameSender(conn, shape, batch_bytes)
            try:
                record = run_task(task, sender)
                sender.flush()
            except ConnectionError:
                raise
            except Exception:  # a bug, not a bad file (those come back as records): stop the run
                conn.send(("error", traceback.format_exc()))
                return
            conn.send(("done", record))
    except (EOFError, ConnectionError):  # the main process has gone: nobody is left to tell
        return


class _Worker:
    """The main process's handle on one worker: its pipe and the tasks sent to it, oldest first."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        batch_bytes = _widen_pipe(child)
        self.process = context.Process(target=_worker_main, args=(child, self.conn, batch_bytes),
                                       daemon=True)
        self.process.start()
        child.close()
        self.tasks: deque[VideoTask] = deque()
        self.started = False  # said "ready": a death from now on is its decoder's
        self.told_to_stop = False

    def top_up(self, pending: deque) -> None:
        """Keep a second task queued behind the one being decoded, so the worker never waits. With
        no task left to give, tell it to stop after its last, so that it exits while the main
        process finishes the dataset."""
        while pending and len(self.tasks) < 2:
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


def run_tasks(tasks: list[VideoTask], workers: int, receiver: FrameReceiver) -> Iterator[dict]:
    """Decode every task in `workers` processes, in the given order of dispatch; frames go to
    `receiver`. Yields each task's record, in completion order, once all its frames are delivered."""
    pending = deque(tasks)
    if not pending:
        return
    context = pool_context()
    crashes: dict[str, int] = {}
    pool = [_Worker(context) for _ in range(min(workers, len(pending)))]
    inbox = _Inbox()
    clean = False
    try:
        for worker in pool:
            worker.top_up(pending)
        while any(worker.tasks for worker in pool):
            by_conn = {worker.conn: worker for worker in pool if worker.tasks}
            for conn in wait(list(by_conn)):
                worker = by_conn[conn]
                task = worker.tasks[0]
                message = inbox.receive(conn, task)
                if message is None and not worker.started:
                    worker.process.join()
                    raise RuntimeError(
                        f"a decode worker process could not start (exit code {worker.process.exitcode}; "
                        f"start method {context.get_start_method()}). Under 'spawn' and 'forkserver' the "
                        "script that calls prepare() needs an `if __name__ == \"__main__\":` guard.")
                if message is None:  # the worker died: its decoder crashed
                    pool.remove(worker)
                    yield from _after_crash(worker, pool, context, pending, crashes, receiver)
                elif message[0] == "ready":
                    worker.started = True
                elif message[0] == "frames":
                    receiver.frames(task, message[1])
                elif message[0] == "discard":
                    receiver.discard(task)
                elif message[0] == "error":
                    raise RuntimeError(f"decoding {task.rel_path} failed in its worker:\n{message[1]}")
                else:  # ("done", record)
                    worker.tasks.popleft()
                    worker.top_up(pending)
                    yield message[1]
        clean = True
    finally:
        for worker in pool:
            worker.stop(kill=not clean)


class _Inbox:
    """Reads one message from a worker; a batch of frames lands in one reused buffer."""

    def __init__(self):
        self.buffer = bytearray(BATCH_BYTES)

    def receive(self, conn: Connection, task: VideoTask) -> tuple | None:
        try:
            message = conn.recv()
            if message[0] != "frames":
                return message
            frame_shape = (task.size, task.size, 3)
            size = message[1] * int(np.prod(frame_shape))
            if len(self.buffer) < size:
                self.buffer = bytearray(size)
            _recv_bytes_into(conn, memoryview(self.buffer)[:size])
        except (EOFError, OSError):
            return None
        return "frames", np.frombuffer(self.buffer, np.uint8, size).reshape(message[1], *frame_shape)


def _recv_bytes_into(conn: Connection, view: memoryview) -> None:
    """`conn.recv_bytes_into`, but read by the kernel straight into `view` where the pipe is a file
    descriptor: multiprocessing gathers a message in a BytesIO first, two more copies of every frame
    in the process that has to keep up with all the workers."""
    if os.name != "posix":
        conn.recv_bytes_into(view)
        return
    fd = conn.fileno()
    header = _read_exactly(fd, memoryview(bytearray(4)))
    if int.from_bytes(header, "big", signed=True) != len(view):  # Connection's 4-byte length prefix
        raise RuntimeError("a worker sent a frame batch of an unexpected size")
    _read_exactly(fd, view)


def _read_exactly(fd: int, view: memoryview) -> memoryview:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError
        got += n
    return view


def _after_crash(worker: _Worker, pool: list[_Worker], context, pending: deque,
                 crashes: dict[str, int], receiver: FrameReceiver) -> Iterator[dict]:
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
        fresh = _Worker(context)
        fresh.top_up(pending)
        pool.append(fresh)
