"""data_tools.read: one video or image read as `vidgan prepare` makes frames, on lossless videos and
PNG / JPEG pictures written here; masks transformed like their input; the errors and what they found."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

import data_tools
from data_tools import PrepareOptions, prepare
from data_tools.read import Geometry, ReadError, read_image, read_video, resize_mask
from videos import id_frame, write_lossless

ORIENTATION = 0x0112  # the EXIF tag


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """Random uint8 RGB `[H, W, 3]`: any misplaced pixel shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def block_mean(picture: np.ndarray, factor: int) -> np.ndarray:
    """`[H, W, 3]` → `[H/f, W/f, 3]` float, each pixel the mean of its f×f block: an exact area resize."""
    h, w, c = picture.shape
    return picture.reshape(h // factor, factor, w // factor, factor, c).astype(np.float64).mean((1, 3))


# --- videos ------------------------------------------------------------------------------------------

def test_a_lossless_video_gives_its_first_frames_exactly(tmp_path):
    path = write_lossless(tmp_path / "ids.mkv", [id_frame(i) for i in range(12)])  # 64×48, one colour each
    clip, geometry = read_video(path, 16, 10)
    assert clip.shape == (10, 16, 16, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, np.stack([id_frame(i, 16, 16) for i in range(10)]))
    assert geometry == Geometry(64, 48, Fraction(1), 0)


def test_a_video_reads_as_prepare_stores_it(tmp_path):
    frames = [textured(48, 64, seed=i) for i in range(8)]
    (tmp_path / "src" / "only").mkdir(parents=True)
    write_lossless(tmp_path / "src" / "only" / "v.mkv", frames)
    clip, _ = read_video(tmp_path / "src" / "only" / "v.mkv", 24, 8)  # [8, 24, 24, 3]
    prepare(tmp_path / "src", tmp_path / "out", PrepareOptions(frames=8, size=24, workers=1, backend="pyav"),
            progress=False)
    assert np.array_equal(clip, np.load(tmp_path / "out" / "shards" / "shard-00000.npy"))
    # the centred 48×48 square, halved: within a level of the exact area average
    reference = np.stack([block_mean(f[:, 8:56], 2) for f in frames])
    assert np.abs(clip - reference).max() <= 1


@pytest.mark.parametrize("rotation, sar", [(0, None), (90, None), (180, None), (270, None),
                                           (0, Fraction(4, 3)), (90, Fraction(4, 3))])
def test_a_mask_is_turned_cropped_and_resized_like_the_video(tmp_path, rotation, sar):
    stored = np.zeros((48, 80), bool)  # over the stored pixels, off-centre so that turns and crops show
    stored[6:30, 10:37] = True
    frame = np.where(stored[:, :, None], 255, 0).astype(np.uint8).repeat(3, 2)  # white where the mask is
    path = write_lossless(tmp_path / "v.mkv", [frame] * 2, rotation=rotation, sar=sar)
    clip, geometry = read_video(path, 24, 1)
    assert geometry == Geometry(80, 48, sar or Fraction(1), rotation)
    resized = resize_mask(stored, geometry, 24)
    assert resized.shape == (24, 24) and resized.dtype == np.float32
    assert 0.05 < resized.mean() < 0.95  # some of the mask is in the square, not all of it
    assert np.abs(clip[0] - 255 * resized[:, :, None]).max() <= 0.51  # the frame's rounding only


def test_a_mask_of_another_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the mask is 20×10, the input 64×48"):
        resize_mask(np.ones((10, 20)), Geometry(64, 48, Fraction(1), 0), 16)


# --- images ------------------------------------------------------------------------------------------

def _save_turned(path, upright: np.ndarray, orientation: int, **options) -> None:
    """Store `upright` turned, with the EXIF orientation that tells a viewer to turn it back."""
    turns = {1: 0, 3: 2, 6: 1, 8: 3}[orientation]  # quarter turns counter-clockwise of the stored pixels
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(np.rot90(upright, turns).copy()).save(path, exif=exif, **options)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_png_is_read_upright_and_exactly(tmp_path, orientation):
    upright = textured(40, 80, seed=orientation)
    _save_turned(tmp_path / "in.png", upright, orientation)
    pixels, geometry = read_image(tmp_path / "in.png", 20)
    assert pixels.shape == (20, 20, 3) and pixels.dtype == np.uint8
    assert geometry == Geometry(80, 40, Fraction(1), 0)  # as shown
    assert np.abs(pixels - block_mean(upright[:, 20:60], 2)).max() <= 0.5  # the centred 40×40, halved


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_jpeg_is_read_upright(tmp_path, orientation):
    upright = np.zeros((32, 48, 3), np.uint8)  # four flat quarters, told apart by their colour
    upright[:16, :24], upright[:16, 24:], upright[16:, :24], upright[16:, 24:] = (250, 0, 0), (0, 250, 0), \
        (0, 0, 250), (250, 250, 250)
    _save_turned(tmp_path / "in.jpg", upright, orientation, quality=95, subsampling=0)  # chroma at full size
    pixels, geometry = read_image(tmp_path / "in.jpg", 16)
    assert (geometry.width, geometry.height) == (48, 32)
    assert np.abs(pixels - block_mean(upright[:, 8:40], 2)).mean() < 2  # JPEG: near, not exact


def test_a_mask_over_an_image_is_cropped_and_resized_like_it(tmp_path):
    known = np.ones((40, 80), np.float32)
    known[10:30, 30:50] = 0
    Image.fromarray(np.where(known[:, :, None] > 0, 255, 0).astype(np.uint8).repeat(3, 2)).save(tmp_path / "in.png")
    pixels, geometry = read_image(tmp_path / "in.png", 20)
    assert np.array_equal(resize_mask(known, geometry, 20), block_mean(known[:, 20:60, None], 2)[:, :, 0])
    assert np.array_equal(pixels[:, :, 0] / 255, resize_mask(known, geometry, 20))


# --- errors ------------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    Image.fromarray(textured(32, 32, seed=1)).save(tmp_path / "in.png")
    Image.fromarray(textured(32, 32, seed=2)).save(tmp_path / "in.jpg")
    write_lossless(tmp_path / "in.mp4", [id_frame(i) for i in range(8)])
    write_lossless(tmp_path / "short.mp4", [id_frame(i) for i in range(3)])
    for name, seed in (("noise.png", 0), ("noise.mp4", 1)):  # random bytes named as a picture, as a video
        (tmp_path / name).write_bytes(np.random.default_rng(seed).bytes(4000))
    return tmp_path


@pytest.mark.parametrize("read, name, found, message", [
    ("video", "missing.mp4", "missing", "{d}/missing.mp4: no such file"),
    ("image", "missing.png", "missing", "{d}/missing.png: no such file"),
    ("video", "noise.mp4", None, "cannot read {d}/noise.mp4 as a video (not a video: content matches no video "
                                 "container"),
    ("image", "noise.png", None, "cannot read {d}/noise.png as an image (cannot identify image file"),
    ("video", "in.png", "image", "{d}/in.png is an image, not a video"),
    ("video", "in.jpg", "image", "{d}/in.jpg is an image, not a video"),
    ("image", "in.mp4", "video", "{d}/in.mp4 is a video, not an image"),
    ("video", "short.mp4", "short", "{d}/short.mp4 has 3 frames, fewer than the 8 asked for"),
])
def test_errors_say_why_and_what_was_found(files, read, name, found, message):
    with pytest.raises(ReadError) as caught:
        read_video(files / name, 16, 8) if read == "video" else read_image(files / name, 16)
    assert str(caught.value).startswith(message.format(d=files))
    assert caught.value.found == found and caught.value.reason == str(caught.value)
    assert caught.value.frames == (3 if found == "short" else 0)


def test_the_package_exports_the_reader_lazily():
    assert data_tools.read_video is read_video and data_tools.ReadError is ReadError
    assert {"read_video", "read_image", "resize_mask", "Geometry", "ReadError"} <= set(data_tools.__all__)
