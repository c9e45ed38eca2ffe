"""G's exponential moving average, and BatchNorm statistics that belong to its weights.

The EMA generator's weights trail G's; BatchNorm's running statistics copied from G describe G's
activations, not the average's, and early in a run (weights moving fast) an eval-mode EMA clip made
with them drifts from anything G makes. `recompute_batchnorm` re-estimates them from the EMA
generator's own outputs, as SWA's `update_bn` does for averaged weights (Izmailov et al. 2018).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BATCHNORM_BATCHES = 8  # batches of noise that re-estimate the statistics
BATCHNORM_BATCH = 64  # clips per batch
BATCHNORM_SEED = 0x5EED  # their noise: the same every time, and the global RNG left alone


def ema_beta(global_batch: int, ema_kimg: float) -> float:
    """The per-step decay for a half-life of `ema_kimg` thousand clips; 0 (EMA = G) when `ema_kimg` is 0."""
    return 0.5 ** (global_batch / (ema_kimg * 1000)) if ema_kimg > 0 else 0.0


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float, copy_buffers: bool = True) -> None:
    """ema = β·ema + (1 − β)·model, parameter by parameter; buffers (BatchNorm's statistics) copied
    unless `copy_buffers` is False (they are then recomputed with `recompute_batchnorm`)."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    if copy_buffers:
        for b_ema, b in zip(ema.buffers(), model.buffers()):
            b_ema.copy_(b)


@torch.no_grad()
def recompute_batchnorm(generator: nn.Module, z_dim: int, device: torch.device | str,
                        batches: int = BATCHNORM_BATCHES, batch: int = BATCHNORM_BATCH) -> None:
    """Set every BatchNorm's running statistics of `generator` to their average over `batches`
    batches of its own activations from fixed noise `[batch, z_dim]`; the generator is left in eval
    mode. A generator without BatchNorm is left as it is."""
    norms = [m for m in generator.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    noise = torch.Generator().manual_seed(BATCHNORM_SEED)
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch, z_dim, generator=noise).to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()
