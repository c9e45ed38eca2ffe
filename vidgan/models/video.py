"""The DCGAN extended to space-time, as in VGAN (Vondrick et al. 2016): `VideoGenerator`,
`VideoDiscriminator`.

Layout: clips `[N, C, T, H, W]` in [-1, 1]; latents `[N, z_dim]`.

Time follows space: every kernel 4 / stride 2 / padding 1 block doubles (G) or halves (D) the time
axis together with the two spatial ones. A 4×4 map therefore carries `frames / 2**k` time steps,
where k = 3, 4, 5 doublings for size 32, 64, 128 (at 64² × 32 frames: 2). When frames < 2**k that
would be under one step, so the time axis starts at 1 and the first blocks of G (the last blocks of
D) keep it, with kernel (3, 4, 4) / stride (1, 2, 2) / padding (1, 1, 1), doubling space only.
Widths follow the image DCGAN: `channels · size / 8` at 4×4 (8·ch at 64²), halving per G block.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .common import (
    FRAMES,
    SIZES,
    ConditionalBatchNorm,
    ConfigModule,
    MinibatchStd,
    add_spectral_norm,
    check_choice,
    check_positive_int,
    check_shape,
    dcgan_init_,
    motion_trajectory,
    num_doublings,
)
from .dcgan import DCGANDiscriminator, DCGANGenerator

# kernel, stride, padding of a block that doubles / halves time and space, and of one that keeps time
_BLOCK = dict(kernel_size=4, stride=2, padding=1)
_KEEP_TIME = dict(kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1))


def _time_plan(size: int, frames: int, least: int = 1) -> tuple[int, int]:
    """(time steps at 4×4, number of blocks nearest 4×4 that keep time) for a size and clip length,
    with at least `least` steps at 4×4."""
    k = num_doublings(size)
    t_small = max(least, frames >> k)  # frames / 2**k, at least `least`
    keep = k - int(math.log2(frames // t_small))  # blocks that must leave time alone
    return t_small, keep


TIME_PADDINGS = ("zeros", "replicate")  # how G's transposed convs treat the frames before and after the clip


class ReplicateTimeConvTranspose3d(nn.ConvTranspose3d):
    """A ConvTranspose3d whose input clip is extended by one repeated step at each end of time, with
    the output cropped back to the plain layer's length.

    A plain transposed conv pads time with zeros, so the first and last output frames receive fewer
    kernel taps than the rest (one of two at kernel 4 / stride 2, two of three at kernel 3 / stride 1)
    and come out fainter; stacked over G's blocks, a clip fades in and out. Here every frame receives
    the same number of taps. The weights are the plain layer's: the same parameter names and shapes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, 0, 1, 1), mode="replicate")  # [N, C, T, H, W] → [N, C, T + 2, H, W]
        # the two extra steps add `stride` output frames at each end; crop them. (Cropping rather than
        # a time padding of padding + stride: oneDNN's weight gradient of ConvTranspose3d is wrong on
        # the CPU for a padding that large, torch 2.14, and training then stops on a non-finite loss.)
        crop = self.stride[0]
        return super().forward(x)[:, :, crop:-crop]


LATENTS = ("single", "content_motion")  # one z for the whole clip, or a content part and a motion trajectory
HEADS = ("transposed", "resize")  # how G's output layer doubles time and space


