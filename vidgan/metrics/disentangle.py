"""How well a content/motion generator keeps its two parts apart, measured with the quality meter.

Clips are drawn in groups. In a content-held group every clip shares the content part of z and has a
motion part of its own (`vidgan sample --fix content`); in a motion-held group, the reverse; in a free
group, nothing is shared. Per group the meter's probe gives each clip's class and the centre-of-mass
track of its object. Two figures per kind of group, each compared with free groups, where nothing ties
the clips together:

- `class_kept`: the fraction of a group's clips whose class is the group's most common class (1: all
  one class). Holding content should keep it near 1; holding motion should leave it as low as free
  groups'.
- `track_spread`: the mean distance between two clips' tracks in the group, in pixels at 32² (frames
  where both have an object). Holding motion should bring it near 0; holding content should leave it
  near free groups'.

Layouts: clips `[N, 3, T, H, W]` in [-1, 1]; latents `[N, z_dim]`; tracks `[N, T, 2]`.
"""

from __future__ import annotations

import torch

from vidgan.metrics.meter import Meter, read_clips
from vidgan.sample import class_labels, generate, hold, latent_parts

KINDS = ("free", "content", "motion")  # what a group's clips share: nothing, the content part, the motion part


def group_figures(reading: dict[str, torch.Tensor], groups: int, size: int) -> dict[str, float]:
    """`class_kept` and `track_spread` of the meter's readings of `groups × size` clips, group after
    group."""
    probs = reading["probs"].mean(dim=1)  # [G·M, K + 1], the last: no object
    top_class = probs.argmax(dim=1).view(groups, size)  # [G, M]
    no_object = probs.shape[1] - 1

    def kept_in(row: torch.Tensor) -> torch.Tensor:
        # the share of the group's most common object class; a clip of no object keeps nothing
        objects = row[row != no_object]
        return (row == objects.mode().values).double().mean() if len(objects) else torch.zeros((), dtype=torch.float64)

    kept = torch.stack([kept_in(row) for row in top_class]).mean()
    track = reading["track"].view(groups, size, *reading["track"].shape[1:])  # [G, M, T, 2]
    present = reading["present"].view(groups, size, -1)  # [G, M, T]
    i, j = torch.triu_indices(size, size, offset=1)
    both = present[:, i] & present[:, j]  # [G, pairs, T]
    distance = (track[:, i] - track[:, j]).norm(dim=-1)  # [G, pairs, T]
    spread = (distance * both).sum() / both.sum().clamp(min=1)
    return {"class_kept": kept.item(), "track_spread": spread.item()}


@torch.no_grad()
def disentanglement(meter: Meter, generator: torch.nn.Module, groups: int = 32, size: int = 8,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """`group_figures` of `groups` groups of `size` clips of each kind in KINDS (see the module
    docstring), from seeded noise; a class-conditional G draws each group from one class."""
    if latent_parts(generator) is None:
        raise ValueError("the generator's latent has no content and motion parts to hold apart")
    if size < 2:
        raise ValueError(f"groups need at least 2 clips; got {size}")
    generator.eval()
    noise = torch.Generator().manual_seed(seed)
    result = {}
    for kind in KINDS:
        z = torch.randn(groups, size, generator.z_dim, generator=noise)  # [G, M, z_dim]
        if kind != "free":
            z = torch.stack([hold(generator, group, kind) for group in z])
        labels = class_labels(generator, groups)  # one class per group
        labels = None if labels is None else labels.repeat_interleave(size)
        clips = torch.cat([c.cpu() for c in generate(generator, z.flatten(0, 1), 64, labels)])
        result[kind] = group_figures(read_clips(meter.probe, clips), groups, size)
    return result


def disentanglement_line(figures: dict[str, dict[str, float]]) -> str:
    """The figures as one line, each held kind against free groups."""
    free, content, motion = (figures[k] for k in KINDS)
    return (f"content held: class kept {content['class_kept']:.2f}, track spread {content['track_spread']:.1f} px; "
            f"motion held: class kept {motion['class_kept']:.2f}, track spread {motion['track_spread']:.1f} px; "
            f"free: class kept {free['class_kept']:.2f}, track spread {free['track_spread']:.1f} px")
