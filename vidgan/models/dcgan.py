"""The image DCGAN of Radford et al. (2015), the seed model: `DCGANGenerator`, `DCGANDiscriminator`.

At size 64 it is layer for layer the pytorch/examples DCGAN (G 3,576,704 and D 2,765,568 parameters
at z 100, channels 64). Sizes 32 and 128 remove or add one ×2 block; the width at each resolution
relative to the output stays the same, so the widest layer (at 4×4) has `channels · size / 8` maps:
4·ch at 32², 8·ch at 64², 16·ch at 128².

Layout: images `[N, C, H, W]` in [-1, 1]; latents `[N, z_dim]`.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import (
    SIZES,
    ConfigModule,
    add_spectral_norm,
    check_choice,
    check_positive_int,
    check_shape,
    dcgan_init_,
    num_doublings,
)


class DCGANGenerator(ConfigModule):
    """z `[N, z_dim]` → image `[N, out_channels, size, size]` in [-1, 1] (tanh).

    A 4×4 transposed conv from z, then kernel 4 / stride 2 / padding 1 transposed convs that double
    the side and halve the width, BatchNorm + ReLU between, tanh out. No conv has a bias (each is
    followed by BatchNorm, or is the output layer, as in pytorch/examples); `out_bias=True` gives the
    output layer one, as `VideoGenerator`'s switch of that name does.
    """

    def __init__(self, z_dim: int = 100, channels: int = 64, size: int = 64, out_channels: int = 3,
                 out_bias: bool = False):
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "z_dim", z_dim)
        check_positive_int(owner, "channels", channels)
        check_choice(owner, "size", size, SIZES)
        check_positive_int(owner, "out_channels", out_channels)
        self.config = dict(z_dim=z_dim, channels=channels, size=size, out_channels=out_channels, out_bias=out_bias)
        self.z_dim = z_dim  # latent length
        self.size = size  # output side in pixels
        self.out_channels = out_channels  # 3 for RGB

        width = channels * size // 8  # feature maps at 4×4: 8·ch at 64²
        layers: list[nn.Module] = [
            # input is z, going into a transposed conv
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            # state size. [N, width, 4, 4]
        ]
        for _ in range(num_doublings(size) - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
            # state size. [N, width, 2·side, 2·side], ending at [N, ch, size/2, size/2]
        layers += [
            nn.ConvTranspose2d(width, out_channels, 4, 2, 1, bias=out_bias),
            nn.Tanh(),
            # state size. [N, out_channels, size, size]
        ]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_shape(type(self).__name__, "z", z, (None, self.z_dim), "[N, z_dim]")
        x = self.main(z[:, :, None, None])  # [N, z_dim, 1, 1] → [N, C, H, W]
        return x


class DCGANDiscriminator(ConfigModule):
    """Image `[N, in_channels, size, size]` → one logit per image, `[N]` (no sigmoid: the loss has it).

    Kernel 4 / stride 2 / padding 1 convs that halve the side and double the width, LeakyReLU 0.2,
    BatchNorm from the second conv on, then a 4×4 conv to one value. Canonically no conv has a bias.

    Stability switches, off by default so the default is the canonical DCGAN:
      spectral_norm: spectral normalisation on every conv weight.
      batchnorm: False drops BatchNorm (e.g. for R1 or WGAN-style training, where per-sample outputs
        must not depend on the batch); the convs that lose their BatchNorm gain a bias.
    """

    def __init__(
        self,
        channels: int = 64,
        size: int = 64,
        in_channels: int = 3,
        *,
        batchnorm: bool = True,
        spectral_norm: bool = False,
    ):
        super().__init__()
        owner = type(self).__name__
        check_positive_int(owner, "channels", channels)
        check_choice(owner, "size", size, SIZES)
        check_positive_int(owner, "in_channels", in_channels)
        self.config = dict(
            channels=channels, size=size, in_channels=in_channels, batchnorm=batchnorm, spectral_norm=spectral_norm
        )
        self.size = size  # input side in pixels
        self.in_channels = in_channels  # 3 for RGB

        width = channels  # feature maps after the first conv
        layers: list[nn.Module] = [
            # input is [N, in_channels, size, size]
            nn.Conv2d(in_channels, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. [N, ch, size/2, size/2]
        ]
        for _ in range(num_doublings(size) - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
            # state size. [N, width, side/2, side/2], ending at [N, ch·size/8, 4, 4]
        layers += [
            nn.Conv2d(width, 1, 4, 1, 0, bias=False),
            # state size. [N, 1, 1, 1]
        ]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init_)
        if spectral_norm:
            add_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, c = self.size, self.in_channels
        check_shape(type(self).__name__, "input", x, (None, c, s, s), "[N, C, H, W]")
        return self.main(x).reshape(x.shape[0])  # [N] logits
