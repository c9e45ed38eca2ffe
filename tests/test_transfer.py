"""`vidgan transfer`: one clip's content with another's motion, through a content/motion generator."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vidgan.checkpoint import save_model
from vidgan.export import to_uint8_frames, write_mp4
from vidgan.models import VideoGenerator
from vidgan.transfer import main, transfer
from videos import write_lossless

Z, MOTION, T, S = 8, 3, 8, 32


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> tuple[VideoGenerator, Path]:
    """A content/motion generator whose clips span the pixel range (running statistics measured, the
    output layer scaled up: freshly initialised, its clips would all be mid-grey), saved as a folder."""
    torch.manual_seed(0)
    G = VideoGenerator(z_dim=Z, channels=4, size=S, frames=T, latent="content_motion", motion_dim=MOTION)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.momentum = None  # a cumulative average over the pass below
                m.reset_running_stats()
        G.train()(torch.randn(64, Z))
        G.head.weight.mul_(20)
    G.eval()
    folder = tmp_path_factory.mktemp("g") / "g"
    save_model(G, folder)
    return G, folder


def through_mp4(frames: np.ndarray, path: Path) -> np.ndarray:
    """Frames `[T, S, S, 3]` as they come back from the command's own MP4 encoding (H.264 4:2:0 loses
    much of a generator's busy colour), to compare like with like."""
    write_mp4(path, frames, 8)
    return decode(path)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # [T, H, W, 3]


