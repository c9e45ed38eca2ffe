"""`vidgan eval`: how far a trained generator's clips are from real ones, as FVD (StyleGAN-V's protocol).

    vidgan eval RUN_OR_CHECKPOINT --real PREPARED_DIR --i3d I3D.pt [options]
    python vidgan/evaluate.py RUN_OR_CHECKPOINT ...                          (the same, one process)
    accelerate launch [--multi_gpu --num_processes N] vidgan/evaluate.py ...  (N processes)

RUN_OR_CHECKPOINT is a run folder (its newest checkpoint is used), a checkpoint folder
(`RUN/checkpoints/checkpoint-<clips>`), or a generator folder written by `save_model`. The EMA
generator is used unless `--generator raw`; weights are read from safetensors, never from pickle.
I3D.pt is StyleGAN-V's I3D TorchScript file, which vidgan never downloads; its SHA-256 is reported
with the result. Statistics of the real clips are cached under a hash of everything that made them.

The result goes to stdout as one line, `fvd2048_16f: <value>  (i3d sha256 <hex>, N real, N fake)`,
and with every detail as JSON to `--out`; progress and cache messages go to stderr. Exit status: 0, or
2 with a message when the inputs cannot give the metric (a missing or unreadable file, too few real
clips, clips or a generator shorter than 16 frames, an image generator, a detector that fails).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from accelerate import Accelerator

from data_tools.argtypes import int_at_least
from data_tools.atomic import atomic_write_json
from vidgan.checkpoint import CheckpointError, load_trained
from vidgan.metrics import get_metric
from vidgan.metrics.fvd import FVDError, result_line
from vidgan.provenance import versions

NUM_REAL = 2048  # real clips (StyleGAN-V's fvd2048_16f); equals vidgan.metrics.fvd.NUM_REAL
NUM_FAKE = 2048  # generated clips; equals vidgan.metrics.fvd.NUM_FAKE
BATCH = 16  # clips per forward pass of G and of I3D, per process
HELP = "FVD of a trained generator against prepared real clips (StyleGAN-V's protocol)"


class EvalError(ValueError):
    """The command cannot run as asked; the message says why."""


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan eval` on `p`; `args.run(args)` runs it."""
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("checkpoint", type=Path, metavar="RUN_OR_CHECKPOINT",
                   help="run folder (its newest checkpoint), checkpoint folder, or generator folder")
    p.add_argument("--real", type=Path, required=True, metavar="PREPARED_DIR",
                   help="folder written by `vidgan prepare` with clips of >= 16 frames")
    p.add_argument("--i3d", type=Path, required=True, metavar="PATH",
                   help="StyleGAN-V's I3D TorchScript file (i3d_torchscript.pt); never downloaded")
    p.add_argument("--num-real", type=int_at_least(2), default=NUM_REAL, metavar="N",
                   help=f"real clips; at most the clips the folder holds [{NUM_REAL}]")
    p.add_argument("--num-fake", type=int_at_least(2), default=NUM_FAKE, metavar="N",
                   help=f"generated clips [{NUM_FAKE}]")
    p.add_argument("--batch", type=int_at_least(1), default=BATCH, metavar="B",
                   help=f"clips per forward pass, per process [{BATCH}]")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated clips' noise [0]")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="cache of real statistics [~/.cache/vidgan/fvd]")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the full result as JSON")
    p.add_argument("--generator", choices=("ema", "raw"), default="ema",
                   help="the EMA generator (generator_ema/) or the raw one (generator/) [ema]")
    p.add_argument("--i3d-call", choices=("auto", "kwargs", "plain"), default="auto",
                   help="how the detector is called: auto reads its signature and passes those of "
                        "rescale=False, resize=False, return_features=True that it declares; kwargs "
                        "always passes them; plain calls detector(x) [auto]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run_eval)
    return p


def evaluate(args: argparse.Namespace) -> dict | None:
    """Compute the metric as `args` asks; the result dict on the main process, None on the others."""
    try:
        trained = load_trained(args.checkpoint, which=args.generator)
    except CheckpointError as e:
        raise EvalError(f"cannot load the generator: {e}") from None
    accelerator = Accelerator()
    result = get_metric("fvd")(
        trained.generator, args.real, args.i3d, accelerator=accelerator, num_real=args.num_real,
        num_fake=args.num_fake, batch=args.batch, seed=args.seed, cache_dir=args.cache,
        i3d_call=args.i3d_call, progress=not args.no_progress)
    if result is not None:
        checkpoint = None if trained.checkpoint is None else str(trained.checkpoint.resolve())
        result = {**result, "checkpoint": checkpoint, "generator": str(trained.generator_folder.resolve()),
                  "versions": versions()}
    accelerator.wait_for_everyone()
    return result


def run_eval(args: argparse.Namespace) -> int:
    try:
        result = evaluate(args)
    except (EvalError, FVDError) as e:
        print(f"vidgan eval: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, result)
        print(result_line(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="vidgan eval")).parse_args(argv)
    return run_eval(args)


if __name__ == "__main__":
    sys.exit(main())
