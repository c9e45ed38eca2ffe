"""decord backend: decord decodes full-size RGB frames, numpy crops and area-resizes them.

decord's bundled FFmpeg applies the display rotation of MP4/MOV files but not of others, and reports
no pixel aspect ratio: both are read with PyAV (one frame) and the missing rotation applied here, so
that the two backends give the same frames. Files that decord misreads are declined with the reason
(MPEG-TS and MPEG-PS files, MP4s whose edit list drops frames), and so are the malformed frames it
returns at a few widths. decord exists on x86_64 Linux and Windows only; elsewhere `available()` is
False and PyAV does all the work.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
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


# Containers decord 0.6 misreads: from an MPEG transport or program stream (.ts, .m2ts, .mpg, .vob)
# it returns one frame and stops, or starts a group of pictures late and repeats the last frame in
# place of the missing ones; it gives program streams no timestamps at all.
MISREAD_FORMATS = {"mpegts": "MPEG-TS", "mpegtsraw": "MPEG-TS", "mpeg": "MPEG-PS"}


@dataclass
class _FileFacts:
    """What decord does not tell, read with PyAV (defaults where PyAV cannot read the file)."""

    rotation: int = 0  # display rotation, degrees counter-clockwise
    sar: Fraction = Fraction(1)  # pixel aspect ratio
    isobmff: bool = False  # an MP4/MOV, whose rotation decord applies itself
    stored: tuple[int, int] = (0, 0)  # (width, height) as stored
    jumpy: bool = False  # the format's clock may jump
    format_name: str = ""
    dropped: int = 0  # frames an MP4/MOV edit list drops (a file cut without re-encoding)


def _file_facts(path: str) -> _FileFacts:
    import av

    from data_tools.backends.pyav import shown_stream, stream_sar

    facts = _FileFacts()
    try:
        with av.open(path, metadata_errors="ignore") as container:
            facts.format_name = container.format.name
            facts.isobmff = "mp4" in facts.format_name or "mov" in facts.format_name
            facts.jumpy = bool(container.format.flags & av.format.Flags.ts_discont.value)
            stream = shown_stream(container)
            facts.sar = stream_sar(stream)
            for frame in container.decode(stream):
                facts.rotation, facts.stored = normalise_rotation(frame.rotation), (frame.width, frame.height)
                break
        if facts.isobmff:  # the only family with edit lists
            with av.open(path, metadata_errors="ignore") as container:
                stream = shown_stream(container)
                facts.dropped = sum(packet.is_discard for packet in container.demux(stream))
    except (av.error.FFmpegError, IndexError):
        pass
    return facts


def _seconds(value: float) -> Fraction:
    return Fraction(float(value)).limit_denominator(1_000_000)


def iter_frames(path: str | Path, size: int, stats: ReadStats) -> Iterator[SourceFrame]:
    """Frames of `path` with decord's times; a frame is decoded only when its conversion is asked
    for, so frames after the last clip are never decoded."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg's log lines would tear the progress bar
    path = str(path)
    facts = _file_facts(path)
    if facts.format_name in MISREAD_FORMATS:
        kind = MISREAD_FORMATS[facts.format_name]
        raise DecodeError(f"decord cannot read {kind} files (it loses frames or shows them out of place); "
                          "--backend pyav or auto reads them")
    if facts.dropped:
        raise DecodeError(f"decord cannot read an edit list that drops frames (here {facts.dropped}, as in a "
                          "file cut without re-encoding): it shifts the frames shown and repeats the last "
                          "in place of the dropped; --backend pyav or auto reads it")
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
    cursor = 0  # index of the frame the reader returns next
    resizer: AreaResizer | None = None
    decord_rotates = facts.isobmff  # decided again on the first frame where its shape tells

    def convert(index: int) -> np.ndarray:
        nonlocal cursor, resizer, decord_rotates
        if index > cursor:
            reader.skip_frames(index - cursor)
        try:
            rgb = reader.next().asnumpy()  # [H, W, 3]
        except (decord.DECORDError, RuntimeError, StopIteration) as e:
            raise DecodeError(f"decord failed at frame {index} ({e})") from None
        cursor = index + 1
        if rgb.ndim != 3 or rgb.shape[2] != 3:  # decord 0.6 does so at some widths (12, 16, 24, 48, 72)
            raise DecodeError(f"decord returned frames of shape {tuple(rgb.shape)}, not [H, W, 3]; "
                              "--backend pyav or auto reads it")
        width, height = facts.stored
        if resizer is None and facts.rotation in (90, 270) and width != height:
            decord_rotates = rgb.shape[:2] == (width, height)  # [H, W] = stored [W, H]
        if facts.rotation and not decord_rotates:
            rgb = np.rot90(rgb, k=facts.rotation // 90)
        if resizer is None:
            h, w = rgb.shape[:2]
            box_sar = 1 / facts.sar if facts.rotation in (90, 270) else facts.sar
            resizer = AreaResizer(square_crop(w, h, box_sar), size)
        return resizer(rgb)

    # decord gives some files no timestamps (H.264 with B-frames in an AVI: huge negative numbers);
    # frames are then evenly timed at the nominal rate. Times count from the first frame, as PyAV's.
    timed = bool(np.isfinite(times).all() and np.abs(times).max() < 1e9)
    origin = _seconds(times[0, 0]) if timed else Fraction(0)
    restart_shift, previous = Fraction(0), None  # seconds added to keep one clock across restarts
    for index in range(count):
        if timed:
            start = _seconds(times[index, 0]) - origin + restart_shift
            end = _seconds(times[index, 1]) - origin + restart_shift
        else:
            start, end = index * nominal, (index + 1) * nominal
        if previous is not None and (start < previous[0] or  # the clock restarts: play on (as PyAV)
                                     (facts.jumpy and start - previous[1] > TIMESTAMP_JUMP_SECONDS)):
            shift = previous[1] - start if previous[1] > previous[0] else previous[0] + nominal - start
            restart_shift, start, end = restart_shift + shift, start + shift, end + shift
        previous = start, end
        stats.decoded_frames = index + 1
        yield SourceFrame(convert, index, start.numerator, Fraction(1, start.denominator),
                          duration=end - start if end > start else None)