def test_the_result_is_a_contents_clip_moving_as_b_moves(generator, tmp_path):
    G, folder = generator
    z = torch.randn(2, Z, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = to_uint8_frames(G(z))  # [T, S, S, 3] each: two clips the generator can make
        # what the answer must be: A's content part with B's motion part
        wanted = to_uint8_frames(G(torch.cat([z[:1, : Z - MOTION], z[1:, Z - MOTION:]], dim=1)))[0]
    write_lossless(tmp_path / "a.mkv", a)
    write_lossless(tmp_path / "b.mkv", b)
    out = tmp_path / "c.mp4"
    assert main([str(folder), "--content", str(tmp_path / "a.mkv"), "--motion", str(tmp_path / "b.mkv"),
                 "--out", str(out), "--lam", "0", "--steps", "100", "--restarts", "2", "--quiet"]) == 0
    c = decode(out).astype(float)  # [T, S, S, 3]
    assert c.shape == (T, S, S, 3)
    off = {name: np.abs(c - through_mp4(x, tmp_path / f"{name}.mp4")).mean()
           for name, x in (("wanted", wanted), ("a", a), ("b", b))}
    assert off["wanted"] < 5 and off["wanted"] < off["a"] / 2 and off["wanted"] < off["b"] / 2, off

    # side by side: A | B | result, one MP4
    assert main([str(folder), "--content", str(tmp_path / "a.mkv"), "--motion", str(tmp_path / "b.mkv"),
                 "--out", str(tmp_path / "abc.mp4"), "--side-by-side", "--lam", "0", "--steps", "100",
                 "--restarts", "2", "--quiet"]) == 0
    row = decode(tmp_path / "abc.mp4")
    assert row.shape == (T, S, 3 * S, 3)
    side = through_mp4(np.concatenate([a, b, c.astype(np.uint8)], axis=2), tmp_path / "side.mp4")
    assert np.abs(row.astype(float) - side).mean() < 3


def test_the_api_joins_the_fitted_parts(generator):
    G, _ = generator
    z = torch.randn(2, Z, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        clips = G(z)
    result = transfer(G, None, clips[:1], clips[1:], steps=100, restarts=2, lam=0)
    assert (result.error < 0.02).all(), result.error  # each input found again: within 2.5/255 on average
    a, b = result.found
    assert torch.equal(result.z[0], torch.cat([a[: Z - MOTION], b[Z - MOTION:]]))  # A's content, B's motion
    with torch.no_grad():
        torch.testing.assert_close(G(result.found), result.fits)
        torch.testing.assert_close(G(result.z), result.clip)


def test_a_conditional_generator_renders_in_the_content_clips_class():
    torch.manual_seed(1)
    G = VideoGenerator(z_dim=Z, channels=4, size=S, frames=T, latent="content_motion", motion_dim=MOTION,
                       num_classes=3).eval()
    with torch.no_grad():
        for norm in G.modules():  # classes that look apart
            if hasattr(norm, "scale"):
                norm.scale.weight.normal_(1.0, 0.5)
                norm.shift.weight.normal_(0.0, 0.5)
        z = torch.randn(2, Z)
        clips = G(z, torch.tensor([2, 0]))  # A of class 2, B of class 0
    result = transfer(G, None, clips[:1], clips[1:], steps=40, restarts=1, lam=0)
    assert result.labels.tolist() == [2]  # the class is searched, and the result takes A's
    with torch.no_grad():
        torch.testing.assert_close(G(result.z, result.labels), result.clip)


def test_an_image_stands_for_a_still_clip_of_itself(generator, tmp_path):
    G, folder = generator
    with torch.no_grad():
        b = to_uint8_frames(G(torch.randn(1, Z)))[0]
    write_lossless(tmp_path / "b.mkv", b)
    Image.fromarray(b[3]).save(tmp_path / "a.png")
    out = tmp_path / "c.mp4"
    assert main([str(folder), "--content", str(tmp_path / "a.png"), "--motion", str(tmp_path / "b.mkv"),
                 "--out", str(out), "--lam", "0", "--steps", "5", "--restarts", "1", "--quiet"]) == 0
    assert decode(out).shape == (T, S, S, 3)


def test_bad_input_is_named_and_nothing_is_written(generator, tmp_path, capsys):
    G, folder = generator
    with torch.no_grad():
        clip = to_uint8_frames(G(torch.randn(1, Z)))[0]  # [T, S, S, 3]
    good = write_lossless(tmp_path / "good.mkv", clip)
    short = write_lossless(tmp_path / "short.mkv", clip[:5])
    big = write_lossless(tmp_path / "big.mkv", np.repeat(np.repeat(clip, 2, axis=1), 3, axis=2))  # 96×64
    Image.fromarray(clip[0]).save(tmp_path / "still.png")
    single = tmp_path / "single"
    save_model(VideoGenerator(z_dim=Z, channels=4, size=S, frames=T).eval(), single)
    out = tmp_path / "out" / "c.mp4"
    out.parent.mkdir()

    def error(*args: str, model: Path = folder) -> str:
        assert main([str(model), *args, "--lam", "0", "--steps", "2", "--quiet"]) == 1
        assert not list(out.parent.iterdir())  # nothing written
        return capsys.readouterr().err

    both = ("--content", str(good), "--motion", str(good))
    assert "--content " + str(tmp_path / "nope.mp4") + ": no such file" in error(
        "--content", str(tmp_path / "nope.mp4"), "--motion", str(good), "--out", str(out))
    assert f"--motion {tmp_path / 'still.png'} is an image; motion comes from a video" in error(
        "--content", str(good), "--motion", str(tmp_path / "still.png"), "--out", str(out))
    assert "has 5 frames, but the model makes clips of 8" in error(
        "--content", str(short), "--motion", str(good), "--out", str(out))
    message = error("--content", str(good), "--motion", str(big), "--out", str(out))
    assert "--motion" in message and "is 96×64, but the model makes 32×32 frames: give --resize" in message
    assert "one latent for the whole clip" in error(*both, "--out", str(out), model=single)
    assert "writes an MP4" in error(*both, "--out", str(out.with_suffix(".gif")))
    # --resize takes the big clip as `vidgan prepare --size 32` would
    assert main([str(folder), "--content", str(good), "--motion", str(big), "--resize", "--out", str(out),
                 "--lam", "0", "--steps", "2", "--restarts", "1", "--quiet"]) == 0
    assert decode(out).shape == (T, S, S, 3)
