"""`Summary`: what a `vidgan prepare` run found, kept and skipped, counted as its videos are placed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data_tools.layout import Counts, ShardRecords, VideoRecord


@dataclass
class Summary:
    """What a run did. `skipped` lists (path, reason) for every file left out."""

    out: Path
    videos: int = 0  # videos considered (after the split file)
    read: int = 0  # decoded without error
    too_short: int = 0  # read, but shorter than one clip
    damaged: int = 0  # read with damaged packets skipped (kept: most of their frames came out)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    clips: int = 0
    frames_decoded: int = 0  # by this run
    frames_stored: int = 0
    seconds: float = 0.0  # of this run
    workers: int = 0  # decode processes of this run
    already_done: bool = False

    def count_shard(self, shard: ShardRecords) -> None:
        """Add a shard's videos to the counts."""
        self.frames_stored += shard.frames
        for video in shard.videos:
            self.count_video(video)

    def count_video(self, video: VideoRecord) -> None:
        self.videos += 1
        if video.status == "ok":
            self.read += 1
            self.clips += len(video.clips)
            self.too_short += not video.clips
            self.damaged += bool(video.damaged_packets)
        else:
            self.skipped.append((video.path, video.reason))

    def counts(self) -> Counts:
        """The counts meta.json records."""
        return Counts(videos=self.videos, read=self.read, too_short=self.too_short, skipped=len(self.skipped),
                      clips=self.clips, frames_stored=self.frames_stored)

    @property
    def frames_per_second(self) -> float:
        return self.frames_decoded / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = []
        if self.already_done:
            lines.append(f"{self.out} is already complete: nothing to do.")
        lines += [
            f"videos read: {self.read} of {self.videos} ({self.too_short} shorter than one clip"
            + (f", {self.damaged} with damaged packets skipped)" if self.damaged else ")"),
            f"skipped: {len(self.skipped)}",
        ]
        lines += [f"  {path}: {reason}" for path, reason in self.skipped]
        lines += [
            f"clips: {self.clips}",
            f"frames: {self.frames_decoded} decoded this run, {self.frames_stored} stored",
            f"time: {self.seconds:.1f} s, {self.frames_per_second:.0f} frames/s"
            + (f", {self.workers} worker{'s' * (self.workers > 1)}" if self.workers else ""),
            f"output: {self.out}",
        ]
        return "\n".join(lines)
