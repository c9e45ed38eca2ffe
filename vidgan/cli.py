"""The `vidgan` command: one entry point, a subcommand per task. Heavy imports happen inside each
subcommand, so `vidgan --help` answers at once."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Commands that never multiply matrices. For them numpy's OpenBLAS gets one thread: at import it
# starts one per core, each spinning for about 0.1 s, on the cores `prepare` is forking its
# decoders onto (about 0.1 s of CPU on 2 cores, with each core more).
_NO_BLAS_COMMANDS = {"prepare", "synth", "info"}


def _add_info_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a prepared folder or a video file",
                              description="Summarise a folder written by `vidgan prepare`, or probe a "
                                          "video file the way `prepare` would read it.")
    p.add_argument("path", type=Path, help="prepared folder or video file")
    p.set_defaults(run=_run_info)


def _run_info(args) -> int:
    from data_tools.info import describe

    try:
        print(describe(args.path))
    except (FileNotFoundError, ValueError) as e:
        print(f"vidgan info: error: {e}", file=sys.stderr)
        return 2
    return 0


def _add_train_parser(subparsers) -> None:
    # listed for --help only: `main` hands `vidgan train ...` to vidgan.train.main before parsing
    subparsers.add_parser("train", help="train a GAN on prepared clips (one process; "
                          "`accelerate launch vidgan/train.py` for several)")


def build_parser() -> argparse.ArgumentParser:
    from data_tools.cli import add_prepare_parser, add_synth_parser
    from vidgan.evaluate import add_eval_parser
    from vidgan.inpaint import add_inpaint_parser
    from vidgan.sample import add_interpolate_parser, add_sample_parser

    parser = argparse.ArgumentParser(prog="vidgan", description="Video GANs: data, training, sampling.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_prepare_parser(subparsers)
    add_synth_parser(subparsers)
    _add_info_parser(subparsers)
    _add_train_parser(subparsers)
    add_sample_parser(subparsers)
    add_interpolate_parser(subparsers)
    add_eval_parser(subparsers)
    add_inpaint_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # the training script parses its own arguments (`vidgan train --help`)
        from vidgan.train import main as train_main

        return train_main(argv[1:])
    if argv[:1] and argv[0] in _NO_BLAS_COMMANDS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
