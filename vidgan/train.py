"""Train a GAN on prepared clips under Hugging Face Accelerate.

    accelerate launch vidgan/train.py RECIPE [key=value ...] [--resume latest|PATH]
    python vidgan/train.py RECIPE ...          (one process)
    vidgan train RECIPE ...                    (the same)

One `Accelerator` runs the loop on one CPU, one GPU, many GPUs or many machines; mixed precision
comes from the Accelerate config. Progress is counted in clips shown to D (kimg), whatever the number
of processes. The run folder (`run.dir`) gets the resolved recipe, `run.json`, logs (CSV and
TensorBoard), samples from the EMA generator, and checkpoints that `--resume latest` continues from.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from data_tools.atomic import atomic_write_json, atomic_write_text
from data_tools.dataset import ClipDataset
from vidgan import losses
from vidgan.augment import DiffAugment
from vidgan.checkpoint import build_models, find_checkpoint, save_checkpoint
from vidgan.ema import ema_beta, recompute_batchnorm, update_ema
from vidgan.export import clip_grid, to_uint8_frames, write_sample_grid
from vidgan.logs import MetricsCSV, log_video
from vidgan.models import channels_last, unwrap
from vidgan.provenance import versions
from vidgan.recipe import Recipe, RecipeError, dump_recipe, load_recipe


class TrainingError(RuntimeError):
    """The run cannot go on (bad data folder, non-finite loss); the message says why."""


class Progress:
    """Counters saved with every checkpoint: where the run is, in clips and in the data order."""

    def __init__(self) -> None:
        self.clips = 0  # real clips shown to D, summed over processes
        self.step = 0  # optimisation steps (one D and one G update each)
        self.epoch = 0  # passes over the data started
        self.batch_in_epoch = 0  # batches of the current epoch already used (per process)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


def open_dataset(recipe: Recipe):
    """The prepared clips, checked against the recipe's clip shape."""
    root = Path(recipe.data.root)
    try:
        dataset = ClipDataset(root)
    except (FileNotFoundError, ValueError) as e:
        raise TrainingError(f"data.root: {e}. Prepare it first: vidgan prepare VIDEOS --out {root}") from None
    frames, size = dataset.clip_shape[0], dataset.clip_shape[1]
    if recipe.data.frames != frames and recipe.model.kind == "video":
        raise TrainingError(f"data.frames={recipe.data.frames}, but {root} holds clips of {frames} frames: "
                            f"set data.frames={frames} or prepare again with --frames {recipe.data.frames}")
    if recipe.model.kind == "image" and recipe.data.frames > frames:
        raise TrainingError(f"data.frames={recipe.data.frames} > the {frames} frames of the clips in {root}")
    if recipe.data.size != size:
        raise TrainingError(f"data.size={recipe.data.size}, but {root} holds {size}×{size} frames: "
                            f"set data.size={size} or prepare again with --size {recipe.data.size}")
    return dataset


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters: equal on every rank of a healthy DDP run. (BatchNorm's
    running statistics are left out: each rank's last forward pass updates them from its own batch.)"""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def _crossed(before: int, after: int, every_kimg: float) -> bool:
    """Whether the clip count passed a multiple of `every_kimg` thousand clips."""
    every = max(1, round(every_kimg * 1000))
    return after // every > before // every


def real_clips(batch_video: torch.Tensor, video: bool, memory_format: bool) -> torch.Tensor:
    """uint8 `[B, T, S, S, 3]` on the device → float `[B, 3, T, S, S]` in [-1, 1], or for the image
    model one random frame of each clip, `[B, 3, S, S]`."""
    x = batch_video.permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)  # [B, 3, T, S, S]
    if not video:
        pick = torch.randint(x.shape[2], (x.shape[0],), device=x.device)
        x = x[torch.arange(x.shape[0], device=x.device), :, pick]  # [B, 3, S, S]
    return channels_last(x) if memory_format else x


