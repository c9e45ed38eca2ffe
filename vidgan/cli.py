"""The `vidgan` command: one entry point, a subcommand per task.

A subcommand's module is imported only when that subcommand runs, so `vidgan --help` and the data
commands start without torch; `vidgan train` hands its arguments to the training script's own parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name → ("module:function" that adds the command's arguments to a parser, the line `vidgan --help` shows)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("data_tools.cli:configure_prepare", "decode raw videos into uint8 clips on disk"),
    "synth": ("data_tools.cli:configure_synth", "write a small labelled demo corpus of encoded videos"),
    "info": ("data_tools.cli:configure_info", "describe a prepared folder or a video file"),
    "train": ("vidgan.train:configure", "train a GAN on prepared clips (one process; "
                                        "`accelerate launch vidgan/train.py` for several)"),
    "sample": ("vidgan.sample:configure_sample", "write MP4 clips from a trained generator"),
    "interpolate": ("vidgan.sample:configure_interpolate", "write an MP4 of a walk between noise vectors"),
    "eval": ("vidgan.evaluate:configure",
             "FVD of a trained generator against prepared real clips (StyleGAN-V's protocol)"),
    "inpaint": ("vidgan.inpaint:configure", "fill holes or missing frames with a trained GAN (Yeh et al. 2017)"),
    "transfer": ("vidgan.transfer:configure", "render one clip's content with another clip's motion"),
}

# Commands that never multiply matrices. For them numpy's OpenBLAS gets one thread: at import it
# starts one per core, each spinning for about 0.1 s, on the cores `prepare` is forking its
# decoders onto (about 0.1 s of CPU on 2 cores, with each core more).
_NO_BLAS_COMMANDS = {"prepare", "synth", "info"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `vidgan` parser with every subcommand listed; only `command`'s arguments (and module) are
    loaded."""
    parser = argparse.ArgumentParser(prog="vidgan", description="Video GANs: data, training, sampling.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (target, help_line) in COMMANDS.items():
        p = subparsers.add_parser(name, help=help_line)
        if name == command:
            module, function = target.split(":")
            getattr(importlib.import_module(module), function)(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command == "train":  # the training script parses its own arguments (`vidgan train --help`)
        from vidgan.train import main as train_main

        return train_main(argv[1:])
    if command in _NO_BLAS_COMMANDS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser(command).parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
