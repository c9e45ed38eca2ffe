"""The training script as users run it: the real script in one process and in two DDP processes over
gloo, SIGKILL and resume; resume exactness, errors and the image model through the same command run
in this process."""

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vidgan.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "vidgan" / "train.py"
DEMO = ROOT / "recipes" / "demo.yaml"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """24 clips of [8, 32, 32, 3]: 2 classes × 2 synth videos of 30 frames, stride 4."""
    from data_tools import PrepareOptions, prepare
    from data_tools.synth import write_demo_corpus

    root = tmp_path_factory.mktemp("train")
    write_demo_corpus(root / "videos", classes=2, videos_per_class=2, seconds=1.2)
    prepare(root / "videos", root / "clips", PrepareOptions(frames=8, size=32, stride=4, workers=1),
            progress=False)
    return root / "clips"


def tiny(prepared: Path, run_dir: Path, *extra: str) -> list[str]:
    """Overrides that make the demo recipe a few-second run: 12 steps of 4 clips in one process."""
    return [str(DEMO), f"data.root={prepared}", "data.frames=8", "data.size=32", "model.g_channels=4",
            "model.d_channels=4", "train.batch_size=4", "train.kimg=0.048", "train.checkpoint_kimg=0.024",
            "train.ema_kimg=0.01", "sample.every_kimg=0.024", "sample.count=4", "log.every_kimg=0.008",
            f"run.dir={run_dir}", *extra, "--no-progress"]


