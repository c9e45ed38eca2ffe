"""vidgan's generators and discriminators: the image DCGAN and its 3D (VGAN-style) extension.

Layouts: images `[N, C, H, W]`, clips `[N, C, T, H, W]`, both in [-1, 1]; latents `[N, z_dim]`;
discriminators return one logit per image or clip, `[N]`.
"""

from .common import (
    FRAMES,
    SIZES,
    ConfigModule,
    add_spectral_norm,
    build_model,
    channels_last,
    convert_sync_batchnorm,
    count_parameters,
    dcgan_init_,
    to_channels_last,
    unwrap,
)
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .frames import FrameGenerator
from .video import VideoDiscriminator, VideoFrameDiscriminator, VideoGenerator, VideoLayers

VIDEO_GENERATORS = (VideoGenerator, FrameGenerator)  # the generators of clips [N, C, T, H, W]

__all__ = [
    "FRAMES",
    "SIZES",
    "VIDEO_GENERATORS",
    "ConfigModule",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FrameGenerator",
    "VideoDiscriminator",
    "VideoFrameDiscriminator",
    "VideoGenerator",
    "VideoLayers",
    "add_spectral_norm",
    "build_model",
    "channels_last",
    "convert_sync_batchnorm",
    "count_parameters",
    "dcgan_init_",
    "to_channels_last",
    "unwrap",
]
