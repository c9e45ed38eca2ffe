"""GAN objectives on discriminator logits, and the regularisers that go with them.

Every loss takes raw logits and returns a scalar averaged over the batch: `[N]`, one logit per sample,
or `[N, 1 + K]` from a video discriminator with a frame discriminator beside it (the clip's logit, then
those of K of its frames), where the clip part and the frame part are each averaged and then added,
so that appearance and motion weigh alike whatever K is.
The sigmoid lives here, in softplus form, where it is numerically stable: −log σ(x) = softplus(−x)
and −log(1 − σ(x)) = softplus(x), finite for any logit.

The D loss is split into its real and fake halves as well (`d_loss_real`, `d_loss_fake`), so a
training loop can call backward after each D pass, the pattern that keeps a BatchNorm D safe under
DDP; `d_loss` is their sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_KINDS = ("nonsaturating", "hinge")  # names accepted by `kind`


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"loss kind must be one of {', '.join(LOSS_KINDS)}; got {kind!r}")


def _mean(per_logit: torch.Tensor) -> torch.Tensor:
    """Mean of `[N]` per-logit losses, or of the clip part plus of the frame part of `[N, 1 + K]`."""
    if per_logit.ndim == 2 and per_logit.shape[1] > 1:
        return per_logit[:, 0].mean() + per_logit[:, 1:].mean()
    return per_logit.mean()


def d_loss_real(real_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on real samples: −log D(x) (non-saturating) or mean(relu(1 − D(x))) (hinge)."""
    _check_kind(kind)
    if kind == "hinge":
        return _mean(F.relu(1 - real_logits))
    return _mean(F.softplus(-real_logits))  # −log σ(x)


def d_loss_fake(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss on generated samples: −log(1 − D(G(z))) or mean(relu(1 + D(G(z))))."""
    _check_kind(kind)
    if kind == "hinge":
        return _mean(F.relu(1 + fake_logits))
    return _mean(F.softplus(fake_logits))  # −log(1 − σ(x))


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss, minimised by D. Non-saturating (Goodfellow et al. 2014, the DCGAN / VGAN seed):
    −[log D(x) + log(1 − D(G(z)))], each half averaged over its batch. Hinge (Lim & Ye 2017):
    mean(relu(1 − D(x))) + mean(relu(1 + D(G(z))))."""
    return d_loss_real(real_logits, kind) + d_loss_fake(fake_logits, kind)


def g_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """G's loss, minimised by G: −log D(G(z)) (non-saturating: strong gradients while D wins),
    or −mean(D(G(z))) (hinge)."""
    _check_kind(kind)
    if kind == "hinge":
        return _mean(-fake_logits)
    return _mean(F.softplus(-fake_logits))  # −log σ(x)


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the squared norm of ∇ₓ D(x) on real samples, averaged over the batch.

    `reals` must have `requires_grad=True` before they go through D. The gradient is taken with
    `torch.autograd.grad(create_graph=True)`, out of place: no `.backward()` here and no `.grad` left on
    `reals`, which is what keeps it safe under DDP. Multiply by γ/2 (the usual weighting) in the loop.
    """
    if not reals.requires_grad:
        raise ValueError("r1_penalty: reals must have requires_grad=True before the D forward pass")
    (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)  # same shape as reals
    return grad.square().reshape(grad.shape[0], -1).sum(1).mean()


def mask_l1(mask: torch.Tensor) -> torch.Tensor:
    """The two-stream mask's L1 term, mean |m| over every element (VGAN's sparsity prior: prefer the
    static background unless motion needs the foreground). Weight it (VGAN: 0.1) in the loop."""
    return mask.abs().mean()


def class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The auxiliary classifier's cross-entropy (AC-GAN, Odena et al. 2017): D's class head learns the
    labels of real clips with it, and G minimises it on its own clips for the classes it asked for.
    Weight it (`loss.class_weight`) in the loop."""
    return F.cross_entropy(class_logits.float(), labels)


def mode_seeking(fakes: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The mode-seeking term of MSGAN (Mao et al. 2019): 1 / (ratio + 1e-5), where the ratio is how far
    apart the clips of the batch's two halves are (mean |G(z₁) − G(z₂)|) over how far apart their
    latents are (mean |z₁ − z₂|). G minimising it spreads different latents over different clips,
    against mode collapse. `fakes` `[N, ...]` = G(z), z `[N, z_dim]`, N ≥ 2. Weight it in the loop."""
    half = fakes.shape[0] // 2
    if half == 0:
        raise ValueError("mode_seeking: needs a batch of at least 2")
    apart = (fakes[:half] - fakes[half:2 * half]).abs().float().mean()
    latent_apart = (z[:half] - z[half:2 * half]).abs().float().mean()
    return 1.0 / (apart / latent_apart + 1e-5)
