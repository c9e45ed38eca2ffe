"""The quality meter on a real encoded glyph corpus: real clips score near the top, noise, frozen and
shuffled clips score low, a glyph swapped mid-clip breaks consistency, and the probe is cached."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_tools.dataset import ClipDataset
from data_tools.prepare import PrepareOptions, prepare
from data_tools.synth import write_demo_corpus
from vidgan.metrics import meter as meter_module
from vidgan.metrics.meter import MeterError, meter_for, read_clips, split_by_video
from vidgan.metrics.probe import foreground_tracks, probe_view, window_starts



@pytest.fixture(scope="module")
def glyph_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("meter")
    write_demo_corpus(base / "videos", classes=3, videos_per_class=10, seconds=1.5, style="glyphs", seed=4)
    out = base / "clips"
    prepare(base / "videos", out, PrepareOptions(frames=16, size=32, stride=8, workers=1), progress=False)
    return out


@pytest.fixture(scope="module", autouse=True)
def short_probe_training():
    """The probe of a 3-class corpus learns in fewer steps than the default; `vidgan eval` in these
    tests reads the same cached probe."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(meter_module, "TRAIN_STEPS", 400)
        yield


@pytest.fixture(scope="module")
def meter(glyph_root):
    return meter_for(glyph_root, log=lambda message: None)


def _clips(root, indices):
    dataset = ClipDataset(root)
    video = np.stack([dataset[int(i)]["video"] for i in indices])  # [N, T, S, S, 3]
    return torch.from_numpy(video).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # [N, 3, T, S, S]


def test_held_out_videos_are_whole_and_every_class_has_some(glyph_root):
    dataset = ClipDataset(glyph_root)
    train, held = split_by_video(dataset)
    assert len(train) + len(held) == len(dataset) and not set(train) & set(held)
    assert not set(dataset.video_ids[train]) & set(dataset.video_ids[held])
    assert sorted(set(dataset.labels[held])) == [0, 1, 2]


def test_real_clips_score_near_the_top(meter, glyph_root):
    assert meter.accuracy >= 0.9 and meter.classes == ["disc", "square", "triangle"]
    real = meter.real
    assert real["recognisable"] >= 0.8 and real["consistency"] >= 0.8
    assert real["inception_score"] > 2.4  # of at most 3
    assert 1.0 < real["motion"] < 4.0  # glyphs move 1.5–3 px a frame at 32²
    _, held = split_by_video(ClipDataset(glyph_root))
    again = meter.score(_clips(glyph_root, held))
    assert again["fd"] < 1e-6 and again["motion_ratio"] == pytest.approx(1.0)
    assert "class_match" not in again


def test_class_match_counts_clips_recognised_as_their_intended_class(meter, glyph_root):
    dataset = ClipDataset(glyph_root)
    _, held = split_by_video(dataset)
    clips, labels = _clips(glyph_root, held), torch.from_numpy(dataset.labels[held])
    right = meter.score(clips, labels)["class_match"]
    assert right == pytest.approx(meter.real["recognisable"], abs=0.05)  # the probe finds their own class
    assert meter.score(clips, (labels + 1) % 3)["class_match"] < 0.1  # every clip asked for another class


def test_noise_frozen_and_shuffled_clips_score_low(meter, glyph_root):
    _, held = split_by_video(ClipDataset(glyph_root))
    real = _clips(glyph_root, held)
    noise = meter.score(torch.rand_like(real) * 2 - 1)
    assert noise["recognisable"] == 0 and noise["fd"] > 10 * max(1.0, meter.score(real)["fd"])
    frozen = meter.score(real[:, :, :1].expand_as(real).contiguous())
    assert frozen["motion"] < 0.1 * meter.real["motion"]
    shuffled = real[:, :, torch.randperm(real.shape[2], generator=torch.Generator().manual_seed(0))]
    scored = meter.score(shuffled)
    assert scored["motion_ratio"] > 1.5  # the glyph jumps about: what the meter's motion is for


def test_a_glyph_swapped_mid_clip_breaks_consistency(meter, glyph_root):
    dataset = ClipDataset(glyph_root)
    _, held = split_by_video(dataset)
    labels = dataset.labels[held]
    first = held[labels == 0][:8]
    second = held[labels == 1][:8]
    a, b = _clips(glyph_root, first), _clips(glyph_root, second)
    swapped = torch.cat([a[:, :, :8], b[:, :, 8:]], dim=2)  # a disc that turns into a square
    assert meter.score(a)["consistency"] >= 0.75
    assert meter.score(swapped)["consistency"] <= 0.25


