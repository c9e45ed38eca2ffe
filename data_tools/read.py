"""One video or image read as `vidgan prepare` makes frames, for commands that feed a single input to a
trained model (`vidgan inpaint`): upright (an image's EXIF orientation, a video's display rotation),
the centred square as displayed, an exact area resize to S×S, uint8 RGB.

    read_video(path, S, T)          → [T, S, S, 3], Geometry   its first T frames, by the PyAV backend
    read_image(path, S)             → [S, S, 3], Geometry      one picture (Pillow), resized with numpy
    resize_mask(mask, geometry, S)  → [S, S]                   a map over the input's pixels, alike
    open_image(path)                → PIL image                upright, at its own size (a mask PNG)

An image is `[S, S, 3]`, not `[1, S, S, 3]`: one picture, as an image model takes it. FFmpeg opens a
PNG or JPEG as a one-frame video and Pillow opens a GIF, so which kind a file is gets decided here;
`ReadError.found` says when a file is of the other kind than the one asked for.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from PIL import Image


class ReadError(Exception):
    """A file that cannot be read as the kind asked for; the message is the reason.

    `found` tells callers that word it their own way what stands in the way:
      "missing"  no such file
      "image"    a still image, where a video was asked for
      "video"    a video, where an image was asked for
      "short"    a video of fewer frames than asked for (`frames` of them)
      None       unreadable as the kind asked for (the message gives the decoder's reason)
    """

    def __init__(self, reason: str, found: str | None = None, frames: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.found = found
        self.frames = frames


class Geometry(NamedTuple):
    """How an input's stored pixels become S×S: turned upright, the centred square as displayed,
    then an exact area resize (data_tools.geometry, as `vidgan prepare` does)."""

    width: int  # as stored (an image: after its EXIF orientation), pixels
    height: int  # as stored, pixels
    sar: Fraction  # pixel aspect ratio, width / height of one stored pixel
    rotation: int  # display rotation still to apply (videos), degrees counter-clockwise: 0, 90, 180, 270


def read_video(path: str | Path, size: int, frames: int) -> tuple[np.ndarray, Geometry]:
    """The first `frames` frames of a video as uint8 RGB `[T, S, S, 3]`, decoded by the PyAV backend
    exactly as `vidgan prepare` decodes them, and the video's geometry."""
    import av

    from data_tools.backends.base import DecodeError

    if size < 1 or frames < 1:
        raise ValueError(f"need size >= 1 and frames >= 1; got {size}, {frames}")
    path = _existing(path)
    if _is_still_image(path):
        raise ReadError(f"{path} is an image, not a video", found="image")
    try:
        geometry = _video_geometry(path)
        clip = _first_frames(path, size, frames)
    except (DecodeError, StopIteration, OSError, av.error.FFmpegError) as e:
        why = e if str(e) else "no frame decoded"
        raise ReadError(f"cannot read {path} as a video ({why})") from None
    if len(clip) < frames:
        raise ReadError(f"{path} has {len(clip)} frames, fewer than the {frames} asked for", found="short",
                        frames=len(clip))
    return np.stack(clip), geometry  # [T, S, S, 3]


def read_image(path: str | Path, size: int) -> tuple[np.ndarray, Geometry]:
    """An image file as uint8 RGB `[S, S, 3]` (upright, centred square, area-resized) and its geometry.
    Of an animated GIF, its first picture."""
    if size < 1:
        raise ValueError(f"need size >= 1; got {size}")
    path = _existing(path)
    try:
        image = open_image(path)
    except ReadError:
        if _is_video(path):
            raise ReadError(f"{path} is a video, not an image", found="video") from None
        raise
    rgb = np.asarray(image.convert("RGB"))  # [H, W, 3] uint8
    geometry = Geometry(rgb.shape[1], rgb.shape[0], Fraction(1), 0)
    out = _crop_resize(rgb, geometry, size)  # [S, S, 3] float32
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), geometry


def open_image(path: str | Path) -> Image.Image:
    """An image file as Pillow reads it, upright as a viewer shows it (its EXIF orientation applied)."""
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ReadError(f"cannot read {path} as an image ({e})") from None


