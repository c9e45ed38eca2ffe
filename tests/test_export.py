"""vidgan.export: value mapping, grid layout, and MP4 / PNG files decoded back and checked."""

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidgan.export import (clip_grid, first_frame_grid_png, to_uint8_frames, write_mp4, write_png,
                           write_sample_grid)


def flat_clips(n: int, t: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Clips whose every frame is one flat colour, distinct per clip and per frame.

    Returns the float clips `[N, 3, T, H, W]` in [-1, 1] and their colours uint8 `[N, T, 3]`.
    Colours sit in 40..215 and at least 40 apart, so H.264's error cannot confuse two of them.
    """
    rng = np.random.default_rng(seed)
    levels = np.arange(40, 216, 40)  # 40, 80, ..., 200
    combos = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    colours = combos[rng.choice(len(combos), n * t, replace=False)].reshape(n, t, 3).astype(np.uint8)
    values = torch.from_numpy(colours).float() / 127.5 - 1  # exact preimages of the uint8 levels
    clips = values.permute(0, 2, 1)[..., None, None].expand(n, 3, t, h, w).contiguous()
    return clips, colours


def decode(path):
    """(stream facts, frames uint8 [T, H, W, 3]) of a video file, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                 "width": stream.codec_context.width, "height": stream.codec_context.height,
                 "fps": stream.average_rate}
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return facts, frames


