"""Turn one video into output frames and clips, streaming: frames no clip needs are never converted,
and decoding stops once the last wanted clip is complete, or once the frames left are too few to
complete another."""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import numpy as np

from data_tools.backends.base import DecodeError, ReadStats, SourceFrame
from data_tools.sampling import ClipPlan, FpsResampler


@dataclass
class Extracted:
    """What one video gave: output frames seen, the clips, and per stored frame its source time."""

    output_frames: int = 0  # length of the video's output frame sequence (as far as it was read)
    decoded_frames: int = 0
    skipped_frames: int = 0  # frames after the last clip, counted but not decoded
    clip_starts: list[int] = field(default_factory=list)  # first output-frame index of each clip
    clip_offsets: list[int] = field(default_factory=list)  # index of that frame among stored frames
    stored_times: list[float] = field(default_factory=list)  # seconds, one per stored frame
    stopped_early: bool = False  # all wanted clips were complete before the end of the video


def _resampled(frames: Iterable[SourceFrame], fps: Fraction) -> Iterator[tuple[int, SourceFrame]]:
    """(output index, source frame) pairs in order, resampled to `fps` by timestamps."""
    resampler = FpsResampler(fps)
    previous: SourceFrame | None = None
    for frame in frames:
        if previous is not None:
            if frame.time <= previous.time:
                continue  # not after the frame on screen: never shown, drop it
            for k in resampler.assign(previous.time, frame.time):
                yield k, previous
        previous = frame
    if previous is not None:
        # A last frame of unknown duration is shown for an instant: at its own time and no later.
        shown_for = previous.duration if previous.duration else Fraction(1, 10**9)
        for k in resampler.assign(previous.time, previous.time + shown_for):
            yield k, previous


def extract(
    frames: Iterable[SourceFrame],
    plan: ClipPlan,
    fps: Fraction | None,
    write: Callable[[np.ndarray], None],
    stats: ReadStats,
) -> Extracted:
    """Feed the frames of complete clips to `write` (each `[S, S, 3]` uint8, in order); plan the clips.

    A needed frame is converted at once (while its pixels are still in the CPU cache) when the frame
    count the container declares says its clip will be complete; otherwise it waits, unconverted,
    until a clip that holds it is complete, so that the frames of a video's unfinished last clip cost
    no conversion. Either way only frames of complete clips are written, and at most T + K frames
    wait at any time. Once the declared count says no clip can follow, the backend counts the frames
    left (without decoding them): when they are too few for another clip, reading stops there.
    """
    result = Extracted()
    stored_ks: list[int] = []
    # needed output frames in no complete clip yet: (k, seconds, rgb) once converted, else
    # (k, seconds, source frame); a converted frame lets go of its decoded picture at once, so
    # the decoder can reuse the buffer
    waiting: deque[tuple] = deque()
    last_source: SourceFrame | None = None
    last_rgb: np.ndarray | None = None
    declared = expected = None  # known once the backend has opened the video
    clip_end = plan.next_clip_end(0)  # output frames at which the next clip is complete
    count = 0  # output frames so far
    every_frame_needed = plan.stride <= plan.frames  # clips leave no gaps

    def rgb_of(source: SourceFrame) -> np.ndarray:
        nonlocal last_source, last_rgb
        if source is not last_source:  # an upsampled source frame is converted once
            last_source, last_rgb = source, source.convert()
        return last_rgb

    for k, frame in enumerate(frames) if fps is None else _resampled(frames, fps):
        if expected is None:
            declared = stats.declared_frames if fps is None else 0  # counts output frames without --fps
            expected = plan.covered(declared)  # frames sure to be in complete clips, if the count is right
        count = k + 1
        if every_frame_needed or plan.is_needed(k):
            waiting.append((k, frame.seconds, rgb_of(frame) if k < expected else frame))
        if count < clip_end:
            continue
        # a clip is complete: its frames (and those of the clips before) go out
        while waiting and waiting[0][0] < count:
            k_out, time, pending = waiting.popleft()
            write(pending if isinstance(pending, np.ndarray) else rgb_of(pending))
            stored_ks.append(k_out)
            result.stored_times.append(time)
        clip_end = plan.next_clip_end(count)
        if clip_end is None:  # every wanted clip is complete
            result.stopped_early = True
            break
        if count == expected < declared and stats.frames_left is not None:
            needed = clip_end - count  # frames for one more clip
            left = stats.frames_left(needed)
            if left < needed:
                count += left
                result.skipped_frames = left
                break
    result.output_frames = count
    result.decoded_frames = stats.decoded_frames
    result.clip_starts = plan.starts(result.output_frames)
    result.clip_offsets = [bisect.bisect_left(stored_ks, s) for s in result.clip_starts]
    return result


def check_complete(result: Extracted, stats: ReadStats) -> None:
    """Raise when a fully read video holds far fewer frames than its container declares."""
    declared = stats.declared_frames
    if result.stopped_early or declared <= 0:
        return
    decoded = result.decoded_frames + result.skipped_frames
    if decoded < declared * 0.9 and declared - decoded >= 2:
        if stats.damaged_packets:
            raise DecodeError(
                f"damaged: {stats.damaged_packets} packet(s) could not be decoded ({stats.first_damage}); "
                f"{decoded} of the {declared} frames the container declares came out",
                definitive=True,
            )
        raise DecodeError(
            f"truncated: {decoded} of the {declared} frames the container declares could be decoded",
            definitive=True,
        )
