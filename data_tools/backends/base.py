"""What a decode backend hands to the clip extractor."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np


# In a format whose clock may jump (MPEG-TS, MPEG program streams), timestamps that leap ahead by more
# than this are a discontinuity, not a pause: the ffmpeg tool draws the same line (-dts_delta_threshold).
TIMESTAMP_JUMP_SECONDS = 10


class DecodeError(Exception):
    """A video that cannot be read; the message is the reason shown to the user.

    `definitive` errors (empty file, no video stream, truncated data) are properties of the file, so
    no other backend is tried for them.
    """

    def __init__(self, reason: str, definitive: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.definitive = definitive


@dataclass
class ReadStats:
    """What a backend learns about a video while reading it, for the clip extractor."""

    declared_frames: int = 0  # the frame count the container declares (0: it declares none)
    decoded_frames: int = 0  # frames handed out so far
    # Frames still to come, counted without decoding them, up to the limit given (returned when at
    # least that many remain); None where the backend cannot count them.
    frames_left: Callable[[int], int] | None = None
    damaged_packets: int = 0  # packets the decoder refused, skipped
    first_damage: str = ""  # why the first of them was refused


class SourceFrame:
    """One decoded frame in display order: when it is shown, for how long, and a lazy conversion to
    the output `[S, S, 3]` uint8 RGB that runs only if a complete clip needs the frame.

    Times are exact fractions of a second, computed from the integer timestamp only when asked for
    (most frames of a run without `--fps` never need them).
    """

    __slots__ = ("_convert", "_picture", "_pts", "_duration_ticks", "_time_base", "_time", "_duration")

    def __init__(self, convert: Callable[[Any], np.ndarray], picture: Any, pts: int, time_base: Fraction,
                 duration_ticks: int | None = None, duration: Fraction | None = None):
        # convert(picture) makes the output frame; one function serves a whole video, and `picture`
        # is whatever the backend needs for this frame (a decoded frame, an index)
        self._convert, self._picture = convert, picture
        self._pts, self._time_base = pts, time_base  # time_base: one Fraction shared by a stream
        self._duration_ticks, self._duration = duration_ticks, duration
        self._time: Fraction | None = None

    def convert(self) -> np.ndarray:
        """The frame as output: `[S, S, 3]` uint8 RGB."""
        return self._convert(self._picture)

    @property
    def time(self) -> Fraction:
        """Presentation time in seconds."""
        if self._time is None:
            self._time = seconds(self._pts, self._time_base)
        return self._time

    @property
    def seconds(self) -> float:
        tb = self._time_base
        return self._pts * tb.numerator / tb.denominator

    @property
    def duration(self) -> Fraction | None:
        """How long the frame is shown, in seconds, when the file says it."""
        if self._duration is None and self._duration_ticks:
            self._duration = seconds(self._duration_ticks, self._time_base)
        return self._duration


def seconds(value: int, time_base: Fraction) -> Fraction:
    return Fraction(value) * Fraction(time_base)
