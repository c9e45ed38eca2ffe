"""Which decoded frames become output frames, and which output frames belong to clips.

Both are decided while the video streams past, so that frames no clip needs are never converted and
decoding stops as soon as the last wanted clip is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class ClipPlan:
    """Clips of `frames` output frames whose starts are `stride` output frames apart."""

    frames: int  # T, output frames per clip
    stride: int  # K, output frames between the starts of consecutive clips
    max_clips: int | None = None  # M, clips per video at most (None: all)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ValueError(f"frames per clip must be >= 1, got {self.frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.max_clips is not None and self.max_clips < 1:
            raise ValueError(f"max clips per video must be >= 1, got {self.max_clips}")

    def is_needed(self, k: int) -> bool:
        """Whether output frame `k` lies in some clip (assuming the video is long enough)."""
        last_clip = k // self.stride  # the latest clip starting at or before k
        if self.max_clips is not None:
            last_clip = min(last_clip, self.max_clips - 1)
        return k < last_clip * self.stride + self.frames

    def covered(self, num_output_frames: int) -> int:
        """Output frames up to the end of the last clip complete within that many output frames."""
        if num_output_frames < self.frames:
            return 0
        last = (num_output_frames - self.frames) // self.stride
        if self.max_clips is not None:
            last = min(last, self.max_clips - 1)
        return last * self.stride + self.frames

    def next_clip_end(self, num_output_frames: int) -> int | None:
        """Output frames a video needs for one clip more than it has complete within that many
        (None when it already has all the clips wanted)."""
        n = num_output_frames
        complete = 0 if n < self.frames else (n - self.frames) // self.stride + 1
        if self.max_clips is not None and complete >= self.max_clips:
            return None
        return complete * self.stride + self.frames

    def starts(self, num_output_frames: int) -> list[int]:
        """First output-frame index of every complete clip of a video of that many output frames."""
        if num_output_frames < self.frames:
            return []
        count = (num_output_frames - self.frames) // self.stride + 1
        if self.max_clips is not None:
            count = min(count, self.max_clips)
        return [i * self.stride for i in range(count)]


class FpsResampler:
    """Maps decoded frames, in display order, to output frames evenly `1/fps` seconds apart.

    Output frame k shows the last decoded frame whose time is at or before t0 + k/fps, where t0 is the
    first frame's time; the video ends when its last frame stops being shown. Times are exact
    fractions of a second, so the mapping does not depend on float rounding.
    """

    def __init__(self, fps: Fraction):
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.step = 1 / Fraction(fps)
        self.t0: Fraction | None = None
        self.next_k = 0  # first output frame not assigned yet

    def _count_before(self, t: Fraction) -> int:
        """Number of output frames whose time is strictly before `t`."""
        # smallest k with t0 + k*step >= t
        q = (t - self.t0) / self.step
        return max(0, -((-q.numerator) // q.denominator))

    def assign(self, time: Fraction, next_time: Fraction) -> range:
        """Output frames shown by a frame displayed from `time` until `next_time`."""
        if self.t0 is None:
            self.t0 = time
        stop = self._count_before(next_time)
        out = range(self.next_k, max(self.next_k, stop))
        self.next_k = max(self.next_k, stop)
        return out
