"""Broken input, resume after SIGKILL, determinism, discovery, split files and the command line."""

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import run_cli
from data_tools import ClipDataset, PrepareError, PrepareOptions, default_out, prepare
from data_tools.assemble import ShardAssembler
prepare_module = importlib.import_module("data_tools.prepare")  # (the package exports the function)
from data_tools.synth import encode_video, write_demo_corpus
from videos import id_frame, write_audio_only, write_cut, write_lossless


def _tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def broken_corpus(tmp_path):
    """Two good videos and one of every kind of broken file, in one class folder."""
    src = tmp_path / "src"
    good = write_demo_corpus(src, classes=1, videos_per_class=2, seconds=1.0)
    folder = src / "class00"
    mp4 = good[0].read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "cut_index.mp4").write_bytes(mp4[: len(mp4) // 2])  # index (moov) lost
    encode_video(folder / "fast.mp4", [id_frame(i, 64, 64) for i in range(50)], 25, "libx264", "yuv420p",
                 {"threads": "1"}, container_options={"movflags": "+faststart"})
    data = (folder / "fast.mp4").read_bytes()
    (folder / "cut_data.mp4").write_bytes(data[: len(data) * 2 // 3])  # index intact, frames missing
    (folder / "fast.mp4").unlink()
    encode_video(folder / "long.avi", [id_frame(i, 64, 64) for i in range(50)], 25, "mpeg4", "yuv420p")
    data = (folder / "long.avi").read_bytes()
    (folder / "cut.avi").write_bytes(data[: len(data) * 2 // 3])
    (folder / "long.avi").unlink()
    (folder / "random.avi").write_bytes(np.random.default_rng(0).bytes(30000))
    (folder / "notes.mp4").write_text("this is not a video\n" * 40)
    write_audio_only(folder / "audio.mp4")
    write_audio_only(folder / "song.m4a", cover=True)  # a song with its cover: no video either
    os.symlink(folder / "gone.mp4", folder / "dangling.mp4")  # unreadable, also for root
    (folder / "classInd.txt").write_text("1 class00\n")  # not a video: ignored silently
    return src


EXPECTED_REASONS = {
    "class00/empty.mp4": "empty file",
    "class00/cut_index.mp4": "corrupt or truncated mp4/mov file",
    "class00/cut_data.mp4": "corrupt or truncated data after",
    "class00/cut.avi": "truncated: ",
    "class00/random.avi": "not a video",
    "class00/notes.mp4": "not a video",
    "class00/audio.mp4": "no video stream (audio only)",
    "class00/song.m4a": "no video stream (audio only, with a cover picture)",
    "class00/dangling.mp4": "unreadable",
}


def test_broken_files_are_reported_skipped_and_the_run_goes_on(broken_corpus, tmp_path):
    out = tmp_path / "out"
    result = run_cli("prepare", str(broken_corpus), "--out", str(out), "--frames", "8", "--workers", "2")
    assert result.returncode == 0, result.stderr
    skipped = {s["path"]: s["reason"] for s in json.loads((out / "skipped.json").read_text())}
    assert skipped.keys() == EXPECTED_REASONS.keys()
    for path, start in EXPECTED_REASONS.items():
        assert skipped[path].startswith(start), (path, skipped[path])
        assert f"{path}: {skipped[path]}" in result.stdout  # the summary says why
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["read"] == 2 and meta["counts"]["clips"] == 2 * (25 // 8)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_named_pipes_among_the_videos_are_not_opened(tmp_path):
    src = tmp_path / "src"
    write_demo_corpus(src, classes=1, videos_per_class=1, seconds=1.0)
    os.mkfifo(src / "class00" / "pipe")  # no extension: would be sniffed, and opening it waits forever
    os.mkfifo(src / "class00" / "pipe.avi")  # a video by its name: reported
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "vidgan", "prepare", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)  # (hung before: it must end)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "skipped.json").read_text()) == [
        {"path": "class00/pipe.avi", "reason": "not a regular file"}]
    assert json.loads((out / "meta.json").read_text())["counts"]["read"] == 1


def _damage(path: Path, every: int) -> int:
    """Overwrite the data of every `every`-th video packet after the first, the last few spared (a
    bit-rotted disk, a bad transfer; not a file cut short); returns how many were damaged."""
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size and p.pos]
    data = bytearray(path.read_bytes())
    damaged = spans[every:-5:every]
    for pos, size in damaged:
        data[pos : pos + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return len(damaged)


def test_a_damaged_packet_is_skipped_as_a_player_skips_it_and_heavy_damage_is_reported(tmp_path):
    src = tmp_path / "src" / "class"
    src.mkdir(parents=True)
    for name in ("light.mp4", "heavy.mp4"):
        encode_video(src / name, [id_frame(i, 64, 64) for i in range(100)], 25, "libx264", "yuv420p",
                     {"threads": "1", "g": "10", "bf": "0"})
    assert _damage(src / "light.mp4", every=60) == 1  # one P-frame lost, once in 4 seconds
    assert _damage(src / "heavy.mp4", every=3) > 20
    summary = prepare(tmp_path / "src", tmp_path / "out", PrepareOptions(frames=8, size=16, workers=1),
                      progress=False)
    assert summary.read == 1 and summary.clips >= 11  # the light one: its frames kept (it had 12 clips)
    assert summary.damaged == 1 and "1 with damaged packets skipped" in summary.text()
    (src / "heavy.mp4").unlink()
    result = run_cli("prepare", str(tmp_path / "src"), "--out", str(tmp_path / "strict"), "--frames", "8",
                     "--size", "16", "--quiet", "--strict")
    assert result.returncode == 1 and "1 read with damaged packets skipped (--strict)" in result.stderr
    [shard] = (tmp_path / "out" / "shards").glob("*.json")
    assert json.loads(shard.read_text())["videos"][1]["damaged_packets"] >= 1  # light.mp4, after heavy
    [(path, reason)] = summary.skipped
    assert path == "class/heavy.mp4" and reason.startswith("damaged: ")
    assert "packet(s) could not be decoded" in reason


def test_decoders_say_nothing_on_the_terminal_about_damaged_data(tmp_path):
    # FFmpeg's own log lines (PyAV's and decord's bundled one) would tear through the progress bar;
    # what went wrong reaches the user as the reason a video is skipped.
    src = tmp_path / "src" / "class"
    src.mkdir(parents=True)
    encode_video(src / "x.avi", [id_frame(i, 64, 64) for i in range(60)], 25, "mpeg4", "yuv420p")
    _damage(src / "x.avi", every=2)
    for backend in ("pyav", "decord"):
        result = run_cli("prepare", str(tmp_path / "src"), "--out", str(tmp_path / backend), "--frames", "8",
                         "--backend", backend, "--quiet")
        assert "class/x.avi: " in result.stdout  # skipped, with its reason
        assert " @ 0x" not in result.stderr, result.stderr  # FFmpeg's "[mpeg4 @ 0x...] ..." lines


def test_strict_fails_on_any_skipped_file(broken_corpus, tmp_path):
    result = run_cli("prepare", str(broken_corpus), "--out", str(tmp_path / "out"), "--frames", "8",
                     "--workers", "1", "--strict", "--quiet")
    assert result.returncode == 1
    assert f"{len(EXPECTED_REASONS)} file(s) skipped (--strict)" in result.stderr


def test_no_clip_at_all_is_an_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.avi").write_bytes(b"RIFF0000AVI garbage")
    result = run_cli("prepare", str(src), "--workers", "1", "--quiet")
    assert result.returncode == 1 and "no clip was written" in result.stderr


def test_a_source_without_videos_is_an_error_that_says_so_and_writes_nothing(tmp_path):
    frames = tmp_path / "src" / "class" / "v_1"  # a dataset shipped as extracted frames
    frames.mkdir(parents=True)
    for i in range(3):
        (frames / f"img_{i:05d}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    result = run_cli("prepare", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2 and "no video found" in result.stderr and "3 file(s)" in result.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "list.txt").write_text("class/v_2.avi\n")  # every video left out, each with its reason
    result = run_cli("prepare", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--quiet",
                     "--split-file", str(tmp_path / "list.txt"))
    assert result.returncode == 2 and "class/v_2.avi: listed in the split file but not found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_main_process_memory_does_not_grow_with_the_number_of_videos(tmp_path):
    # Each placed video's index rows go to the file and its record to its shard's file; only the open
    # shard's records stay in memory. Keeping them all cost about 80 KB per video here (2.5 MB more
    # for 40 videos than for 8): gigabytes for Kinetics-sized datasets.
    import gc
    import tracemalloc

    video = write_lossless(tmp_path / "v.mkv", [id_frame(i, 16, 16) for i in range(200)])

    def peak(count: int, run: int) -> int:
        src = tmp_path / f"src{count}-{run}" / "a"
        src.mkdir(parents=True)
        for i in range(count):
            (src / f"v{i:03d}.mkv").symlink_to(video)
        gc.collect()  # earlier tests' garbage, whose finalizers would allocate inside the measured run
        tracemalloc.start()
        prepare(src.parent, tmp_path / f"out{count}-{run}",
                PrepareOptions(frames=8, size=16, stride=1, workers=1, shard_mb=1), progress=False)
        measured = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(ClipDataset(tmp_path / f"out{count}-{run}")) == count * 193
        return measured

    # The lower of two runs: late in a long session, a table of the whole process can grow in one
    # step inside a measured run (the interpreter's interned strings, megabytes, resized when pathlib
    # interns a new name), which the same run's second time does not repeat.
    peaks = [min(peak(count, run) for run in range(2)) for count in (8, 40)]
    assert peaks[1] - peaks[0] < 0.8e6


@pytest.mark.parametrize("hold_bytes", [None, 0], ids=["held-in-memory", "set-aside-in-parts"])
def test_output_is_identical_whatever_the_worker_count(demo_corpus, tmp_path, monkeypatch, hold_bytes):
    if hold_bytes is not None:  # every video finishing ahead of its turn waits in a part file
        monkeypatch.setattr(prepare_module, "HOLD_BYTES", hold_bytes)
    for workers in (1, 2):
        options = PrepareOptions(frames=8, size=64, stride=4, workers=workers, shard_mb=1)
        prepare(demo_corpus, tmp_path / f"w{workers}", options, progress=False)
    a, b = _tree_bytes(tmp_path / "w1"), _tree_bytes(tmp_path / "w2")
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".npy")]) > 1
    assert a == b
    for name, data in a.items():  # shard records are canonical one-line JSON, however assembled
        if name.endswith(".json") and name.startswith("shards"):
            assert data.decode() == json.dumps(json.loads(data), sort_keys=True) + "\n"


def test_rerunning_a_finished_job_does_no_work(demo_corpus, tmp_path):
    out = tmp_path / "out"
    first = prepare(demo_corpus, out, PrepareOptions(frames=8, size=32, workers=1), progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = prepare(demo_corpus, out, PrepareOptions(frames=8, size=32, workers=1), progress=False)
    assert again.already_done and again.frames_decoded == 0 and again.clips == first.clips
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    with pytest.raises(PrepareError, match="other videos or options"):
        prepare(demo_corpus, out, PrepareOptions(frames=4, size=32, workers=1), progress=False)


@pytest.mark.parametrize("damage", ["deleted", "cut short"])
def test_a_shard_damaged_after_the_run_is_reported_and_the_same_command_remakes_it(demo_corpus, tmp_path,
                                                                                 damage):
    options = PrepareOptions(frames=8, size=16, workers=1)
    prepare(demo_corpus, tmp_path / "reference", options, progress=False)
    out = tmp_path / "out"
    prepare(demo_corpus, out, options, progress=False)
    shard = out / "shards" / "shard-00000.npy"
    if damage == "deleted":
        shard.unlink()
    else:
        os.truncate(shard, shard.stat().st_size - 1000)
    remake = "shard-00000.npy.*run the same `vidgan prepare`"
    with pytest.raises((FileNotFoundError, ValueError), match=remake):
        ClipDataset(out)
    assert run_cli("info", str(out)).returncode == 2
    messages = []
    again = prepare(demo_corpus, out, options, progress=False, log=messages.append)
    assert not again.already_done and "made anew" in messages[0]
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "reference")
    assert len(ClipDataset(out)) == again.clips


def test_a_run_killed_while_finishing_is_completed_by_the_rerun(demo_corpus, tmp_path):
    # Killed between the index's temporary and its rename: the temporary is the run's own, not a
    # stranger's file, and the rerun finishes the dataset.
    options = PrepareOptions(frames=8, size=16, workers=1)
    prepare(demo_corpus, tmp_path / "reference", options, progress=False)
    out = tmp_path / "out"
    prepare(demo_corpus, out, options, progress=False)
    (out / "meta.json").unlink()
    (out / "index.csv").rename(out / ".index.csv.tmp-4242")
    prepare(demo_corpus, out, options, progress=False)
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "reference")
    (out / ".work").mkdir()  # killed after its metadata, before its clean-up: the rerun tidies up
    (out / ".work" / "plan.json").write_text("{}")
    assert prepare(demo_corpus, out, options, progress=False).already_done
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "reference") and not (out / ".work").exists()
    (out / "notes.txt.tmp-1").write_text("mine")  # a look-alike is still someone else's file
    (out / "meta.json").unlink()
    with pytest.raises(PrepareError, match="did not write"):
        prepare(demo_corpus, out, options, progress=False)


def test_an_interrupted_run_of_other_decoder_versions_is_started_over(demo_corpus, tmp_path):
    options = PrepareOptions(frames=8, size=64, stride=4, workers=1, shard_mb=1)
    prepare(demo_corpus, tmp_path / "reference", options, progress=False)
    reference = _tree_bytes(tmp_path / "reference")
    fingerprint = json.loads(reference["meta.json"])["fingerprint"]
    assert len([k for k in reference if k.endswith(".npy")]) > 1

    def interrupted(name: str, versions) -> Path:
        """The folder of a run killed after committing its first shard, made under `versions`."""
        out = tmp_path / name
        shutil.copytree(tmp_path / "reference", out)
        for path in [out / "meta.json", out / "index.csv", out / "skipped.json",
                     *sorted((out / "shards").glob("shard-*"))[2:]]:
            path.unlink()
        frames = np.load(out / "shards" / "shard-00000.npy", mmap_mode="r+")
        frames[:] = 255 - frames  # as if another decoder had made them: tells whether they are kept
        frames.flush()
        del frames
        (out / ".work" / "parts").mkdir(parents=True)
        (out / ".work" / "plan.json").write_text(json.dumps(
            {"fingerprint": fingerprint, "options": options.dataset_options(), "versions": versions}))
        return out

    current = prepare_module._versions()
    messages = []
    same = interrupted("same", current)  # the same versions: the committed shard is kept
    prepare(demo_corpus, same, options, progress=False, log=messages.append)
    assert not messages
    assert _tree_bytes(same)["shards/shard-00000.npy"] != reference["shards/shard-00000.npy"]

    other = interrupted("other", dict(current, av="0.0.1"))  # an older PyAV: the rerun starts over
    prepare(demo_corpus, other, options, progress=False, log=messages.append)
    assert len(messages) == 1 and "av 0.0.1 (now " in messages[0] and "starting over" in messages[0]
    assert _tree_bytes(other) == reference

    unrecorded = interrupted("unrecorded", None)  # a plan that recorded no versions: started over too
    prepare(demo_corpus, unrecorded, options, progress=False, log=messages.append)
    assert len(messages) == 2 and _tree_bytes(unrecorded) == reference


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl locks")
def test_a_second_run_into_the_same_folder_stops_at_once(demo_corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    hold = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out / ".lock")],  # as a running prepare
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PrepareError, match="being written by another"):
            prepare(demo_corpus, out, PrepareOptions(frames=8, size=16, workers=1), progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    summary = prepare(demo_corpus, out, PrepareOptions(frames=8, size=16, workers=1), progress=False)
    assert summary.clips > 0  # the lock went with its holder


def test_a_finished_dataset_on_a_read_only_mount_is_still_recognised(demo_corpus, tmp_path, monkeypatch):
    options = PrepareOptions(frames=8, size=16, workers=1)
    first = prepare(demo_corpus, tmp_path / "out", options, progress=False)
    writable = os.open

    def read_only(path, flags, *args, **kwargs):  # what a read-only file system answers
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(30, "Read-only file system", str(path))
        return writable(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    again = prepare(demo_corpus, tmp_path / "out", options, progress=False)
    assert again.already_done and again.clips == first.clips


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl locks")
def test_a_file_system_without_locks_runs_unlocked(demo_corpus, tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):  # what NFS without its lock daemon answers
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    summary = prepare(demo_corpus, tmp_path / "out", PrepareOptions(frames=8, size=16, workers=1),
                      progress=False)
    assert summary.clips > 0


def _writing(out: Path, pid: int) -> bool:
    """Whether the `prepare` process `pid` has a file under way in `out` (temporaries carry its pid)."""
    try:
        return any(p.name.endswith(f".tmp-{pid}") for p in out.rglob(".*"))
    except FileNotFoundError:  # a folder the run removed while it was being listed
        return False


def _start_prepare(src: Path, out: Path, args: list[str]) -> tuple[subprocess.Popen, float | None]:
    """A `vidgan prepare` process, left running once it has begun writing; and the seconds that took
    (its start-up: imports, discovery, resuming), or None when it ended before it was seen writing."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vidgan", "prepare", str(src), "--out", str(out), *args],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    while proc.poll() is None and time.perf_counter() - started < 120:
        if _writing(out, proc.pid):
            return proc, time.perf_counter() - started
        time.sleep(0.002)
    return proc, None


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_gives_the_uninterrupted_dataset(tmp_path):
    src = tmp_path / "src"
    write_demo_corpus(src, classes=3, videos_per_class=6, seconds=16.0)  # 0.3 s of writing or so
    args = ["--frames", "8", "--size", "32", "--stride", "4", "--shard-mb", "1", "--workers", "2", "--quiet"]
    reference = tmp_path / "reference"
    work = float("inf")  # seconds from the first file under way to the end: the quicker of two runs,
    for name in ("reference", "reference-again"):  # so that the kills below land within the work
        started = time.perf_counter()
        proc, start_up = _start_prepare(src, tmp_path / name, args)
        assert proc.wait(timeout=300) == 0 and start_up is not None, proc.stderr.read()
        work = min(work, time.perf_counter() - started - start_up)
    assert _tree_bytes(tmp_path / "reference-again") == _tree_bytes(reference)
    interrupted = 0
    for i, fraction in enumerate((0.1, 0.3, 0.5, 0.7, 0.9)):
        out = tmp_path / f"run{i}"
        # a first kill, then a kill of the resumed run (within the work it has left), then a run to
        # the end; each kill lands a share of the reference's writing time after writing began
        for share in (fraction, 0.4 * (1 - fraction), None):
            proc, start_up = _start_prepare(src, out, args)
            if share is None:
                assert proc.wait(timeout=300) == 0, proc.stderr.read()
                continue
            time.sleep(share * work)
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers
            except ProcessLookupError:  # it had finished
                pass
            proc.wait()
            interrupted += start_up is not None and not (out / "meta.json").exists()
        assert _tree_bytes(out) == _tree_bytes(reference)
    assert interrupted >= 5  # most kills landed mid-run, with parts or shards half done


def test_ctrl_c_stops_the_run_with_a_message_and_the_same_command_resumes_it(tmp_path):
    src = tmp_path / "src"
    write_demo_corpus(src, classes=2, videos_per_class=12, seconds=2.0)
    args = [sys.executable, "-m", "vidgan", "prepare", str(src), "--frames", "8", "--size", "16", "--quiet"]
    run = subprocess.Popen([*args, "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal
    started = time.perf_counter()
    while not list((tmp_path / "out").glob("shards/.*.tmp-*")) and time.perf_counter() - started < 60:
        time.sleep(0.002)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 130  # (it cannot have finished: it had only begun its first shard)
    assert "Traceback" not in err and "interrupted" in err and "resumes" in err
    assert not (tmp_path / "out" / "meta.json").exists()
    subprocess.run([*args, "--out", str(tmp_path / "out")], check=True, capture_output=True)
    subprocess.run([*args, "--out", str(tmp_path / "reference")], check=True, capture_output=True)
    assert _tree_bytes(tmp_path / "out") == _tree_bytes(tmp_path / "reference")


def test_workers_of_a_killed_run_exit_quietly(tmp_path):
    # The main process dies alone (SIGKILL, out of memory): its workers find the pipe closed while they
    # send frames or wait for work, and end without a traceback on the user's terminal.
    src = tmp_path / "src"
    write_demo_corpus(src, classes=2, videos_per_class=4, seconds=12.0)
    proc, start_up = _start_prepare(src, tmp_path / "out", ["--frames", "8", "--size", "32", "--workers", "2"])
    assert start_up is not None, proc.stderr.read()
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only
    stderr = proc.communicate(timeout=120)[1]  # returns once the workers, which share the pipe, are gone
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


_HOLDS_EVERY_BUFFER = """
import multiprocessing, sys, time
from data_tools.workers import _BatchBuffers

def worker(buffers):
    buffers.take((4, 4, 3)); buffers.sent()  # its only buffer goes to the main process, never back
    print("waiting", flush=True)
    try:
        buffers.take((4, 4, 3))
    except EOFError:
        print("gone", flush=True)

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    buffers = _BatchBuffers(context, 1, 4096)
    context.Process(target=worker, args=(buffers,)).start()
    time.sleep(60)
"""


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_worker_waiting_for_a_buffer_ends_when_the_main_process_dies(tmp_path, method):
    # The main process killed while it holds all of a worker's buffers: the worker must not wait
    # forever for one (an orphan process, and a terminal whose pipe never closes).
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    script = tmp_path / "holds.py"
    script.write_text(_HOLDS_EVERY_BUFFER)
    main = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert main.stdout.readline().strip() == "waiting"
        main.kill()
        main.wait()
        said, _, _ = select.select([main.stdout], [], [], 10)
        assert said, "the worker still waits 10 s after the main process died"
        assert main.stdout.readline().strip() == "gone"  # its last word, through the shared pipe
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.pid, signal.SIGKILL)  # an orphaned worker, if the test failed


def test_a_worker_sends_each_video_its_own_frames_whatever_their_size(demo_corpus, monkeypatch):
    # One worker, videos of alternating output sizes and batches of a few frames: the frames come
    # back through its shared buffers in turn, each batch to the video it belongs to.
    from data_tools import workers
    from data_tools.job import VideoTask, run_task

    class Receiver:
        def __init__(self):
            self.by_task: dict[VideoTask, list[np.ndarray]] = {}

        def frames(self, task, batch):
            self.by_task.setdefault(task, []).extend(frame.copy() for frame in batch)

        def discard(self, task):
            self.by_task.pop(task, None)

    class Sink:
        def __init__(self):
            self.frames: list[np.ndarray] = []

        def write(self, frame):
            self.frames.append(frame.copy())

        def discard(self):
            self.frames.clear()

    videos = sorted(p.relative_to(demo_corpus).as_posix() for p in demo_corpus.rglob("*.*"))[:4]
    tasks = [VideoTask(str(demo_corpus / rel), rel, 0, 4, 4, size, None, None, "pyav")
             for rel in videos for size in (16, 24)]
    monkeypatch.setattr(workers, "BATCH_BYTES", 5 * 24 * 24 * 3)  # batches of 5 to 11 frames
    receiver = Receiver()
    records = list(workers.run_tasks(tasks, 1, receiver))
    assert len(records) == len(tasks) and all(r["status"] == "ok" for r in records)
    for task in tasks:
        reference = Sink()
        run_task(task, reference)
        got = receiver.by_task[task]
        assert len(got) == len(reference.frames) > 11
        assert all(np.array_equal(a, b) for a, b in zip(got, reference.frames))


def test_videos_are_found_by_content_and_labelled_by_folder(tmp_path):
    src = tmp_path / "src"
    for cls in ("Zebra", "apple"):
        (src / cls / "nested").mkdir(parents=True)
    write_lossless(src / "Zebra" / "a.mkv", [id_frame(i) for i in range(8)])
    write_lossless(src / "apple" / "nested" / "b.mkv", [id_frame(i) for i in range(8)])
    shutil.copy(src / "Zebra" / "a.mkv", src / "Zebra" / "no_extension")  # found by its bytes
    (src / "apple" / "readme.txt").write_text("notes")
    (src / "apple" / "still.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    prepare(src, tmp_path / "out", PrepareOptions(frames=4, size=16, workers=1), progress=False)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["classes"] == ["Zebra", "apple"]  # sorted as strings
    rows = (tmp_path / "out" / "index.csv").read_text().splitlines()[1:]
    assert sorted({(r.split(",")[0], r.split(",")[1]) for r in rows}) == [
        ("Zebra/a.mkv", "0"), ("Zebra/no_extension", "0"), ("apple/nested/b.mkv", "1")]
    assert json.loads((tmp_path / "out" / "skipped.json").read_text()) == []


def test_odd_file_names_are_kept_and_names_that_are_not_utf8_are_skipped_with_the_reason(tmp_path):
    src = tmp_path / "src" / "class"
    src.mkdir(parents=True)
    video = write_lossless(tmp_path / "v.mkv", [id_frame(i) for i in range(8)])
    odd = ['a, "quoted" name.mkv', "new\nline.mkv", "ünïcødé 视频.mkv"]
    for name in odd:
        shutil.copy(video, src / name)
    try:
        shutil.copy(video, os.fsencode(src) + b"/latin\xe9.mkv")  # a Latin-1 name, not UTF-8
    except OSError:  # a file system that only takes UTF-8 names (macOS)
        pytest.skip("this file system refuses names that are not UTF-8")
    summary = prepare(tmp_path / "src", tmp_path / "out", PrepareOptions(frames=4, size=16, workers=1),
                      progress=False)
    assert summary.read == 3 and summary.skipped == [("class/latin\\xe9.mkv", "its name is not valid UTF-8: "
                                                                           "rename it (e.g. with convmv)")]
    assert json.loads((tmp_path / "out" / "skipped.json").read_text())[0]["path"] == "class/latin\\xe9.mkv"
    clips = ClipDataset(tmp_path / "out")
    assert sorted({clips[i]["path"] for i in range(len(clips))}) == sorted(f"class/{n}" for n in odd)
    assert "class/latin\\xe9.mkv" in summary.text()


def test_an_animated_gif_is_a_video(tmp_path):
    src = tmp_path / "src" / "loops"
    src.mkdir(parents=True)
    with av.open(str(src / "blink.gif"), "w", format="gif") as container:  # black and white in turn
        stream = container.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb8"
        for i in range(20):
            picture = np.full((32, 48, 3), 255 * (i % 2), np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="rgb8")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    summary = prepare(tmp_path / "src", tmp_path / "out", PrepareOptions(frames=8, size=16, workers=1),
                      progress=False)
    assert summary.read == 1 and summary.clips == 2 and not summary.skipped
    clips = ClipDataset(tmp_path / "out")
    brightness = [[float(f.float().mean()) for f in clips[i]["video"]] for i in range(2)]
    assert [[b > 245 for b in clip] for clip in brightness] == [[False, True] * 4] * 2  # in order
    assert all(b < 5 or b > 245 for clip in brightness for b in clip)  # (white: 3-3-2-bit palette)


def test_a_folder_that_cannot_be_listed_is_reported_not_silently_missed(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_demo_corpus(src, classes=2, videos_per_class=1, seconds=1.0)
    listable = os.scandir

    def scandir(path="."):  # as a folder without read permission does (root reads them all)
        if isinstance(path, (str, os.PathLike)) and Path(path).name == "class01":
            raise PermissionError(13, "Permission denied", str(path))
        return listable(path)

    monkeypatch.setattr(os, "scandir", scandir)
    summary = prepare(src, tmp_path / "out", PrepareOptions(frames=8, size=16, workers=1), progress=False)
    assert summary.read == 1 and summary.skipped == [("class01/", "folder unreadable (Permission denied)")]


def test_flat_folder_is_one_class(tmp_path):
    src = tmp_path / "clips"
    src.mkdir()
    write_lossless(src / "a.mkv", [id_frame(i) for i in range(8)])
    prepare(src, tmp_path / "out", PrepareOptions(frames=4, size=16, workers=1), progress=False)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["classes"] == ["clips"]


def test_split_file_keeps_listed_videos_with_class_ind_labels(tmp_path):
    src = tmp_path / "UCF-101"
    for cls in ("ApplyEyeMakeup", "HandstandPushups", "Biking"):
        (src / cls).mkdir(parents=True)
        for g in (1, 2):
            write_lossless(src / cls / f"v_{cls}_g0{g}_c01.mkv", [id_frame(i) for i in range(4)])
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    # classInd's order is not alphabetical here, and the list spells a class in another case; both
    # files as Windows' Notepad saves them (UCF-101's own have Windows line ends): a byte-order mark
    # and CRLF line ends
    def windows_text(path, text):
        path.write_bytes(("\ufeff" + text).replace("\n", "\r\n").encode("utf-8"))

    windows_text(lists / "classInd.txt", "1 HandstandPushups\n2 ApplyEyeMakeup\n3 Biking\n")
    windows_text(lists / "trainlist01.txt",
                 "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mkv 2\n"
                 "HandStandPushups/v_HandStandPushups_g02_c01.mkv 1\n"
                 "Biking/v_Biking_g09_c01.mkv 3\n")
    result = run_cli("prepare", str(src), "--frames", "4", "--size", "16", "--workers", "1", "--quiet",
                     "--split-file", str(lists / "trainlist01.txt"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "UCF-101-t4-s16-trainlist01"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["classes"] == ["HandstandPushups", "ApplyEyeMakeup", "Biking"]
    rows = [r.split(",")[:2] for r in (out / "index.csv").read_text().splitlines()[1:]]
    assert rows == [["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.mkv", "1"],
                    ["HandstandPushups/v_HandstandPushups_g02_c01.mkv", "0"]]
    skipped = json.loads((out / "skipped.json").read_text())
    assert skipped == [{"path": "Biking/v_Biking_g09_c01.mkv",
                        "reason": "listed in the split file but not found under SRC"}]


def test_default_output_folder_is_beside_the_source(demo_corpus):
    options = PrepareOptions(frames=8, size=32, stride=4, max_clips=2)
    assert default_out(demo_corpus, options) == demo_corpus.parent / "videos-t8-s32-k4-m2"
    assert default_out(Path("raw"), PrepareOptions()) == Path("raw-t16-s64")
    assert default_out(demo_corpus / ".", PrepareOptions()) == demo_corpus.parent / "videos-t16-s64"


def test_symlinked_folders_are_followed_once(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    write_lossless(src / "a" / "v.mkv", [id_frame(i) for i in range(4)])
    os.symlink(src, src / "a" / "loop")  # a cycle
    os.symlink(src / "a", src / "b")  # the same folder again: its videos are not read twice
    os.symlink(src / "a" / "v.mkv", src / "a" / "w.mkv")  # a linked file is a video like any other
    from data_tools.discover import discover

    found = discover(src)
    assert [v.rel_path for v in found.videos] == ["a/v.mkv", "a/w.mkv"]


@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames: must be >= 1"),
    (["--fps", "abc"], "--fps: not a frame rate"),
    (["--backend", "ffmpeg"], "invalid choice: 'ffmpeg'"),
])
def test_bad_options_fail_at_once_naming_the_option(tmp_path, args, message):
    result = run_cli("prepare", str(tmp_path), *args)
    assert result.returncode == 2 and message in result.stderr


def test_missing_source_folder_is_a_clear_error(tmp_path):
    result = run_cli("prepare", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "source folder not found" in result.stderr


def test_info_describes_a_prepared_folder_and_a_video(demo_corpus, tmp_path):
    out = tmp_path / "out"
    prepare(demo_corpus, out, PrepareOptions(frames=8, size=32, workers=1), progress=False)
    result = run_cli("info", str(out))
    assert result.returncode == 0
    assert "clips: 36 of [8, 32, 32, 3] uint8" in result.stdout and "class01: 12 clips" in result.stdout
    video = sorted(demo_corpus.rglob("*.avi"))[0]
    result = run_cli("info", str(video))
    assert "codec: mpeg4" in result.stdout and "size: 160x120" in result.stdout
    assert "frames declared: 50, duration" in result.stdout
    cut = write_cut(tmp_path / "cut.mp4", [id_frame(i) for i in range(30)], dropped=10)
    result = run_cli("info", str(cut))
    assert "frames declared: 30 (10 dropped by its edit list, never shown)" in result.stdout


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in Linux's /proc")
def test_the_data_commands_start_no_blas_threads(demo_corpus, tmp_path):
    # Importing numpy starts a BLAS thread per core, each spinning for about 0.1 s; prepare, synth and
    # info never multiply matrices, and their workers are one thread each.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    code = ("import os, sys; from vidgan.cli import main; main(sys.argv[1:]); "
            "print(len(os.listdir('/proc/self/task')))")
    video = sorted(demo_corpus.rglob("*.avi"))[0]
    result = subprocess.run([sys.executable, "-c", code, "info", str(video)], env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.splitlines()[-1] == "1"


def _first_video_slow(task, sink):
    """A worker body that takes its time over the first video, so that the others finish first."""
    from data_tools.job import run_task

    if task.rel_path == "class00/v_class00_g01_c01.mp4":
        time.sleep(2.0)
    return run_task(task, sink)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the fork start method")
def test_a_rerun_keeps_the_videos_an_interrupted_run_set_aside(demo_corpus, tmp_path, monkeypatch):
    import multiprocessing

    from data_tools import workers

    options = PrepareOptions(frames=8, size=32, workers=2)
    reference = prepare(demo_corpus, tmp_path / "reference", options, progress=False)
    out = tmp_path / "out"
    monkeypatch.setattr(workers, "run_task", _first_video_slow)
    monkeypatch.setattr(workers, "pool_context", lambda: multiprocessing.get_context("fork"))
    monkeypatch.setattr(prepare_module, "HOLD_BYTES", 0)
    finished = []
    place = ShardAssembler.finish

    def finish_then_interrupt(self, record):
        place(self, record)
        finished.append(record["path"])
        if len(finished) == 3:  # three videos done while the first is still decoding
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardAssembler, "finish", finish_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(demo_corpus, out, options, progress=False)
    assert "class00/v_class00_g01_c01.mp4" not in finished
    assert len(list((out / ".work" / "parts").glob("*.json"))) == 3
    monkeypatch.undo()
    resumed = prepare(demo_corpus, out, options, progress=False)
    per_video = reference.frames_decoded // reference.videos
    assert resumed.frames_decoded == reference.frames_decoded - 3 * per_video  # the three were kept
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "reference")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the fork start method")
def test_as_many_videos_as_workers_are_decoded_side_by_side(tmp_path, monkeypatch):
    import multiprocessing

    from data_tools import workers

    src = tmp_path / "src"
    write_demo_corpus(src, classes=1, videos_per_class=2, seconds=1.0)
    decoded_by = tmp_path / "decoded_by"
    decoded_by.mkdir()

    def note_the_worker(task, sink):
        from data_tools.job import run_task

        (decoded_by / task.key).write_text(str(os.getpid()))
        return run_task(task, sink)

    monkeypatch.setattr(workers, "run_task", note_the_worker)
    monkeypatch.setattr(workers, "pool_context", lambda: multiprocessing.get_context("fork"))
    summary = prepare(src, tmp_path / "out", PrepareOptions(frames=8, size=16, workers=2), progress=False)
    assert summary.workers == 2 and summary.read == 2
    assert len({p.read_text() for p in decoded_by.iterdir()}) == 2  # not both queued on the first


def _crash_on_marked(task, sink):
    """A worker body that dies like a segfaulting decoder on videos named `*crash*`, halfway through
    sending its frames."""
    from data_tools.job import run_task

    if "crash" in task.rel_path:
        import faulthandler

        import numpy as np

        frame = np.full((task.size, task.size, 3), 255, np.uint8)
        for _ in range(len(sink.batch) + 1):  # a whole batch reaches the main process
            sink.write(frame)
        faulthandler.disable()  # die quietly: pytest's fault handler would print a traceback
        os.kill(os.getpid(), signal.SIGSEGV)
    return run_task(task, sink)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the fork start method")
def test_a_crashing_decoder_takes_down_only_its_video(demo_corpus, tmp_path, monkeypatch):
    import multiprocessing

    from data_tools import workers

    src = tmp_path / "src"
    shutil.copytree(demo_corpus, src)
    shutil.copy(next(src.rglob("*.mp4")), src / "class01" / "crash_me.mp4")
    monkeypatch.setattr(workers, "run_task", _crash_on_marked)
    monkeypatch.setattr(workers, "pool_context", lambda: multiprocessing.get_context("fork"))
    summary = prepare(src, tmp_path / "out", PrepareOptions(frames=8, size=16, workers=2), progress=False)
    assert summary.skipped == [("class01/crash_me.mp4",
                                "the decoder crashed on this file (its worker process died)")]
    assert summary.read == 6 and summary.clips == 36
    # the frames it sent before dying are gone: the shards hold exactly the other videos' frames
    prepare(demo_corpus, tmp_path / "clean", PrepareOptions(frames=8, size=16, workers=1), progress=False)
    crashed, clean = ClipDataset(tmp_path / "out"), ClipDataset(tmp_path / "clean")
    assert len(crashed) == len(clean) == 36
    assert all(torch.equal(crashed[i]["video"], clean[i]["video"]) for i in range(36))
    assert [crashed[i]["path"] for i in range(36)] == [clean[i]["path"] for i in range(36)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the forkserver start method")
def test_workers_started_by_forkserver_give_the_same_dataset(demo_corpus, tmp_path):
    # A thread in the calling process makes prepare() use forkserver: the workers then hand their
    # frames back through named shared memory, which must be gone once the run is over.
    options = PrepareOptions(frames=8, size=16, workers=2)
    prepare(demo_corpus, tmp_path / "forked", options, progress=False)
    script = tmp_path / "threaded.py"
    script.write_text(
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from data_tools import PrepareOptions, prepare\n"
        "if __name__ == '__main__':\n"
        "    threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "    prepare(Path(sys.argv[1]), Path(sys.argv[2]), PrepareOptions(frames=8, size=16, workers=2),"
        " progress=False)\n")
    shm = Path("/dev/shm")
    before = set(shm.iterdir()) if shm.is_dir() else set()
    result = subprocess.run([sys.executable, str(script), str(demo_corpus), str(tmp_path / "forkserver")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "leaked" not in result.stderr, result.stderr  # multiprocessing's tracker had to clean up
    assert _tree_bytes(tmp_path / "forkserver") == _tree_bytes(tmp_path / "forked")
    if shm.is_dir():
        assert {p.name for p in set(shm.iterdir()) - before if p.name.startswith("psm_")} == set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses the forkserver start method")
def test_workers_that_cannot_start_are_reported_as_such_not_as_crashed_videos(demo_corpus, tmp_path):
    # A thread makes prepare() use forkserver, whose workers import the calling script again: without
    # a main guard they die before their first video.
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from data_tools import PrepareOptions, prepare\n"
        "threading.Thread(target=threading.Event().wait, daemon=True).start()\n"
        "prepare(Path(sys.argv[1]), Path(sys.argv[2]), PrepareOptions(frames=8, size=16, workers=2),"
        " progress=False)\n")
    result = subprocess.run([sys.executable, str(script), str(demo_corpus), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "a decode worker process could not start" in result.stderr
    assert "the decoder crashed" not in result.stderr + result.stdout
    assert not (tmp_path / "out" / "meta.json").exists()