def resize_mask(mask: np.ndarray, geometry: Geometry, size: int) -> np.ndarray:
    """A map over an input's stored pixels `[H, W]` (H, W: the geometry's) → float32 `[S, S]`, turned,
    cropped and area-resized as the input's frames are: each output pixel the mean of what it covers,
    so of a 0/1 mask the fraction of it that is 1."""
    mask = np.asarray(mask)
    if mask.shape != (geometry.height, geometry.width):
        raise ValueError(f"the mask is {mask.shape[-1]}×{mask.shape[0]}, the input "
                         f"{geometry.width}×{geometry.height}")
    return _crop_resize(mask[:, :, None], geometry, size)[:, :, 0]


def _crop_resize(array: np.ndarray, geometry: Geometry, size: int) -> np.ndarray:
    """Stored pixels `[H, W, C]` → float32 `[S, S, C]`: turned upright as the display turns them (the
    PyAV backend's filters), the centred square as displayed, exact area resize."""
    from data_tools.geometry import area_matrix, square_crop

    upright = np.rot90(array, geometry.rotation // 90)  # counter-clockwise
    sar = geometry.sar
    if geometry.rotation in (90, 270) and sar:  # a stored pixel's width is now its height
        sar = 1 / Fraction(sar)
    box = square_crop(upright.shape[1], upright.shape[0], sar)
    crop = upright[box.y: box.y + box.height, box.x: box.x + box.width].astype(np.float32)  # [h, w, C]
    rows, cols = area_matrix(box.height, size), area_matrix(box.width, size)  # [S, h], [S, w]
    return np.einsum("sh,hwc,tw->stc", rows, crop, cols, optimize=True)  # [S, S, C]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: no such file", found="missing")
    return path


def _container(path: Path) -> str | None:
    """The video container `path`'s first bytes name, or None."""
    from data_tools.discover import sniff_container

    with open(path, "rb") as f:
        return sniff_container(f.read(512))


def _video_geometry(path: Path) -> Geometry:
    """The geometry of the video's first frame (the stream's pixel aspect ratio)."""
    from data_tools.backends.pyav import open_video, stream_sar
    from data_tools.geometry import normalise_rotation

    container, stream = open_video(path)
    try:
        first = next(container.decode(stream))
        return Geometry(first.width, first.height, stream_sar(stream), normalise_rotation(first.rotation))
    finally:
        container.close()


def _first_frames(path: Path, size: int, frames: int) -> list[np.ndarray]:
    """Up to `frames` frames from the start, each `[S, S, 3]` uint8, through the PyAV backend."""
    from data_tools.backends.base import ReadStats
    from data_tools.backends.pyav import iter_frames

    decoded = []
    source = iter_frames(path, size, ReadStats())
    try:
        for frame in source:
            decoded.append(frame.convert())  # [S, S, 3] uint8
            if len(decoded) == frames:
                break
    finally:
        source.close()
    return decoded


def _is_video(path: Path) -> bool:
    """Whether `path` holds a moving picture PyAV decodes: a video container with a decodable frame,
    or at least two decodable frames (FFmpeg opens any file named *.png as a one-picture 'video')."""
    import av

    from data_tools.backends.base import DecodeError
    from data_tools.backends.pyav import open_video

    container_kind = _container(path)
    try:
        container, stream = open_video(path)
    except (DecodeError, OSError):
        return False
    decoded = 0
    try:
        for _ in container.decode(stream):
            decoded += 1
            if decoded == 2:
                break
    except (av.error.FFmpegError, ValueError):
        pass
    finally:
        container.close()
    return decoded >= 2 or (decoded == 1 and container_kind is not None)


def _is_still_image(path: Path) -> bool:
    """Whether `path` is a picture, not a video: no video container's signature, and Pillow reads it
    (FFmpeg opens PNG and JPEG files as one-frame videos)."""
    if _container(path) is not None:
        return False
    try:
        open_image(path)
    except ReadError:
        return False
    return True
