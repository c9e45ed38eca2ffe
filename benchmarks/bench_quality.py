"""Learning curves: recipes trained on `vidgan synth` corpora, their EMA generators scored every few kimg
with the quality meter (`vidgan.metrics.meter`), against the same meter's figures for real clips.

    python benchmarks/bench_quality.py [--corpora glyphs orbits] [--seeds 0 1 2] [--kimg 40] [--every 5]
        [--variant NAME=RECIPE[:key=value,...] ...] [--work DIR] [--out DIR]

Each corpus is `vidgan synth --style S --classes 10 --videos-per-class 20 --seconds 8`, prepared with
`--size 32 --frames 16 --stride 16` (2,400 clips). Each variant is a recipe with overrides; the defaults
are `vgan`, recipes/demo.yaml with every setting VGAN's (`VGAN`), and `demo`, recipes/demo.yaml as it
stands. Each (corpus, variant, seed) trains in this process with a checkpoint every --every kimg, all
kept; each checkpoint's EMA generator makes 512 clips from fixed noise, which the meter scores.

Out: OUT/quality.csv (a row per corpus, variant, seed and checkpoint), OUT/quality.png (the curves:
mean over seeds, with the range shaded, a column per corpus, a row per score, the real clips' figure
dashed), and a Markdown table of the last checkpoint's scores on stdout (median and range over seeds).
Runs and scores already in WORK and OUT are reused, so an interrupted benchmark goes on where it stopped;
a score is reused only when the same meter (protocol and probe, the CSV's `meter` column) made it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

from data_tools import PrepareOptions, prepare
from data_tools.atomic import atomic_write_text
from data_tools.synth import STYLES, write_demo_corpus
from vidgan.checkpoint import list_checkpoints, load_trained
from vidgan.metrics.meter import meter_for, score_generator
from vidgan.recipe import load_recipe
from vidgan.train import train

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo.yaml"
# recipes/demo.yaml with VGAN's settings (Vondrick et al. 2016: Adam 2e-4, β1 0.5, BatchNorm D, the
# non-saturating loss) and none of the switches that the quality work added
VGAN = ("optim.lr_g=2e-4", "optim.lr_d=2e-4", "optim.beta1=0.5", "optim.beta2=0.999", "loss.kind=nonsaturating",
        "loss.r1_gamma=0", "loss.augment_p=0", "loss.instance_noise=0", "model.d_batchnorm=true",
        "model.spectral_norm=false", "model.g_out_bias=false", "model.image_d_frames=0", "model.generator=volume",
        "model.d_minibatch_std=0", "train.ema_batchnorm=copy")
SCORES = ("recognisable", "no_object", "inception_score", "consistency", "motion_ratio", "fd")
FAKE_CLIPS = 512
FAKE_SEED = 123


def corpus(work: Path, style: str) -> Path:
    """The prepared folder of one synth style, made once."""
    clips = work / f"{style}-t16-s32"
    if not (clips / "meta.json").is_file():
        videos = work / f"{style}-videos"
        if not videos.is_dir():
            write_demo_corpus(videos, classes=10, videos_per_class=20, seconds=8.0, style=style, seed=0)
        prepare(videos, clips, PrepareOptions(frames=16, size=32, stride=16), progress=False)
    return clips


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    name, _, rest = text.partition("=")
    recipe, _, overrides = rest.partition(":")
    if not name or not recipe:
        raise SystemExit(f"--variant {text!r}: expected NAME=RECIPE[:key=value,...]")
    return name, Path(recipe), [o for o in overrides.split(",") if o]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_seconds(run: Path) -> dict[int, float]:
    """Seconds of training to each logged clip count, from the run's metrics.csv."""
    return {int(r["clips"]): float(r["seconds"]) for r in read_rows(run / "logs" / "metrics.csv")}


def run_variant(work: Path, data: Path, style: str, name: str, recipe: Path, overrides: list[str], seed: int,
                kimg: float, every: float) -> Path:
    """Train one (corpus, variant, seed) unless its run has finished; returns the run folder."""
    run = work / "runs" / f"{style}-{name}-s{seed}"
    if (run / "ranks" / "rank-0.json").is_file():
        return run
    resume = "latest" if list_checkpoints(run) else None
    r = load_recipe(recipe, [*overrides, f"data.root={data}", f"seed={seed}", f"train.kimg={kimg}",
                             f"train.checkpoint_kimg={every}", "train.keep_checkpoints=1000",
                             f"sample.every_kimg={kimg}", "log.tensorboard=false", f"run.dir={run}"])
    print(f"training {run.name}", file=sys.stderr, flush=True)
    train(r, resume=resume, progress_bar=False)
    return run


def score_run(run: Path, meter, rows: list[dict], key: dict) -> list[dict]:
    """Meter rows of every checkpoint of `run` not yet in `rows`."""
    done = {int(r["clips"]) for r in rows if all(r[k] == str(v) for k, v in key.items())}
    seconds = train_seconds(run)
    new = []
    for checkpoint in list_checkpoints(run):
        clips = int(checkpoint.name.split("-")[1])
        if clips in done:
            continue
        trained = load_trained(checkpoint, which="ema")
        scores = score_generator(meter, trained.generator, FAKE_CLIPS, FAKE_SEED, trained.classes)
        new.append({**key, "clips": clips, "kimg": clips / 1000,
                    "train_seconds": round(seconds.get(clips, float("nan")), 1),
                    **{k: round(scores[k], 4) for k in ("confidence", *SCORES)},
                    "class_match": round(scores["class_match"], 4) if "class_match" in scores else ""})
    return new


