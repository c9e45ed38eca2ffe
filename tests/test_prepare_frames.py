"""What `vidgan prepare` puts in the clips: counts, stride, timing, geometry and colour."""

import csv
import json
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from data_tools import PrepareOptions, prepare
from data_tools.synth import encode_video
from data_tools.dataset import ClipDataset
from videos import (frame_id, has_b_frames, id_frame, write_avi_with_dropped_frames, write_cut, write_lossless,
                    write_with_leading_still)


def _prepare(src, out, **options):
    options.setdefault("workers", 1)
    summary = prepare(src, out, PrepareOptions(**options), progress=False)
    return summary, ClipDataset(out)


def _clip_ids(ds):
    return [[frame_id(f) for f in ds[i]["video"].numpy()] for i in range(len(ds))]


@pytest.fixture
def fifty_frames(tmp_path):
    src = tmp_path / "src" / "only"
    src.mkdir(parents=True)
    write_lossless(src / "count.mkv", [id_frame(i) for i in range(50)])
    return tmp_path / "src"


def test_frame_and_clip_counts_default_stride(fifty_frames, tmp_path):
    summary, ds = _prepare(fifty_frames, tmp_path / "out", frames=8, size=16)
    assert summary.clips == len(ds) == 50 // 8
    assert _clip_ids(ds) == [list(range(s, s + 8)) for s in range(0, 48, 8)]
    assert [ds[i]["start"] for i in range(len(ds))] == list(range(0, 48, 8))
    assert ds[0]["video"].shape == (8, 16, 16, 3) and ds[0]["video"].dtype.is_floating_point is False


def test_overlapping_stride_and_max_clips(fifty_frames, tmp_path):
    _, ds = _prepare(fifty_frames, tmp_path / "a", frames=8, size=16, stride=4)
    assert len(ds) == (50 - 8) // 4 + 1
    assert _clip_ids(ds) == [list(range(s, s + 8)) for s in range(0, 43, 4)]
    _, ds = _prepare(fifty_frames, tmp_path / "b", frames=8, size=16, stride=4, max_clips=3)
    assert _clip_ids(ds) == [list(range(s, s + 8)) for s in (0, 4, 8)]
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    assert meta["counts"]["frames_stored"] == 16  # frames 0..15, each stored once


def test_stride_longer_than_clip_stores_only_clip_frames(fifty_frames, tmp_path):
    _, ds = _prepare(fifty_frames, tmp_path / "out", frames=5, size=16, stride=12)
    assert _clip_ids(ds) == [list(range(s, s + 5)) for s in (0, 12, 24, 36)]
    shard = np.load(tmp_path / "out" / "shards" / "shard-00000.npy", mmap_mode="r")
    assert shard.shape == (20, 16, 16, 3)


def test_video_shorter_than_one_clip_is_counted_not_skipped(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    write_lossless(src / "a" / "short.mkv", [id_frame(i) for i in range(5)])
    write_lossless(src / "a" / "long.mkv", [id_frame(i) for i in range(20)])
    summary, ds = _prepare(src, tmp_path / "out", frames=8, size=16)
    assert (summary.read, summary.too_short, summary.skipped, len(ds)) == (2, 1, [], 2)


def test_frames_after_the_last_clip_are_counted_not_decoded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "b.mp4", [id_frame(i) for i in range(50)], b_frames=True)
    assert has_b_frames(src / "b.mp4")  # decoding runs ahead of display: the stop must not cut a clip
    summary, ds = _prepare(src, tmp_path / "out", frames=8, size=16)
    assert _clip_ids(ds) == [list(range(s, s + 8)) for s in range(0, 48, 8)]
    video = json.loads((tmp_path / "out" / "shards" / "shard-00000.json").read_text())["videos"][0]
    assert (video["output_frames"], video["decoded_frames"]) == (50, 48)  # frames 48 and 49 counted
    assert summary.frames_decoded == 48


def test_frames_left_holds_a_bounded_number_of_packets(tmp_path, monkeypatch):
    from data_tools.backends import pyav
    from data_tools.job import VideoTask, run_task

    monkeypatch.setattr(pyav, "LOOKAHEAD_PACKETS", 4)  # fewer than the 8 a clip more would need
    path = write_lossless(tmp_path / "v.mp4", [id_frame(i) for i in range(54)])  # a tail of 6 frames

    class Frames(list):
        write, discard = list.append, list.clear

    stored = Frames()  # in this process: a worker started by forkserver would not see the patch
    record = run_task(VideoTask(str(path), "v.mp4", 0, 8, 8, 16, None, None, "pyav"), stored)
    assert [frame_id(f) for f in stored] == list(range(48))
    assert record["decoded_frames"] == record["output_frames"] == 54  # not countable within the bound


