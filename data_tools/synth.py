"""`vidgan synth`: a small class-labelled corpus of real encoded videos, made with PyAV.

Three styles, which differ in what carries the class and in what moves and how:

- `shapes`: a bright disc or square per video over a coloured gradient; each class moves its own way
  (direction, path and shape differ by class).
- `glyphs`: one grey glyph per video (the class is the glyph's shape, one of ten) over a dark
  background, moving in a straight line at 1.5–3 px a frame (at 32²) and bouncing off the edges, in
  any direction: content and motion vary independently, as in Moving MNIST.
- `orbits`: one coloured glyph circling a point at its own radius and angular speed over a dark
  gradient: what moves, and how, differs from `glyphs`.
- `sprites`: `glyphs` in colour: each video's content (shape, the class, and a random bright colour)
  and motion (direction and speed, 1–3 px a frame at 32²) are drawn independently, so a
  content/motion generator can be shown to hold one while the other varies.

Half of the videos are H.264 in MP4, half MPEG-4 Part 2 in AVI (the codec UCF-101 ships), so both
common decode paths run.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from data_tools.atomic import atomic_path

WIDTH, HEIGHT = 160, 120  # 4:3 like UCF-101, so the square crop matters
STYLES = ("shapes", "glyphs", "orbits", "sprites")
GLYPHS = ("disc", "square", "triangle", "plus", "ring", "bar", "diamond", "cross", "tee", "ell")


def encode_video(path: Path, frames: Iterable[np.ndarray], fps: Fraction | int | float = 25,
                 codec: str = "libx264", pix_fmt: str = "yuv420p", options: dict | None = None,
                 input_format: str = "rgb24", container_options: dict | None = None) -> None:
    """Encode `[H, W, 3]` uint8 RGB frames (or frames of `input_format`) into `path` with PyAV;
    `options` go to the encoder, `container_options` to the muxer (e.g. movflags)."""
    import av

    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with atomic_path(path, keep_suffix=True) as tmp, \
            av.open(str(tmp), "w", format=_format_for(path), options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001 * 1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = dict(options or {})
        for array in _chain(first, frames):
            frame = av.VideoFrame.from_ndarray(array, format=input_format)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _format_for(path: Path) -> str | None:
    return {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}.get(path.suffix.lower())


def _chain(first, rest):
    yield first
    yield from rest


def _background(rng: np.random.Generator) -> np.ndarray:
    top, bottom = rng.integers(20, 110, 3), rng.integers(20, 110, 3)
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    return np.broadcast_to(top * (1 - ramp) + bottom * ramp, (HEIGHT, WIDTH, 3)).astype(np.uint8)


def _class_frames(label: int, classes: int, count: int, rng: np.random.Generator):
    """Frames `[H, W, 3]` of one video of class `label`."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = _background(rng)
    color = rng.integers(150, 256, 3).astype(np.uint8)
    radius = rng.uniform(9, 14)
    cx, cy = WIDTH / 2 + rng.uniform(-15, 15), HEIGHT / 2 + rng.uniform(-10, 10)
    phase = rng.uniform(0, 2 * math.pi)
    angle = 2 * math.pi * label / classes  # each class has its own direction of motion
    speed = rng.uniform(1.5, 2.5)  # pixels per frame
    kind = label % 3  # 0: straight line, wrapping; 1: orbit; 2: oscillation with pulsing size
    for t in range(count):
        if kind == 0:
            x = (cx + speed * t * math.cos(angle)) % WIDTH
            y = (cy + speed * t * math.sin(angle)) % HEIGHT
            r = radius
        elif kind == 1:
            turn = (1 if label % 2 else -1) * 0.15 * t + phase
            x, y, r = cx + 30 * math.cos(turn), cy + 30 * math.sin(turn), radius
        else:
            swing = 35 * math.sin(0.2 * t + phase)
            x, y = cx + swing * math.cos(angle), cy + swing * math.sin(angle)
            r = radius * (1 + 0.4 * math.sin(0.3 * t))
        if label % 2:  # odd classes: squares, even classes: discs
            mask = (np.abs(xs - x) <= r) & (np.abs(ys - y) <= r)
        else:
            mask = (xs - x) ** 2 + (ys - y) ** 2 <= r * r
        frame = background.copy()
        frame[mask] = color
        yield frame


def _glyph_mask(kind: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels of glyph `kind` of half-size `r`, given each pixel's offset `dx`, `dy` from its centre."""
    ax, ay = np.abs(dx), np.abs(dy)
    bar = r / 3  # half-width of strokes
    if kind == "disc":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        return (ax <= r * 0.85) & (ay <= r * 0.85)
    if kind == "triangle":  # apex up
        return (dy <= r) & (dy >= -r) & (ax <= (dy + r) / 2)
    if kind == "plus":
        return ((ax <= bar) & (ay <= r)) | ((ay <= bar) & (ax <= r))
    if kind == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (r - 2 * bar) ** 2)
    if kind == "bar":
        return (ax <= r) & (ay <= bar * 1.2)
    if kind == "diamond":
        return ax + ay <= r
    if kind == "cross":
        return (np.abs(dx - dy) <= bar * 1.4) & (ax <= r) & (ay <= r) | (np.abs(dx + dy) <= bar * 1.4) & (
            ax <= r) & (ay <= r)
    if kind == "tee":
        return ((dy <= -r + 2 * bar) & (dy >= -r) & (ax <= r)) | ((ax <= bar) & (ay <= r))
    if kind == "ell":
        return ((dx <= -r + 2 * bar) & (dx >= -r) & (ay <= r)) | ((dy >= r - 2 * bar) & (dy <= r) & (ax <= r))
    raise ValueError(f"unknown glyph {kind!r}")


