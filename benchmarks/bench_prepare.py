"""Throughput of `vidgan prepare` against the best raw decode chains, on the same files in one run.

    python benchmarks/bench_prepare.py ../shared/bench-corpus [--size 64] [--repeat 3] [--rss]

Chains, each over every video of DIR, best of --repeat rounds (the chains take turns); frames/s are
the corpus's frames over each chain's time, for every chain alike:
  raw PyAV   PyAV decode (1 thread) + one FFmpeg filter graph: crop, scale (area), rgb24; no writing.
             Three ways: the scale filter writing planar RGB, interleaved to rgb24 at S×S (the
             graph of `prepare`: the best chain, and the baseline); the scale filter writing rgb24
             itself (the textbook graph); and that with FFmpeg's default filter threads (across all
             cores: slower on frames this small)
  raw PyAV, up to the last complete clip
             the baseline chain doing only what `prepare` must: decoding each video up to the end of
             its last complete 16-frame clip (by the declared frame count) and converting those
             frames; the rest is demuxed, not decoded; nothing written. The ceiling of `prepare`
  raw decord decord decode with decoder-side resize to the short side S, numpy centre crop; no writing
  prepare    `vidgan prepare` with 1 and with 2 workers, everything included (process start, shards,
             index), into a fresh folder each time
  raw PyAV ×2 the raw PyAV chain with the files split over two processes: the machine's own ceiling
             for two workers
With --rss, also the peak resident memory of a 1-worker `prepare` of a synthetic 1080p60 H.264 video
of two lengths (it must stay flat in the video's length).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_pyav(paths: list[Path], size: int, planar: bool = True, filter_threads: int | None = 1,
             clip_frames: int | None = None) -> int:
    """`planar` scales into planar RGB and interleaves at S×S (`prepare`'s graph); else the scale
    filter writes rgb24 itself. `filter_threads` None leaves FFmpeg's default: the filters threaded
    across all cores. With `clip_frames` T, a video is decoded and converted only up to the end of its
    last complete T-frame clip (by the declared frame count), and the rest demuxed: what `prepare`
    does at least."""
    import av

    frames = 0
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            graph = None
            wanted = (stream.frames // clip_frames) * clip_frames if clip_frames else None
            packets = container.demux(stream)
            decoded = 0
            for packet in packets:
                for frame in packet.decode():
                    decoded += 1
                    if graph is None:
                        side = min(frame.width, frame.height)
                        graph = av.filter.Graph()
                        if filter_threads is not None:
                            graph.threads = filter_threads
                        chain = [graph.add_buffer(template=stream),
                                 graph.add("crop", f"{side}:{side}:{(frame.width - side) // 2}:"
                                                   f"{(frame.height - side) // 2}"),
                                 graph.add("scale", f"{size}:{size}:flags=area")]
                        if planar:
                            chain += [graph.add("format", "gbrp"), graph.add("scale", "flags=neighbor")]
                        chain += [graph.add("format", "rgb24"), graph.add("buffersink")]
                        for a, b in zip(chain, chain[1:]):
                            a.link_to(b)
                        graph.configure()
                    graph.vpush(frame)
                    graph.vpull().to_ndarray()
                if wanted is not None and decoded >= wanted:
                    break
            for _ in packets:  # the rest of the file read, not decoded, as prepare counts it
                pass
            frames += decoded
    return frames


def raw_decord(paths: list[Path], size: int) -> int:
    import decord

    frames = 0
    for path in paths:
        probe = decord.VideoReader(str(path), num_threads=1)
        h, w = probe[0].shape[:2]
        del probe
        scale = size / min(h, w)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        reader = decord.VideoReader(str(path), width=rw, height=rh, num_threads=1)
        y, x = (rh - size) // 2, (rw - size) // 2
        for start in range(0, len(reader), 64):
            batch = reader.get_batch(list(range(start, min(len(reader), start + 64)))).asnumpy()
            np.ascontiguousarray(batch[:, y : y + size, x : x + size])
            frames += len(batch)
    return frames


def raw_pyav_two_processes(paths: list[Path], size: int) -> None:
    """The raw PyAV chain with the files dealt out to two processes: this machine's own ceiling for
    two workers (shared caches, memory bandwidth, turbo clocks)."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.starmap(raw_pyav, [(paths[0::2], size), (paths[1::2], size)])


def run_prepare(src: Path, size: int, workers: int) -> float:
    """Seconds of one `prepare` into a fresh folder (its deletion not timed)."""
    from data_tools import PrepareOptions, prepare

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        prepare(src, Path(tmp) / "out", PrepareOptions(size=size, workers=workers), progress=False)
        return time.perf_counter() - started


def best_times(chains: list, repeat: int) -> list[float]:
    """Best seconds of each chain over `repeat` rounds; the chains take turns within a round, so that
    a slow spell of this shared machine hits all of them alike. A chain returns its own time (float)
    or nothing, and is then timed from outside."""
    best = [float("inf")] * len(chains)
    for _ in range(repeat):
        for i, fn in enumerate(chains):
            started = time.perf_counter()
            result = fn()
            seconds = result if isinstance(result, float) else time.perf_counter() - started
            best[i] = min(best[i], seconds)
    return best


def make_1080p60(path: Path, seconds: float) -> None:
    from data_tools.synth import encode_video

    def frames():
        yy, xx = np.mgrid[0:1080, 0:1920]
        base = ((xx // 8 + yy // 8) % 2 * 60 + 80).astype(np.uint8)
        for t in range(int(seconds * 60)):
            frame = np.repeat(base[..., None], 3, axis=2)
            x = (t * 13) % 1700
            frame[400:700, x : x + 200] = (230, 60, 40)
            yield frame

    encode_video(path, frames(), 60, "libx264", "yuv420p", {"preset": "ultrafast", "crf": "28"})


_PEAK_RSS_OF_THIS_PROCESS = """
def peak_kb():
    # Linux keeps ru_maxrss across exec: a process started from this big benchmark would report the
    # benchmark's size. VmHWM is the peak of this program alone.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""


def peak_rss_mb(video_dir: Path, size: int) -> tuple[float, float]:
    """Peak RSS (MB) of the main process and of its decode worker, for a 1-worker `prepare`."""
    code = ("import resource, sys; from pathlib import Path; from data_tools import PrepareOptions, prepare\n"
            f"{_PEAK_RSS_OF_THIS_PROCESS}\n"
            f"prepare(Path(sys.argv[1]), Path(sys.argv[2]), PrepareOptions(size={size}, workers=1), "
            "progress=False)\n"
            "print(peak_kb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-c", code, str(video_dir), str(Path(tmp) / "out")],
                                check=True, capture_output=True, text=True)
    main_kb, worker_kb = map(int, result.stdout.split()[-2:])
    return main_kb / 1024, worker_kb / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="folder of videos (e.g. ../shared/bench-corpus)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS on 1080p60 videos")
    parser.add_argument("--copies", type=int, default=1,
                        help="read each video K times (links), so that start-up costs are amortised as "
                             "on a real dataset")
    args = parser.parse_args()

    from data_tools.discover import discover

    with tempfile.TemporaryDirectory() as tmp:
        src = args.dir
        if args.copies > 1:  # the same files K times over, through links: fixed costs amortised
            src = Path(tmp) / "corpus"
            for v in discover(args.dir).videos:
                for k in range(args.copies):
                    link = src / f"{v.rel_path}.copy{k}{Path(v.rel_path).suffix}"
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to((args.dir / v.rel_path).resolve())
        run_chains(src, [src / v.rel_path for v in discover(src).videos], args)

    if args.rss:
        print("\n| 1080p60 H.264 input | peak RSS, main process | peak RSS, decode worker |")
        print("|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for seconds in (10, 40):
                folder = Path(tmp) / f"len{seconds}"
                folder.mkdir()
                make_1080p60(folder / "long.mp4", seconds)
                main_mb, worker_mb = peak_rss_mb(folder, args.size)
                print(f"| {seconds} s ({seconds * 60} frames) | {main_mb:.0f} MB | {worker_mb:.0f} MB |")


def run_chains(src: Path, paths: list[Path], args) -> None:
    print(f"{len(paths)} videos in {args.dir}" + (f" ({args.copies} links to each)" if args.copies > 1 else "")
          + f", {os.cpu_count()} CPU cores, S={args.size}, best of {args.repeat}\n")
    names = ["raw PyAV chain: scale to planar RGB, interleave at S×S (1 thread)",
             "raw PyAV chain: scale straight to rgb24 (1 thread)",
             "raw PyAV chain: scale straight to rgb24, FFmpeg's default filter threads",
             "raw PyAV chain up to the last complete clip (nothing written)",
             "raw decord (decoder-side resize)",
             "vidgan prepare, 1 worker", "vidgan prepare, 2 workers",
             "raw PyAV chain, files split over 2 processes"]
    chains = [lambda: raw_pyav(paths, args.size), lambda: raw_pyav(paths, args.size, planar=False),
              lambda: raw_pyav(paths, args.size, planar=False, filter_threads=None),
              lambda: raw_pyav(paths, args.size, clip_frames=16), lambda: raw_decord(paths, args.size),
              lambda: run_prepare(src, args.size, 1),
              lambda: run_prepare(src, args.size, 2), lambda: raw_pyav_two_processes(paths, args.size)]
    if importlib.util.find_spec("decord") is None:  # not installed (it exists for x86_64 only)
        names[4] += ": not installed"
        chains[4] = lambda: float("inf")
    frames = raw_pyav(paths, args.size)  # a warm-up round (files in the page cache) that counts the frames
    rates = [frames / seconds for seconds in best_times(chains, args.repeat)]
    base = max(rates[:3])  # the best raw chain
    textbook, default_threads, one, two, ceiling = rates[1], rates[2], rates[5], rates[6], rates[7]
    print(f"| chain ({frames} frames) | frames/s | × the best raw PyAV chain |")
    print("|---|---|---|")
    for name, rate in zip(names, rates):
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f} |")
    print(f"\nprepare 1 worker / the best raw PyAV chain: {one / base:.2f}× "
          f"(/ the textbook chain: {one / textbook:.2f}×, with FFmpeg's default filter threads: "
          f"{one / default_threads:.2f}×)")
    print(f"prepare 2 workers / 1 worker: {two / one:.2f}× "
          f"(the raw chain's own 2-process scaling on this machine: {ceiling / rates[0]:.2f}×)")


if __name__ == "__main__":
    main()