def write_training_samples(accelerator: Accelerator, ema: torch.nn.Module, fixed_z: torch.Tensor, recipe: Recipe,
                  clips_seen: int) -> None:
    """The EMA generator's clips for the fixed noise (a class-conditional one's clip i of class i mod
    classes): an MP4 grid and a PNG of film strips in RUN/samples, and the first 16 as an animated image
    in TensorBoard. Main process only."""
    if not accelerator.is_main_process:
        return
    device = accelerator.device
    labels = ema.labels(len(fixed_z), device).split(16) if getattr(ema, "num_classes", 0) else None
    with torch.no_grad():
        clips = torch.cat([ema(z.to(device), *([labels[i]] if labels else []))
                           for i, z in enumerate(fixed_z.split(16))])  # [N, 3, T, S, S]
    write_sample_grid(Path(recipe.run.dir) / "samples", f"clips-{clips_seen:012d}", clips.float(),
                      recipe.sample.fps)
    if recipe.log.tensorboard and recipe.model.kind == "video":
        frames = to_uint8_frames(clips[:16].float())  # [N, T, S, S, 3]
        log_video(accelerator.get_tracker("tensorboard", unwrap=True), "samples", clip_grid(frames),
                  recipe.sample.fps, clips_seen)


def write_run_description(accelerator: Accelerator, recipe: Recipe, clips_in_dataset: int) -> None:
    """RUN/recipe.yaml (the resolved recipe, versions and command above it) and RUN/run.json (the
    processes, device and precision). Main process only."""
    if not accelerator.is_main_process:
        return
    run_dir = Path(recipe.run.dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", dump_recipe(recipe, {**versions(), "command": " ".join(sys.argv)}))
    atomic_write_json(run_dir / "run.json", {
        "world_size": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision, "device": str(accelerator.device),
        "clips_in_dataset": clips_in_dataset, "global_batch": recipe.train.batch_size * accelerator.num_processes,
        **versions()})


def check_finite(accelerator: Accelerator, non_finite: torch.Tensor, clips_seen: int) -> None:
    """Stop the run, on every rank, once any rank has met a non-finite loss."""
    if accelerator.reduce(non_finite.clone(), reduction="sum").item():
        raise TrainingError(f"non-finite loss (NaN or Inf) by {clips_seen / 1000:.3f} kimg: stopping. "
                            "The last good checkpoint is kept; lower the learning rates, or try "
                            "loss.r1_gamma > 0 or model.spectral_norm=true")


def train(recipe: Recipe, resume: str | None = None, progress_bar: bool = True) -> Path:
    """Run (or continue) the training the recipe describes; returns the run folder."""
    # --- Initialise: processes, data, and where the run starts -------------------------------------
    run_dir = Path(recipe.run.dir)
    accelerator = Accelerator(
        log_with="tensorboard" if recipe.log.tensorboard else None,
        project_dir=str(run_dir / "logs"),
        # the data order of epoch e is a function of (seed, e) alone: a resumed run can skip into it
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    device, world = accelerator.device, accelerator.num_processes
    dataset = open_dataset(recipe)
    batch = recipe.train.batch_size  # per process
    global_batch = batch * world
    if len(dataset) < global_batch:
        raise TrainingError(f"train.batch_size: {len(dataset)} clips in {recipe.data.root} are fewer than "
                            f"one step needs ({batch} × {world} processes)")
    checkpoint = None
    if resume is None and find_checkpoint(run_dir, "latest") is not None:
        raise TrainingError(f"run.dir: {run_dir} already holds checkpoints of a run; continue it with "
                            "--resume latest, or choose another run.dir")
    if resume is not None:
        checkpoint = find_checkpoint(run_dir, resume)
        if checkpoint is None and accelerator.is_main_process:
            print(f"--resume {resume}: no checkpoint in {run_dir} yet, starting from the beginning")

    # --- Construct networks, optimizers and the loader; distribute them ------------------------------
    set_seed(recipe.seed)  # the same initial weights on every rank
    G, D = build_models(recipe, len(dataset.classes))
    if recipe.train.compile:
        G, D = torch.compile(G), torch.compile(D)
    ema = copy.deepcopy(unwrap(G)).eval().requires_grad_(False)  # [N, z] → clips, for samples
    betas = (recipe.optim.beta1, recipe.optim.beta2)
    opt_g = torch.optim.Adam(G.parameters(), lr=recipe.optim.lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe.optim.lr_d, betas=betas)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, collate_fn=dataset.collate,
                        num_workers=recipe.data.num_workers, persistent_workers=recipe.data.num_workers > 0,
                        generator=torch.Generator().manual_seed(recipe.seed))
    G, D, opt_g, opt_d, loader = accelerator.prepare(G, D, opt_g, opt_d, loader)
    ema.to(device)

    # --- Resume: every rank's models, optimizers, RNG states, EMA and counters ------------------------
    progress = Progress()
    accelerator.register_for_checkpointing(ema, progress)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        if accelerator.is_main_process:
            print(f"resumed from {checkpoint} at {progress.clips / 1000:.3f} kimg")
    else:
        # Noise and augmentation differ between ranks; a resumed run instead gets back every rank's
        # random state from the checkpoint, and goes on exactly as if it had never stopped.
        set_seed(recipe.seed + accelerator.process_index)

    # --- Initialise logs, augmentation, EMA rate and the fixed noise of the samples ------------------
    write_run_description(accelerator, recipe, len(dataset))
    resumed_at = progress.clips if checkpoint is not None else None
    csv_log = MetricsCSV(run_dir / "logs" / "metrics.csv", resumed_at) if (
        recipe.log.csv and accelerator.is_main_process) else None
    if recipe.log.tensorboard:
        flat = {f"{section}.{k}": v for section, values in recipe.to_dict().items()
                for k, v in (values.items() if isinstance(values, dict) else [("", values)])}
        accelerator.init_trackers("tensorboard", config={k.rstrip("."): v for k, v in flat.items()},
                                  init_kwargs={"tensorboard": {"purge_step": progress.clips}})
    video = recipe.model.kind == "video"
    z_dim = recipe.model.z_dim
    conditional, num_classes = recipe.model.conditional, len(dataset.classes)

    def given(labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """The label argument of G and D: the labels for a class-conditional recipe, nothing otherwise."""
        return (labels,) if conditional else ()

    def random_labels(n: int) -> torch.Tensor | None:
        """Classes of n generated clips, uniform; None unless the recipe is conditional."""
        return torch.randint(num_classes, (n,), device=device) if conditional else None

    class_weight, mode_seeking = recipe.loss.class_weight, recipe.loss.mode_seeking

    def judged(x: torch.Tensor, labels: torch.Tensor | None,
               weight: float) -> tuple[torch.Tensor, torch.Tensor | float]:
        """D's logits of a batch and, with loss.class_weight, its auxiliary class loss against `labels`
        times `weight` (0 without). A weight of 0 still runs the class head: DDP expects a gradient
        for every parameter after each synchronised backward."""
        if class_weight > 0:
            logits, class_logits = D(x, labels, classify=True)
            return logits, weight * losses.class_loss(class_logits, labels)
        return D(x, *given(labels)), 0.0

    augment = DiffAugment(recipe.loss.augment_policy, p=recipe.loss.augment_p)
    noise_sigma = recipe.loss.instance_noise

    def d_view(x: torch.Tensor) -> torch.Tensor:
        """What D sees of a batch: augmented, and with instance noise when asked."""
        x = augment(x)
        return x + noise_sigma * torch.randn_like(x) if noise_sigma > 0 else x

    ema_copies_batchnorm = recipe.train.ema_batchnorm == "copy"
    kind, gamma, r1_every = recipe.loss.kind, recipe.loss.r1_gamma, recipe.loss.r1_every
    d_steps, g_steps = recipe.train.d_steps, recipe.train.g_steps
    # one EMA update per G update: d_steps / g_steps batches of real clips apart
    beta = ema_beta(global_batch * d_steps / g_steps, recipe.train.ema_kimg)
    fixed_z = torch.randn(recipe.sample.count, z_dim, generator=torch.Generator().manual_seed(recipe.sample.seed))
    total = round(recipe.train.kimg * 1000)
    sums = torch.zeros(5, device=device)  # loss_d, loss_g, D(x), D(G(z)), non-finite count
    loss_g = torch.zeros((), device=device)  # the latest G loss, logged on steps where only D updates
    steps_in_log, log_started, run_started = 0, time.perf_counter(), time.perf_counter()
    bar = tqdm(total=total, initial=min(progress.clips, total), unit="clip", unit_scale=True,
               disable=not (progress_bar and accelerator.is_local_main_process), dynamic_ncols=True)

    # --- Train ----------------------------------------------------------------------------------------
    while progress.clips < total:
        loader.set_epoch(progress.epoch)
        batches = accelerator.skip_first_batches(loader, progress.batch_in_epoch) if progress.batch_in_epoch \
            else loader
        for batch_data in batches:
            reals = real_clips(batch_data["video"], video, recipe.model.channels_last)  # [B, 3, T, S, S]
            n = reals.shape[0]

            # (1) Update D: minimise −[log D(x) + log(1 − D(G(z)))], a backward after each D pass
            labels_real = batch_data["label"].to(device) if conditional else None  # [B]
            labels_fake = random_labels(n)  # [B]
            with torch.no_grad():
                fakes = G(torch.randn(n, z_dim, device=device), *given(labels_fake))
            do_r1 = gamma > 0 and progress.step % r1_every == 0
            if do_r1:
                reals.requires_grad_(True)
            with accelerator.no_sync(D):  # the first backward only accumulates
                logits_real, class_term = judged(d_view(reals), labels_real, class_weight)
                loss_real = losses.d_loss_real(logits_real, kind) + class_term
                if do_r1:  # lazy R1: every r1_every steps, scaled up by it
                    loss_real = loss_real + losses.r1_penalty(logits_real, reals) * (gamma / 2 * r1_every)
                accelerator.backward(loss_real)
            # D's class head learns from real clips alone: taught G's clips too, it would learn to read
            # whatever G marks its classes with, and G could then draw every class alike
            logits_fake, class_term = judged(d_view(fakes), labels_fake, 0.0)
            loss_fake = losses.d_loss_fake(logits_fake, kind) + class_term
            accelerator.backward(loss_fake)  # gradients of both passes all-reduced once
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

            # (2) Update G, after every train.d_steps D updates, train.g_steps times: minimise −log D(G(z));
            # D frozen and out of DDP's gradient sync
            if (progress.step + 1) % d_steps == 0:
                D.requires_grad_(False)
                for _ in range(g_steps):
                    z, y = torch.randn(n, z_dim, device=device), random_labels(n)
                    fakes, mask = G(z, *given(y), return_mask=True) if video else (G(z), None)
                    with accelerator.no_sync(D):
                        logits, class_term = judged(d_view(fakes), y, class_weight)
                        loss_g = losses.g_loss(logits, kind) + class_term
                        if mode_seeking > 0:
                            loss_g = loss_g + mode_seeking * losses.mode_seeking(fakes, z)
                        if mask is not None:
                            loss_g = loss_g + recipe.loss.mask_l1 * losses.mask_l1(mask)
                        accelerator.backward(loss_g)
                    opt_g.step()
                    opt_g.zero_grad(set_to_none=True)

                    # (3) Update the EMA of G, half-life ema_kimg: ema = β·ema + (1 − β)·G
                    update_ema(ema, unwrap(G), beta, copy_buffers=ema_copies_batchnorm)
                D.requires_grad_(True)

            # (4) Count the step; sum the scalars of the log
            with torch.no_grad():
                step_losses = torch.stack([(loss_real + loss_fake).detach().float(), loss_g.detach().float()])
                sums[:2] += step_losses
                sums[2] += torch.sigmoid(logits_real.detach().float()).mean()
                sums[3] += torch.sigmoid(logits_fake.detach().float()).mean()
                sums[4] += (~torch.isfinite(step_losses)).sum()
            steps_in_log += 1
            before = progress.clips
            progress.clips += global_batch
            progress.step += 1
            progress.batch_in_epoch += 1
            bar.update(min(progress.clips, total) - min(before, total))
            done = progress.clips >= total

            # (5) Log, every log.every_kimg
            if done or _crossed(before, progress.clips, recipe.log.every_kimg):
                check_finite(accelerator, sums[4:5], progress.clips)
                means = (accelerator.reduce(sums[:4].clone(), reduction="mean") / steps_in_log).tolist()
                now = time.perf_counter()
                scalars = {"loss_d": means[0], "loss_g": means[1], "d_real": means[2], "d_fake": means[3],
                           "clips_per_s": steps_in_log * global_batch / (now - log_started),
                           "kimg": progress.clips / 1000}
                accelerator.log(scalars, step=progress.clips)
                if csv_log is not None:
                    csv_log.append({**scalars, "clips": progress.clips, "step": progress.step,
                                    "seconds": round(now - run_started, 3)})
                bar.set_postfix_str(f"kimg {scalars['kimg']:.2f} D {means[0]:.3f} G {means[1]:.3f}")
                sums.zero_()
                steps_in_log, log_started = 0, now

            # (6) Samples from the fixed noise, every sample.every_kimg; the EMA generator's BatchNorm
            # statistics recomputed for its weights first, when the recipe asks
            sampling = done or _crossed(before, progress.clips, recipe.sample.every_kimg)
            saving = done or _crossed(before, progress.clips, recipe.train.checkpoint_kimg)
            if (sampling or saving) and not ema_copies_batchnorm:
                recompute_batchnorm(ema, z_dim, device)
            if sampling:
                check_finite(accelerator, sums[4:5], progress.clips)
                write_training_samples(accelerator, ema, fixed_z, recipe, progress.clips)

            # (7) Checkpoint, every train.checkpoint_kimg; never after a non-finite loss
            if saving:
                check_finite(accelerator, sums[4:5], progress.clips)
                save_checkpoint(accelerator, run_dir, progress.clips, recipe.train.keep_checkpoints, recipe,
                                ema, unwrap(G), dataset.classes)
            if done:
                break
        else:
            progress.epoch += 1
            progress.batch_in_epoch = 0
    bar.close()

    # --- Done: each rank's weight fingerprints (equal on every rank of a healthy DDP run) -------------
    ranks = run_dir / "ranks"
    if accelerator.is_main_process:
        ranks.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    atomic_write_json(ranks / f"rank-{accelerator.process_index}.json", {
        "rank": accelerator.process_index, "clips": progress.clips, "step": progress.step,
        "G": weights_fingerprint(unwrap(G)), "D": weights_fingerprint(unwrap(D))})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return run_dir


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of `vidgan train` on `p`."""
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("recipe", type=Path, help="recipe YAML, e.g. recipes/ucf64.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. train.kimg=100 run.dir=runs/try2")
    p.add_argument("--resume", metavar="latest|PATH",
                   help="continue from the newest checkpoint of run.dir, or from a checkpoint folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = configure(argparse.ArgumentParser(prog="vidgan train")).parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        train(recipe, resume=args.resume, progress_bar=not args.no_progress)
    except (RecipeError, TrainingError, FileNotFoundError) as e:
        print(f"vidgan train: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, RecipeError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
