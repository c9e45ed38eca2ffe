"""What a decode backend hands to the clip extractor."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import numpy as np


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
class SourceFrame:
    """One decoded frame in display order: its time, how long it is shown, and a lazy conversion to
    the output `[S, S, 3]` uint8 RGB that runs only if some clip needs the frame."""

    time: Fraction  # presentation time in seconds
    duration: Fraction | None  # display duration in seconds, when the file says it
    convert: Callable[[], np.ndarray]


def seconds(value: int, time_base: Fraction) -> Fraction:
    return Fraction(value) * Fraction(time_base)
