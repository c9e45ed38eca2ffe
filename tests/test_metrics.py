"""The Fréchet distance against an independent float64 computation, mergeable statistics, and
`vidgan eval` end to end: a tiny trained run, a tiny prepared folder and a stand-in I3D TorchScript
network built here; the real-statistics cache; two processes under `accelerate launch`."""

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidgan.metrics import GaussianStats, frechet_distance, get_metric, metric_names
from vidgan.metrics.fvd import Detector, FVDError, preprocess

ROOT = Path(__file__).resolve().parents[1]
EVALUATE = ROOT / "vidgan" / "evaluate.py"

try:
    import scipy.linalg
except ImportError:  # scipy is not a vidgan dependency
    scipy = None


# --- an independent reference: NumPy (and scipy when present), no code shared with vidgan ------------

def reference_fd(mu1, sigma1, mu2, sigma2, method: str) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^½ in NumPy float64: the trace of scipy's general matrix
    square root of the (non-symmetric) product, or Σ √λ over the product's eigenvalues."""
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, sigma1, sigma2))
    product = sigma1 @ sigma2
    if method == "scipy":
        root = scipy.linalg.sqrtm(product)
        trace_root = np.trace(root).real
    else:
        eigenvalues = np.linalg.eigvals(product)
        trace_root = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)


REFERENCES = ["eigvals"] + (["scipy"] if scipy is not None else [])


def gaussian_features(n: int, d: int, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d) + offset  # [n, d], correlated


def numpy_stats(x: np.ndarray):
    return x.mean(axis=0), np.cov(x, rowvar=False, bias=True)


@pytest.mark.parametrize("method", REFERENCES)
@pytest.mark.parametrize("n, d", [(500, 16), (20, 32)])  # full rank; singular (fewer samples than features)
def test_frechet_distance_matches_an_independent_float64_computation(method, n, d):
    x, y = gaussian_features(n, d, 1), gaussian_features(n, d, 2) * 1.5
    expected = reference_fd(*numpy_stats(x), *numpy_stats(y), method)
    assert frechet_distance(*numpy_stats(x), *numpy_stats(y)) == pytest.approx(expected, rel=1e-7)
    # the same from the statistics class, fed torch float32 features
    got = GaussianStats.from_features(torch.from_numpy(x)).frechet_distance(GaussianStats.from_features(y))
    assert got == pytest.approx(expected, rel=1e-7)


def test_identical_sets_are_at_distance_zero():
    x = gaussian_features(300, 24, 3)
    mu, sigma = numpy_stats(x)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9 * np.trace(sigma)
    stats = GaussianStats.from_features(x)
    assert abs(stats.frechet_distance(GaussianStats.from_features(x.copy()))) < 1e-9 * np.trace(sigma)


def test_shifted_means_give_the_squared_shift():
    x = gaussian_features(400, 10, 4)
    shift = np.random.default_rng(5).normal(size=10) * 3
    mu, sigma = numpy_stats(x)
    assert frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(np.sum(shift ** 2), rel=1e-9)
    moved = GaussianStats.from_features(x + shift)
    assert GaussianStats.from_features(x).frechet_distance(moved) == pytest.approx(np.sum(shift ** 2), rel=1e-7)


def test_merging_partial_statistics_equals_one_pass():
    x = gaussian_features(500, 12, 6, offset=1e6)  # a large common offset: no E[xxᵀ] − μμᵀ cancellation
    one_pass = GaussianStats.from_features(x)
    parts = [GaussianStats(12) for _ in range(3)]
    parts[0].update(x[:1]).update(x[1:38]).update(x[38:38])  # batches of 1, 37 and 0 vectors
    parts[1].update(x[38:300])
    parts[2].update(x[300:])
    merged = GaussianStats(12)
    for part in parts:
        merged.merge(part)
    assert merged.count == one_pass.count == 500
    np.testing.assert_allclose(merged.mean.numpy(), one_pass.mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(merged.m2.numpy(), one_pass.m2.numpy(), rtol=1e-9, atol=1e-9)
    centred = x - x.mean(axis=0)  # the covariance, free of the offset
    np.testing.assert_allclose(merged.covariance().numpy(), centred.T @ centred / 500, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged.covariance(unbiased=True).numpy(), np.cov(x, rowvar=False), rtol=1e-6)
    # the state survives a round trip through plain arrays (how the cache stores it)
    again = GaussianStats.from_state_dict(merged.state_dict())
    assert again.count == 500 and torch.equal(again.m2, merged.m2)


def test_bad_statistics_are_refused():
    with pytest.raises(ValueError, match=r"sigma1 must be \[D, D\] with D = 3"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="mu2 holds NaN or Inf"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0, np.nan]), np.eye(2))
    with pytest.raises(ValueError, match="cannot merge statistics of 4 features into 3"):
        GaussianStats(3).merge(GaussianStats(4))