@pytest.mark.parametrize("declared", [20, 36, 42])
def test_a_header_that_miscounts_the_frames_loses_no_clip(tmp_path, declared):
    """AVI headers may carry any frame count: the frames after the declared clips are counted from
    the packets before decoding stops, so a count short by even one clip's worth loses nothing."""
    src = tmp_path / "src"
    src.mkdir()
    encode_video(src / "v.avi", [id_frame(i) for i in range(40)], 25, "mpeg4", "yuv420p")
    truth, _ = _prepare(src, tmp_path / "truth", frames=8, size=16)
    data = bytearray((src / "v.avi").read_bytes())
    length_at = data.find(b"strh") + 8 + 32  # AVISTREAMHEADER.dwLength: the stream's frame count
    assert struct.unpack_from("<I", data, length_at) == (40,)
    struct.pack_into("<I", data, length_at, declared)
    (src / "v.avi").write_bytes(data)
    with av.open(str(src / "v.avi")) as container:
        assert container.streams.video[0].frames == declared
    summary, ds = _prepare(src, tmp_path / "out", frames=8, size=16)
    assert truth.clips == summary.clips == len(ds) == 5
    assert ((tmp_path / "out" / "shards" / "shard-00000.npy").read_bytes()
            == (tmp_path / "truth" / "shards" / "shard-00000.npy").read_bytes())


def test_fps_resampling_of_variable_frame_rate_video(tmp_path):
    times_ms = [0, 30, 90, 100, 180, 260, 270, 400, 410, 500, 620, 700]
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "vfr.mkv", [id_frame(i) for i in range(len(times_ms))], times_ms=times_ms)
    _, ds = _prepare(src, tmp_path / "out", frames=4, size=16, fps=Fraction(10))
    # The last frame (700 ms) is shown for 40 ms (its block duration): the video ends at 740 ms.
    expected = [max(i for i, t in enumerate(times_ms) if t <= 100 * k) for k in range(8)]
    assert _clip_ids(ds) == [expected[:4], expected[4:8]]
    assert expected == [0, 3, 4, 6, 7, 9, 9, 11]
    rows = (tmp_path / "out" / "index.csv").read_text().splitlines()
    first_times = [float(t) for t in rows[1].split(",")[-1].split()]
    assert first_times == [times_ms[i] / 1000 for i in expected[:4]]


def test_timestamps_that_restart_mid_stream_play_on(tmp_path):
    # Two MPEG-TS recordings joined byte for byte: the second restarts the clock. A player plays on,
    # and so does prepare, with --fps (which would otherwise drop all of the second half) and without.
    src = tmp_path / "src"
    src.mkdir()
    halves = [write_lossless(tmp_path / f"half{h}.ts", [id_frame(20 * h + i) for i in range(20)])
              for h in (0, 1)]
    (src / "joined.ts").write_bytes(halves[0].read_bytes() + halves[1].read_bytes())
    _, ds = _prepare(src, tmp_path / "resampled", frames=8, size=16, fps=Fraction(25, 2))
    assert _clip_ids(ds) == [list(range(0, 16, 2)), list(range(16, 32, 2))]
    _, ds = _prepare(src, tmp_path / "every", frames=8, size=16)
    assert _clip_ids(ds) == [list(range(8 * c, 8 * c + 8)) for c in range(5)]
    rows = (tmp_path / "every" / "index.csv").read_text().splitlines()[1:]
    times = [float(t) for row in rows for t in row.split(",")[-1].split()]
    assert all(b - a == pytest.approx(0.04) for a, b in zip(times, times[1:]))  # one clock, evenly timed


