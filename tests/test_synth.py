import av
import numpy as np

from conftest import run_cli


def test_synth_writes_playable_labelled_videos(tmp_path):
    result = run_cli("synth", str(tmp_path / "demo"), "--classes", "3", "--videos-per-class", "2",
                     "--seconds", "1")
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(tmp_path / "demo").as_posix() for p in (tmp_path / "demo").rglob("*.*"))
    assert files == [f"class{c:02d}/v_class{c:02d}_g{g:02d}_c01.{ext}"
                     for c in range(3) for g, ext in ((1, "mp4"), (2, "avi"))]
    for path in (tmp_path / "demo").rglob("*.*"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == ("h264" if path.suffix == ".mp4" else "mpeg4")
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == 25
        assert frames[0].shape == (120, 160, 3)
        assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1  # something moves


def test_synth_motion_depends_on_class_and_seed_is_reproducible(tmp_path):
    from data_tools.synth import write_demo_corpus

    a = write_demo_corpus(tmp_path / "a", classes=6, videos_per_class=1, seconds=0.4, seed=3)
    b = write_demo_corpus(tmp_path / "b", classes=6, videos_per_class=1, seconds=0.4, seed=3)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]

    def motion(path):  # where the brightest pixels go between first and last frame
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="gray").astype(float) for f in c.decode(video=0)]
        centroid = []
        for f in (frames[0], frames[-1]):
            ys, xs = np.nonzero(f > np.percentile(f, 97))
            centroid.append((xs.mean(), ys.mean()))
        return np.subtract(centroid[1], centroid[0])

    # of 6 classes, class 0 moves in a straight line along +x and class 3 along -x
    assert motion(a[0])[0] > 3 and abs(motion(a[0])[1]) < 2
    assert motion(a[3])[0] < -3 and abs(motion(a[3])[1]) < 2
