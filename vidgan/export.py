"""Samples to files: float clips → uint8 frames → grid → H.264 MP4 and PNG.

Used by the training loop for its fixed-noise samples (and by `vidgan sample`). Nothing here knows
about runs, ranks or Accelerate: callers pass tensors and paths, and decide who writes.

Layouts: model output is float `[N, C, T, H, W]` (or images `[N, C, H, W]`) in [-1, 1], C = 1 or 3;
frames are uint8 `[N, T, H, W, 3]` on the CPU; a grid video is uint8 `[T, GH, GW, 3]`.

The MP4 is what a browser plays while it downloads: H.264 High, yuv420p, even width and height,
`moov` before `mdat` (`+faststart`), colour tagged as BT.709 limited range (the matrix the RGB →
YUV conversion here uses, stated so players do not guess). One encoder thread and bit-exact
conversion make the bytes depend only on the input. Every file is written under a temporary name in
its destination folder and renamed into place, so readers see the whole file or none of it.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from data_tools.atomic import atomic_path, atomic_write_bytes

CRF = 18  # x264 constant rate factor: 0 lossless … 51 worst; ~18 is visually lossless for samples
PRESET = "medium"  # x264 speed/size trade-off (its default); sample grids are small, so speed hardly matters
ENCODER_THREADS = 1  # x264 threads: 1 makes the output bytes deterministic
PAD_VALUE = 0  # colour of the border between grid cells (uint8, 0 = black)
MAX_FPS_DENOMINATOR = 1001 * 1000  # fps as a Fraction: 30000/1001 kept exact, float noise rounded away


def to_uint8_frames(clips: torch.Tensor) -> np.ndarray:
    """Float clips `[N, C, T, H, W]` in [-1, 1] → uint8 frames `[N, T, H, W, 3]` on the CPU.

    Any device and float dtype (bf16 included). Values are clamped and rounded (x = 0 → 128, not
    truncated to 127); NaN becomes mid-grey so a diverged model still gives defined bytes. C = 1 is
    repeated to 3 channels. Images `[N, C, H, W]` come back as one-frame clips `[N, 1, H, W, 3]`.
    Quantised on the input's device, so only uint8 crosses to the host.
    """
    if not isinstance(clips, torch.Tensor):
        raise TypeError(f"clips must be a torch.Tensor; got {type(clips).__name__}")
    if clips.ndim == 4:
        clips = clips.unsqueeze(2)  # [N, C, 1, H, W]
    if clips.ndim != 5 or clips.shape[1] not in (1, 3):
        raise ValueError(f"clips must be [N, C, T, H, W] or [N, C, H, W] with C = 1 or 3; got {tuple(clips.shape)}")
    if not clips.is_floating_point():
        raise TypeError(f"clips must be floating point in [-1, 1]; got {clips.dtype}")
    x = clips.detach().float()  # bf16 holds 8 significant bits: map in float32 so each of 256 levels is hit
    x = torch.nan_to_num(x, nan=0.0)
    x = ((x + 1) * 127.5).clamp_(0, 255).round_().to(torch.uint8)  # [N, C, T, H, W]
    x = x.permute(0, 2, 3, 4, 1).cpu()  # [N, T, H, W, C]
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)  # [N, T, H, W, 3]
    return np.ascontiguousarray(x.numpy())


def clip_grid(frames_uint8, nrow: int | None = None, padding: int = 2, upscale: int = 1) -> np.ndarray:
    """Clips `[N, T, H, W, 3]` uint8 → one grid video `[T, GH, GW, 3]`, clip k in row k // nrow.

    Laid out by `torchvision.utils.make_grid` in a single call, the T frames riding along as 3T
    channels, so every frame has the same layout: GH = rows·(H + padding) + padding, GW likewise
    with nrow columns (make_grid returns a single clip without border). `nrow` defaults to
    ceil(sqrt(N)), a near-square grid. `upscale` enlarges the finished grid by pixel repetition
    (nearest neighbour), so a 64-px sample stays sharp when viewed larger.
    """
    from torchvision.utils import make_grid

    frames = _as_uint8_array(frames_uint8, ndim=5, what="frames_uint8 [N, T, H, W, 3]")
    n, t, h, w, _ = frames.shape
    if n == 0 or t == 0:
        raise ValueError(f"frames_uint8 must hold at least one clip of one frame; got {frames.shape}")
    nrow = math.ceil(math.sqrt(n)) if nrow is None else int(nrow)
    if nrow < 1 or padding < 0 or upscale < 1:
        raise ValueError(f"need nrow >= 1, padding >= 0, upscale >= 1; got {nrow}, {padding}, {upscale}")
    x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).reshape(n, t * 3, h, w)  # [N, T·3, H, W]
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=PAD_VALUE)  # [T·3, GH, GW]
    grid = grid.reshape(t, 3, *grid.shape[1:]).permute(0, 2, 3, 1)  # [T, GH, GW, 3]
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=1).repeat_interleave(upscale, dim=2)  # [T, GH·u, GW·u, 3]
    return np.ascontiguousarray(grid.numpy())


def write_mp4(path, frames_uint8, fps: int | float | Fraction) -> Path:
    """Encode frames `[T, H, W, 3]` uint8 RGB as H.264 / yuv420p MP4 at `fps`; returns the path.

    Odd heights and widths get one more row or column, a copy of the last (yuv420p needs even
    sides). `+faststart` puts the index first so a browser starts playing before the download ends.
    Written under a temporary name beside `path` and renamed: an interrupted write leaves no file.
    """
    import av
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation

    path = Path(path)
    frames = _as_uint8_array(frames_uint8, ndim=4, what="frames_uint8 [T, H, W, 3]")
    if len(frames) == 0:
        raise ValueError("frames_uint8 holds no frame")
    rate = Fraction(fps).limit_denominator(MAX_FPS_DENOMINATOR)
    if rate <= 0:
        raise ValueError(f"fps must be > 0; got {fps!r}")
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # [T, H', W', 3], even

    with atomic_path(path) as tmp, \
            av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        cc = stream.codec_context
        cc.width, cc.height, cc.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # tagged in the bitstream (VUI) so players convert back with the matrix used below
        cc.colorspace, cc.color_range = Colorspace.ITU709, ColorRange.MPEG
        cc.color_primaries, cc.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        stream.options = {"crf": str(CRF), "preset": PRESET, "threads": str(ENCODER_THREADS)}
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame = frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709,
                                   dst_color_range=ColorRange.MPEG,
                                   interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND
                                   | Interpolation.BITEXACT, threads=1)
            frame.pts, frame.time_base = i, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_png(path, image_uint8) -> Path:
    """Write an RGB image `[H, W, 3]` uint8 as PNG, atomically; returns the path."""
    from PIL import Image  # Pillow comes with torchvision; torchvision's own PNG encoder is deprecated

    path = Path(path)
    image = _as_uint8_array(image_uint8, ndim=3, what="image_uint8 [H, W, 3]")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # uint8 [H, W, 3] → an RGB PNG
    atomic_write_bytes(path, buffer.getvalue(), durable=False)  # samples can be redrawn: no fsync
    return path


def first_frame_grid_png(path, frames_uint8, nrow: int | None = None, *, padding: int = 2,
                         upscale: int = 1) -> Path:
    """PNG of the first frame of each clip `[N, T, H, W, 3]`, in the same layout as `clip_grid`."""
    frames = _as_uint8_array(frames_uint8, ndim=5, what="frames_uint8 [N, T, H, W, 3]")
    grid = clip_grid(frames[:, :1], nrow=nrow, padding=padding, upscale=upscale)  # [1, GH, GW, 3]
    return write_png(path, grid[0])


def film_strip_png(path, frames_uint8, every: int = 2, *, padding: int = 2, upscale: int = 1) -> Path:
    """PNG of clips `[N, T, H, W, 3]` as film strips: a row per clip, every `every`-th frame left to
    right, so appearance and motion show in one still picture (a first-frame grid hides both)."""
    from torchvision.utils import make_grid

    frames = _as_uint8_array(frames_uint8, ndim=5, what="frames_uint8 [N, T, H, W, 3]")
    if every < 1:
        raise ValueError(f"every must be >= 1; got {every}")
    shown = torch.from_numpy(frames[:, ::every])  # [N, T', H, W, 3]
    n, t, h, w, _ = shown.shape
    if n == 0 or t == 0:
        raise ValueError(f"frames_uint8 must hold at least one clip of one frame; got {frames.shape}")
    cells = shown.reshape(n * t, h, w, 3).permute(0, 3, 1, 2)  # [N·T', 3, H, W], row-major
    grid = make_grid(cells, nrow=t, padding=padding, pad_value=PAD_VALUE).permute(1, 2, 0)  # [GH, GW, 3]
    if upscale > 1:
        grid = grid.repeat_interleave(upscale, dim=0).repeat_interleave(upscale, dim=1)
    return write_png(path, grid.numpy())


def write_sample_grid(folder, stem: str, clips: torch.Tensor, fps: int | float | Fraction,
                      nrow: int | None = None, upscale: int = 1) -> tuple[Path | None, Path]:
    """Float clips `[N, C, T, H, W]` in [-1, 1] → `folder/stem.mp4` (grid video) and `folder/stem.png`
    (film strips: a row per clip, every other frame); returns `(mp4, png)`. Images `[N, C, H, W]` write
    a PNG grid only: `(None, png)`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames = to_uint8_frames(clips)  # [N, T, H, W, 3]
    if clips.ndim == 4:
        return None, first_frame_grid_png(folder / f"{stem}.png", frames, nrow=nrow, upscale=upscale)
    png = film_strip_png(folder / f"{stem}.png", frames, upscale=upscale)
    mp4 = write_mp4(folder / f"{stem}.mp4", clip_grid(frames, nrow=nrow, upscale=upscale), fps)
    return mp4, png


def _as_uint8_array(array, ndim: int, what: str) -> np.ndarray:
    """A uint8 numpy array of `ndim` dims ending in 3 channels (torch tensors moved to the CPU)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"{what} must be uint8; got {array.dtype}")
    if array.ndim != ndim or array.shape[-1] != 3:
        raise ValueError(f"{what}: got shape {array.shape}")
    return np.ascontiguousarray(array)
