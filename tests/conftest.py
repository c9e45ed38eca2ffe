import os
import sys
from pathlib import Path

# torch before decord: the other import order has been reported to crash.
import torch  # noqa: F401
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the `videos` helper module


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Path:
    """A `vidgan synth` corpus: 3 classes × 2 videos (one H.264 MP4, one MPEG-4 AVI), 2 s at 25 fps."""
    from data_tools.synth import write_demo_corpus

    root = tmp_path_factory.mktemp("demo") / "videos"
    write_demo_corpus(root, classes=3, videos_per_class=2, seconds=2.0, fps=25, seed=1)
    return root


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> dict:
    """Tiny runs trained once, in this process, for every test that reads a trained model (sample,
    eval, inpaint). The data: 256 flat-colour 32×32 frames in one lossless video, which a tiny GAN
    learns in seconds. Returns the run folders and the frames:

      image    the 2D DCGAN, 500 steps of 16 frames: enough to paint flat colours near the ones asked for
      video    the 3D GAN on 8-frame clips, 6 steps of 4; checkpoints at 12 and 24 clips; EMA ≠ raw G
      video16  the 3D GAN on 16-frame clips (FVD's length), one step
      frames   uint8 [256, 32, 32, 3], the training frames
    """
    from data_tools import PrepareOptions, prepare
    from vidgan.recipe import load_recipe
    from vidgan.train import train
    from videos import flat_frames, write_lossless

    root = tmp_path_factory.mktemp("trained")
    frames = flat_frames(256, seed=0)  # [256, 32, 32, 3]
    (root / "videos" / "colours").mkdir(parents=True)
    write_lossless(root / "videos" / "colours" / "colours.mkv", frames)
    for length in (8, 16):
        prepare(root / "videos", root / f"clips{length}", PrepareOptions(frames=length, size=32, stride=length,
                                                                         workers=1), progress=False)
    common = ["data.size=32", "model.z_dim=8", "model.d_batchnorm=false", "optim.lr_g=0.002", "optim.lr_d=0.002",
              "sample.count=4", "sample.fps=10", "log.tensorboard=false", "sample.every_kimg=100",
              "log.every_kimg=100"]

    def run(name: str, length: int, *overrides: str) -> Path:
        recipe = load_recipe(None, [*common, f"data.root={root / f'clips{length}'}", f"data.frames={length}",
                                    f"run.dir={root / name}", *overrides])
        return train(recipe, progress_bar=False)

    return {
        "image": run("image", 8, "model.kind=image", "model.g_channels=8", "model.d_channels=8",
                     "train.batch_size=16", "train.kimg=8", "train.ema_kimg=0", "train.checkpoint_kimg=100"),
        "video": run("video", 8, "model.g_channels=4", "model.d_channels=4", "train.batch_size=4",
                     "train.kimg=0.024", "train.checkpoint_kimg=0.012", "train.ema_kimg=0.01"),
        "video16": run("video16", 16, "model.g_channels=4", "model.d_channels=4", "train.batch_size=4",
                       "train.kimg=0.004", "train.checkpoint_kimg=0.004", "train.ema_kimg=0.01"),
        "frames": frames,
    }


def run_cli(*args: str, timeout: float = 300, **kwargs):
    """Run `python -m vidgan ARGS` in a fresh process; returns the CompletedProcess."""
    import subprocess

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "vidgan", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA; without it they are skipped, visibly."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
