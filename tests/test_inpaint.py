"""`vidgan inpaint`: Yeh et al.'s latent search on a tiny GAN that the test trains, the importance
weights and Poisson blending checked against hand computations, the command end to end (PNG in/out,
a clip with missing frames), and its errors."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from videos import flat_frames, write_lossless

from data_tools.read import Geometry
from vidgan.checkpoint import load_trained
from vidgan.inpaint import importance_weights, inpaint, load_image, load_mask, main, poisson_blend

SIZE = 32  # the models' side
FRAMES = 8  # the video model's clip length
HOLE = (slice(8, 24), slice(8, 24))  # a 16×16 hole in the middle of a 32×32 picture


def to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 `[N, H, W, 3]` → float `[N, 3, H, W]` in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def hole_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean absolute error on the hole, in 0..255 levels, over all pictures."""
    return float((x - truth)[..., HOLE[0], HOLE[1]].abs().mean()) * 127.5


@pytest.fixture
def trained(trained_runs) -> dict:
    """The shared tiny runs (conftest.trained_runs): an image (2D) and a video (3D) run trained on 256
    flat-colour frames, and those frames."""
    return trained_runs


# --- the pieces, against hand computations ---------------------------------------------------------

def test_importance_weights_follow_yeh_et_al():
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 6:10, 6:10] = 0  # a 4×4 hole
    w = importance_weights(mask)
    assert w.shape == mask.shape and float(w[..., 6:10, 6:10].abs().sum()) == 0  # holes weigh nothing
    # a known pixel weighs the fraction of holes in its 7×7 window: (5, 5) sees rows and columns 6..8
    assert float(w[0, 0, 5, 5]) == pytest.approx(9 / 49)
    assert float(w[0, 0, 5, 7]) == pytest.approx(12 / 49)  # rows 6..8, columns 6..9
    assert float(w[0, 0, 2, 2]) == 0  # no hole within 3 pixels
    # at the border the window is cut: (2, 7), below a hole in rows 0..1, sees rows 0..5 (6×7 pixels),
    # 2×4 of them holes
    edge = torch.ones(1, 1, 16, 16)
    edge[..., 0:2, 6:10] = 0
    assert float(importance_weights(edge)[0, 0, 2, 7]) == pytest.approx(8 / 42)
    # clips: per frame; a whole known frame beside missing ones weighs every pixel 1, a missing frame 0
    clip = torch.ones(1, 3, 4, 8, 8)
    clip[:, :, 1:3] = 0
    wc = importance_weights(clip)
    assert torch.equal(wc[:, :, [0, 3]], torch.ones(1, 3, 2, 8, 8))
    assert float(wc[:, :, 1:3].abs().sum()) == 0


def test_poisson_blend_removes_an_offset_and_keeps_known_pixels_exact():
    ramp = torch.linspace(-0.8, 0.8, 24)
    truth = (ramp[None, :] + 0.5 * ramp[:, None]).expand(2, 3, 24, 24).clone()  # a linear (harmonic) image
    generated = truth + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)  # right shape, wrong colour
    mask = torch.ones(1, 1, 24, 24)
    mask[..., 5:17, 7:20] = 0
    out = poisson_blend(truth, generated, mask)
    assert torch.equal(out[..., mask[0, 0].bool()], truth[..., mask[0, 0].bool()])  # known: exact
    assert float((out - truth).abs().max()) < 1e-4  # the offset is gone from the hole too
    pasted = mask * truth + (1 - mask) * generated
    assert float((pasted - truth).abs().max()) == pytest.approx(0.3, abs=1e-6)  # what plain pasting leaves
    # clips: whole missing frames take the offset from the frames around them (through time)
    clip = truth[:, :, None].expand(2, 3, 6, 24, 24).clone()
    frames_known = torch.ones(1, 1, 6, 1, 1)
    frames_known[:, :, 2:4] = 0
    out3 = poisson_blend(clip, clip + 0.25, frames_known)
    assert float((out3 - clip).abs().max()) < 1e-4


