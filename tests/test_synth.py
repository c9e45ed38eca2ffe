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


def _tracks(path):
    """Per frame: the centre (x, y) of the pixels brighter than the background, and their mean colour."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(float) for f in c.decode(video=0)]
    out = []
    for f in frames:
        grey = f.mean(axis=2)
        ys, xs = np.nonzero(grey > grey.max() * 0.6)
        out.append((xs.mean(), ys.mean(), f[ys, xs].mean(axis=0)))
    return out


def test_glyph_and_orbit_styles(tmp_path):
    from data_tools.synth import GLYPHS

    result = run_cli("synth", str(tmp_path / "g"), "--style", "glyphs", "--classes", "10", "--videos-per-class",
                     "1", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(GLYPHS)
    sizes = set()
    for folder in (tmp_path / "g").iterdir():
        track = _tracks(next(folder.iterdir()))
        steps = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(track, track[1:])]
        assert 4 < np.median(steps) < 13  # 5.5–11.5 px a frame, bouncing
        colour = track[0][2]
        assert np.ptp(colour) < 12 and colour.mean() > 150  # grey and bright
        with av.open(str(next(folder.iterdir()))) as c:
            first = next(c.decode(video=0)).to_ndarray(format="gray")
        sizes.add(int((first > first.max() * 0.6).sum()) // 40)
        assert np.median(first) < 40  # dark background
    assert len(sizes) >= 5  # the glyphs differ in area, not only in name

    result = run_cli("synth", str(tmp_path / "o"), "--style", "orbits", "--classes", "3", "--videos-per-class",
                     "2", "--seconds", "2")
    assert result.returncode == 0, result.stderr
    for path in sorted((tmp_path / "o").rglob("*.*")):
        track = _tracks(path)
        xy = np.array([(x, y) for x, y, _ in track])
        centre = xy.mean(axis=0)
        radius = np.hypot(*(xy - centre).T)
        assert radius.std() < 0.25 * radius.mean() and radius.mean() > 12  # circling
        assert np.ptp(track[0][2]) > 20  # coloured


def test_sprites_draw_colour_and_motion_apart_from_the_class(tmp_path):
    result = run_cli("synth", str(tmp_path / "s"), "--style", "sprites", "--classes", "2", "--videos-per-class",
                     "3", "--seconds", "1")
    assert result.returncode == 0, result.stderr
    for folder in (tmp_path / "s").iterdir():
        colours, headings = [], []
        for path in sorted(folder.iterdir()):
            track = _tracks(path)
            steps = [np.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(track, track[1:])]
            assert 4 < np.median(steps) < 13  # glyphs' speeds
            assert np.ptp(track[0][2]) > 20  # coloured
            colours.append(track[0][2])
            headings.append(np.arctan2(track[1][1] - track[0][1], track[1][0] - track[0][0]))
        # within one class (one shape), colour and direction change from video to video
        assert min(np.abs(a - b).max() for i, a in enumerate(colours) for b in colours[i + 1:]) > 20
        assert np.ptp(headings) > 0.3


def test_glyph_styles_refuse_more_classes_than_glyphs(tmp_path):
    result = run_cli("synth", str(tmp_path / "g"), "--style", "orbits", "--classes", "11")
    assert result.returncode == 2 and "at most 10 classes" in result.stderr
    assert not (tmp_path / "g").exists()