def plot(rows: list[dict], real: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = sorted({r["corpus"] for r in rows})
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(len(SCORES), len(corpora), figsize=(4.2 * len(corpora), 2.4 * len(SCORES)),
                             squeeze=False, sharex=True)
    for j, name in enumerate(corpora):
        for i, score in enumerate(SCORES):
            ax = axes[i][j]
            for k, variant in enumerate(variants):
                mine = [r for r in rows if r["corpus"] == name and r["variant"] == variant]
                xs = sorted({float(r["kimg"]) for r in mine})
                values = [[float(r[score]) for r in mine if float(r["kimg"]) == x] for x in xs]
                color = f"C{k}"
                ax.plot(xs, [statistics.mean(v) for v in values], color=color, label=variant)
                ax.fill_between(xs, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.2)
            # (the real clips' FD, 0, has no place on a log axis)
            target = 1.0 if score == "motion_ratio" else None if score == "fd" else real[name].get(score)
            if target is not None:
                ax.axhline(target, color="k", linestyle="--", linewidth=0.8, label="real clips")
            ax.set_title(f"{name}: {score}", fontsize=9)
            if i == len(SCORES) - 1:
                ax.set_xlabel("kimg")
            if score == "fd":
                ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)


def table(rows: list[dict], real: dict[str, dict]) -> str:
    """The last checkpoint's scores: median and range over seeds, and the real clips' figures; a
    class-conditional recipe's class match in the last column."""
    matched = any(r.get("class_match") not in (None, "") for r in rows)
    lines = ["| corpus | recipe | seeds | kimg | " + " | ".join(SCORES) + " | train min |"
             + (" class_match |" if matched else ""), "|---" * (len(SCORES) + 5 + matched) + "|"]
    for name in sorted(real):
        lines.append(f"| {name} | real clips | | | " + " | ".join(
            f"{real[name][s]:.2f}" if s in real[name] else ("1.00" if s == "motion_ratio" else "0")
            for s in SCORES) + " | |")
        for variant in dict.fromkeys(r["variant"] for r in rows):
            mine = [r for r in rows if r["corpus"] == name and r["variant"] == variant]
            if not mine:
                continue
            last = max(float(r["kimg"]) for r in mine)
            final = [r for r in mine if float(r["kimg"]) == last]
            cells = []
            for s in SCORES:
                v = sorted(float(r[s]) for r in final)
                cells.append(f"{statistics.median(v):.2f} ({v[0]:.2f}–{v[-1]:.2f})")
            minutes = statistics.median(float(r["train_seconds"]) for r in final) / 60
            match = sorted(float(r["class_match"]) for r in final if r.get("class_match") not in (None, ""))
            match_cell = (f" {statistics.median(match):.2f} ({match[0]:.2f}–{match[-1]:.2f}) |" if match
                          else " |") if matched else ""
            lines.append(f"| {name} | {variant} | {len(final)} | {last:g} | " + " | ".join(cells)
                         + f" | {minutes:.1f} |" + match_cell)
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", nargs="+", default=["glyphs", "orbits"], choices=STYLES)
    p.add_argument("--variant", action="append", default=None, metavar="NAME=RECIPE[:key=value,...]")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--kimg", type=float, default=40.0)
    p.add_argument("--every", type=float, default=5.0, help="kimg between scored checkpoints [5]")
    p.add_argument("--work", type=Path, default=Path("bench-quality"), help="corpora and runs [bench-quality]")
    p.add_argument("--out", type=Path, default=None, help="CSV and PNG [WORK]")
    args = p.parse_args()
    variants = [parse_variant(v) for v in args.variant] if args.variant else [
        ("vgan", DEMO, list(VGAN)), ("demo", DEMO, [])]
    out = args.out or args.work
    csv_path = out / "quality.csv"
    rows = read_rows(csv_path)
    real = {}
    torch.set_num_threads(torch.get_num_threads())
    for style in args.corpora:
        data = corpus(args.work, style)
        meter = meter_for(data)
        real[style] = meter.real
        # rows scored by another meter (another protocol or probe) are scored again by this one
        rows = [r for r in rows if r["corpus"] != style or r.get("meter") == meter.key[:16]]
        print(f"{style}: probe accuracy {meter.accuracy:.3f} on {meter.held_out} held-out clips; real clips "
              + ", ".join(f"{k} {v:.2f}" for k, v in meter.real.items() if k != "clips"), file=sys.stderr)
        for seed in args.seeds:
            for name, recipe, overrides in variants:
                started = time.perf_counter()
                run = run_variant(args.work, data, style, name, recipe, overrides, seed, args.kimg, args.every)
                key = {"corpus": style, "variant": name, "seed": seed, "meter": meter.key[:16]}
                new = score_run(run, meter, rows, key)
                if new:
                    rows += new
                    fields = list(dict.fromkeys(f for r in rows for f in r))
                    text = ",".join(fields) + "\n" + "".join(
                        ",".join(str(r.get(f, "")) for f in fields) + "\n" for r in rows)
                    out.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(csv_path, text)
                print(f"{run.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    plot(rows, real, out / "quality.png")
    print(table(rows, real))
    return 0


if __name__ == "__main__":
    sys.exit(main())
