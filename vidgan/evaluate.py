"""`vidgan eval`: how good a trained generator's clips are, by the quality meter or as FVD.

    vidgan eval RUN_OR_CHECKPOINT --real PREPARED_DIR [options]                (the meter)
    vidgan eval RUN_OR_CHECKPOINT --real PREPARED_DIR --i3d I3D.pt [options]   (FVD)
    python vidgan/evaluate.py RUN_OR_CHECKPOINT ...                          (the same, one process)
    accelerate launch [--multi_gpu --num_processes N] vidgan/evaluate.py ...  (N processes)

Without --i3d, the quality meter (vidgan.metrics.meter) scores the clips with a classifier trained on
the labelled real clips (trained once, two or three minutes, and cached in PREPARED_DIR/meter/): how
recognisable (confidence, the fraction recognised, an Inception-style score), consistent through the
clip and lively (motion against the real clips') they are, and a Fréchet distance in its feature
space; the real held-out clips' figures are printed beside them. Nothing is downloaded.

With --i3d, FVD as StyleGAN-V computes it.
RUN_OR_CHECKPOINT is a run folder (its newest checkpoint is used), a checkpoint folder
(`RUN/checkpoints/checkpoint-<clips>`), or a generator folder written by `save_model`. The EMA
generator is used unless `--generator raw`; weights are read from safetensors, never from pickle.
I3D.pt is StyleGAN-V's I3D TorchScript file, which vidgan never downloads; its SHA-256 is reported
with the result. Statistics of the real clips are cached under a hash of everything that made them.

The result goes to stdout as one line (`fvd2048_16f: <value>  (i3d sha256 <hex>, N real, N fake)`
for FVD), and with every detail as JSON to `--out`; progress and cache messages go to stderr. Exit status: 0, or
2 with a message when the inputs cannot give the metric (a missing or unreadable file, too few real
clips, clips or a generator too short, an image generator, a detector that fails, a folder with one
class).
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
from vidgan.metrics.disentangle import disentanglement, disentanglement_line
from vidgan.metrics.meter import MeterError, meter_for, score_generator
from vidgan.provenance import versions
from vidgan.sample import latent_parts

NUM_REAL = 2048  # real clips (StyleGAN-V's fvd2048_16f); equals vidgan.metrics.fvd.NUM_REAL
NUM_FAKE = 2048  # generated clips; equals vidgan.metrics.fvd.NUM_FAKE
NUM_METER = 512  # generated clips the meter scores by default
BATCH = 16  # clips per forward pass of G and of I3D, per process
HELP = "score a trained generator's clips: the quality meter, or FVD with --i3d"


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
    p.add_argument("--i3d", type=Path, default=None, metavar="PATH",
                   help="compute FVD with StyleGAN-V's I3D TorchScript file (i3d_torchscript.pt); never "
                        "downloaded. Without it, the quality meter")
    p.add_argument("--num-real", type=int_at_least(2), default=NUM_REAL, metavar="N",
                   help=f"(FVD) real clips; at most the clips the folder holds [{NUM_REAL}]")
    p.add_argument("--num-fake", type=int_at_least(2), default=None, metavar="N",
                   help=f"generated clips [{NUM_METER} for the meter, {NUM_FAKE} for FVD]")
    p.add_argument("--batch", type=int_at_least(1), default=BATCH, metavar="B",
                   help=f"clips per forward pass, per process [{BATCH}]")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated clips' noise [0]")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="(FVD) cache of real statistics [~/.cache/vidgan/fvd]")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the full result as JSON")
    p.add_argument("--generator", choices=("ema", "raw"), default="ema",
                   help="the EMA generator (generator_ema/) or the raw one (generator/) [ema]")
    p.add_argument("--i3d-call", choices=("auto", "kwargs", "plain"), default="auto",
                   help="(FVD) how the detector is called: auto reads its signature and passes those of "
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
    if args.i3d is None:
        return {**meter_result(trained, args.real, args.num_fake or NUM_METER, args.seed),
                **_provenance(trained)}
    accelerator = Accelerator()
    try:
        result = get_metric("fvd")(
            trained.generator, args.real, args.i3d, accelerator=accelerator, num_real=args.num_real,
            num_fake=args.num_fake or NUM_FAKE, batch=args.batch, seed=args.seed, cache_dir=args.cache,
            i3d_call=args.i3d_call, progress=not args.no_progress)
        if result is not None:
            result = {**result, **_provenance(trained)}
        accelerator.wait_for_everyone()
    finally:
        # the process group is torn down before the interpreter exits: left to exit-time destructors,
        # a rank can abort ("terminate called without an active exception") after its work is done
        accelerator.end_training()
    return result


def _provenance(trained) -> dict:
    checkpoint = None if trained.checkpoint is None else str(trained.checkpoint.resolve())
    return {"checkpoint": checkpoint, "generator": str(trained.generator_folder.resolve()), "versions": versions()}


def meter_result(trained, real: Path, count: int, seed: int) -> dict:
    """The meter's scores of `count` clips of the trained generator and its figures for the real clips
    (one process)."""
    meter = meter_for(real)
    generator = trained.generator.to("cpu")
    result = {"metric": "meter", **meter.summary(),
              "fake": score_generator(meter, generator, count, seed, trained.classes)}
    if latent_parts(generator) is not None:  # a content/motion generator: how apart its parts are
        result["disentanglement"] = disentanglement(meter, generator, seed=seed)
    return result


def meter_line(result: dict) -> str:
    """The meter's result as one line: the generated clips' scores, then the real clips'."""
    def figures(s: dict) -> str:
        line = (f"recognisable {s['recognisable']:.2f}  confidence {s['confidence']:.2f}  "
                f"is {s['inception_score']:.2f}/{len(result['classes'])}  consistency {s['consistency']:.2f}  "
                f"no object {s['no_object']:.2f}  motion {s['motion']:.2f} px/frame")
        line += f" (×{s['motion_ratio']:.2f} real)  fd {s['fd']:.1f}" if "fd" in s else ""
        return line + (f"  class match {s['class_match']:.2f}" if "class_match" in s else "")
    lines = (f"meter: {figures(result['fake'])}  ({result['fake']['clips']} clips)\n"
             f"real:  {figures(result['real'])}  ({result['held_out_clips']} held-out clips, probe accuracy "
             f"{result['probe_accuracy']:.3f})")
    if "disentanglement" in result:
        lines += f"\nparts: {disentanglement_line(result['disentanglement'])}"
    return lines

def run_eval(args: argparse.Namespace) -> int:
    try:
        result = evaluate(args)
    except (EvalError, FVDError, MeterError) as e:
        print(f"vidgan eval: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(args.out, result)
        print(meter_line(result) if result.get("metric") == "meter" else result_line(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="vidgan eval")).parse_args(argv)
    return run_eval(args)


if __name__ == "__main__":
    sys.exit(main())
