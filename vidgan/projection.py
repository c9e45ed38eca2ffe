"""Projection onto a trained generator: the latent z whose G(z) best explains a target image or clip.
`vidgan inpaint` explains the known pixels around holes; `vidgan transfer` explains whole clips.

Per target the search minimises

    L(z) = Σ W ⊙ |G(z) − y|      +  λ · log(1 − D(G(z)))
           weighted L1 fit        prior loss: −softplus(logit) on D's logit, finite for any logit

(the prior of Yeh et al. 2017's semantic inpainting). Adam moves z from several random starts at once
(one batch; G and D in eval mode, so starts do not interact), clamps it to ±Z_MAX after each step (the
training prior is N(0, I)), and keeps, per target, the z of lowest loss met on the way. A
class-conditional G gets the same starts in every class, so the class is searched too.

Layouts: images `[N, C, H, W]`, clips `[N, C, T, H, W]`, float in [-1, 1]; weights the same shape;
latents `[N, z_dim]`.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data_tools.argtypes import non_negative_float, non_negative_int, positive_int
from vidgan.sample import num_classes

STEPS = 500  # Adam steps on z per start
RESTARTS = 4  # random starts per target; the best one is kept
LAM = 0.003  # λ, weight of the prior loss against the fit (Yeh et al. 2017: 0.003)
LR = 0.03  # Adam learning rate on z (units of the N(0, 1) prior's standard deviation)
BETAS = (0.9, 0.999)  # Adam betas for the z search
Z_MAX = 3.0  # z is clamped to [-Z_MAX, Z_MAX] after every step: ±3σ of the training prior N(0, I)


class Projection(NamedTuple):
    """The best latent found per target and what G makes of it."""

    z: torch.Tensor  # [N, z_dim]
    labels: torch.Tensor | None  # [N] class of each latent (a class-conditional G), else None
    generated: torch.Tensor  # [N, C, (T,) H, W] = G(z, labels), float32
    loss: torch.Tensor  # [N] its loss


def check_search(steps: int, restarts: int, lam: float, lr: float, D) -> None:
    """ValueError for search settings that cannot work, before any work."""
    if steps < 0 or restarts < 1 or lam < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0, restarts >= 1, lam >= 0, lr > 0; got {steps}, {restarts}, {lam}, {lr}")
    if D is None and lam > 0:
        raise ValueError("the prior loss (lam > 0) needs the discriminator D")
    if lam > 0 and getattr(D, "pack", 1) > 1:
        raise ValueError(f"the prior loss (lam > 0) needs a discriminator of single clips; this one judges "
                         f"groups of {D.pack} (model.d_pack): use lam 0 (--lam 0)")


def project(G, D, target: torch.Tensor, weights: torch.Tensor, steps: int = STEPS, restarts: int = RESTARTS,
            lam: float = LAM, seed: int = 0, *, lr: float = LR, progress: bool = False,
            desc: str = "search") -> Projection:
    """Search the latent of each target (see the module docstring).

    target: `[N, C, (T,) H, W]` float in [-1, 1], G's output shape; weights: the same shape, each
    pixel's weight in the fit. The starts are drawn from `torch.Generator().manual_seed(seed)` (the
    global RNG is not touched); D may be None when `lam` is 0. Everything is returned on G's device; G
    and D are used in eval mode and left as they were.
    """
    check_search(steps, restarts, lam, lr, D)
    device = next(G.parameters()).device
    z_dim = G.z_dim
    n = target.shape[0]
    y = target.detach().to(device, torch.float32)
    w = weights.detach().to(device, torch.float32).expand(y.shape)
    with frozen(G, D):  # eval mode, no weight gradients; restored afterwards
        with torch.no_grad():
            made = G(torch.zeros(1, z_dim, device=device)).shape[1:]
        if tuple(made) != tuple(y.shape[1:]):
            raise ValueError(f"the target is {list(y.shape)}, but G makes [N, {', '.join(map(str, made))}]")

        classes = num_classes(G)
        starts = restarts * (classes or 1)  # R below: every class gets `restarts` starts
        repeat = (starts, *[1] * (y.ndim - 1))
        w, y = w.repeat(repeat), y.repeat(repeat)  # [R·N, ...]: start r of target i at row r·N + i
        # the class of start r (conditional G): r mod classes
        labels = (torch.arange(starts * n, device=device) // n) % classes if classes else None  # [R·N]
        given = (labels,) if classes else ()
        noise = torch.Generator().manual_seed(seed)
        z = torch.randn(starts * n, z_dim, generator=noise).clamp_(-Z_MAX, Z_MAX).to(device)  # [R·N, z]
        z.requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr, betas=BETAS)
        best_loss = torch.full((starts * n,), float("inf"), device=device)
        best_z = z.detach().clone()

        def loss_of(z: torch.Tensor) -> torch.Tensor:
            x = G(z, *given)  # [R·N, C, (T,) H, W]
            loss = (w * (x - y).abs()).flatten(1).sum(1)  # the fit, [R·N]
            if lam > 0:
                loss = loss - lam * F.softplus(D(x, *given).float())  # + λ·log(1 − σ(logit))
            return loss

        bar = tqdm(total=steps, unit="step", desc=desc, dynamic_ncols=True, disable=not progress)
        for step in range(steps + 1):
            loss = loss_of(z)
            with torch.no_grad():  # keep the best z met so far: loss is that of z before this step
                better = loss < best_loss
                best_loss = torch.where(better, loss, best_loss)
                best_z[better] = z[better]
            if step == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()  # starts and targets are independent: one sum, per-row gradients
            optimizer.step()
            with torch.no_grad():
                z.clamp_(-Z_MAX, Z_MAX)
            bar.update(1)
        bar.close()

        pick = best_loss.view(starts, n).argmin(0)  # [N]: the best start of each target
        rows = torch.arange(n, device=device)
        z_best = best_z.view(starts, n, z_dim)[pick, rows]  # [N, z]
        chosen = labels.view(starts, n)[pick, rows] if classes else None  # [N]: its class
        with torch.no_grad():
            generated = (G(z_best) if chosen is None else G(z_best, chosen)).float()  # [N, C, (T,) H, W]
    return Projection(z_best.detach(), chosen, generated, best_loss.view(starts, n)[pick, rows])


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """The search's options for a command that projects its inputs (`vidgan inpaint`, `vidgan transfer`):
    --steps, --restarts, --lam, --seed, --device, --quiet."""
    p.add_argument("--steps", type=non_negative_int, default=STEPS, help=f"Adam steps on z per start [{STEPS}]")
    p.add_argument("--restarts", type=positive_int, default=RESTARTS,
                   help=f"random starts per input; the best is kept [{RESTARTS}]")
    p.add_argument("--lam", type=non_negative_float, default=LAM,
                   help=f"weight of the discriminator's prior loss in the search [{LAM}]")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting latents [0]")
    p.add_argument("--device", default=None, help="torch device [cuda if available, else cpu]")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module | None) -> Iterator[None]:
    """The modules in eval mode without weight gradients for the block, then as they were."""
    kept = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules if m is not None]
    try:
        for module, _, _ in kept:
            module.eval().requires_grad_(False)
        yield
    finally:
        for module, training, grads in kept:
            module.train(training)
            for p, g in zip(module.parameters(), grads):
                p.requires_grad_(g)
