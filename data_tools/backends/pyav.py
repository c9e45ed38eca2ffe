"""PyAV backend: one FFmpeg filter graph rotates, crops, scales (area) and converts to RGB in a single
pass over each full-size frame, the fastest and most exact chain measured on this project's machines."""

from __future__ import annotations

import threading
from collections import deque
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.logging
import numpy as np

from data_tools.backends.base import TIMESTAMP_JUMP_SECONDS, DecodeError, ReadStats, SourceFrame
from data_tools.discover import sniff_container
from data_tools.geometry import normalise_rotation, square_crop

# FFmpeg's own log lines (damaged macroblocks and the like) would tear through the progress bar;
# failures reach the user as exceptions with their reason instead.
av.logging.set_level(None)
av.logging.set_libav_level(av.logging.PANIC)

# Packets that frames_left may demux ahead and hold: a stride of more frames than this keeps its
# video's tail decoded rather than hold that much compressed video.
LOOKAHEAD_PACKETS = 256

# Damaged packets are skipped; this many before the first frame means PyAV cannot decode the stream
# at all.
MAX_DAMAGED_BEFORE_A_FRAME = 64

_ROTATE_FILTERS = {  # counter-clockwise display rotation → filters that show it upright
    0: [],
    90: [("transpose", "cclock")],
    180: [("hflip", None), ("vflip", None)],
    270: [("transpose", "clock")],
}