def test_images_and_masks_are_cropped_and_resized_like_prepare(tmp_path):
    # a 48×40 picture: the centred 40×40 square is resized to 32×32 (scale 0.8)
    Image.fromarray(np.full((40, 48, 3), (10, 200, 90), np.uint8)).save(tmp_path / "in.png")
    pixels, geometry = load_image(tmp_path / "in.png", SIZE)
    assert pixels.shape == (SIZE, SIZE, 3) and (pixels == (10, 200, 90)).all()
    assert (geometry.width, geometry.height) == (48, 40)
    mask = np.full((40, 48), 255, np.uint8)
    mask[12:28, 16:32] = 0  # a 16×16 hole: columns 12..28 and rows 12..28 of the square, × 0.8
    Image.fromarray(mask).save(tmp_path / "mask.png")
    known = load_mask(tmp_path / "mask.png", SIZE, None, geometry)
    expected = np.ones((SIZE, SIZE), np.float32)
    expected[9:23, 9:23] = 0  # 9.6..22.4: pixels 9 and 22 are partly hole, hence holes
    assert np.array_equal(known, expected)
    # a mask of the model's size is taken as it is
    small = np.full((SIZE, SIZE), 255, np.uint8)
    small[3:5, 4:9] = 0
    Image.fromarray(small).save(tmp_path / "small.png")
    assert np.array_equal(load_mask(tmp_path / "small.png", SIZE, None, geometry), small / 255)
    # frames:a-b → the known frames of a clip
    clip_geometry = Geometry(SIZE, SIZE, 1, 0)
    assert load_mask("frames:2-4", SIZE, FRAMES, clip_geometry).tolist() == [1, 1, 0, 0, 0, 1, 1, 1]
    assert load_mask("frames:7", SIZE, FRAMES, clip_geometry).tolist() == [1] * 7 + [0]


# --- the search, on a trained model ----------------------------------------------------------------

def test_filled_holes_are_closer_to_the_truth_than_the_mean_image(trained):
    loaded = load_trained(trained["image"], with_discriminator=True)
    G, D = loaded.generator, loaded.discriminator
    truth = to_float(flat_frames(8, seed=123))  # colours the model never saw
    mean_image = to_float(trained["frames"]).mean(0, keepdim=True)  # [1, 3, 32, 32], the training mean
    mask = torch.ones(1, 1, SIZE, SIZE)
    mask[..., HOLE[0], HOLE[1]] = 0
    known = truth * mask - (1 - mask)  # the holes hold black, so nothing leaks from them
    # "paste": the holes hold G(z) itself; Poisson blending alone would already fill a flat hole exactly
    filled, generated, z = inpaint(G, D, known, mask, steps=300, restarts=4, seed=0, blend="paste")
    assert filled.shape == truth.shape and generated.shape == truth.shape and z.shape == (8, 8)
    assert bool((z.abs() <= 3).all())  # z stays in the prior's range
    assert torch.equal(filled[..., mask[0, 0].bool()], known[..., mask[0, 0].bool()])  # known pixels kept
    assert torch.equal(filled[..., HOLE[0], HOLE[1]], generated[..., HOLE[0], HOLE[1]])
    ours, mean = hole_error(filled, truth), hole_error(mean_image.expand_as(truth), truth)
    print(f"hole error: inpainted {ours:.1f}, mean image {mean:.1f} (of 255)")
    assert ours < 0.5 * mean
    # the search is what does it: the best of the same random starts, unoptimised, is far worse
    unsearched, _, _ = inpaint(G, D, known, mask, steps=0, restarts=4, seed=0, blend="paste")
    assert ours < 0.7 * hole_error(unsearched, truth)
    # the same seed gives the same result; Poisson blending only gets closer on these flat pictures
    again, _, z_again = inpaint(G, D, known, mask, steps=300, restarts=4, seed=0, blend="paste")
    assert torch.equal(z_again, z) and torch.equal(again, filled)
    assert hole_error(poisson_blend(known, generated, mask), truth) < ours


def test_command_fills_a_png_end_to_end(trained, tmp_path, capsys):
    truth = flat_frames(1, seed=7)[0]  # [32, 32, 3]
    given = truth.copy()
    given[HOLE] = 0
    Image.fromarray(given).save(tmp_path / "in.png")
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[HOLE] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    code = main([str(trained["image"]), "--input", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
                 "--out", str(out), "--steps", "300", "--blend", "paste", "--quiet"])
    output = capsys.readouterr()
    assert code == 0, output.err
    assert f"wrote {out}" in output.out
    with Image.open(out) as image:
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        filled = np.asarray(image)
    known = mask == 255
    assert np.array_equal(filled[known], truth[known])  # known pixels exactly as given
    mean_image = trained["frames"].astype(np.float32).mean(0)
    ours = np.abs(filled[HOLE].astype(np.float32) - truth[HOLE]).mean()
    assert ours < np.abs(mean_image[HOLE] - truth[HOLE]).mean()