def test_metrics_are_registered_by_name():
    assert "fvd" in metric_names()
    from vidgan.metrics.fvd import compute_fvd

    assert get_metric("fvd") is compute_fvd
    with pytest.raises(KeyError, match="unknown metric 'fid'; known: fvd"):
        get_metric("fid")


def test_cached_statistics_round_trip_and_a_bad_file_is_recomputed(tmp_path, capsys):
    from vidgan.metrics.fvd import load_cached_stats, save_cached_stats

    stats = GaussianStats.from_features(gaussian_features(50, 6, 7))
    path = tmp_path / "cache" / "fvd-real-abc.npz"
    save_cached_stats(path, stats, {"num_real": 50})
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    loaded = load_cached_stats(path, {"num_real": 50})
    assert loaded.count == 50 and torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.m2, stats.m2)
    assert load_cached_stats(tmp_path / "none.npz", {"num_real": 50}) is None
    assert load_cached_stats(path, {"num_real": 49}) is None  # made from something else
    path.write_bytes(b"damaged")
    assert load_cached_stats(path, {"num_real": 50}) is None
    assert capsys.readouterr().err.count("warning: ignoring cache file") == 2


# --- the stand-in detector -------------------------------------------------------------------------

class StandInI3D(torch.nn.Module):
    """StyleGAN-V's I3D calling convention on a tiny network: `[N, 3, 16, 224, 224]` in [-1, 1] →
    8 features (a linear map of a 4×4×4 average pool), softmax unless `return_features`."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4 * 4, 8)
        with torch.no_grad():
            weights = torch.randn(8, 192, generator=torch.Generator().manual_seed(0))
            self.proj.weight.copy_(weights)
            self.proj.bias.zero_()

    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale or resize:
            raise RuntimeError("stand-in I3D: expects rescale=False, resize=False")
        if x.dim() != 5 or x.size(1) != 3 or x.size(2) != 16 or x.size(3) != 224 or x.size(4) != 224:
            raise RuntimeError("stand-in I3D: expects [N, 3, 16, 224, 224]")
        if bool(x.min() < -1.0) or bool(x.max() > 1.0):
            raise RuntimeError("stand-in I3D: expects values in [-1, 1]")
        logits = self.proj(F.adaptive_avg_pool3d(x, (4, 4, 4)).flatten(1))  # [N, 8]
        return logits if return_features else torch.softmax(logits, dim=1)


class PlainNet(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3, 4)) * 2  # [N, 3]


def save_torchscript(module: torch.nn.Module, path: Path, trace_input=None) -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        scripted = torch.jit.trace(module, trace_input) if trace_input is not None else torch.jit.script(module)
        torch.jit.save(scripted, str(path))
    return path


@pytest.fixture(scope="module")
def standin_i3d(tmp_path_factory) -> Path:
    return save_torchscript(StandInI3D().eval(), tmp_path_factory.mktemp("i3d") / "i3d_standin.pt")


def test_detector_follows_the_declared_calling_convention(standin_i3d, tmp_path):
    x = torch.rand(2, 3, 16, 224, 224) * 2 - 1
    detector = Detector(standin_i3d)
    assert detector.call_description == "rescale=False, resize=False, return_features=True"
    assert detector.sha256 == hashlib.sha256(standin_i3d.read_bytes()).hexdigest()
    module = StandInI3D().eval()
    with torch.no_grad():
        expected = module(x, return_features=True)
    torch.testing.assert_close(detector(x), expected.double(), rtol=1e-6, atol=1e-6)  # features, not softmax
    assert detector(x).dtype == torch.float64
    # a traced forward(x) declares no keywords: it is called plainly
    plain = Detector(save_torchscript(PlainNet(), tmp_path / "plain.pt", trace_input=x[:1]))
    assert plain.call_description == "plain (x only)"
    torch.testing.assert_close(plain(x), (x.mean(dim=(2, 3, 4)) * 2).double())
    # forcing the keywords on it fails with a message naming the detector
    with pytest.raises(FVDError, match=r"the detector .*plain.pt failed"):
        Detector(tmp_path / "plain.pt", call="kwargs")(x)
    with pytest.raises(FVDError, match="no such file.*never downloads"):
        Detector(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(FVDError, match="not a TorchScript file"):
        Detector(tmp_path / "junk.pt")


def test_preprocess_takes_the_first_16_frames_resizes_to_224_and_scales_to_minus_one_one():
    clips = torch.arange(20, dtype=torch.uint8).mul(12).view(1, 20, 1, 1, 1).expand(1, 20, 8, 8, 3)
    x = preprocess(clips.contiguous())  # [1, 3, 16, 224, 224]
    assert x.shape == (1, 3, 16, 224, 224) and x.dtype == torch.float32
    expected = torch.arange(16).float() * 12 / 127.5 - 1  # frame t holds 12·t, constant
    torch.testing.assert_close(x[0, :, :, 100, 7], expected.expand(3, 16))
    with pytest.raises(FVDError, match="clips of 8 frames: FVD needs at least 16"):
        preprocess(clips[:, :8].contiguous())


# --- a tiny trained run and prepared folder --------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    from data_tools.synth import write_demo_corpus

    root = tmp_path_factory.mktemp("fvd") / "videos"
    write_demo_corpus(root, classes=2, videos_per_class=2, seconds=2.0)  # 4 videos of 50 frames
    return root


@pytest.fixture(scope="module")
def prepared(videos) -> Path:
    """36 clips of [16, 32, 32, 3] (9 per video, stride 4)."""
    from data_tools import PrepareOptions, prepare

    out = videos.parent / "clips16"
    prepare(videos, out, PrepareOptions(frames=16, size=32, stride=4, workers=1), progress=False)
    return out


@pytest.fixture
def run_dir(trained_runs) -> Path:
    """The shared tiny 16-frame 3D GAN (conftest.trained_runs)."""
    return trained_runs["video16"]


def eval_args(run: Path, prepared: Path, i3d: Path, cache: Path, out: Path | None = None, *extra: str) -> list[str]:
    args = [str(run), "--real", str(prepared), "--i3d", str(i3d), "--num-real", "32", "--num-fake", "32",
            "--batch", "8", "--seed", "3", "--cache", str(cache), "--no-progress", *extra]
    return args + (["--out", str(out)] if out is not None else [])


def run_main(args: list[str]) -> tuple[int, str, str]:
    """`vidgan eval ARGS` in this process: (exit status, stdout, stderr)."""
    from vidgan.evaluate import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    return code, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def first_eval(trained_runs, prepared, standin_i3d, tmp_path_factory):
    """One-process `vidgan eval` with an empty cache: (result JSON, cache dir, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("eval")
    cache, out = folder / "cache", folder / "fvd.json"
    code, stdout, stderr = run_main(eval_args(trained_runs["video16"], prepared, standin_i3d, cache, out))
    assert code == 0, stderr
    return json.loads(out.read_text()), cache, stdout, stderr


def direct_fvd(checkpoint: Path, prepared: Path, i3d: Path, num_real=32, num_fake=32, batch=8, seed=3) -> float:
    """FVD by the protocol's description, written out here: the same clips, resized frame by frame,
    NumPy statistics and the independent Fréchet distance."""
    from data_tools import ClipDataset
    from vidgan.checkpoint import load_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        detector = torch.jit.load(str(i3d)).eval()

    def features(clips_uint8: torch.Tensor) -> np.ndarray:  # [n, T, S, S, 3]
        n, _, s, _, _ = clips_uint8.shape
        frames = clips_uint8[:, :16].reshape(n * 16, s, s, 3).permute(0, 3, 1, 2).float()  # [n·16, 3, S, S]
        frames = F.interpolate(frames, size=(224, 224), mode="bilinear", align_corners=False) / 127.5 - 1
        frames = frames.clamp(-1, 1)  # bilinear can land a rounding error past 255, as vidgan's path clamps
        x = frames.reshape(n, 16, 3, 224, 224).transpose(1, 2)  # [n, 3, 16, 224, 224]
        with torch.no_grad():
            return detector(x, rescale=False, resize=False, return_features=True).double().numpy()

    dataset = ClipDataset(prepared)
    picked = np.random.RandomState(0).permutation(len(dataset))[:num_real]
    real = np.concatenate([features(torch.from_numpy(np.stack([dataset.clip(i) for i in picked[a:a + batch]])))
                           for a in range(0, num_real, batch)])
    generator = load_model(checkpoint / "generator_ema").eval()
    z = torch.randn(num_fake, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    fake = []
    for a in range(0, num_fake, batch):
        with torch.no_grad():
            clips = generator(z[a:a + batch])  # [n, 3, T, S, S] in [-1, 1]
        fake.append(features(((clips + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 4, 1)))
    return reference_fd(*numpy_stats(np.concatenate(fake)), *numpy_stats(real), REFERENCES[-1])


def test_eval_writes_the_result_with_the_detector_hash_and_caches_the_real_statistics(
        first_eval, run_dir, prepared, standin_i3d, monkeypatch):
    result, cache, stdout, stderr = first_eval
    sha = hashlib.sha256(standin_i3d.read_bytes()).hexdigest()
    assert result["metric"] == "fvd32_16f" and result["num_real"] == 32 and result["num_fake"] == 32
    assert result["i3d"]["sha256"] == sha
    assert result["i3d"]["call"] == "rescale=False, resize=False, return_features=True"
    assert result["clip_frames"] == 16 and result["resolution"] == 224 and result["feature_dim"] == 8
    assert result["world_size"] == 1 and result["seed"] == 3 and result["real"]["cached"] is False
    latest = sorted((run_dir / "checkpoints").iterdir())[-1]
    assert result["checkpoint"] == str(latest.resolve())
    assert stdout == f"fvd32_16f: {result['value']:.4f}  (i3d sha256 {sha}, 32 real, 32 fake)\n"
    assert "real statistics: computing" in stderr and "cached" not in stderr
    # the value is what the protocol gives when written out independently
    assert result["value"] > 0
    assert result["value"] == pytest.approx(direct_fvd(latest, prepared, standin_i3d), rel=1e-6)
    # one cache file, named by its key, written atomically (no temporary left)
    files = sorted(cache.iterdir())
    assert [f.name for f in files] == [f"fvd-real-{result['real']['key']}.npz"]
    assert result["real"]["statistics"] == str(files[0])
    mtime = files[0].stat().st_mtime_ns

    # Again, from the checkpoint folder: the real statistics come from the cache. Reading a real clip
    # would now fail, so the run proves it reads none.
    from data_tools.dataset import ClipDataset

    def no_reading(self, i):
        raise AssertionError("a real clip was read although its statistics are cached")

    monkeypatch.setattr(ClipDataset, "clip", no_reading)
    out = cache.parent / "fvd-again.json"
    code, stdout2, stderr2 = run_main(eval_args(latest, prepared, standin_i3d, cache, out))
    assert code == 0, stderr2
    again = json.loads(out.read_text())
    assert f"real statistics: cached ({files[0]})" in stderr2
    assert again["real"]["cached"] is True and again["value"] == result["value"]
    assert files[0].stat().st_mtime_ns == mtime and sorted(cache.iterdir()) == files
    # another detector file (another SHA-256) is another key: the real clips would be read again
    other = StandInI3D().eval()
    with torch.no_grad():
        other.proj.bias.fill_(0.5)
    other_path = save_torchscript(other, cache.parent / "i3d-other.pt")
    with pytest.raises(AssertionError, match="a real clip was read"):
        run_main(eval_args(latest, prepared, other_path, cache))


def test_eval_errors_name_the_problem(run_dir, prepared, videos, standin_i3d, tmp_path):
    from data_tools import PrepareOptions, prepare
    from vidgan.checkpoint import save_model
    from vidgan.models import DCGANGenerator, VideoGenerator

    cache = tmp_path / "cache"

    def error(args: list[str]) -> str:
        code, stdout, stderr = run_main(args)
        assert code == 2 and stdout == "", stderr
        return stderr

    message = error(eval_args(run_dir, prepared, tmp_path / "i3d.pt", cache))
    assert f"--i3d {tmp_path / 'i3d.pt'}: no such file" in message and "never downloads" in message
    assert "holds only 36 clips, fewer than --num-real 100; pass --num-real 36 or fewer" in error(
        eval_args(run_dir, prepared, standin_i3d, cache) + ["--num-real", "100"])
    short = tmp_path / "clips8"
    prepare(videos, short, PrepareOptions(frames=8, size=32, stride=8, max_clips=1, workers=1), progress=False)
    assert "holds clips of 8 frames; FVD needs clips of at least 16" in error(
        eval_args(run_dir, short, standin_i3d, cache))
    save_model(VideoGenerator(z_dim=8, channels=4, size=32, frames=8), tmp_path / "g8")
    assert "the generator makes clips of 8 frames; FVD compares clips of 16 frames" in error(
        eval_args(tmp_path / "g8", prepared, standin_i3d, cache))
    save_model(DCGANGenerator(z_dim=8, channels=4, size=32), tmp_path / "g2d")
    assert "makes images: FVD needs a video generator" in error(
        eval_args(tmp_path / "g2d", prepared, standin_i3d, cache))
    (tmp_path / "empty").mkdir()
    assert "empty: not a run folder" in error(eval_args(tmp_path / "empty", prepared, standin_i3d, cache))
    broken = tmp_path / "broken"
    shutil.copytree(sorted((run_dir / "checkpoints").iterdir())[-1] / "generator_ema", broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:100])
    assert "cannot load the generator" in error(eval_args(broken, prepared, standin_i3d, cache))
    assert not cache.exists()  # every check comes before any work


def test_eval_registers_as_a_subcommand_and_imports_no_torch():
    from vidgan.cli import build_parser
    from vidgan.evaluate import run_eval

    args = build_parser("eval").parse_args(["eval", "runs/x", "--real", "clips", "--i3d", "i3d.pt"])
    # --num-fake defaults to the metric's own count: 2048 for FVD, 512 for the meter
    assert args.run is run_eval and (args.num_real, args.num_fake, args.batch, args.seed) == (2048, None, 16, 0)
    # `vidgan --help` lists eval (and every other command) without loading torch
    code = "import sys, vidgan.cli, vidgan.metrics; vidgan.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_give_the_one_process_value(first_eval, run_dir, prepared,
                                                                             standin_i3d, tmp_path):
    one, _, _, _ = first_eval
    out = tmp_path / "fvd2.json"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29533", str(EVALUATE),
               *eval_args(run_dir, prepared, standin_i3d, tmp_path / "cache", out)]  # a fresh cache: real too
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    two = json.loads(out.read_text())
    assert two["world_size"] == 2 and two["real"]["cached"] is False
    assert two["real"]["key"] == one["real"]["key"]
    # the same clips meet the networks in the same batches; only float rounding (each rank runs with
    # one thread, this process with more) may differ
    assert two["value"] == pytest.approx(one["value"], rel=1e-6)
    lines = [line for line in result.stdout.splitlines() if line.startswith("fvd32_16f: ")]
    assert len(lines) == 1  # printed by the main process only
