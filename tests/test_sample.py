"""`vidgan sample` and `vidgan interpolate` on generators trained by the test: files decoded back with
PyAV, determinism, options, and the errors a user meets."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidgan.checkpoint import load_trained, save_model
from vidgan.sample import interpolation_latents, latents, main_interpolate, main_sample, sample_clips, slerp

FRAMES, SIZE, FPS = 8, 32, 10  # the shared tiny runs' clip shape and sample.fps (conftest.trained_runs)


@pytest.fixture
def video_run(trained_runs) -> Path:
    return trained_runs["video"]


@pytest.fixture
def image_run(trained_runs) -> Path:
    return trained_runs["image"]


@pytest.fixture(scope="module")
def samples(trained_runs, tmp_path_factory) -> Path:
    """`vidgan sample RUN --num 5 --seed 3 --batch 2 --grid`, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("samples") / "s"
    assert main_sample([str(trained_runs["video"]), "--num", "5", "--seed", "3", "--batch", "2", "--grid",
                        "--quiet", "--out", str(out)]) == 0
    return out


def decode(path: Path) -> tuple[dict, np.ndarray]:
    """(stream facts, frames uint8 [T, H, W, 3]) of a video file, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        facts = {"codec": stream.codec_context.name, "pix_fmt": decoded[0].format.name,
                 "width": decoded[0].width, "height": decoded[0].height, "fps": stream.average_rate}
    return facts, np.stack([f.to_ndarray(format="rgb24") for f in decoded])


def sample(run: Path, out: Path, *extra: str) -> list[bytes]:
    """Run `vidgan sample` with `--num 3`; the bytes of the files it wrote, in name order."""
    assert main_sample([str(run), "--num", "3", "--quiet", "--out", str(out), *extra]) == 0
    return [p.read_bytes() for p in sorted(out.glob("sample-*"))]


# --- files -----------------------------------------------------------------------------------

def test_writes_n_browser_playable_mp4s_and_a_grid(samples):
    names = sorted(p.name for p in samples.iterdir())
    assert names == ["grid.mp4", "grid.png"] + [f"sample-{i:05d}.mp4" for i in range(5)] + ["strip.png"]
    for i in range(5):
        facts, frames = decode(samples / f"sample-{i:05d}.mp4")
        assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "width": SIZE, "height": SIZE, "fps": FPS}
        assert frames.shape == (FRAMES, SIZE, SIZE, 3)
        data = (samples / f"sample-{i:05d}.mp4").read_bytes()
        assert data.index(b"moov") < data.index(b"mdat")  # +faststart: playable while downloading
    # grid: 5 clips → 3 columns, 2 rows of 32 px cells with 2 px borders; the PNG shows first frames
    facts, frames = decode(samples / "grid.mp4")
    assert (facts["width"], facts["height"], len(frames)) == (3 * 34 + 2, 2 * 34 + 2, FRAMES)
    with Image.open(samples / "grid.png") as image:
        assert image.size == (3 * 34 + 2, 2 * 34 + 2)
        sheet = np.asarray(image.convert("RGB"))
    first = decode(samples / "sample-00004.mp4")[1][0]
    cell = sheet[36:68, 36:68]  # clip 4: row 1, column 1
    assert np.abs(cell.astype(int) - first).mean() < 4  # the same picture, up to H.264's error
    # strip: a row per clip, every other frame left to right
    with Image.open(samples / "strip.png") as image:
        assert image.size == (FRAMES // 2 * 34 + 2, 5 * 34 + 2)
        strip = np.asarray(image.convert("RGB"))
    clip4 = decode(samples / "sample-00004.mp4")[1]
    for column in range(FRAMES // 2):
        cell = strip[2 + 4 * 34:2 + 4 * 34 + 32, 2 + column * 34:2 + column * 34 + 32]
        assert np.abs(cell.astype(int) - clip4[2 * column]).mean() < 4


def test_fps_option_and_upscale(video_run, tmp_path):
    sample(video_run, tmp_path / "a", "--num", "1", "--fps", "30000/1001", "--upscale", "2")
    facts, frames = decode(tmp_path / "a" / "sample-00000.mp4")
    assert facts["fps"] == Fraction(30000, 1001)
    assert frames.shape == (FRAMES, 2 * SIZE, 2 * SIZE, 3)
    # nearest neighbour: each 2×2 block is one pixel repeated (up to H.264's error)
    blocks = frames.reshape(FRAMES, SIZE, 2, SIZE, 2, 3).astype(int)
    assert np.abs(blocks - blocks[:, :, :1, :, :1]).mean() < 2


def test_same_seed_same_bytes_whatever_the_batch_other_seed_other_clips(video_run, samples, tmp_path):
    again = sample(video_run, tmp_path / "again", "--seed", "3", "--batch", "1")
    assert again == [(samples / f"sample-{i:05d}.mp4").read_bytes() for i in range(3)]  # num 5 began alike
    other = sample(video_run, tmp_path / "other", "--seed", "4")
    assert all(a != b for a, b in zip(again, other))


def test_api_clips_do_not_depend_on_batch_and_seed_leaves_global_rng_alone(video_run):
    from vidgan.export import to_uint8_frames

    G = load_trained(video_run).generator
    state = torch.random.get_rng_state()
    five = sample_clips(G, 5, seed=7, batch=5)
    assert five.shape == (5, 3, FRAMES, SIZE, SIZE)
    for batch in (1, 2, 3):
        clips = sample_clips(G, 5, seed=7, batch=batch)
        # the same noise per clip; kernels of some batch sizes round the last float bit differently
        assert torch.allclose(clips, five, rtol=0, atol=1e-6)
        assert np.array_equal(to_uint8_frames(clips), to_uint8_frames(five))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(latents(3, G.z_dim, 7), latents(5, G.z_dim, 7)[:3])


def test_run_folder_checkpoint_folder_and_generator_folder_agree(video_run, samples, tmp_path):
    checkpoints = sorted((video_run / "checkpoints").glob("checkpoint-*"))
    assert [p.name for p in checkpoints] == ["checkpoint-000000000012", "checkpoint-000000000024"]
    trained = load_trained(video_run)
    assert trained.folder == checkpoints[-1] and trained.recipe.sample.fps == FPS
    expected = [(samples / f"sample-{i:05d}.mp4").read_bytes() for i in range(3)]
    assert sample(checkpoints[-1], tmp_path / "ckpt", "--seed", "3") == expected
    assert sample(checkpoints[-1] / "generator_ema", tmp_path / "gen", "--seed", "3") == expected
    assert sample(checkpoints[0], tmp_path / "older", "--seed", "3") != expected


def test_no_ema_uses_the_raw_generator(video_run, tmp_path):
    ema = load_trained(video_run).generator
    raw = load_trained(video_run, which="raw").generator
    assert not torch.equal(sample_clips(ema, 2, seed=0), sample_clips(raw, 2, seed=0))
    assert sample(video_run, tmp_path / "ema") != sample(video_run, tmp_path / "raw", "--no-ema")


def test_image_checkpoint_writes_pngs(image_run, tmp_path):
    out = tmp_path / "img"
    assert main_sample([str(image_run), "--num", "3", "--grid", "--upscale", "2", "--quiet",
                        "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png"] + [f"sample-{i:05d}.png" for i in range(3)]
    with Image.open(out / "sample-00000.png") as image:
        assert image.size == (2 * SIZE, 2 * SIZE) and image.mode == "RGB"
    with pytest.raises(ValueError, match="a video model is needed"):
        load_trained(image_run, kind="video")


# --- interpolate -----------------------------------------------------------------------------

def test_interpolate_writes_each_steps_clip_in_turn(video_run, tmp_path):
    out = tmp_path / "walk" / "walk.mp4"
    assert main_interpolate([str(video_run), "--steps", "3", "--points", "3", "--seed", "3", "--fps", "12",
                             "--out", str(out)]) == 0
    facts, frames = decode(out)
    steps = (3 - 1) * 3 + 1
    assert facts["codec"] == "h264" and facts["fps"] == 12 and frames.shape == (steps * FRAMES, SIZE, SIZE, 3)
    # the walk starts at sample-00000 of the same seed and passes through sample-00001 at step 3
    G = load_trained(video_run).generator
    z = interpolation_latents(G.z_dim, seed=3, points=3, steps=3)
    assert torch.equal(z[[0, 3, 6]], latents(3, G.z_dim, 3))


def test_interpolate_image_model_one_frame_per_step(image_run, tmp_path):
    out = tmp_path / "walk.mp4"
    assert main_interpolate([str(image_run), "--steps", "4", "--out", str(out)]) == 0
    facts, frames = decode(out)
    assert frames.shape == (4 + 1, SIZE, SIZE, 3) and facts["fps"] == FPS


def test_slerp_keeps_the_norm_between_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([0.5**0.5, 0.5**0.5])) and torch.equal(slerp(a, b, 0.0), a)
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear


def test_fix_content_or_motion_holds_that_part_of_every_latent(tmp_path, capsys):
    from vidgan.models import VideoGenerator
    from vidgan.sample import hold

    torch.manual_seed(0)
    G = VideoGenerator(z_dim=10, channels=4, size=SIZE, frames=FRAMES, latent="content_motion", motion_dim=4)
    with torch.no_grad():  # larger weights than DCGAN's init: clips of visible contrast, so they tell apart
        for conv in (m for m in G.modules() if isinstance(m, (torch.nn.ConvTranspose3d, torch.nn.Linear))):
            conv.weight.normal_(0, 0.1)
    save_model(G.eval(), tmp_path / "g")
    z = latents(4, 10, seed=3)
    for part, held, free in (("content", slice(0, 6), slice(6, 10)), ("motion", slice(6, 10), slice(0, 6))):
        fixed = hold(G, z, part)
        assert torch.equal(fixed[:, held], z[:1, held].expand(4, -1))  # every clip takes clip 0's part
        assert torch.equal(fixed[:, free], z[:, free])  # and keeps its own other part
        sample(tmp_path / "g", tmp_path / part, "--seed", "3", "--fix", part)
        sample(tmp_path / "g", tmp_path / f"{part}-free", "--seed", "3")
        # clip 0 is the unfixed clip 0 (up to float rounding through the encoder); clip 1 is not
        held_0, free_0 = (decode(tmp_path / d / "sample-00000.mp4")[1].astype(int) for d in (part, f"{part}-free"))
        held_1, free_1 = (decode(tmp_path / d / "sample-00001.mp4")[1].astype(int) for d in (part, f"{part}-free"))
        assert np.abs(held_0 - free_0).mean() < 0.3
        assert np.abs(held_1 - free_1).mean() > 1
        clips = sample_clips(G, 3, seed=3, fix=part)
        torch.testing.assert_close(clips, sample_clips(G, 3, seed=3, fix=part, batch=1), rtol=1e-4, atol=1e-6)
        assert not torch.allclose(clips[1], sample_clips(G, 3, seed=3)[1])
    # an interpolation with the content held walks through motions only
    out = tmp_path / "walk.mp4"
    assert main_interpolate([str(tmp_path / "g"), "--steps", "2", "--fix", "content", "--out", str(out)]) == 0
    assert decode(out)[1].shape == (3 * FRAMES, SIZE, SIZE, 3)

    # a generator with one z is refused before anything is written
    save_model(VideoGenerator(z_dim=10, channels=4, size=SIZE, frames=FRAMES).eval(), tmp_path / "single")
    assert main_sample([str(tmp_path / "single"), "--fix", "motion", "--out", str(tmp_path / "no")]) == 2
    assert "--fix motion needs a generator whose latent has a content and a motion part" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


# --- errors ----------------------------------------------------------------------------------

def test_errors_name_what_is_wrong(video_run, tmp_path, capsys):
    empty_run = tmp_path / "empty-run"
    (empty_run / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty-run/checkpoints"):
        load_trained(empty_run)
    assert main_sample([str(empty_run), "--out", str(tmp_path / "o")]) == 2
    assert "vidgan sample: error:" in capsys.readouterr().err and not (tmp_path / "o").exists()

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"stranger: not a run folder .*, a checkpoint folder"):
        load_trained(stranger)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a run folder"):
        load_trained(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such run"):
        load_trained(tmp_path / "missing")


def copy_checkpoint(video_run: Path, dest: Path) -> Path:
    import shutil

    source = sorted((video_run / "checkpoints").glob("checkpoint-*"))[-1]
    return Path(shutil.copytree(source, dest / source.name))


def test_corrupt_or_truncated_files_are_named(video_run, tmp_path):
    ckpt = copy_checkpoint(video_run, tmp_path)
    weights = ckpt / "generator_ema" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"generator_ema/model.safetensors: corrupt or truncated safetensors"):
        load_trained(ckpt)
    load_trained(ckpt, which="raw")  # the raw generator beside it is intact

    config = ckpt / "generator" / "config.json"
    config.write_text(config.read_text()[:20])
    with pytest.raises(ValueError, match=r"generator/config.json: corrupt or truncated, not valid JSON"):
        load_trained(ckpt, which="raw")


def test_other_architecture_is_refused(video_run, tmp_path):
    from vidgan.models import VideoDiscriminator, VideoGenerator

    ckpt = copy_checkpoint(video_run, tmp_path)
    # a config describing a wider model than the weights
    save_model(VideoGenerator(100, 8, SIZE, FRAMES), tmp_path / "wide")
    (ckpt / "generator_ema" / "config.json").write_bytes((tmp_path / "wide" / "config.json").read_bytes())
    with pytest.raises(ValueError, match="the weights do not fit the model described by"):
        load_trained(ckpt)
    # a discriminator where the generator should be
    save_model(VideoDiscriminator(4, SIZE, FRAMES), ckpt / "generator")
    with pytest.raises(ValueError, match="holds a VideoDiscriminator, not a generator"):
        load_trained(ckpt, which="raw")
    # a generator whose shape is not the recipe's
    save_model(VideoGenerator(100, 4, 64, 16), ckpt / "generator")
    with pytest.raises(ValueError, match="does not match its recipe"):
        load_trained(ckpt, which="raw")


def test_bad_options_exit_2(tmp_path):
    run = tmp_path / "run"  # argparse refuses the options before any folder is read
    for bad in (["--num", "0"], ["--upscale", "0"], ["--fps", "-3"], ["--batch", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main_sample([str(run), "--out", str(tmp_path / "o"), *bad])
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main_interpolate([str(run), "--steps", "2", "--points", "1", "--out", str(tmp_path / "w.mp4")])