def test_clip_with_missing_frames_gives_an_mp4_that_keeps_the_known_frames(trained, tmp_path):
    from vidgan.cli import build_parser

    frames = flat_frames(FRAMES + 4, seed=11)  # a longer video: the first T frames are used
    frames[:, 8:20, 6:16] = 255  # a white square (on even rows and columns: yuv420p keeps its edges)
    write_lossless(tmp_path / "in.mp4", frames)
    out = tmp_path / "out.mp4"
    # through the subparser the `vidgan` command registers
    args = build_parser("inpaint").parse_args(["inpaint", str(trained["video"]), "--input", str(tmp_path / "in.mp4"),
                              "--mask", "frames:2-4", "--out", str(out), "--steps", "10", "--restarts", "2",
                              "--quiet"])
    assert args.run(args) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.average_rate == 10  # the recipe's sample.fps
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert decoded.shape == (FRAMES, SIZE, SIZE, 3)
    known = [0, 1, 5, 6, 7]
    error = np.abs(decoded[known].astype(np.int16) - frames[known])  # H.264 at crf 18 and yuv420p: ≈1.3
    assert error.mean() < 2.5 and error.reshape(len(known), -1).mean(1).max() < 3.5


# --- errors ------------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    Image.fromarray(flat_frames(1, seed=3)[0]).save(tmp_path / "in.png")
    Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(tmp_path / "mask20.png")
    write_lossless(tmp_path / "in.mp4", flat_frames(FRAMES, seed=4))
    write_lossless(tmp_path / "short.mp4", flat_frames(3, seed=4))
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes())
    return tmp_path


@pytest.mark.parametrize("kind, input_name, mask, message", [
    ("image", "in.png", "mask20.png", "mask20.png is 20×20, but it must match the model's 32×32"),
    ("image", "noise.png", "mask.png", "cannot read {d}/noise.png as an image"),
    ("video", "noise.mp4", "frames:1-2", "cannot read {d}/noise.mp4 as a video"),
    ("image", "in.mp4", "mask.png", "is a video, but the checkpoint holds an image (2D) model"),
    ("video", "in.png", "mask.png", "is an image, but the checkpoint holds a video (3D) model"),
    ("video", "short.mp4", "frames:1-2", "short.mp4 has 3 frames, but the model makes clips of 8"),
    ("image", "in.png", "frames:1-2", "missing frames need a video (3D) checkpoint"),
    ("video", "in.mp4", "frames:5-8", "need 0 <= a <= b < 8"),
    ("video", "in.mp4", "frames:0-7", "every frame would be missing"),
    ("image", "missing.png", "mask.png", "--input {d}/missing.png: no such file"),
])
def test_command_errors_are_clear(trained, files, capsys, kind, input_name, mask, message):
    out = files / ("out.png" if kind == "image" else "out.mp4")
    mask_arg = mask if mask.startswith("frames:") else str(files / mask)
    code = main([str(trained[kind]), "--input", str(files / input_name), "--mask", mask_arg, "--out", str(out),
                 "--steps", "1", "--quiet"])
    assert code == 1
    assert message.format(d=files) in capsys.readouterr().err
    assert not out.exists()


def test_a_folder_that_is_no_run_and_a_wrong_output_type_are_refused(trained, files, capsys):
    assert main([str(files), "--input", str(files / "in.png"), "--mask", str(files / "mask.png"),
                 "--out", str(files / "o.png")]) == 1
    assert "not a run folder (with checkpoints/) or a checkpoint folder" in capsys.readouterr().err
    assert main([str(trained["image"]), "--input", str(files / "in.png"), "--mask", str(files / "mask.png"),
                 "--out", str(files / "o.mp4")]) == 1
    assert "an image (2D) checkpoint writes .png" in capsys.readouterr().err


def test_a_class_conditional_generator_has_its_class_searched_too():
    from vidgan.models import VideoGenerator
    from vidgan.models.common import ConditionalBatchNorm

    torch.manual_seed(0)
    G = VideoGenerator(z_dim=8, channels=4, size=32, frames=8, num_classes=3, out_bias=True).eval()
    with torch.no_grad():  # classes far apart: each its own strong scale and shift
        for norm in (m for m in G.modules() if isinstance(m, ConditionalBatchNorm)):
            norm.scale.weight.normal_(1.0, 1.0)
            norm.shift.weight.normal_(0.0, 1.0)
        truth = G(torch.randn(1, 8), torch.tensor([2]))  # [1, 3, T, S, S], class 2
    seen = []
    forward = G.forward
    G.forward = lambda z, y=None, **kw: (seen.append(y), forward(z, y, **kw))[1]
    mask = torch.ones(1, 1, 1, SIZE, SIZE)
    mask[..., HOLE[0], HOLE[1]] = 0
    _, generated, z = inpaint(G, None, truth, mask, steps=30, restarts=2, lam=0, seed=0, blend="paste")
    assert sorted(seen[1].tolist()) == [0, 0, 1, 1, 2, 2]  # 2 starts in each of the 3 classes
    torch.testing.assert_close(generated, forward(z, torch.tensor([2])))  # the best start is of class 2
