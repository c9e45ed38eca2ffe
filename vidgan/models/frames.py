"""A clip generator that draws each frame with a 2D DCGAN generator, from a content code held for the
whole clip and a motion code per frame: MoCoGAN's decomposition (Tulyakov et al. 2018) in the DCGAN
family. `FrameGenerator`.

Layout: clips `[N, C, T, H, W]` in [-1, 1]; latents `[N, z_dim]`, content first, motion last.

Why beside the 3D generator: its frames are drawn by one image generator that every frame trains, so
appearance is learned from T times the samples, the clip's object cannot change mid-clip unless the
motion code changes it, and no frame sits at the edge of a transposed convolution over time (the 3D
generator's first and last frames come out fainter until it learns to undo that).
"""

from __future__ import annotations

import torch
from torch import nn

from .common import FRAMES, ConfigModule, check_choice, check_positive_int, check_shape, motion_trajectory
from .dcgan import DCGANGenerator


class FrameGenerator(ConfigModule):
    """z `[N, z_dim]` → clip `[N, out_channels, frames, size, size]` in [-1, 1].

    z is split into a content part (the first `z_dim − motion_dim` values) and a motion part (the
    last `motion_dim`), which a GRU cell unrolls into one motion code per frame (`motion_trajectory`).
    Each frame is `DCGANGenerator(content ‖ motion code)`; BatchNorm statistics run over all frames of
    the batch. `forward(z, return_mask=True)` returns `(clip, None)`, as a one-stream
    `VideoGenerator` does, so a training loop treats every generator alike.
    """

    def __init__(
        self,
        z_dim: int = 100,
        channels: int = 64,
        size: int = 64,
        frames: int = 16,
        motion_dim: int = 20,
        *,
        out_channels: int = 3,
        out_bias: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "z_dim", z_dim)
        check_choice(owner, "frames", frames, FRAMES)
        check_positive_int(owner, "motion_dim", motion_dim)
        if motion_dim >= z_dim:
            raise ValueError(f"{owner}: motion_dim must be smaller than z_dim ({z_dim}), leaving room for "
                             f"content; got {motion_dim}")
        self.config = dict(z_dim=z_dim, channels=channels, size=size, frames=frames, motion_dim=motion_dim,
                           out_channels=out_channels, out_bias=out_bias)
        self.z_dim = z_dim  # latent length: content, then motion
        self.size = size  # output side in pixels
        self.frames = frames  # output clip length
        self.out_channels = out_channels  # 3 for RGB
        self.motion_dim = motion_dim  # length of the motion part of z and of each frame's motion code
        self.content_dim = z_dim - motion_dim
        self.motion = nn.GRUCell(motion_dim, motion_dim)
        # the image generator carries the DCGAN initialisation; the GRU keeps PyTorch's own
        self.image = DCGANGenerator(self.content_dim + motion_dim, channels, size, out_channels, out_bias=out_bias)

    def forward(self, z: torch.Tensor, return_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, None]:
        check_shape(type(self).__name__, "z", z, (None, self.z_dim), "[N, z_dim]")
        n, t = z.shape[0], self.frames
        content, z_motion = z.split([self.content_dim, self.motion_dim], dim=1)
        codes = motion_trajectory(self.motion, z_motion, self.frames)  # [N, T, motion_dim]
        per_frame = torch.cat([content[:, None].expand(n, t, self.content_dim), codes], dim=2)  # [N, T, z']
        images = self.image(per_frame.flatten(0, 1))  # [N·T, C, H, W]
        clip = images.view(n, t, *images.shape[1:]).transpose(1, 2)  # [N, C, T, H, W]
        return (clip, None) if return_mask else clip
