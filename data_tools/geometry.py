"""The spatial transform shared by both decode backends: display rotation, then the largest centred
square in display geometry (square pixels), then an antialiased resize to S×S."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A crop in stored-pixel coordinates of the rotated frame."""

    x: int
    y: int
    width: int
    height: int


def normalise_rotation(degrees: float | int | None) -> int:
    """Counter-clockwise display rotation rounded to a multiple of 90 in [0, 360)."""
    if degrees is None:
        return 0
    return int(round(float(degrees) / 90.0)) * 90 % 360


def square_crop(width: int, height: int, sar: Fraction | None = None) -> CropBox:
    """Centred crop whose displayed shape is square (the pixel aspect ratio `sar` taken into account)."""
    sar = Fraction(sar) if sar else Fraction(1)
    if sar <= 0:
        sar = Fraction(1)
    if width * sar >= height:  # landscape as displayed: full height, narrower width
        crop_w, crop_h = max(1, min(width, round(height / sar))), height
    else:
        crop_w, crop_h = width, max(1, min(height, round(width * sar)))
    return CropBox((width - crop_w) // 2, (height - crop_h) // 2, crop_w, crop_h)


def area_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] float32 weights that average each output pixel's footprint (box filter, exact area)."""
    edges = np.arange(dst + 1, dtype=np.float64) * (src / dst)
    lo, hi = edges[:-1, None], edges[1:, None]
    pix = np.arange(src, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, pix + 1) - np.maximum(lo, pix), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


class AreaResizer:
    """Crop + area resize of RGB uint8 frames `[H, W, 3]` → `[S, S, 3]` with numpy (decord's path)."""

    def __init__(self, box: CropBox, size: int):
        self.box = box
        self.rows = area_matrix(box.height, size)  # [S, h]
        self.cols = area_matrix(box.width, size).T.copy()  # [w, S]

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        b = self.box
        crop = frame[b.y : b.y + b.height, b.x : b.x + b.width].astype(np.float32)  # [h, w, 3]
        tmp = np.einsum("sh,hwc->swc", self.rows, crop, optimize=True)  # [S, w, 3]
        out = np.einsum("swc,wt->stc", tmp, self.cols, optimize=True)  # [S, S, 3]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