def test_timestamps_that_leap_ahead_in_an_mpeg_ts_play_on(tmp_path):
    # An MPEG-TS whose clock leaps 100 s ahead mid-stream (recordings joined, a broadcast's clock
    # reset): a discontinuity, not a 100-second still. Without that, --fps would fill the gap with
    # 1,250 copies of one frame.
    src = tmp_path / "src"
    src.mkdir()
    times = [40 * i for i in range(20)] + [100_000 + 40 * i for i in range(20)]
    write_lossless(src / "leap.ts", [id_frame(i) for i in range(40)], times_ms=times)
    _, ds = _prepare(src, tmp_path / "out", frames=8, size=16, fps=Fraction(25, 2))
    assert _clip_ids(ds) == [list(range(0, 16, 2)), list(range(16, 32, 2))]
    # In a Matroska file the same timestamps are a real pause (a still held for 100 s), as a player shows
    (src / "leap.ts").rename(tmp_path / "leap.ts")
    write_lossless(src / "pause.mkv", [id_frame(i) for i in range(40)], times_ms=times)
    _, ds = _prepare(src, tmp_path / "paused", frames=8, size=16, fps=Fraction(25, 2))
    assert len(ds) > 150 and _clip_ids(ds)[5] == [19] * 8


def test_fps_upsampling_repeats_frames(fifty_frames, tmp_path):
    _, ds = _prepare(fifty_frames, tmp_path / "out", frames=10, size=16, fps=Fraction(50),
                     max_clips=2)
    assert _clip_ids(ds) == [[k // 2 for k in range(s, s + 10)] for s in (0, 10)]


def _area_reference(frame, size):
    """Centre square crop, then the exact mean over each output pixel's block (integer factors)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    crop = frame[y : y + side, x : x + side].astype(np.float64)
    f = side // size
    return crop.reshape(size, f, size, f, 3).mean(axis=(1, 3))


def _textured(height, width, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) % 64 * 4], axis=-1)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse) if mse > 0 else float("inf")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("shape", [(192, 320), (320, 192)])  # landscape and portrait
@pytest.mark.parametrize("size", [32, 64])  # FFmpeg pads 32-pixel RGB rows, not 64-pixel ones
def test_center_crop_and_area_resize_match_reference(tmp_path, backend, shape, size):
    frame = _textured(*shape)
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "t.mkv", [frame] * 4)
    _, ds = _prepare(src, tmp_path / "out", frames=4, size=size, backend=backend)
    out = ds[0]["video"][0].numpy()
    reference = _area_reference(frame, size)
    # FFmpeg's area filter approximates the exact box average (39 dB on this noisy texture)
    assert _psnr(out, reference) > 38
    # a top-left crop instead of the centre would be far off
    side = min(shape)
    assert _psnr(out, _area_reference(frame[:side, :side], size)) < 30


@pytest.mark.parametrize("rotation", [90, 180, 270])
@pytest.mark.parametrize("backend", ["pyav", "decord"])
@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_display_rotation_is_applied(tmp_path, rotation, backend, ext):
    frame = _textured(96, 192, seed=rotation)
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / f"r.{ext}", [frame] * 2, rotation=rotation)
    _, ds = _prepare(src, tmp_path / "out", frames=2, size=32, backend=backend)
    # a player turns the picture counter-clockwise by the display rotation
    reference = _area_reference(np.rot90(frame, k=rotation // 90), 32)
    assert _psnr(ds[0]["video"][0].numpy(), reference) > 38


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_the_stream_a_player_shows_is_read_not_a_leading_still_picture(tmp_path, backend):
    src = tmp_path / "src"
    src.mkdir()
    write_with_leading_still(src / "cover.mkv", [id_frame(i) for i in range(20)])
    summary, ds = _prepare(src, tmp_path / "out", frames=8, size=16, backend=backend)
    assert summary.read == 1 and summary.too_short == 0
    assert _clip_ids(ds) == [list(range(8)), list(range(8, 16))]


def test_videos_alike_but_for_rotation_or_pixel_shape_each_get_their_own_geometry(tmp_path):
    # one worker converts all three in turn, reusing a filter graph only for frames and streams alike
    frame = _textured(96, 160)
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "a_plain.mkv", [frame] * 2)
    write_lossless(src / "b_rotated.mkv", [frame] * 2, rotation=90)
    write_lossless(src / "c_wide_pixels.mkv", [frame] * 2, sar=Fraction(2, 1))
    write_lossless(src / "d_plain_again.mkv", [frame] * 2)
    _, ds = _prepare(src, tmp_path / "out", frames=2, size=32, backend="pyav")
    shown_wide = np.repeat(frame[:, 56:104], 2, axis=1)  # 2:1 pixels: the middle 48 columns shown
    references = [_area_reference(frame, 32), _area_reference(np.rot90(frame), 32),
                  _area_reference(shown_wide, 32), _area_reference(frame, 32)]
    assert [ds[i]["path"] for i in range(len(ds))] == sorted(p.name for p in src.iterdir())
    for i, reference in enumerate(references):
        assert _psnr(ds[i]["video"][0].numpy(), reference) > 35, ds[i]["path"]


def test_non_square_pixels_are_cropped_as_displayed(tmp_path):
    # 96×96 stored with pixels 2:1 wide is a 192×96 picture: the square shown is the middle 48 columns
    frame = _textured(96, 96)
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "anamorphic.mkv", [frame] * 2, sar=Fraction(2, 1))
    _, ds = _prepare(src, tmp_path / "out", frames=2, size=48)
    shown = np.repeat(frame[:, 24:72], 2, axis=1)  # [96, 96]: the displayed square
    reference = shown.reshape(48, 2, 48, 2, 3).mean(axis=(1, 3))
    assert _psnr(ds[0]["video"][0].numpy(), reference) > 35


COLOR = np.array([230, 30, 128])


@pytest.mark.parametrize("codec, pix_fmt, ext", [
    ("libx264", "yuv420p", "mp4"),  # limited range, 8 bit
    ("mjpeg", "yuvj420p", "avi"),  # full range
    ("libx264", "yuv420p10le", "mkv"),  # 10 bit
    ("libx265", "yuv420p10le", "mkv"),  # 10 bit HEVC
])
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_colour_ranges_and_bit_depths_give_the_source_colour(tmp_path, codec, pix_fmt, ext, backend):
    from data_tools.synth import encode_video

    src = tmp_path / "src"
    src.mkdir()
    frames = [np.broadcast_to(COLOR, (64, 96, 3)).astype(np.uint8)] * 3
    options = {"crf": "2", "x265-params": "log-level=none"} if codec == "libx265" else (
        {"q:v": "1"} if codec == "mjpeg" else {"crf": "1"})
    encode_video(src / f"c.{ext}", frames, 25, codec, pix_fmt, options)
    _, ds = _prepare(src, tmp_path / "out", frames=3, size=16, backend=backend)
    # a limited/full range mix-up moves these channels by 10-20 levels; 10 bit read as 8 is garbage
    assert np.abs(ds[0]["video"].numpy().reshape(-1, 3).mean(axis=0) - COLOR).max() < 4


def _colour_detail(height, width):
    """Colour that changes every few pixels, each channel on its own: what 4:2:0 chroma keeps least."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = [np.sin(xx / 3 + yy / 7), np.sin(yy / 4), np.cos((xx - yy) / 5)]
    return np.clip(128 + 100 * np.stack(rgb, axis=-1), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_subsampled_chroma_is_interpolated_at_full_resolution(tmp_path, backend):
    src = tmp_path / "src"
    src.mkdir()
    encode_video(src / "c.mkv", [_colour_detail(96, 160)] * 3, 25, "libx264", "yuv420p", {"qp": "0"})
    _, ds = _prepare(src, tmp_path / "out", frames=3, size=32, backend=backend)
    # reference: the decoded 4:2:0 picture as a player shows it (chroma interpolated to every
    # pixel, accurate rounding), then the exact box average
    with av.open(str(src / "c.mkv")) as container:
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=container.streams.video[0]),
                 graph.add("scale", "flags=bicubic+accurate_rnd+full_chroma_int+full_chroma_inp"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        graph.vpush(next(container.decode(video=0)))
        shown = graph.vpull().to_ndarray()
    reference = _area_reference(shown, 32)  # centre 96×96 → 32×32: factor 3
    # one chroma sample per two output pixels, as packed-RGB output of swscale does, gives 23 dB
    assert _psnr(ds[0]["video"][0].numpy(), reference) > 35


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_grayscale_source_becomes_three_equal_channels(tmp_path, backend):
    from data_tools.synth import encode_video

    src = tmp_path / "src"
    src.mkdir()
    gray = np.tile(np.linspace(20, 235, 64).astype(np.uint8), (64, 1))
    encode_video(src / "g.mkv", [gray] * 3, 25, "ffv1", "gray", input_format="gray")
    _, ds = _prepare(src, tmp_path / "out", frames=3, size=16, backend=backend)
    clip = ds[0]["video"].numpy().astype(int)
    assert clip.shape == (3, 16, 16, 3)
    assert (clip[..., 0] == clip[..., 1]).all() and (clip[..., 1] == clip[..., 2]).all()
    expected = gray.reshape(16, 4, 16, 4).mean(axis=(1, 3))
    assert np.abs(clip[0, ..., 0] - expected).max() <= 2


def test_backends_give_the_same_frames_on_the_demo_corpus(demo_corpus, tmp_path):
    _, a = _prepare(demo_corpus, tmp_path / "pyav", frames=8, size=32, backend="pyav")
    _, b = _prepare(demo_corpus, tmp_path / "decord", frames=8, size=32, backend="decord")
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        assert (a[i]["path"], a[i]["start"], a[i]["label"]) == (b[i]["path"], b[i]["start"], b[i]["label"])
        assert _psnr(a[i]["video"], b[i]["video"]) > 44  # 45.6 dB at the least here
    idx_a = (tmp_path / "pyav" / "index.csv").read_text().splitlines()
    idx_b = (tmp_path / "decord" / "index.csv").read_text().splitlines()
    assert [r.split(",")[-1] for r in idx_a] == [r.split(",")[-1] for r in idx_b]  # timestamps


def _first_clip_times(out):
    """{path: timestamps of its first clip} from a prepared folder's index."""
    with open(out / "index.csv", newline="") as f:
        return {row["path"]: row["timestamps"] for row in csv.DictReader(f) if row["start"] == "0"}


def test_timestamps_count_from_the_start_of_the_video_in_both_backends(tmp_path):
    # A file cut from a longer one, or an MPEG-PS, starts its clock late (here at 2 s, the MPEG-PS
    # at 0.5 s); a player's clock starts at its first frame all the same, and so do the index's
    # times, whichever backend reads it (decord counts that way).
    src = tmp_path / "src"
    src.mkdir()
    late = [2000 + 40 * i for i in range(16)]
    for name in ("late.mkv", "late.mp4"):
        write_lossless(src / name, [id_frame(i) for i in range(16)], times_ms=late)
    from_zero = " ".join(f"{0.04 * i:.6f}" for i in range(8))
    for backend in ("pyav", "decord"):
        _prepare(src, tmp_path / backend, frames=8, size=16, backend=backend)
        assert _first_clip_times(tmp_path / backend) == {"late.mkv": from_zero, "late.mp4": from_zero}
    write_lossless(src / "late.mpg", [id_frame(i) for i in range(16)])
    with av.open(str(src / "late.mpg")) as container:
        assert container.streams.video[0].start_time > 0  # the muxer's delay
    _prepare(src, tmp_path / "auto", frames=8, size=16)
    assert _first_clip_times(tmp_path / "auto")["late.mpg"] == from_zero


def test_decord_declines_mpeg_ts_and_ps_files_it_would_misread(tmp_path):
    # decord 0.6 returns one frame of such a file and stops, or starts a group of pictures late and
    # repeats the last frame in place of the missing ones: it is not asked. PyAV reads them.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("broadcast.ts", "dvd.mpg"):
        write_lossless(src / name, [id_frame(i) for i in range(16)])
    summary, _ = _prepare(src, tmp_path / "decord", frames=8, size=16, backend="decord")
    why = "files (it loses frames or shows them out of place); --backend pyav or auto reads them"
    assert summary.clips == 0 and dict(summary.skipped) == {
        "broadcast.ts": f"decord cannot read MPEG-TS {why}", "dvd.mpg": f"decord cannot read MPEG-PS {why}"}
    summary, ds = _prepare(src, tmp_path / "auto", frames=8, size=16)
    assert summary.skipped == [] and _clip_ids(ds) == [list(range(8)), list(range(8, 16))] * 2


def test_a_video_decord_returns_malformed_frames_of_is_skipped_and_the_run_goes_on(tmp_path):
    # decord 0.6 gives frames 48 pixels wide the shape [H, 48, 4]: reported as that video's problem,
    # where it stopped the whole run as a bug. PyAV reads such a video.
    src = tmp_path / "src"
    src.mkdir()
    write_lossless(src / "narrow.mkv", [id_frame(i, 32, 48) for i in range(8)])
    write_lossless(src / "wide.mkv", [id_frame(i, 32, 64) for i in range(8)])
    summary, ds = _prepare(src, tmp_path / "decord", frames=8, size=16, backend="decord")
    assert summary.skipped == [("narrow.mkv", "decord returned frames of shape (32, 48, 4), not [H, W, 3]; "
                                              "--backend pyav or auto reads it")]
    assert [ds[i]["path"] for i in range(len(ds))] == ["wide.mkv"]
    summary, ds = _prepare(src, tmp_path / "auto", frames=8, size=16)
    assert summary.skipped == [] and _clip_ids(ds) == [list(range(8))] * 2


def test_frames_an_mp4_edit_list_drops_are_neither_shown_nor_counted(tmp_path):
    # A file cut without re-encoding keeps the group of pictures before its cut, and an edit list that
    # drops those frames: a player starts at the cut, and so do the clips. PyAV's reader skipped such
    # a file as truncated (fewer frames than the container declares); decord shifts the frames and
    # repeats the last in place of the dropped ones, so it declines the file.
    src = tmp_path / "src"
    src.mkdir()
    write_cut(src / "cut.mp4", [id_frame(i) for i in range(100)], dropped=40)
    summary, ds = _prepare(src, tmp_path / "auto", frames=8, size=16)
    assert summary.skipped == [] and _clip_ids(ds) == [list(range(s, s + 8)) for s in range(40, 96, 8)]
    from_the_cut = " ".join(f"{0.04 * i:.6f}" for i in range(8))
    assert _first_clip_times(tmp_path / "auto") == {"cut.mp4": from_the_cut}
    summary, _ = _prepare(src, tmp_path / "decord", frames=8, size=16, backend="decord")
    assert summary.clips == 0 and dict(summary.skipped)["cut.mp4"].startswith(
        "decord cannot read an edit list that drops frames (here 40,")



def test_h264_with_b_frames_in_an_avi_is_timed_evenly_by_both_backends(tmp_path):
    # An AVI stores no presentation times: FFmpeg stamps the packets in decode order, so with B-frames
    # the frames come out (rightly ordered) with their pts shuffled, and decord gives them no times.
    # The pts once read as a clock restarting at every B-frame (--fps repeated and dropped frames);
    # now the decode timestamps time them, as FFmpeg's own tools do, and decord's frames are evenly
    # timed at the nominal rate.
    src = tmp_path / "src"
    src.mkdir()
    encode_video(src / "b.avi", [id_frame(i) for i in range(40)], 25, "libx264rgb", "rgb24",
                 {"qp": "1", "bf": "3", "b-adapt": "0"})
    with av.open(str(src / "b.avi")) as container:
        shuffled = [frame.pts for frame in container.decode(video=0)]
    assert shuffled != sorted(shuffled)
    every_other = " ".join(f"{0.08 * i:.6f}" for i in range(8))
    for backend in ("pyav", "decord"):
        _, ds = _prepare(src, tmp_path / backend, frames=8, size=16, backend=backend, fps=Fraction(25, 2))
        assert _clip_ids(ds) == [list(range(0, 16, 2)), list(range(16, 32, 2))]
        assert _first_clip_times(tmp_path / backend) == {"b.avi": every_other}


def test_an_avi_that_dropped_frames_is_read_whole_with_its_pauses(tmp_path):
    # Capture software keeps a dropped frame's place in an AVI with an empty chunk, which the frame
    # count includes: 36 declared, 30 pictures. Such a file was skipped as truncated.
    src = tmp_path / "src"
    src.mkdir()
    write_avi_with_dropped_frames(src / "capture.avi", [id_frame(i) for i in range(30)],
                                  drop_after={4, 9, 14, 19, 24, 29})
    with av.open(str(src / "capture.avi")) as container:
        assert container.streams.video[0].frames == 36
    with_a_pause = "0.000000 0.040000 0.080000 0.120000 0.160000 0.240000 0.280000 0.320000"
    for backend in ("pyav", "decord"):
        summary, ds = _prepare(src, tmp_path / backend, frames=8, size=16, backend=backend)
        assert summary.skipped == [] and _clip_ids(ds) == [list(range(s, s + 8)) for s in (0, 8, 16)]
        assert _first_clip_times(tmp_path / backend) == {"capture.avi": with_a_pause}