def test_the_probe_is_cached_by_content(meter, glyph_root):
    files = list((glyph_root / "meter").glob("probe-*.safetensors"))
    assert len(files) == 1
    messages = []
    again = meter_for(glyph_root, log=messages.append)
    assert messages == [] and again.key == meter.key and again.real == meter.real
    for a, b in zip(again.probe.state_dict().values(), meter.probe.state_dict().values()):
        assert torch.equal(a, b)
    damaged = glyph_root.parent / "damaged"
    shutil.copytree(glyph_root, damaged)
    messages = []
    meter_for(damaged, steps=20, log=messages.append)  # another key: trained, not read
    assert any("training the probe" in m for m in messages)
    assert len(list((damaged / "meter").glob("probe-*.safetensors"))) == 2
    short = next(p for p in (damaged / "meter").glob("probe-*") if p.name != files[0].name)
    short.write_bytes(b"not a safetensors file")  # trained again
    messages = []
    meter_for(damaged, steps=20, log=messages.append)
    assert any("ignoring" in m for m in messages) and any("training the probe" in m for m in messages)


def test_windows_views_and_tracks():
    assert window_starts(8) == [0] and window_starts(16) == [0, 4, 8] and window_starts(18) == [0, 4, 8, 10]
    with pytest.raises(ValueError, match="8 frames"):
        window_starts(4)
    clips = torch.full((1, 3, 8, 64, 64), -1.0)
    for t in range(8):  # a bright 8×8 square moving 4 px a frame at 64², 2 px at 32²
        clips[0, :, t, 20:28, 4 + 4 * t:12 + 4 * t] = 1.0
    view = probe_view(clips)
    assert view.shape == (1, 4, 8, 32, 32)
    track, present = foreground_tracks(view)
    assert present.all()
    steps = (track[0, 1:] - track[0, :-1]).norm(dim=1)
    assert torch.allclose(steps, torch.full_like(steps, 2.0), atol=0.3)


def test_a_folder_of_one_class_is_refused(tmp_path):
    write_demo_corpus(tmp_path / "videos", classes=1, videos_per_class=2, seconds=1.0, style="glyphs")
    prepare(tmp_path / "videos", tmp_path / "clips", PrepareOptions(frames=8, size=32, stride=8, workers=1),
            progress=False)
    with pytest.raises(MeterError, match="at least 2 classes"):
        meter_for(tmp_path / "clips", steps=10)


def _eval(args):
    from vidgan.evaluate import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return code, stdout.getvalue(), stderr.getvalue()


def test_vidgan_eval_without_i3d_scores_with_the_meter(meter, glyph_root, trained_runs, tmp_path):
    out = tmp_path / "meter.json"
    code, stdout, stderr = _eval([str(trained_runs["video16"]), "--real", str(glyph_root), "--num-fake", "16",
                                  "--out", str(out)])
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0].startswith("meter: recognisable ") and "(16 clips)" in lines[0]
    assert lines[1].startswith("real:  recognisable ") and f"probe accuracy {meter.accuracy:.3f}" in lines[1]
    result = json.loads(out.read_text())
    assert result["metric"] == "meter" and result["real"] == meter.real and result["fake"]["clips"] == 16
    assert result["checkpoint"].endswith("checkpoint-000000000004")
    # a flat-colour generator that never saw a glyph is scored far below the real clips
    assert result["fake"]["fd"] > 10 and result["fake"]["recognisable"] <= meter.real["recognisable"]

    code, stdout, stderr = _eval([str(trained_runs["image"]), "--real", str(glyph_root)])
    assert code == 2 and stdout == "" and "which makes images: the meter scores clips" in stderr


def test_a_conditional_generator_is_scored_against_its_own_classes(meter, glyph_root):
    from vidgan.metrics.meter import score_generator

    dataset = ClipDataset(glyph_root)
    _, held = split_by_video(dataset)
    by_class = []  # the held-out clip of each class nearest the class's training clips in the probe's eyes
    for k in range(3):
        clips = _clips(glyph_root, [i for i in held if dataset.labels[i] == k])
        distance = (read_clips(meter.probe, clips)["features"] - meter.centroids[k]).norm(dim=1)  # [n]
        by_class.append(clips[distance.argmin()])

    class RealClipsByLabel(torch.nn.Module):
        """A stand-in conditional generator: label k gives the held-out clip of its k-th class name."""
        z_dim, frames, num_classes = 8, 16, 3

        def __init__(self, order):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.order = order  # the meter's class index of each label

        def forward(self, z, y):
            return torch.stack([by_class[self.order[k]] for k in y.tolist()]) * self.scale

    G = RealClipsByLabel([2, 0, 1])  # labels 0, 1, 2 draw triangle, disc, square
    assert score_generator(meter, G, 6, classes=["triangle", "disc", "square"])["class_match"] == 1.0
    assert score_generator(meter, G, 6, classes=["disc", "square", "triangle"])["class_match"] == 0.0
    assert "class_match" not in score_generator(meter, G, 6, classes=["a", "b", "c"])  # other classes
    assert "class_match" not in score_generator(meter, G, 6)  # no names recorded