def _glyph_frames(label: int, count: int, rng: np.random.Generator, coloured: bool = False):
    """Frames of a `glyphs` video: glyph `label % 10`, grey (`coloured`: a random bright colour, the
    `sprites` style), bouncing in a straight line over dark."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    kind = GLYPHS[label % len(GLYPHS)]
    r = rng.uniform(15, 19)  # half-size: about 9 px of a 32² frame across
    grey = rng.integers(180, 256)
    if coloured:  # bright in at least one channel
        grey = rng.integers(60, 256, 3)
        grey[rng.integers(3)] = 255
    dark = rng.integers(0, 24)
    left, right = (WIDTH - HEIGHT) / 2 + r, (WIDTH + HEIGHT) / 2 - r  # inside the square centre crop
    top, bottom = r, HEIGHT - r
    x, y = rng.uniform(left, right), rng.uniform(top, bottom)
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(5.5, 11.5)  # pixels a frame here; 1.5–3 px at 32² after the crop and resize
    vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    for _ in range(count):
        frame = np.full((HEIGHT, WIDTH, 3), dark, np.uint8)
        frame[_glyph_mask(kind, xs - x, ys - y, r)] = grey
        yield frame
        x, y = x + vx, y + vy
        if not left <= x <= right:  # bounce
            vx, x = -vx, min(max(x, left), right)
        if not top <= y <= bottom:
            vy, y = -vy, min(max(y, top), bottom)


def _orbit_frames(label: int, count: int, rng: np.random.Generator):
    """Frames of an `orbits` video: glyph `label % 10` in a bright colour circling over a dark gradient."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    kind = GLYPHS[label % len(GLYPHS)]
    r = rng.uniform(13, 17)
    color = rng.integers(90, 256, 3)
    color[rng.integers(3)] = 255  # bright in at least one channel
    top, bottom = rng.integers(0, 40, 3), rng.integers(0, 40, 3)
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    background = np.broadcast_to(top * (1 - ramp) + bottom * ramp, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    radius = rng.uniform(18, 36)
    cx = WIDTH / 2 + rng.uniform(-1, 1) * (HEIGHT / 2 - radius - r)
    cy = HEIGHT / 2 + rng.uniform(-1, 1) * (HEIGHT / 2 - radius - r)
    phase = rng.uniform(0, 2 * math.pi)
    turn = rng.choice([-1, 1]) * rng.uniform(0.2, 0.35)  # radians a frame, either way round
    for t in range(count):
        a = phase + turn * t
        frame = background.copy()
        frame[_glyph_mask(kind, xs - (cx + radius * math.cos(a)), ys - (cy + radius * math.sin(a)), r)] = color
        yield frame


def write_demo_corpus(out: Path, classes: int = 4, videos_per_class: int = 4, seconds: float = 3.0,
                      fps: int = 25, seed: int = 0, style: str = "shapes") -> list[Path]:
    """Write `classes × videos_per_class` videos of `style` into `out/<class>/`; returns their paths."""
    if classes < 1 or videos_per_class < 1 or seconds <= 0:
        raise ValueError("classes and videos per class must be >= 1, seconds > 0")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}; got {style!r}")
    if style != "shapes" and classes > len(GLYPHS):
        raise ValueError(f"style {style} has {len(GLYPHS)} glyphs: at most {len(GLYPHS)} classes, got {classes}")
    out = Path(out)
    written = []
    for label in range(classes):
        name = f"class{label:02d}" if style == "shapes" else GLYPHS[label]
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(videos_per_class):
            rng = np.random.default_rng([seed, label, i])
            count = max(1, round(seconds * fps))
            if style == "shapes":
                frames = _class_frames(label, classes, count, rng)
            elif style == "orbits":
                frames = _orbit_frames(label, count, rng)
            else:
                frames = _glyph_frames(label, count, rng, coloured=style == "sprites")
            if i % 2 == 0:
                path = out / name / f"v_{name}_g{i + 1:02d}_c01.mp4"
                encode_video(path, frames, fps, "libx264", "yuv420p", {"crf": "18", "preset": "veryfast", "threads": "1"})
            else:
                path = out / name / f"v_{name}_g{i + 1:02d}_c01.avi"
                encode_video(path, frames, fps, "mpeg4", "yuv420p", {"qscale": "3"})
            written.append(path)
    return written
