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