def train_here(args: list[str]) -> subprocess.CompletedProcess:
    """`vidgan train ARGS` in this process (the same code as the script, without its start-up cost)."""
    from vidgan.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", *args])
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def run_train(args: list[str], processes: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python vidgan/train.py ARGS`, or `accelerate launch` over `processes` ranks: the real script."""
    if processes == 1:
        command = [sys.executable, str(TRAIN), *args]
    else:  # DDP over gloo on the CPU: ACCELERATE_USE_CPU with --multi_gpu starts real ranks
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", "29517", str(TRAIN), *args]
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def rank_records(run_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "ranks").glob("rank-*.json"))]


def test_one_process_run_writes_recipe_logs_samples_and_checkpoints(prepared, tmp_path):
    run = tmp_path / "run"
    result = run_train(tiny(prepared, run))
    assert result.returncode == 0, result.stderr
    # the resolved recipe reads back, and says which code and versions made the run
    text = (run / "recipe.yaml").read_text()
    assert "# git_commit:" in text and "# torch:" in text
    again = load_recipe(run / "recipe.yaml")
    assert again.train.batch_size == 4 and again.data.root == str(prepared)
    assert json.loads((run / "run.json").read_text())["world_size"] == 1
    # checkpoints: complete folders, named checkpoint-<clips>, nothing half written left behind
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "checkpoint-000000000024", "checkpoint-000000000048"]
    last = run / "checkpoints" / "checkpoint-000000000048"
    assert (last / "model.safetensors").is_file()
    # the EMA generator rebuilds from safetensors + its constructor arguments, no pickle involved
    from vidgan.checkpoint import load_model
    from vidgan.models import VideoGenerator

    ema = load_model(last / "generator_ema")
    assert isinstance(ema, VideoGenerator) and (ema.frames, ema.size) == (8, 32)
    assert load_recipe(last / "recipe.yaml").train.batch_size == 4
    # samples: an MP4 grid that decodes back with the recipe's fps, and a PNG
    mp4 = run / "samples" / "clips-000000000048.mp4"
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        assert stream.codec_context.name == "h264" and stream.average_rate == 8
        assert frames[0].format.name == "yuv420p"
    assert len(frames) == 8 and frames[0].width % 2 == 0 and frames[0].height >= 64
    assert (run / "samples" / "clips-000000000048.png").is_file()
    # logs: TensorBoard events and a CSV of the same scalars, kimg increasing
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tensorboard")).Reload()
    assert {"loss_d", "loss_g", "d_real", "d_fake", "clips_per_s", "kimg"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("kimg")] == [8, 16, 24, 32, 40, 48]
    samples = events.Images("samples")  # the sample grids, as animated GIFs
    assert [e.step for e in samples] == [24, 48] and samples[0].encoded_image_string[:6] == b"GIF89a"
    rows = csv_rows(run)
    assert [int(r["clips"]) for r in rows] == [8, 16, 24, 32, 40, 48]
    assert all(float(r["loss_d"]) > 0 and 0 < float(r["d_real"]) < 1 for r in rows)


def test_resume_latest_continues_exactly_where_the_run_stopped(prepared, tmp_path):
    whole = train_here(tiny(prepared, tmp_path / "whole", "loss.augment_p=0.5"))
    assert whole.returncode == 0, whole.stderr
    first = train_here(tiny(prepared, tmp_path / "parts", "loss.augment_p=0.5", "train.kimg=0.024"))
    assert first.returncode == 0, first.stderr
    second = train_here([*tiny(prepared, tmp_path / "parts", "loss.augment_p=0.5"), "--resume", "latest"])
    assert second.returncode == 0, second.stderr
    assert "resumed from" in second.stdout
    assert [int(r["clips"]) for r in csv_rows(tmp_path / "parts")] == [8, 16, 24, 32, 40, 48]
    # the same weights and losses as the run that never stopped
    assert rank_records(tmp_path / "parts")[0]["G"] == rank_records(tmp_path / "whole")[0]["G"]
    losses = lambda run: [r["loss_g"] for r in csv_rows(run)]  # noqa: E731
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")


@pytest.mark.slow
def test_two_ddp_processes_over_gloo(prepared, tmp_path):
    run = tmp_path / "ddp"
    result = run_train(tiny(prepared, run), processes=2)
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    ranks = rank_records(run)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["G"] == ranks[1]["G"] and ranks[0]["D"] == ranks[1]["D"]  # in sync
    # kimg counts clips over all processes: 6 steps of 2 × 4 clips reach the same 48 as 12 steps of 4
    assert ranks[0]["clips"] == 48 and ranks[0]["step"] == 6
    assert [int(r["clips"]) for r in csv_rows(run)] == [8, 16, 24, 32, 40, 48]
    with av.open(str(run / "samples" / "clips-000000000048.mp4")) as container:
        assert len(list(container.decode(video=0))) == 8
    resumed = run_train([*tiny(prepared, run, "train.kimg=0.064"), "--resume", "latest"], processes=2)
    assert resumed.returncode == 0, resumed.stderr
    assert rank_records(run)[0]["clips"] == 64
    assert [int(r["clips"]) for r in csv_rows(run)][-3:] == [48, 56, 64]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_latest(prepared, tmp_path):
    run = tmp_path / "killed"
    args = tiny(prepared, run, "train.kimg=0.4", "train.checkpoint_kimg=0.04", "train.keep_checkpoints=2")
    proc = subprocess.Popen([sys.executable, str(TRAIN), *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("checkpoint-*")):
        time.sleep(0.1)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "ranks").exists()  # it was killed before the end
    result = run_train([*args, "--resume", "latest"])
    assert result.returncode == 0, result.stderr
    assert rank_records(run)[0]["clips"] == 400
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["checkpoint-000000000360", "checkpoint-000000000400"]  # the newest 2, no temporaries
    clips = [int(r["clips"]) for r in csv_rows(run)]
    assert clips == sorted(set(clips)) and clips[-1] == 400  # no duplicated or missing rows at the end


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(prepared, tmp_path):
    run = tmp_path / "nan"
    assert train_here(tiny(prepared, run, "train.kimg=0.024")).returncode == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    # an R1 weight beyond float32 turns the loss into Inf at the first step after the resume
    result = train_here([*tiny(prepared, run, "loss.r1_gamma=1e39", "loss.r1_every=1"), "--resume", "latest"])
    assert result.returncode == 1
    assert "non-finite loss (NaN or Inf)" in result.stderr and "last good checkpoint is kept" in result.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("override, message", [
    ("model.chanels=8", "model.chanels: unknown key; model has: kind, z_dim, g_channels"),
    ("train.kimg=lots", "train.kimg: expected float, got 'lots'"),
    ("data.frames=12", "data.frames: one of 8, 16, 32, 64"),
    ("model.image_d_frames=9", "model.image_d_frames: at most data.frames (8)"),
    ("train.ema_batchnorm=average", "train.ema_batchnorm: 'copy' or 'recompute'"),
    ("loss.instance_noise=-1", "loss.instance_noise: >= 0"),
    ("model.generator=frame", "model.generator: 'volume' or 'frames'"),
    ("model.generator=frames model.motion_dim=100", "model.motion_dim: in [1, model.z_dim)"),
    ("model.latent=content_motion model.motion_dim=0", "model.motion_dim: in [1, model.z_dim), got 0"),
    ("model.latent=split", "model.latent: 'single' or 'content_motion', got 'split'"),
    ("model.generator=frames model.latent=content_motion", "model.latent: only for model.generator=volume"),
    ("model.d_minibatch_std=-2", "model.d_minibatch_std: >= 0"),
    ("train.d_steps=0", "train.d_steps: >= 1, got 0"),
    ("model.g_time_padding=reflect", "model.g_time_padding: 'zeros' or 'replicate'"),
    ("model.generator=frames model.g_time_padding=replicate", "model.g_time_padding: only for model.generator=volume"),
    ("model.g_head=upsample", "model.g_head: 'transposed' or 'resize'"),
    ("model.generator=frames model.conditional=true", "model.conditional: only for model.generator=volume"),
    ("loss.class_weight=1", "loss.class_weight: needs model.conditional: true"),
    ("loss.mode_seeking=-1", "loss.mode_seeking: >= 0, got -1.0"),
    ("model.d_pack=3", "model.d_pack: must divide train.batch_size (4), got 3"),
    ("model.d_pack=2 model.image_d_frames=2", "model.d_pack: only for model.kind=video without model.image_d_frames"),
])
def test_a_bad_recipe_key_fails_at_once_naming_it(prepared, tmp_path, override, message):
    result = train_here(tiny(prepared, tmp_path / "r", *override.split()))
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "r").exists()  # failed before any work


def test_a_fresh_start_refuses_a_run_folder_with_checkpoints(prepared, tmp_path):
    assert train_here(tiny(prepared, tmp_path / "r", "train.kimg=0.024")).returncode == 0
    result = train_here(tiny(prepared, tmp_path / "r"))
    assert result.returncode == 1 and "already holds checkpoints" in result.stderr


def test_clip_shape_must_match_the_prepared_folder(prepared, tmp_path):
    result = train_here(tiny(prepared, tmp_path / "r", "data.frames=16"))
    assert result.returncode == 1
    assert "data.frames=16, but" in result.stderr and "clips of 8 frames" in result.stderr


def test_unknown_key_in_the_recipe_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  kimg: 1\n  batchsize: 8\n")
    with pytest.raises(ValueError, match="train.batchsize: unknown key"):
        load_recipe(bad)


def test_image_recipe_trains_the_2d_dcgan_on_single_frames(prepared, tmp_path):
    run = tmp_path / "image"
    result = train_here(tiny(prepared, run, "model.kind=image", "model.g_out_bias=false", "train.kimg=0.024"))
    assert result.returncode == 0, result.stderr
    assert (run / "samples" / "clips-000000000024.png").is_file()
    assert not list((run / "samples").glob("*.mp4"))  # images: a PNG grid only
    assert "kind: image" in (run / "recipe.yaml").read_text()
    # the checkpointed models are the 2D ones: 4-D conv weights, no 5-D
    from safetensors.torch import load_file

    for name in ("model.safetensors", "model_1.safetensors"):
        weights = load_file(str(run / "checkpoints" / "checkpoint-000000000024" / name))
        assert any(w.ndim == 4 for w in weights.values()) and not any(w.ndim == 5 for w in weights.values())


def test_quality_switches_train_and_load(prepared, tmp_path):
    # a frame discriminator beside the video one, instance noise, G's output bias, and the EMA
    # generator's BatchNorm statistics recomputed for its own weights
    from vidgan.checkpoint import load_trained
    from vidgan.models import VideoFrameDiscriminator

    run = tmp_path / "switches"
    result = train_here(tiny(prepared, run, "model.image_d_frames=2", "loss.instance_noise=0.1",
                             "model.g_out_bias=true", "train.ema_batchnorm=recompute", "model.g_time_padding=replicate",
                             "model.g_head=resize", "loss.mode_seeking=1", "model.latent=content_motion",
                             "model.motion_dim=4", "train.kimg=0.024"))
    assert result.returncode == 0, result.stderr
    trained = load_trained(run, which="ema", with_discriminator=True)
    assert isinstance(trained.discriminator, VideoFrameDiscriminator)
    assert trained.discriminator(torch.zeros(3, 3, 8, 32, 32)).shape == (3, 3)
    assert trained.generator.head.bias is not None
    assert trained.generator.config["time_padding"] == "replicate"
    assert trained.generator.config["head"] == "resize"
    assert (trained.generator.content_dim, trained.generator.motion_dim) == (trained.generator.z_dim - 4, 4)
    raw = load_trained(run, which="raw").generator
    ema_mean = trained.generator.trunk[1].running_mean
    assert not torch.equal(ema_mean, raw.trunk[1].running_mean)  # recomputed, not copied from G
    assert torch.isfinite(ema_mean).all() and ema_mean.abs().sum() > 0


def test_frame_generator_trains_loads_and_samples(prepared, tmp_path):
    from vidgan.checkpoint import load_trained
    from vidgan.models import FrameGenerator
    from vidgan.sample import main_sample

    run = tmp_path / "frames"
    result = train_here(tiny(prepared, run, "model.generator=frames", "model.motion_dim=4", "model.image_d_frames=2",
                             "model.g_out_bias=true", "model.d_minibatch_std=4", "train.kimg=0.024"))
    assert result.returncode == 0, result.stderr
    trained = load_trained(run, which="ema")
    assert isinstance(trained.generator, FrameGenerator) and trained.is_video
    assert trained.generator.motion_dim == 4
    assert load_trained(run, with_discriminator=True).discriminator.video.config["minibatch_std"] == 4
    assert (run / "samples" / "clips-000000000024.mp4").is_file()
    assert main_sample([str(run), "--num", "2", "--out", str(tmp_path / "out"), "--quiet", "--fix", "content"]) == 0
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()).count(".mp4") == 2


def adam_steps(run_dir: Path) -> tuple[int, int]:
    """(G's, D's) optimizer step counts in the run's latest checkpoint."""
    latest = sorted((run_dir / "checkpoints").glob("checkpoint-*"))[-1]
    counts = []
    for name in ("optimizer.bin", "optimizer_1.bin"):  # prepared in the order G, D
        state = torch.load(latest / name, weights_only=False)["state"]
        counts.append(int(next(iter(state.values()))["step"]))
    return counts[0], counts[1]


@pytest.mark.parametrize("override, g_updates, d_updates", [
    ("train.d_steps=3", 4, 12),  # 12 batches: D on each, G after every third
    ("train.g_steps=2", 24, 12),  # G twice per batch
])
def test_d_steps_and_g_steps_set_the_update_ratio(prepared, tmp_path, override, g_updates, d_updates):
    run = tmp_path / "ratio"
    result = train_here(tiny(prepared, run, override))
    assert result.returncode == 0, result.stderr
    assert adam_steps(run) == (g_updates, d_updates)
    assert [int(r["clips"]) for r in csv_rows(run)][-1] == 48  # kimg counts D's batches either way


def test_resume_inside_a_d_steps_cycle_continues_exactly(prepared, tmp_path):
    # stop after 7 batches, one into the third cycle of three D updates
    whole = train_here(tiny(prepared, tmp_path / "whole", "train.d_steps=3"))
    first = train_here(tiny(prepared, tmp_path / "parts", "train.d_steps=3", "train.kimg=0.028"))
    assert whole.returncode == first.returncode == 0
    assert adam_steps(tmp_path / "parts") == (2, 7)
    second = train_here([*tiny(prepared, tmp_path / "parts", "train.d_steps=3"), "--resume", "latest"])
    assert second.returncode == 0, second.stderr
    assert rank_records(tmp_path / "parts")[0]["G"] == rank_records(tmp_path / "whole")[0]["G"]


def test_more_d_and_more_g_steps_at_once_is_refused(prepared, tmp_path):
    result = train_here(tiny(prepared, tmp_path / "r", "train.d_steps=2", "train.g_steps=2"))
    assert result.returncode == 2 and "train.g_steps: more G steps need train.d_steps 1" in result.stderr
    assert not (tmp_path / "r").exists()


def test_conditional_run_records_its_classes_and_samples_each_one(prepared, tmp_path):
    # G with conditional BatchNorm, D with a projection head, on the prepared folder's two classes
    from PIL import Image

    from vidgan.checkpoint import load_trained
    from vidgan.models.common import ConditionalBatchNorm
    from vidgan.sample import main_sample, sample_clips

    run = tmp_path / "cond"
    result = train_here(tiny(prepared, run, "model.conditional=true", "model.spectral_norm=true",
                             "loss.class_weight=1", "train.kimg=0.024"))
    assert result.returncode == 0, result.stderr
    trained = load_trained(run, with_discriminator=True)
    G, D = trained.generator, trained.discriminator
    assert G.num_classes == D.num_classes == 2 and trained.classes == ["class00", "class01"]
    assert D.classifier is not None  # loss.class_weight: the auxiliary class head, trained and saved
    assert any(isinstance(m, ConditionalBatchNorm) for m in G.modules())
    assert (run / "samples" / "clips-000000000024.mp4").is_file()

    # --class by name or index: every clip of that class, the same clips as the API's
    out = tmp_path / "one"
    assert main_sample([str(run), "--num", "3", "--class", "class01", "--quiet", "--out", str(out)]) == 0
    expected = sample_clips(G, 3, label=1)
    assert torch.allclose(expected, sample_clips(G, 3, label=1, batch=1), atol=1e-5)
    assert not torch.allclose(expected, sample_clips(G, 3, label=0), atol=1e-3)
    assert main_sample([str(run), "--num", "3", "--class", "1", "--quiet", "--out", str(tmp_path / "i")]) == 0
    assert (tmp_path / "i" / "sample-00002.mp4").read_bytes() == (out / "sample-00002.mp4").read_bytes()
    assert main_sample([str(run), "--num", "3", "--class", "0", "--quiet", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "sample-00002.mp4").read_bytes() != (out / "sample-00002.mp4").read_bytes()

    # without --class: clip i of class i mod 2, and the grid shows one row per class
    grid = tmp_path / "grid"
    assert main_sample([str(run), "--num", "4", "--grid", "--quiet", "--out", str(grid)]) == 0
    with Image.open(grid / "grid.png") as image:
        assert image.size == (2 * 34 + 2, 2 * 34 + 2)  # 2 classes × 2 clips
        sheet = np.asarray(image.convert("RGB")).astype(int)
    clips = sample_clips(G, 4)
    assert abs(sheet[2:34, 36:68] - to_frame(clips[2])).max() <= 1  # row 0 (class 0), column 1: clip 2
    assert abs(sheet[36:68, 2:34] - to_frame(clips[1])).max() <= 1  # row 1 (class 1), column 0: clip 1


def to_frame(clip: torch.Tensor) -> "np.ndarray":
    """The first frame of a float clip [3, T, H, W] in [-1, 1] as uint8-valued ints [H, W, 3]."""
    return ((clip[:, 0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).numpy().astype(int)


def test_class_errors_name_the_classes(prepared, tmp_path, trained_runs, capsys):
    from vidgan.sample import main_sample

    run = tmp_path / "cond"
    assert train_here(tiny(prepared, run, "model.conditional=true", "train.kimg=0.004",
                           "train.checkpoint_kimg=0.004")).returncode == 0
    capsys.readouterr()
    assert main_sample([str(run), "--class", "class07", "--out", str(tmp_path / "a")]) == 2
    assert "--class class07: not a class of this generator; give a name (class00, class01)" in capsys.readouterr().err
    assert main_sample([str(run), "--class", "2", "--out", str(tmp_path / "b")]) == 2
    assert "--class 2: the generator has classes 0 to 1" in capsys.readouterr().err
    assert main_sample([str(trained_runs["video"]), "--class", "0", "--out", str(tmp_path / "c")]) == 2
    assert "--class needs a class-conditional generator" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")


def test_packed_discriminator_trains_and_inpaint_asks_for_lam_0(prepared, tmp_path):
    from vidgan.checkpoint import load_trained
    from vidgan.inpaint import InpaintError, inpaint_file

    run = tmp_path / "pack"
    result = train_here(tiny(prepared, run, "model.d_pack=2", "train.kimg=0.024"))
    assert result.returncode == 0, result.stderr
    D = load_trained(run, with_discriminator=True).discriminator
    assert D.pack == 2 and D(torch.zeros(4, 3, 8, 32, 32)).shape == (2,)
    clip = next((prepared.parent / "videos").rglob("*.mp4"))
    with pytest.raises(InpaintError, match="judges groups of 2 clips"):
        inpaint_file(run, clip, "frames:2-3", tmp_path / "out.mp4", steps=1)
    assert not (tmp_path / "out.mp4").exists()
