"""Command-line front ends of the data tools: `vidgan prepare`, `vidgan synth`, `vidgan info`. Each
`configure_*` adds a command's arguments to a parser, and `args.run(args)` runs it; the commands'
work is imported when they run, so that a worker-heavy `prepare` starts without torch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.argtypes import frame_rate, positive_int


def configure_prepare(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.description = ("Decode every video under SRC (found by content, labelled by first-level subfolder) "
                     "into centre-cropped, resized uint8 clips [T, S, S, 3] in memory-mappable shards. "
                     "Interrupted runs resume; finished runs are not redone.")
    p.add_argument("src", type=Path, help="folder of videos, e.g. UCF-101/<Class>/v_*.avi")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder [SRC-t<T>-s<S> beside SRC, plus a suffix per non-default option]")
    p.add_argument("--frames", type=positive_int, default=16, metavar="T", help="frames per clip [16]")
    p.add_argument("--size", type=positive_int, default=64, metavar="S", help="output side in pixels [64]")
    p.add_argument("--stride", type=positive_int, default=None, metavar="K",
                   help="output frames between clip starts [T: clips do not overlap]")
    p.add_argument("--fps", type=frame_rate, default=None, metavar="F",
                   help="resample to F frames/s by timestamps [keep every decoded frame]")
    p.add_argument("--max-clips-per-video", type=positive_int, default=None, metavar="M",
                   help="at most M clips from each video [all]")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="decode processes [the CPUs this process may use: its affinity, capped by a "
                        "container's CPU quota]")
    p.add_argument("--backend", choices=("auto", "decord", "pyav"), default="auto",
                   help="decoder [auto: PyAV, decord where PyAV cannot read a file]")
    p.add_argument("--split-file", type=Path, default=None, metavar="PATH",
                   help="UCF-101 trainlist0N.txt/testlist0N.txt: keep only the listed videos "
                        "(labels from classInd.txt beside it)")
    p.add_argument("--shard-mb", type=positive_int, default=256, metavar="MB",
                   help="close a shard once it holds this many MiB [256]")
    p.add_argument("--strict", action="store_true", help="exit non-zero if any file is skipped")
    p.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_prepare)
    return p


def run_prepare(args) -> int:
    from data_tools.prepare import PrepareError, PrepareOptions, prepare

    try:
        options = PrepareOptions(
            frames=args.frames, size=args.size, stride=args.stride, fps=args.fps,
            max_clips=args.max_clips_per_video, backend=args.backend, split_file=args.split_file,
            shard_mb=args.shard_mb, workers=args.workers, strict=args.strict)
        summary = prepare(args.src, args.out, options, overwrite=args.overwrite, progress=not args.quiet)
    except (PrepareError, RuntimeError, FileNotFoundError) as e:
        print(f"vidgan prepare: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the disk full, a folder that cannot be written
        print(f"vidgan prepare: error: {e}. What was written is kept: once that is fixed, the same "
              "command resumes the run.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nvidgan prepare: interrupted. What was written is kept: the same command resumes the "
              "run.", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it
    print(summary.text())
    if summary.clips == 0:
        print("vidgan prepare: error: no clip was written", file=sys.stderr)
        return 1
    if args.strict and (summary.skipped or summary.damaged):
        problems = [f"{len(summary.skipped)} file(s) skipped"] if summary.skipped else []
        problems += [f"{summary.damaged} read with damaged packets skipped"] if summary.damaged else []
        print(f"vidgan prepare: error: {', '.join(problems)} (--strict)", file=sys.stderr)
        return 1
    return 0


def configure_synth(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from data_tools.synth import STYLES

    p.description = ("Write moving-shape videos (H.264 MP4 and MPEG-4 AVI), one folder per class, "
                     "ready for `vidgan prepare`. Styles: shapes (each class moves its own way), glyphs "
                     "(ten grey glyphs bouncing in any direction over dark), orbits (coloured glyphs "
                     "circling over a dark gradient), sprites (glyphs in random colours: content and "
                     "motion drawn independently).")
    p.add_argument("out", type=Path, help="folder to write (OUT/<class>/*.mp4|avi)")
    p.add_argument("--classes", type=positive_int, default=4, help="number of classes [4]")
    p.add_argument("--videos-per-class", type=positive_int, default=4, help="videos per class [4]")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each video [3.0]")
    p.add_argument("--fps", type=positive_int, default=25, help="frame rate [25]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--style", choices=STYLES, default="shapes", help="what moves and how [shapes]")
    p.set_defaults(run=run_synth)
    return p


def run_synth(args) -> int:
    from data_tools.synth import write_demo_corpus

    if args.seconds <= 0:
        print("vidgan synth: error: --seconds must be > 0", file=sys.stderr)
        return 2
    try:
        paths = write_demo_corpus(args.out, args.classes, args.videos_per_class, args.seconds, args.fps,
                                  args.seed, args.style)
    except ValueError as e:  # more classes than the style has glyphs
        print(f"vidgan synth: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} videos in {args.classes} classes to {args.out}")
    return 0


def configure_info(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.description = ("Summarise a folder written by `vidgan prepare`, or probe a video file the way "
                     "`prepare` would read it.")
    p.add_argument("path", type=Path, help="prepared folder or video file")
    p.set_defaults(run=run_info)
    return p


def run_info(args) -> int:
    from data_tools.info import describe

    try:
        print(describe(args.path))
    except (FileNotFoundError, ValueError) as e:
        print(f"vidgan info: error: {e}", file=sys.stderr)
        return 2
    return 0