class ResizeConv3d(nn.Conv3d):
    """Nearest-neighbour ×2 upsampling in time and space, then a 3×3×3 conv (edges replicated): the
    resize-convolution of Odena et al. 2016, whose every output pixel sees the same kernel taps, where
    a kernel-4 / stride-2 transposed conv alternates two sets and leaves a pixel-level checkerboard."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__(in_channels, out_channels, 3, 1, 1, bias=bias, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=2, mode="nearest"))  # [N, C, 2T, 2H, 2W]


class VideoLayers(NamedTuple):
    """The parts of a two-stream clip: video = mask · foreground + (1 − mask) · background."""

    video: torch.Tensor  # [N, C, T, H, W] in [-1, 1]
    foreground: torch.Tensor  # [N, C, T, H, W] in [-1, 1]
    mask: torch.Tensor  # [N, 1, T, H, W] in (0, 1)
    background: torch.Tensor  # [N, C, H, W] in [-1, 1], the same for every frame


class VideoGenerator(ConfigModule):
    """z `[N, z_dim]` → clip `[N, out_channels, frames, size, size]` in [-1, 1].

    One stream (default): a transposed 3D conv from z to `[8·ch, frames/16, 4, 4]` (at 64²), then
    ConvTranspose3d blocks doubling time and space with BatchNorm3d + ReLU, tanh out; 12,662,656
    parameters at 64² × 32 frames, z 100, channels 64.

    Two streams (`two_stream=True`, VGAN): the 3D stream's last layer emits a foreground (tanh) and a
    mask (sigmoid); a static 2D DCGAN generator, fed the same z, paints a background; the clip is
    mask · foreground + (1 − mask) · background.

    `out_bias=True` gives the output layer a bias (DCGAN's has none). `time_padding="replicate"` extends
    the input of every transposed conv that spans time by repeating its first and last step, so that
    the clip's edge frames are drawn like the rest instead of fading (`ReplicateTimeConvTranspose3d`).

    `latent="content_motion"` splits z into a content part (the first `z_dim − motion_dim` values), held
    for the whole clip, and a motion part (the last `motion_dim`), which a GRU cell unrolls into a
    trajectory of motion codes, one per time step of the 4×4 map (at least 2): step t of the first
    layer is drawn from content ‖ motion code t (MoCoGAN's decomposition, Tulyakov et al. 2018, on the
    3D generator). Holding one part of z and varying the other varies motion or appearance alone.

    `num_classes > 0` makes G class-conditional: every BatchNorm of the 3D stream becomes a
    `ConditionalBatchNorm` with a scale and shift per class, and `forward(z, y)` takes labels y `[N]`.
    Without y, clip i is drawn from class i mod num_classes: a batch covers the classes evenly.

    `forward(z)` returns the clip; `forward(z, return_mask=True)` returns `(clip, mask)` with the mask
    `[N, 1, T, H, W]` for the loss's L1 term (None for one stream, so a training loop can treat both
    alike); `decompose(z)` returns every part of a two-stream clip.
    """

    def __init__(
        self,
        z_dim: int = 100,
        channels: int = 64,
        size: int = 64,
        frames: int = 32,
        two_stream: bool = False,
        *,
        out_channels: int = 3,
        out_bias: bool = False,
        time_padding: str = "zeros",
        head: str = "transposed",
        num_classes: int = 0,
        latent: str = "single",
        motion_dim: int = 20,
    ):
        super().__init__()
        owner = type(self).__name__
        if num_classes:
            check_positive_int(owner, "num_classes", num_classes)
        check_choice(owner, "latent", latent, LATENTS)
        split = latent == "content_motion"
        if split and not (isinstance(motion_dim, int) and 1 <= motion_dim < z_dim):
            raise ValueError(f"{owner}: motion_dim must be in [1, z_dim) ({z_dim}), leaving room for content; "
                             f"got {motion_dim!r}")
        check_positive_int(owner, "z_dim", z_dim)
        check_positive_int(owner, "channels", channels)
        check_choice(owner, "size", size, SIZES)
        check_choice(owner, "frames", frames, FRAMES)
        check_positive_int(owner, "out_channels", out_channels)
        check_choice(owner, "time_padding", time_padding, TIME_PADDINGS)
        check_choice(owner, "head", head, HEADS)
        self.config = dict(
            z_dim=z_dim, channels=channels, size=size, frames=frames, two_stream=two_stream, out_channels=out_channels,
            out_bias=out_bias, time_padding=time_padding, head=head,
        )
        if num_classes:  # (left out when 0, so that unconditional configs read as before)
            self.config["num_classes"] = num_classes
        if split:  # (likewise left out for a single latent)
            self.config.update(latent=latent, motion_dim=motion_dim)
        self.num_classes = num_classes  # 0: unconditional
        self.z_dim = z_dim  # latent length
        self.size = size  # output side in pixels
        self.frames = frames  # output clip length
        self.out_channels = out_channels  # 3 for RGB
        self.two_stream = two_stream  # foreground + mask + static background
        self.motion_dim = motion_dim if split else 0  # the motion part of z: its last motion_dim values
        self.content_dim = z_dim - self.motion_dim  # the content part: the rest

        t_small, keep = _time_plan(size, frames, least=2 if split else 1)
        self.t_small = t_small  # time steps of the 4×4 map: the motion trajectory's length
        upsample = ReplicateTimeConvTranspose3d if time_padding == "replicate" else nn.ConvTranspose3d
        width = channels * size // 8  # feature maps at 4×4: 8·ch at 64²

        def norm(features: int) -> nn.Module:
            return ConditionalBatchNorm(features, num_classes) if num_classes else nn.BatchNorm3d(features)

        # content_motion: the GRU keeps PyTorch's own initialisation
        self.motion = nn.GRUCell(motion_dim, motion_dim) if split else None
        layers: list[nn.Module] = [
            # input is z as [N, z_dim, 1, 1, 1], or content ‖ motion code per step as [N, z_dim, t_small, 1, 1]
            nn.ConvTranspose3d(z_dim, width, (1 if split else t_small, 4, 4), 1, 0, bias=False),
            norm(width),
            nn.ReLU(True),
            # state size. [N, width, t_small, 4, 4]: [N, 8·ch, frames/16, 4, 4] at 64²
        ]
        for i in range(num_doublings(size) - 1):
            block = _KEEP_TIME if i < keep else _BLOCK
            layers += [
                upsample(width, width // 2, bias=False, **block),
                norm(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
            # state size. [N, width, t or 2t, 2·side, 2·side], ending at [N, ch, frames/2, size/2, size/2]
        self.trunk = nn.Sequential(*layers)
        # one conv for foreground and mask: out_channels + 1 maps, split in forward
        head_out = out_channels + 1 if two_stream else out_channels
        # DCGAN's output layer has no bias; with `out_bias` it learns one, a per-channel offset that
        # lets a dark or bright background be one number instead of a pattern of weights
        if head == "resize":
            self.head = ResizeConv3d(width, head_out, bias=out_bias)
        else:
            self.head = upsample(width, head_out, bias=out_bias, **_BLOCK)
        # state size. [N, head_out, frames, size, size]
        # the static background is content: drawn from z's content part alone
        self.background = DCGANGenerator(self.content_dim, channels, size, out_channels) if two_stream else None
        self.apply(dcgan_init_)

    def labels(self, n: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The default labels of n clips, `[N]`: clip i from class i mod num_classes."""
        return torch.arange(n, device=device) % self.num_classes

    def _latent_volume(self, z: torch.Tensor) -> torch.Tensor:
        """G's first input: z as `[N, z_dim, 1, 1, 1]`, or content ‖ motion code t at step t,
        `[N, z_dim, t_small, 1, 1]`."""
        if self.motion is None:
            return z[:, :, None, None, None]
        content, z_motion = z.split([self.content_dim, self.motion_dim], dim=1)
        codes = motion_trajectory(self.motion, z_motion, self.t_small).transpose(1, 2)  # [N, motion_dim, t_small]
        steps = torch.cat([content[:, :, None].expand(-1, -1, self.t_small), codes], dim=1)  # [N, z_dim, t]
        return steps[:, :, :, None, None]

    def _stream(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The 3D stream's output before its activation, `[N, head_out, T, H, W]`."""
        check_shape(type(self).__name__, "z", z, (None, self.z_dim), "[N, z_dim]")
        h = self._latent_volume(z)
        if not self.num_classes:
            return self.head(self.trunk(h))
        if y is None:
            y = self.labels(z.shape[0], z.device)
        check_shape(type(self).__name__, "y", y, (z.shape[0],), "[N] class labels")
        for layer in self.trunk:
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm) else layer(h)
        return self.head(h)

    def decompose(self, z: torch.Tensor, y: torch.Tensor | None = None) -> VideoLayers:
        """The clip and its parts (two-stream generators only)."""
        if not self.two_stream:
            raise ValueError("VideoGenerator.decompose needs two_stream=True: a one-stream clip has no parts")
        out = self._stream(z, y)  # [N, C + 1, T, H, W]
        foreground = torch.tanh(out[:, : self.out_channels])  # [N, C, T, H, W]
        mask = torch.sigmoid(out[:, self.out_channels :])  # [N, 1, T, H, W]
        background = self.background(z[:, : self.content_dim])  # [N, C, H, W]
        video = mask * foreground + (1 - mask) * background[:, :, None]  # [N, C, T, H, W]
        return VideoLayers(video, foreground, mask, background)

    def forward(
        self, z: torch.Tensor, y: torch.Tensor | None = None, return_mask: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        if self.two_stream:
            video, _, mask, _ = self.decompose(z, y)
        else:
            video = torch.tanh(self._stream(z, y))  # [N, C, T, H, W]
            mask = None
        return (video, mask) if return_mask else video


class VideoDiscriminator(ConfigModule):
    """Clip `[N, in_channels, frames, size, size]` → one logit per clip, `[N]` (no sigmoid).

    Conv3d kernel 4 / stride 2 / padding 1 blocks halving time and space, LeakyReLU 0.2, BatchNorm3d
    from the second block on, then a conv over the remaining `[frames/16, 4, 4]` (at 64²) to one value.
    Canonically no conv has a bias. Switches as in `DCGANDiscriminator`: `spectral_norm` on every conv,
    `batchnorm=False` to drop BatchNorm (those convs then gain a bias); `minibatch_std=n` (> 0) feeds
    the last conv one more map, the spread of groups of n clips (`MinibatchStd`).

    `num_classes > 0` adds a projection head (Miyato & Koyama 2018): `forward(x, y)` adds to each clip's
    logit the inner product of its class's embedding with the last block's features summed over
    `[t, 4, 4]`, so D judges whether a clip is real *as a member of class y*. `class_head=True` (with
    num_classes) adds an auxiliary classifier on the same pooled features (AC-GAN, Odena et al. 2017):
    `forward(x, y, classify=True)` returns `(logits [N], class_logits [N, num_classes])`.

    `pack=m > 1` (PacGAN, Lin et al. 2018) judges groups of m clips at once, stacked along channels:
    `[N, C, T, H, W]` → logits `[N / m]` (N a multiple of m; clips k·m … k·m + m − 1 form group k). A
    collapsed generator's groups hold near-copies, which real groups do not, so D can tell.
    """

    def __init__(
        self,
        channels: int = 64,
        size: int = 64,
        frames: int = 32,
        *,
        in_channels: int = 3,
        batchnorm: bool = True,
        spectral_norm: bool = False,
        minibatch_std: int = 0,
        num_classes: int = 0,
        class_head: bool = False,
        pack: int = 1,
    ):
        super().__init__()
        # the same checks as the generator's, of the arguments the two share, each named in its error
        owner = type(self).__name__
        check_positive_int(owner, "channels", channels)
        check_choice(owner, "size", size, SIZES)
        check_choice(owner, "frames", frames, FRAMES)
        check_positive_int(owner, "in_channels", in_channels)
        if minibatch_std:
            check_positive_int(owner, "minibatch_std", minibatch_std)
        self.config = dict(
            channels=channels,
            size=size,
            frames=frames,
            in_channels=in_channels,
            batchnorm=batchnorm,
            spectral_norm=spectral_norm,
            minibatch_std=minibatch_std,
        )
        if num_classes:
            check_positive_int(owner, "num_classes", num_classes)
            self.config["num_classes"] = num_classes  # (absent when 0: unconditional configs read as before)
        if class_head:
            if not num_classes:
                raise ValueError(f"{owner}: class_head needs num_classes > 0")
            self.config["class_head"] = True
        check_positive_int(owner, "pack", pack)
        if pack > 1:
            if num_classes:
                raise ValueError(f"{owner}: pack > 1 judges groups of clips, which have no one class: "
                                 "use it without num_classes")
            self.config["pack"] = pack
        self.pack = pack  # clips judged together
        self.num_classes = num_classes  # 0: unconditional
        self.size = size  # input side in pixels
        self.frames = frames  # input clip length
        self.in_channels = in_channels  # 3 for RGB

        t_small, keep = _time_plan(size, frames)
        n_blocks = num_doublings(size)
        # the blocks nearest 4×4 keep time, mirroring the generator
        plan = [_KEEP_TIME if i >= n_blocks - keep else _BLOCK for i in range(n_blocks)]
        # DCGANDiscriminator's layer plan with 3D convs and the time plan: written out again rather
        # than generated from one template, so that each model reads as its paper draws it
        width = channels  # feature maps after the first conv
        layers: list[nn.Module] = [
            # input is [N / pack, pack · in_channels, frames, size, size]
            nn.Conv3d(pack * in_channels, width, bias=False, **plan[0]),
            nn.LeakyReLU(0.2, inplace=True),
            # state size. [N, ch, frames/2, size/2, size/2]
        ]
        for block in plan[1:]:
            layers.append(nn.Conv3d(width, width * 2, bias=not batchnorm, **block))
            if batchnorm:
                layers.append(nn.BatchNorm3d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
            # state size. [N, width, t/2 or t, side/2, side/2], ending at [N, ch·size/8, t_small, 4, 4]
        if minibatch_std:
            layers.append(MinibatchStd(minibatch_std))
            # state size. [N, ch·size/8 + 1, t_small, 4, 4]
        layers += [
            nn.Conv3d(width + (1 if minibatch_std else 0), 1, (t_small, 4, 4), 1, 0, bias=False),
            # state size. [N, 1, 1, 1, 1]
        ]
        self.main = nn.Sequential(*layers)
        # the class embeddings of the projection head, one per class, as wide as the last features
        features = width + (1 if minibatch_std else 0)
        self.embed = nn.Embedding(num_classes, features) if num_classes else None
        self.classifier = nn.Linear(features, num_classes) if class_head else None  # on mean-pooled features
        self.apply(dcgan_init_)
        for layer in (self.embed, self.classifier):
            if layer is not None:
                nn.init.normal_(layer.weight, 0.0, 0.02)  # as small as DCGAN's conv weights
        if spectral_norm:
            add_spectral_norm(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                classify: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        c, t, s = self.in_channels, self.frames, self.size
        check_shape(type(self).__name__, "input", x, (None, c, t, s, s), "[N, C, T, H, W]")
        if classify and self.classifier is None:
            raise ValueError(f"{type(self).__name__}: classify=True needs class_head=True")
        if self.pack > 1:
            if x.shape[0] % self.pack:
                raise ValueError(f"{type(self).__name__}: a batch of {x.shape[0]} clips does not split into "
                                 f"groups of pack={self.pack}")
            groups = x.reshape(x.shape[0] // self.pack, self.pack * c, t, s, s)  # [N / m, m · C, T, H, W]
            return self.main(groups).reshape(groups.shape[0])  # [N / m] logits
        if self.embed is None:
            return self.main(x).reshape(x.shape[0])  # [N] logits
        if y is None:
            raise ValueError(f"{type(self).__name__}: a class-conditional discriminator needs labels y [N]")
        check_shape(type(self).__name__, "y", y, (x.shape[0],), "[N] class labels")
        features = self.main[:-1](x)  # [N, width, t_small, 4, 4]
        logits = self.main[-1](features).reshape(x.shape[0])  # [N]
        pooled = features.sum(dim=(2, 3, 4))  # [N, width]
        logits = logits + (self.embed(y) * pooled).sum(dim=1)  # [N] with the projection
        if classify:
            return logits, self.classifier(pooled / features[0, 0].numel())  # [N], [N, num_classes]
        return logits


class VideoFrameDiscriminator(ConfigModule):
    """A video discriminator and, beside it, an image discriminator on `frame_count` random frames of
    each clip (MoCoGAN's image D, DVD-GAN's spatial D, StyleGAN-V's sparse frames): appearance is learned
    from frames, motion from clips.

    Clip `[N, C, T, H, W]` → logits `[N, 1 + frame_count]`: the clip's, then its frames'. The frames are
    drawn anew at every call, without repeats within a clip. `vidgan.losses` averages the two parts
    apart and adds them. With `num_classes > 0` the video D has a projection head (`forward(x, y)`);
    the frames are judged without their class."""

    def __init__(self, channels: int = 64, size: int = 64, frames: int = 32, frame_count: int = 2, *,
                 in_channels: int = 3, batchnorm: bool = True, spectral_norm: bool = False, minibatch_std: int = 0,
                 num_classes: int = 0, class_head: bool = False):
        super().__init__()
        check_positive_int(type(self).__name__, "frame_count", frame_count)
        if frame_count > frames:
            raise ValueError(f"VideoFrameDiscriminator: frame_count must be at most frames ({frames}); "
                             f"got {frame_count}")
        self.config = dict(channels=channels, size=size, frames=frames, frame_count=frame_count,
                           in_channels=in_channels, batchnorm=batchnorm, spectral_norm=spectral_norm,
                           minibatch_std=minibatch_std)
        if num_classes:
            self.config["num_classes"] = num_classes
        if class_head:
            self.config["class_head"] = True
        self.frames = frames
        self.frame_count = frame_count
        self.video = VideoDiscriminator(channels, size, frames, in_channels=in_channels, batchnorm=batchnorm,
                                        spectral_norm=spectral_norm, minibatch_std=minibatch_std,
                                        num_classes=num_classes, class_head=class_head)
        self.image = DCGANDiscriminator(channels, size, in_channels, batchnorm=batchnorm,
                                        spectral_norm=spectral_norm)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                classify: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if classify:  # the video D's class logits alongside
            clip_logits, class_logits = self.video(x, y, classify=True)
            return self._with_frames(x, clip_logits), class_logits
        return self._with_frames(x, self.video(x, y))

    def _with_frames(self, x: torch.Tensor, clip_logits: torch.Tensor) -> torch.Tensor:
        """`[N, 1 + K]`: the clip's logit `[N]` (after the video D's shape check), then its frames'."""
        n, k = x.shape[0], self.frame_count
        pick = torch.rand(n, self.frames, device=x.device).argsort(dim=1)[:, :k]  # [N, K] distinct frames
        frames = x[torch.arange(n, device=x.device)[:, None], :, pick]  # [N, K, C, H, W]
        frame_logits = self.image(frames.flatten(0, 1)).view(n, k)  # [N, K]
        return torch.cat([clip_logits[:, None], frame_logits], dim=1)  # [N, 1 + K]