def test_held_parts_of_a_content_motion_generator_are_measured_against_free_groups(meter, glyph_root):
    from vidgan.metrics.disentangle import disentanglement, disentanglement_line

    dataset = ClipDataset(glyph_root)
    _, held = split_by_video(dataset)
    by_class = [_clips(glyph_root, [i for i in held if dataset.labels[i] == k][:4]) for k in range(3)]

    class HeldOutClips(torch.nn.Module):
        """A stand-in content/motion generator of real clips: the content part picks the class (its first
        value's sign and size), the motion part which of the class's 4 clips; `motion_only` ignores the
        content part, picking one of 12 clips by the motion part alone."""
        z_dim, motion_dim, frames = 6, 2, 16

        def __init__(self, motion_only: bool):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))
            self.motion_only = motion_only

        def forward(self, z):
            cls = torch.bucketize(z[:, 0].contiguous(), torch.tensor([-0.43, 0.43]))  # three equally likely classes
            clip = torch.bucketize(z[:, 4].contiguous(), torch.tensor([-0.67, 0.0, 0.67]))  # four equally likely clips
            if self.motion_only:
                cls = torch.bucketize(z[:, 5].contiguous(), torch.tensor([-0.43, 0.43]))
            return torch.stack([by_class[k][m] for k, m in zip(cls.tolist(), clip.tolist())]) * self.scale

    parts = disentanglement(meter, HeldOutClips(motion_only=False), groups=8, size=6)
    assert parts["content"]["class_kept"] == 1.0 > parts["free"]["class_kept"]
    assert parts["content"]["track_spread"] > 0.5 * parts["free"]["track_spread"]  # motion still varies
    only = disentanglement(meter, HeldOutClips(motion_only=True), groups=8, size=6)
    assert only["motion"]["track_spread"] == 0.0 < only["free"]["track_spread"]  # one motion, one track
    assert "content held: class kept 1.00" in disentanglement_line(parts)
    with pytest.raises(ValueError, match="no content and motion parts"):
        disentanglement(meter, torch.nn.Linear(2, 2))


def test_what_a_failing_generator_draws_is_read_as_no_object(meter, glyph_root):
    from vidgan.metrics.artefacts import blur
    from vidgan.models import VideoGenerator

    _, held = split_by_video(ClipDataset(glyph_root))
    real = _clips(glyph_root, held)
    # an untrained generator's lattice of transposed-conv artefacts: confidently some class to a
    # classifier that only ever saw glyphs, no object to the meter
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = VideoGenerator(z_dim=16, channels=8, size=32, frames=16).eval()(torch.randn(32, 16))
    scored = meter.score(untrained)
    assert scored["recognisable"] == 0 and scored["no_object"] >= 0.9
    smeared = meter.score(blur(real, torch.full((len(real),), 3.0)))  # shapes lost: blobs that move
    assert smeared["recognisable"] <= 0.1 and smeared["no_object"] >= 0.5
    assert meter.real["no_object"] == 0
    # a glyph drawn a little soft or grainy is still its class
    grainy = (real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert meter.score(grainy)["recognisable"] >= 0.8
    assert meter.score(blur(real, torch.full((len(real),), 0.5)))["recognisable"] >= 0.8


def test_artefact_clips_and_roughened_clips():
    from vidgan.metrics.artefacts import artefact_clips, roughen

    reals = torch.full((64, 3, 8, 32, 32), -0.9)
    reals[:, :, :, 12:18, 12:18] = 0.8  # a bright square on dark
    junk = artefact_clips(reals, torch.Generator().manual_seed(0))
    assert junk.shape == reals.shape and junk.min() >= -1 and junk.max() <= 1
    again = artefact_clips(reals, torch.Generator().manual_seed(0))
    assert torch.equal(junk, again)  # the generator decides everything
    assert ((junk - reals).abs().mean(dim=(1, 2, 3, 4)) > 0.05).all()  # none is a real clip
    assert (junk[1:] - junk[:1]).abs().amax(dim=(1, 2, 3, 4)).min() > 0.05  # nor are two alike
    rough = roughen(reals, torch.Generator().manual_seed(1))
    assert rough.shape == reals.shape and rough.min() >= -1 and rough.max() <= 1
    assert (rough - reals).abs().mean() < 0.1  # a little worse, still the same clips
    assert not torch.equal(rough, reals)


def test_a_clip_of_no_object_keeps_no_group_class():
    from vidgan.metrics.disentangle import group_figures

    # 2 groups of 4 clips, 3 object classes and "no object" (index 3); one window per clip
    top = torch.tensor([[0, 0, 3, 3], [3, 3, 3, 3]])
    reading = {"probs": F.one_hot(top.flatten(), 4).double()[:, None],  # [8, 1, 4]
               "track": torch.zeros(8, 16, 2), "present": torch.ones(8, 16, dtype=torch.bool)}
    # group 1: two of four clips keep class 0 (the empty ones do not); group 2: none
    assert group_figures(reading, groups=2, size=4)["class_kept"] == pytest.approx((0.5 + 0.0) / 2)