def read_png(path) -> np.ndarray:
    """An image file decoded with Pillow, uint8 `[H, W, 3]`."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def top_level_boxes(path) -> list[str]:
    """Types of the top-level ISO-BMFF boxes of an MP4, in file order."""
    data = path.read_bytes()
    kinds, i = [], 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8].decode("latin1")
        if size == 1:  # 64-bit size follows the type
            size = int.from_bytes(data[i + 8:i + 16], "big")
        elif size == 0:  # box runs to the end of the file
            size = len(data) - i
        kinds.append(kind)
        i += size
    return kinds


# ---------------------------------------------------------------- value mapping


def test_to_uint8_maps_clamps_and_rounds():
    # 10.6 / 127.5 - 1 → 10.6 on the uint8 scale: rounds to 11, truncation would give 10
    values = torch.tensor([-1.0, 1.0, 0.0, -3.0, 2.5, 10.6 / 127.5 - 1, float("nan")])
    clips = values.view(1, 1, 7, 1, 1).expand(2, 3, 7, 1, 1)  # [N=2, C=3, T=7, 1, 1]
    out = to_uint8_frames(clips)
    assert out.shape == (2, 7, 1, 1, 3) and out.dtype == np.uint8
    assert out[0, :, 0, 0, 0].tolist() == [0, 255, 128, 0, 255, 11, 128]


def test_to_uint8_layout_grayscale_images_and_bf16():
    clips = torch.rand(2, 3, 4, 5, 6) * 2 - 1  # [N, C, T, H, W]
    out = to_uint8_frames(clips)
    assert out.shape == (2, 4, 5, 6, 3)
    expected = ((clips + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_array_equal(out, expected)  # channel c of frame t lands at [..., t, :, :, c]

    gray = to_uint8_frames(clips[:, :1])
    assert gray.shape == (2, 4, 5, 6, 3)
    assert (gray == gray[..., :1]).all() and np.array_equal(gray[..., 0], out[..., 0])

    images = to_uint8_frames(clips[:, :, 0])  # [N, C, H, W]
    assert images.shape == (2, 1, 5, 6, 3)
    np.testing.assert_array_equal(images[:, 0], out[:, 0])

    levels = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]).view(1, 1, 5, 1, 1).expand(1, 3, 5, 2, 2)
    bf16 = to_uint8_frames(levels.bfloat16())
    assert bf16[0, :, 0, 0, 0].tolist() == [0, 64, 128, 191, 255]  # 63.75 → 64, 191.25 → 191


def test_to_uint8_rejects_bad_input():
    with pytest.raises(ValueError, match="C = 1 or 3"):
        to_uint8_frames(torch.zeros(1, 2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[N, C, T, H, W\]"):
        to_uint8_frames(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="floating point"):
        to_uint8_frames(torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------- grid layout


def test_clip_grid_layout_padding_and_upscale():
    clips, colours = flat_clips(n=5, t=3, h=6, w=7)
    frames = to_uint8_frames(clips)  # [5, 3, 6, 7, 3]
    grid = clip_grid(frames)  # nrow = ceil(sqrt(5)) = 3 → 2 rows × 3 columns
    assert grid.shape == (3, 2 * (6 + 2) + 2, 3 * (7 + 2) + 2, 3) and grid.dtype == np.uint8
    for k in range(5):
        y, x = 2 + (k // 3) * 8, 2 + (k % 3) * 9
        cell = grid[:, y:y + 6, x:x + 7]  # [T, H, W, 3]
        assert (cell == colours[k][:, None, None, :]).all(), k
    mask = np.ones(grid.shape[1:3], bool)
    for k in range(5):
        y, x = 2 + (k // 3) * 8, 2 + (k % 3) * 9
        mask[y:y + 6, x:x + 7] = False
    assert (grid[:, mask] == 0).all()  # borders and the empty sixth cell are black

    assert clip_grid(frames, nrow=5).shape == (3, 6 + 4, 5 * 9 + 2, 3)
    assert clip_grid(frames, padding=0, nrow=5).shape == (3, 6, 35, 3)
    big = clip_grid(frames, upscale=2)
    assert big.shape == (3, 2 * grid.shape[1], 2 * grid.shape[2], 3)
    for dy in (0, 1):
        for dx in (0, 1):
            np.testing.assert_array_equal(big[:, dy::2, dx::2], grid)  # nearest neighbour: pixels repeated


# ---------------------------------------------------------------- MP4


def test_write_mp4_is_browser_ready_h264_with_recognisable_content(tmp_path):
    clips, colours = flat_clips(n=4, t=6, h=16, w=16)
    grid = clip_grid(to_uint8_frames(clips))  # [6, 38, 38, 3]
    path = write_mp4(tmp_path / "grid.mp4", grid, fps=8)
    assert path == tmp_path / "grid.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.mp4"]  # no temporary left behind

    facts, decoded = decode(path)
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "width": 38, "height": 38, "fps": 8}
    assert decoded.shape == grid.shape  # every frame, no frame dropped or duplicated
    boxes = top_level_boxes(path)
    assert "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"), boxes

    assert np.abs(decoded.astype(int) - grid).mean() < 3
    for k in range(4):  # the centre of each cell holds its colour, frame by frame
        y, x = 2 + (k // 2) * 18, 2 + (k % 2) * 18
        centre = decoded[:, y + 4:y + 12, x + 4:x + 12].reshape(6, -1, 3).mean(1)  # [T, 3]
        assert np.abs(centre - colours[k]).max() < 6, (k, centre, colours[k])


def test_write_mp4_fractional_fps_and_deterministic_bytes(tmp_path):
    frames = to_uint8_frames(flat_clips(n=1, t=4, h=8, w=8)[0])[0]  # [4, 8, 8, 3]
    a = write_mp4(tmp_path / "a.mp4", frames, fps=Fraction(30000, 1001))
    b = write_mp4(tmp_path / "b.mp4", frames, fps=Fraction(30000, 1001))
    assert decode(a)[0]["fps"] == Fraction(30000, 1001)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="fps must be > 0"):
        write_mp4(tmp_path / "c.mp4", frames, fps=0)
    with pytest.raises(TypeError, match="uint8"):
        write_mp4(tmp_path / "c.mp4", frames.astype(np.float32), fps=8)
    assert not (tmp_path / "c.mp4").exists()


def test_write_mp4_pads_odd_sizes_by_replicating_the_edge(tmp_path):
    frames = np.zeros((3, 15, 21, 3), np.uint8)  # odd height and width
    frames[:, :, :10] = (200, 40, 40)
    frames[:, :, 10:] = (40, 40, 200)
    frames[:, -1, :, 1] = 160  # the last row has its own colour, so padding with it is visible
    facts, decoded = decode(write_mp4(tmp_path / "odd.mp4", frames, fps=25))
    assert (facts["width"], facts["height"]) == (22, 16)
    assert decoded.shape == (3, 16, 22, 3)
    assert np.abs(decoded[:, :15, :21].astype(int) - frames).mean() < 4
    right, bottom = decoded[:, :14, 21].astype(int), decoded[:, 15, 2:8].astype(int)
    assert np.abs(right - (40, 40, 200)).mean() < 8  # padded column copies the blue right edge
    assert np.abs(bottom - (200, 160, 40)).mean() < 12  # padded row copies the last row, not black


def test_write_mp4_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    frames = to_uint8_frames(flat_clips(n=1, t=5, h=8, w=8)[0])[0]  # [5, 8, 8, 3]
    path = write_mp4(tmp_path / "s.mp4", frames, fps=8)
    before = path.read_bytes()
    real, calls = av.VideoFrame.from_ndarray, []

    def failing(*args, **kwargs):  # the encoder dies at the third frame
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(av.VideoFrame, "from_ndarray", failing)
        with pytest.raises(RuntimeError, match="boom"):
            write_mp4(path, frames[::-1].copy(), fps=8)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4"]

    def refuse(src, dst):  # the file is complete, but the rename fails (e.g. a full disk's quota)
        raise OSError("rename refused")

    with monkeypatch.context() as patch:
        patch.setattr("os.replace", refuse)
        with pytest.raises(OSError, match="rename refused"):
            write_mp4(path, frames[::-1].copy(), fps=8)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.mp4"]


# ---------------------------------------------------------------- PNG and the sample grid


def test_write_png_and_first_frame_grid_read_back_exactly(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    write_png(tmp_path / "img.png", image)
    np.testing.assert_array_equal(read_png(tmp_path / "img.png"), image)

    frames = to_uint8_frames(flat_clips(n=3, t=4, h=5, w=5)[0])  # [3, 4, 5, 5, 3]
    first_frame_grid_png(tmp_path / "grid.png", frames, nrow=3)
    png = read_png(tmp_path / "grid.png")
    np.testing.assert_array_equal(png, clip_grid(frames, nrow=3)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "img.png"]


def test_write_sample_grid_bf16_upscaled(tmp_path):
    clips, colours = flat_clips(n=4, t=5, h=8, w=8)
    mp4, png = write_sample_grid(tmp_path / "samples", "kimg000010", clips.bfloat16(), fps=8, upscale=2)
    assert (mp4.name, png.name) == ("kimg000010.mp4", "kimg000010.png")
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [mp4.name, png.name]
    side = 2 * (2 * (8 + 2) + 2)  # 2 × 2 cells of 8 px, 2 px borders, then doubled
    facts, decoded = decode(mp4)
    assert (facts["width"], facts["height"], len(decoded)) == (side, side, 5)
    image = read_png(png)  # film strips: a row per clip, frames 0, 2, 4
    assert image.shape == (2 * (4 * 10 + 2), 2 * (3 * 10 + 2), 3)
    for k in range(4):
        for column, t in enumerate((0, 2, 4)):
            y, x = 2 * (2 + k * 10), 2 * (2 + column * 10)
            assert (image[y:y + 16, x:x + 16] == colours[k, t]).all()  # exact in the PNG
    for k in range(4):
        y, x = 2 * (2 + (k // 2) * 10), 2 * (2 + (k % 2) * 10)
        centre = decoded[:, y + 4:y + 12, x + 4:x + 12].reshape(5, -1, 3).mean(1)
        assert np.abs(centre - colours[k]).max() < 6


def test_write_sample_grid_grayscale_and_images(tmp_path):
    gray = torch.linspace(-1, 1, 4).view(4, 1, 1, 1, 1).expand(4, 1, 3, 10, 10)  # [N, 1, T, H, W]
    mp4, _ = write_sample_grid(tmp_path, "gray", gray, fps=8)
    _, decoded = decode(mp4)
    assert decoded.shape == (3, 2 * (10 + 2) + 2, 2 * (10 + 2) + 2, 3)
    spread = decoded.astype(int).max(-1) - decoded.astype(int).min(-1)
    assert spread.max() <= 3  # R = G = B, up to the codec's rounding

    images = torch.rand(3, 3, 10, 10) * 2 - 1  # [N, C, H, W]
    mp4, png = write_sample_grid(tmp_path / "img", "step1", images, fps=8, nrow=3)
    assert mp4 is None and [p.name for p in (tmp_path / "img").iterdir()] == ["step1.png"]
    assert read_png(png).shape == (14, 3 * 12 + 2, 3)
