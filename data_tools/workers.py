"""Run video tasks in worker processes so that a decoder that crashes takes only its video down.

A native crash (a segfault in FFmpeg or decord on a hostile file) kills a worker and breaks the pool.
The tasks that were running then are retried one at a time in a fresh process; the one that kills
its process again is recorded as skipped with the reason, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Iterator

from data_tools.job import VideoTask, record_crash, run_task, worker_init


def pool_context():
    """`fork` where it is safe (a single-threaded parent on Linux): workers then start in
    milliseconds with the decoders already imported. Otherwise `forkserver` (one fresh interpreter
    that imports the decoders once, then forks the workers) or, where that does not exist, `spawn`."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["data_tools.job"])
        return context
    return multiprocessing.get_context("spawn")


def _run_pool(tasks: deque, workers: int, suspects: list) -> Iterator[dict]:
    """Records of `tasks` (consumed from the left); on a crash, the tasks in flight go to `suspects`."""
    executor = ProcessPoolExecutor(workers, mp_context=pool_context(), initializer=worker_init)
    in_flight = {}
    try:
        while tasks or in_flight:
            while tasks and len(in_flight) < 2 * workers:
                task = tasks.popleft()
                in_flight[executor.submit(run_task, task)] = task
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task = in_flight.pop(future)
                try:
                    record = future.result()
                except BrokenProcessPool:
                    suspects.append(task)
                    continue
                yield record
    except BrokenProcessPool:
        pass
    finally:
        suspects.extend(in_flight.values())
        # Every record is in: the workers may exit in the background while the caller moves on.
        executor.shutdown(wait=not suspects and bool(in_flight), cancel_futures=True)


def run_tasks(tasks: list[VideoTask], workers: int) -> Iterator[dict]:
    """The record of every task, in completion order, with crashed decoders isolated."""
    queue = deque(tasks)
    while queue:
        suspects: list[VideoTask] = []
        yield from _run_pool(queue, workers, suspects)
        for task in suspects:  # alone in a fresh process: a second crash convicts the file
            lone: list[VideoTask] = []
            yield from _run_pool(deque([task]), 1, lone)
            if lone:
                yield record_crash(task)