def _chroma_shift(format_name: str) -> tuple[int, int]:
    """log2 of the horizontal and vertical chroma subsampling of a pixel format."""
    fmt = av.VideoFormat(format_name, 64, 64)
    comps = fmt.components
    if fmt.is_rgb or len(comps) < 3 or comps[1].width in (0, 64):
        return 0, 0
    return (64 // comps[1].width).bit_length() - 1, (64 // comps[1].height).bit_length() - 1


def _depth(format_name: str) -> int:
    return max(c.bits for c in av.VideoFormat(format_name, 16, 16).components)


class _FrameConverter:
    """A filter graph for one set of frame and stream properties (a stream may change the frame's
    mid-way: another graph then takes over)."""

    def __init__(self, frame: av.VideoFrame, sar: Fraction, size: int, time_base: Fraction):
        width, height, fmt_name = frame.width, frame.height, frame.format.name
        rotation = normalise_rotation(frame.rotation)
        graph = av.filter.Graph()
        # FFmpeg's default threads every filter across all cores; on frames this small the hand-offs
        # cost more than they save (1 thread: about 15% less time end to end, BENCHMARKS.md), and
        # the cores belong to the other workers.
        graph.threads = 1
        chain = [graph.add_buffer(width=width, height=height, format=fmt_name, time_base=time_base)]
        for name, args in _ROTATE_FILTERS[rotation]:
            chain.append(graph.add(name, args))
        if rotation in (90, 270):
            width, height = height, width
            sar = 1 / sar if sar else sar
        box = square_crop(width, height, sar)
        sx, sy = _chroma_shift(fmt_name)
        if box.x % (1 << sx) or box.y % (1 << sy):
            # Subsampled chroma can only start on a whole chroma sample: go to 4:4:4 first. (An odd
            # width or height is fine: the last chroma sample simply covers one luma column more.)
            chain.append(graph.add("format", "gbrp16le" if _depth(fmt_name) > 8 else "gbrp"))
        chain.append(graph.add("crop", f"{box.width}:{box.height}:{box.x}:{box.y}:exact=1"))
        # Scaled into planar RGB, then interleaved at S×S: swscale's planar RGB output interpolates
        # the chroma at full resolution (packed rgb24 output takes one chroma sample per two pixels)
        # and has a vectorised vertical pass. Against an exact reference (full-resolution RGB, exact
        # area average) this is about 57 dB PSNR instead of 39, in about 20% less conversion time.
        chain.append(graph.add("scale", f"{size}:{size}:flags=area"))
        chain.append(graph.add("format", "gbrp"))
        chain.append(graph.add("scale", "flags=neighbor"))  # same size: a plain interleave
        chain.append(graph.add("format", "rgb24"))
        chain.append(graph.add("buffersink"))
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        self.graph = graph  # owns the filters below
        self.source, self.sink = chain[0], chain[-1]
        self.shape = (size, size, 3)

    def rgb(self, out: av.VideoFrame) -> np.ndarray:
        """The converted frame as `[S, S, 3]` uint8, a view of its buffer (no copy)."""
        plane = out.planes[0]
        if plane.line_size != self.shape[1] * 3:  # rows padded: numpy's strided view
            return out.to_ndarray()
        return np.frombuffer(plane, np.uint8, self.shape[0] * self.shape[1] * 3).reshape(self.shape)


# Converters kept by each thread (a graph converts one frame at a time), most recently used last:
# the videos of a dataset mostly share their frame properties, and building a graph costs about as
# much as converting 20 frames.
_kept = threading.local()
MAX_CONVERTERS = 8


def _frame_key(frame: av.VideoFrame) -> tuple:
    return frame.width, frame.height, frame.format.name, frame.rotation


def _converter(frame_key: tuple, frame: av.VideoFrame, sar: Fraction, size: int,
               time_base: Fraction) -> _FrameConverter:
    """The converter for frames like `frame` of a stream with this `sar` and `time_base`."""
    kept: dict[tuple, _FrameConverter] = _kept.__dict__.setdefault("converters", {})
    key = (*frame_key, sar, size, time_base)
    converter = kept.pop(key, None)
    if converter is None:
        converter = _FrameConverter(frame, sar, size, time_base)
        if len(kept) >= MAX_CONVERTERS:
            del kept[next(iter(kept))]
    kept[key] = converter
    return converter


def stream_sar(stream) -> Fraction:
    """Pixel aspect ratio of a video stream (1 when unknown)."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and sar > 0 else Fraction(1)


def moving_streams(container: av.container.InputContainer) -> list:
    """The video streams that are not a still picture attached to the file (the cover of a song)."""
    return [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]


def shown_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream a player shows: FFmpeg's pick (av_find_best_stream, which decord makes too),
    not a cover picture or thumbnail track that happens to come first."""
    moving = moving_streams(container)
    best = container.streams.best("video")
    return next((s for s in moving if best is not None and s.index == best.index), moving[0])


def open_video(path: str | Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` and pick its video stream, with the reason spelled out when that is impossible."""
    path = str(path)
    with open(path, "rb") as f:
        kind = sniff_container(f.read(512))
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        why = e.strerror or str(e)
        if kind is None:
            raise DecodeError(f"not a video: content matches no video container (FFmpeg: {why})",
                              definitive=True) from None
        raise DecodeError(f"corrupt or truncated {kind} file (FFmpeg: {why})", definitive=True) from None
    if not moving_streams(container):
        kinds = sorted({s.type for s in container.streams})
        cover = bool(container.streams.video)
        container.close()
        if "audio" in kinds:
            raise DecodeError("no video stream (audio only" + (", with a cover picture)" if cover else ")"),
                              definitive=True)
        if cover:
            raise DecodeError("not a video: a still picture only", definitive=True)
        if kind is not None:
            raise DecodeError(f"corrupt or truncated {kind} file (no video stream found)", definitive=True)
        raise DecodeError("not a video: no video stream", definitive=True)
    stream = shown_stream(container)
    stream.codec_context.thread_count = 1  # one core per worker: parallelism comes from --workers
    return container, stream


class _FrameClock:
    """Presentation times of decoded frames, in ticks from the first frame shown, as players time
    them. (A file's clock may start anywhere: an MPEG-TS at 1.4 s or at a broadcast's hour, a cut
    where the cut fell; decord counts from the first frame too.)

    - Each frame's pts, unless those have gone backwards more often than its decode timestamps: the
      choice libavcodec makes for its "best effort timestamp" (which PyAV does not expose). H.264
      with B-frames in an AVI has pts in decode order, and is timed by its decode timestamps. The
      choice for the first OPENING frames is made once they are all in, so that such a file is
      timed right from its first frame; then frame by frame.
    - A frame with neither: one nominal interval after the one before.
    - Timestamps that step back (streams cut and joined, an MPEG-TS whose counter restarts), or leap
      ahead where the format's clock may jump: the clock plays on from the frame before, as a
      player does.
    """

    OPENING = 4

    def __init__(self, step: int | None, jump: int | None):
        self.origin: int | None = None  # the first frame's time
        self.step, self.jump = step or 1, jump
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None
        self.shift = 0  # ticks added to the file's timestamps to keep one clock across its restarts
        self.last: int | None = None  # the last time given, on that clock
        self.opening: list[tuple[av.VideoFrame, int | None, int | None]] | None = []  # None once out

    def time(self, frame: av.VideoFrame) -> int:
        """The time of the next frame, once the opening is out."""
        pts, dts = self._count(frame)
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return self._time(pts)
        return self._time(dts)

    def hold(self, frame: av.VideoFrame) -> list[tuple[av.VideoFrame, int]]:
        """Hold one of the first frames; all of them with their times once the opening is full."""
        pts, dts = self._count(frame)
        self.opening.append((frame, pts, dts))
        return self.release() if len(self.opening) >= self.OPENING else []

    def release(self) -> list[tuple[av.VideoFrame, int]]:
        """The frames held, timed (also at the end of a stream shorter than the opening)."""
        held, self.opening = self.opening or [], None
        use_pts = self.faulty_pts <= self.faulty_dts
        return [(frame, self._time(pts if pts is not None and (use_pts or dts is None) else dts))
                for frame, pts, dts in held]

    def _count(self, frame: av.VideoFrame) -> tuple[int | None, int | None]:
        # pts and dts are watched alike, each standing in for the other when it is missing, as
        # libavcodec does before it picks the one that has gone backwards less often
        pts, dts = frame.pts, frame.dts
        if dts is not None:
            if self.last_dts is not None and dts <= self.last_dts:
                self.faulty_dts += 1
            self.last_dts = dts
        elif pts is not None:
            self.last_dts = pts
        if pts is not None:
            if self.last_pts is not None and pts <= self.last_pts:
                self.faulty_pts += 1
            self.last_pts = pts
        elif dts is not None:
            self.last_pts = dts
        return pts, dts

    def _time(self, pts: int | None) -> int:
        last = self.last
        if pts is None:
            pts = 0 if last is None else last + self.step
        elif last is not None:
            pts += self.shift
            if pts < last or (self.jump is not None and pts - last > self.jump):
                self.shift += last + self.step - pts
                pts = last + self.step
        self.last = pts
        if self.origin is None:
            self.origin = pts
        return pts - self.origin


def _shows_a_frame(packet: av.Packet) -> bool:
    return bool(packet.size) and not packet.is_discard


def _undecodable(why: str) -> DecodeError:  # perhaps a codec this FFmpeg build lacks: let decord try
    return DecodeError(f"PyAV cannot decode the video stream ({why})")


def iter_frames(path: str | Path, size: int, stats: ReadStats) -> Iterator[SourceFrame]:
    """Decoded frames of `path` in display order with their times; conversion to S×S RGB is lazy.
    The file is opened on the first frame asked for and closed when the iterator ends or is closed.
    See `_VideoReader` for `stats`."""
    reader = _VideoReader(path, size, stats)
    try:
        yield from reader.frames()
    finally:
        reader.close()


class _VideoReader:
    """One video read by PyAV: its demuxer, the packets counted ahead, the frame clock, the
    converter of its frames and the damaged packets skipped so far.

    `stats.frames_left` counts the frames still to come from the packets alone: the extractor asks
    when the declared frame count says no clip can follow, and the frames after the last clip are
    then never decoded. It relies on a packet giving at most one frame, and answers "unknown" (the
    limit) for a stream where that is seen to fail, whose rest cannot be demuxed, or whose count
    would need more than LOOKAHEAD_PACKETS packets held.
    """

    __slots__ = ("container", "stream", "stats", "size", "time_base", "nominal", "sar", "declared", "clock",
                 "avi_step", "last_dts", "dropped", "demuxed", "lookahead", "demux_error", "fed", "received",
                 "decoded", "converter", "converter_key", "damaged", "sound_after_damage")

    def __init__(self, path: str | Path, size: int, stats: ReadStats):
        self.container, stream = open_video(path)
        self.stream, self.stats, self.size = stream, stats, size
        self.time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.nominal = 1 / Fraction(rate) if rate else None  # seconds between frames, when known
        step = max(1, round(self.nominal / self.time_base)) if self.nominal else None  # the same, in ticks
        self.declared = int(stream.frames or 0)
        stats.declared_frames = self.declared
        self.sar = stream_sar(stream)
        jumpy = bool(self.container.format.flags & av.format.Flags.ts_discont.value)
        self.clock = _FrameClock(step, jump=round(TIMESTAMP_JUMP_SECONDS / self.time_base) if jumpy else None)
        # An AVI counts the frames a capture dropped: an empty chunk holds each one's place, and
        # FFmpeg skips them (a gap in the decode timestamps).
        self.avi_step = step if self.container.format.name == "avi" else None
        self.last_dts: int | None = None  # of the last AVI packet demuxed
        self.dropped = 0  # frames counted in `declared` that never show (see _demux)
        self.demuxed = self._demux()
        self.lookahead: deque = deque()  # packets demuxed (and counted) by frames_left, to be decoded next
        self.demux_error: av.error.FFmpegError | None = None  # met by frames_left, raised in its turn
        self.fed = 0  # packets sent to the decoder that give a frame (not empty, not dropped)
        self.received = 0  # frames out of the decoder
        self.decoded = 0  # frames handed out (the first few are held by the clock a moment)
        self.converter: _FrameConverter | None = None
        self.converter_key: tuple | None = None  # the _frame_key the converter was made for
        self.damaged: list[str] = []  # why each damaged packet was refused
        self.sound_after_damage = 0  # packets decoded since the last damaged one
        stats.frames_left = self.frames_left

    def close(self) -> None:
        self.container.close()

    def _demux(self) -> Iterator[av.Packet]:
        """The stream's packets. Frames an edit list drops (an MP4 or MOV cut without re-encoding)
        and an AVI's dropped frames count in the declared frames: they are taken off as they come
        (leading ones before the first frame is shown)."""
        for packet in self.container.demux(self.stream):
            never_shown = packet.is_discard
            if self.avi_step and packet.dts is not None:
                if self.last_dts is not None and packet.dts - self.last_dts > self.avi_step:
                    never_shown += (packet.dts - self.last_dts) // self.avi_step - 1
                self.last_dts = packet.dts
            if never_shown:
                self.dropped += never_shown
                self.stats.declared_frames = max(0, self.declared - self.dropped) if self.declared else 0
            yield packet

    def frames_left(self, limit: int) -> int:
        """Frames still to come, up to `limit` (see the class docstring)."""
        lookahead = self.lookahead
        left = self.fed - self.decoded + sum(1 for packet in lookahead if _shows_a_frame(packet))
        while left < limit:
            if self.demux_error is not None or len(lookahead) >= LOOKAHEAD_PACKETS:
                return limit  # cannot tell: decode on
            try:
                packet = next(self.demuxed, None)
            except av.error.FFmpegError as e:
                self.demux_error = e
                continue
            if packet is None:
                break
            lookahead.append(packet)
            left += _shows_a_frame(packet)
        return limit if self.decoded > self.fed else min(left, limit)

    def convert(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame → `[S, S, 3]` uint8 RGB (SourceFrame.convert)."""
        try:
            key = _frame_key(frame)
            if key != self.converter_key:  # the first frame, or a stream that changes mid-way
                self.converter = _converter(key, frame, self.sar, self.size, self.time_base)
                self.converter_key = key
            converter = self.converter
            converter.source.push(frame)
            return converter.rgb(converter.sink.pull())
        except (av.error.FFmpegError, ValueError) as e:  # e.g. a pixel format FFmpeg can't convert
            _kept.__dict__.pop("converters", None)  # a graph that failed is not trusted again
            raise DecodeError(f"PyAV cannot convert {frame.format.name} frames ({e})") from None

    def frames(self) -> Iterator[SourceFrame]:
        """The decode loop: packets in, frames out in display order, timed by the clock."""
        clock = self.clock
        while (packet := self._next_packet()) is not None:
            for frame in self._decode(packet):
                if clock.opening is None:
                    yield self._hand_out(frame, clock.time(frame))
                    continue
                for shown, ticks in clock.hold(frame):
                    yield self._hand_out(shown, ticks)
        for shown, ticks in clock.release():  # a stream shorter than the clock's opening
            yield self._hand_out(shown, ticks)
        damaged = self.damaged
        if self.received == 0 and damaged:
            raise _undecodable(damaged[0])
        if damaged and not self.sound_after_damage:  # nothing decodable after the damage: the file is cut short
            raise DecodeError(f"corrupt or truncated data after {self.received} frames ({damaged[-1]})",
                              definitive=True)

    def _next_packet(self) -> av.Packet | None:
        """The next packet to decode (None at the end of the stream): held ones first."""
        try:
            if self.lookahead:
                return self.lookahead.popleft()
            if self.demux_error is not None:
                raise self.demux_error
            return next(self.demuxed, None)
        except av.error.FFmpegError as e:
            why = e.strerror or str(e)
            if self.received == 0:
                raise _undecodable(why) from None
            raise DecodeError(f"corrupt or truncated data after {self.received} frames ({why})",
                              definitive=True) from None

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The frames a packet gives (the last, empty packet drains the decoder)."""
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            # A damaged packet: skipped, and decoding goes on, as players and the ffmpeg tool do
            # (pictures that refer to it come out concealed). A stream that gives no frame at all
            # is another matter; a file that ends early is caught by its missing frames.
            damaged = self.damaged
            damaged.append(e.strerror or str(e))
            self.stats.damaged_packets, self.stats.first_damage = len(damaged), damaged[0]
            self.sound_after_damage = 0
            if self.received == 0 and len(damaged) >= MAX_DAMAGED_BEFORE_A_FRAME:
                raise _undecodable(damaged[0]) from None
            return []
        self.fed += _shows_a_frame(packet)
        self.sound_after_damage += bool(packet.size)
        self.received += len(frames)
        return frames

    def _hand_out(self, frame: av.VideoFrame, ticks: int) -> SourceFrame:
        """A frame shown at `ticks`, counted as handed out (before the extractor sees it)."""
        self.decoded += 1
        self.stats.decoded_frames = self.decoded
        duration = frame.duration
        return SourceFrame(self.convert, frame, ticks, self.time_base, duration or None,
                           None if duration else self.nominal)
