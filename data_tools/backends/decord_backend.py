"""decord backend: decord decodes full-size RGB frames, numpy crops and area-resizes them.

decord's bundled FFmpeg applies the display rotation of MP4/MOV files but not of others, and reports
no pixel aspect ratio: both are read with PyAV (one frame) and the missing rotation applied here, so
that the two backends give the same frames. decord exists on x86_64 Linux and Windows
only; elsewhere `available()` is False and PyAV does all the work.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from data_tools.backends.base import TIMESTAMP_JUMP_SECONDS, DecodeError, ReadStats, SourceFrame
from data_tools.geometry import AreaResizer, normalise_rotation, square_crop


@functools.cache
def available() -> bool:
    """Whether decord is installed (checked without importing it: the import costs 0.3 s)."""
    import importlib.util

    return importlib.util.find_spec("decord") is not None


def _display_info(path: str) -> tuple[int, Fraction, bool, tuple[int, int], bool]:
    """Display rotation (degrees counter-clockwise), pixel aspect ratio, whether the container is of
    the MP4/MOV family (whose rotation decord applies), the stored (width, height), and whether the
    format's clock may jump (MPEG-TS), read with PyAV."""
    import av

    from data_tools.backends.pyav import shown_stream, stream_sar

    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = shown_stream(container)
            sar = stream_sar(stream)
            isobmff = "mp4" in container.format.name or "mov" in container.format.name
            jumpy = bool(container.format.flags & av.format.Flags.ts_discont.value)
            for frame in container.decode(stream):
                return normalise_rotation(frame.rotation), sar, isobmff, (frame.width, frame.height), jumpy
    except (av.error.FFmpegError, IndexError):
        pass
    return 0, Fraction(1), False, (0, 0), False


def _seconds(value: float) -> Fraction:
    return Fraction(float(value)).limit_denominator(1_000_000)


def iter_frames(path: str | Path, size: int, stats: ReadStats) -> Iterator[SourceFrame]:
    """Frames of `path` with decord's times; a frame is decoded only when its conversion is asked
    for, so frames after the last clip are never decoded."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg's log lines would tear the progress bar
    path = str(path)
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    except (decord.DECORDError, RuntimeError) as e:
        raise DecodeError(f"decord cannot open it ({str(e).splitlines()[0]})") from None
    count = len(reader)
    stats.declared_frames = count
    if count == 0:
        raise DecodeError("no video frames", definitive=True)
    times = reader.get_frame_timestamp(range(count))  # [count, 2] start and end, seconds
    rate = reader.get_avg_fps()
    nominal = _seconds(1 / rate) if rate and rate > 0 else Fraction(1, 25)
    rotation, sar, isobmff, stored, jumpy = _display_info(path)
    cursor = 0  # index of the frame the reader returns next
    resizer: AreaResizer | None = None
    decord_rotates = isobmff  # decided again on the first frame where its shape tells

    def convert(index: int) -> np.ndarray:
        nonlocal cursor, resizer, decord_rotates
        if index > cursor:
            reader.skip_frames(index - cursor)
        try:
            rgb = reader.next().asnumpy()  # [H, W, 3]
        except (decord.DECORDError, RuntimeError, StopIteration) as e:
            raise DecodeError(f"decord failed at frame {index} ({e})") from None
        cursor = index + 1
        if resizer is None and rotation in (90, 270) and stored[0] != stored[1]:
            decord_rotates = rgb.shape[:2] == (stored[0], stored[1])  # [H, W] = stored [W, H]
        if rotation and not decord_rotates:
            rgb = np.rot90(rgb, k=rotation // 90)
        if resizer is None:
            h, w = rgb.shape[:2]
            box_sar = 1 / sar if rotation in (90, 270) else sar
            resizer = AreaResizer(square_crop(w, h, box_sar), size)
        return resizer(rgb)

    restart_shift, previous = Fraction(0), None  # seconds added to keep one clock across restarts
    for index in range(count):
        start, end = _seconds(times[index, 0]) + restart_shift, _seconds(times[index, 1]) + restart_shift
        if previous is not None and (start < previous[0] or  # the clock restarts: play on (as PyAV)
                                     (jumpy and start - previous[1] > TIMESTAMP_JUMP_SECONDS)):
            shift = previous[1] - start if previous[1] > previous[0] else previous[0] + nominal - start
            restart_shift, start, end = restart_shift + shift, start + shift, end + shift
        previous = start, end
        stats.decoded_frames = index + 1
        yield SourceFrame(convert, index, start.numerator, Fraction(1, start.denominator),
                          duration=end - start if end > start else None)
