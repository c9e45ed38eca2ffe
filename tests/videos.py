"""Test videos written with PyAV: lossless ones whose frames can be checked pixel for pixel."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

STEP = 5  # colour step between consecutive frame ids


def id_frame(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A flat RGB frame whose colour encodes `index` (0 <= index < 51 * 51)."""
    value = np.array([index % 51 * STEP, index // 51 * STEP, 200], dtype=np.uint8)
    return np.broadcast_to(value, (height, width, 3)).copy()


def flat_frames(count: int, seed: int, size: int = 32) -> np.ndarray:
    """`count` pictures of one random colour each, uint8 `[count, size, size, 3]`: data a tiny GAN
    learns in seconds, and whose holes the surroundings determine (their colour is the rest's)."""
    colours = np.random.default_rng(seed).integers(0, 256, (count, 1, 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.broadcast_to(colours, (count, size, size, 3)))


def frame_id(frame: np.ndarray) -> int:
    """The index `id_frame` encoded in a (possibly resized) flat frame."""
    r, g = (int(round(float(frame[..., c].mean()) / STEP)) for c in (0, 1))
    return g * 51 + r


def write_lossless(path: Path, frames, fps: int = 25, times_ms: list[int] | None = None,
                   rotation: int | None = None, sar: Fraction | None = None, b_frames: bool = False) -> Path:
    """Encode RGB frames losslessly (H.264 RGB, qp 0) into an MKV, MP4, MPEG-TS or MPEG-PS; optional explicit
    frame times (a variable frame rate), display rotation, pixel aspect ratio and B-frames (frames
    decoded out of display order; x264 makes none when lossless, so then qp 1: within a level or
    two, and the ids of `id_frame` survive)."""
    path = Path(path)
    frames = list(frames)
    container_format = {".mp4": "mp4", ".ts": "mpegts", ".mpg": "mpeg"}.get(path.suffix, "matroska")
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        if b_frames:
            stream.options = {"qp": "1", "bframes": "3", "b-adapt": "0"}
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _timed_stream(container, codec: str, pix_fmt: str, first: np.ndarray, fps: int):
    """A video stream for frames like `first`, whose frames are given their pts (in 1/fps)."""
    stream = container.add_stream(codec, rate=fps)
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = pix_fmt
    stream.codec_context.time_base = Fraction(1, fps)
    return stream


def _timed_frame(array: np.ndarray, pts: int, fps: int) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
    frame.pts, frame.time_base = pts, Fraction(1, fps)
    return frame


def write_cut(path: Path, frames, dropped: int, fps: int = 25) -> Path:
    """An MP4 as a cut without re-encoding leaves it (`ffmpeg -ss T -c copy`): the frames before the
    cut are still stored, for the frames after them need them, and an edit list drops the first
    `dropped`, so a player starts at frame `dropped`. Lossless, one group of pictures."""
    path = Path(path)
    frames = list(frames)
    with av.open(str(path), "w", format="mp4") as container:
        stream = _timed_stream(container, "libx264rgb", "rgb24", frames[0], fps)
        stream.options = {"qp": "0", "preset": "ultrafast", "g": str(len(frames))}
        packets = []
        for i, array in enumerate(frames):
            packets += stream.encode(_timed_frame(array, i, fps))
        packets += stream.encode()
        for packet in packets:  # timestamps below 0 are what the edit list drops
            packet.pts -= dropped
            packet.dts -= dropped
            container.mux(packet)
    return path


def write_avi_with_dropped_frames(path: Path, frames, drop_after: set[int], fps: int = 25) -> Path:
    """An MJPEG AVI as capture software writes one that dropped frames: an empty chunk keeps each
    dropped frame's place (the frame before stays on screen), and the container's frame count
    includes it. A frame is dropped after each frame index in `drop_after`."""
    path = Path(path)
    frames = list(frames)
    with av.open(str(path), "w", format="avi") as container:
        stream = _timed_stream(container, "mjpeg", "yuvj420p", frames[0], fps)
        slot = 0
        for i, array in enumerate(frames):
            for packet in stream.encode(_timed_frame(array, slot, fps)):
                container.mux(packet)
            slot += 1
            if i in drop_after:
                empty = av.Packet(b"")
                empty.stream, empty.pts, empty.dts, empty.time_base = stream, slot, slot, Fraction(1, fps)
                container.mux(empty)
                slot += 1
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_with_leading_still(path: Path, frames, fps: int = 25) -> Path:
    """An MKV whose first video stream is one MJPEG picture (a cover or thumbnail track) and whose
    second holds `frames`, lossless: the stream a player shows is the second."""
    path = Path(path)
    frames = list(frames)
    with av.open(str(path), "w", format="matroska") as container:
        still = container.add_stream("mjpeg", rate=1)
        still.height, still.width, still.pix_fmt = 32, 32, "yuvj420p"
        video = container.add_stream("libx264rgb", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt, video.options = "rgb24", {"qp": "0", "preset": "ultrafast"}
        picture = np.full((32, 32, 3), 90, np.uint8)
        for stream, arrays in ((still, [picture]), (video, frames)):
            for array in arrays:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def has_b_frames(path: Path) -> bool:
    """Whether some packet of `path` is decoded before a frame it is displayed after."""
    with av.open(str(path)) as container:
        return any(p.pts is not None and p.dts is not None and p.pts != p.dts
                   for p in container.demux(video=0) if p.size)


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of `path` as RGB, as PyAV decodes it (for checking test files themselves)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def write_audio_only(path: Path, seconds: float = 1.0, cover: bool = False) -> Path:
    """A tone, and with `cover` a cover picture (a one-frame video stream marked as attached)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        if cover:
            picture = container.add_stream("mjpeg", rate=1)
            picture.height, picture.width, picture.pix_fmt = 64, 64, "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic
            art = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 90, np.uint8), format="rgb24")
            for packet in [*picture.encode(art), *picture.encode()]:
                container.mux(packet)
        samples = int(44100 * seconds)
        t = np.arange(samples) / 44100
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
