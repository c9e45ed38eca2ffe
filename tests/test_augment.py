"""vidgan.augment: one draw per clip, the same on every frame; different across clips; differentiable."""

import pytest
import torch

from vidgan.augment import DEFAULT_POLICY, DiffAugment, diff_augment, parse_policy


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def _clips(n=4, t=6, size=16, seed=0):
    g = _seeded(seed)
    return torch.rand(n, 3, t, size, size, generator=g) * 2 - 1  # [N, C, T, H, W] in [-1, 1]


def test_off_by_default():
    x = _clips()
    assert DiffAugment()(x, _seeded()) is x
    assert DiffAugment(p=1.0, policy="")(x) is x


def test_identical_frames_stay_identical():
    frame = _clips(n=5, t=1)
    x = frame.expand(-1, -1, 6, -1, -1).contiguous()  # every frame of a clip the same
    out = DiffAugment(p=1.0)(x, _seeded())
    assert not torch.equal(out, x)
    for t in range(1, 6):
        assert torch.equal(out[:, :, t], out[:, :, 0])


def test_brightness_shift_is_one_value_per_clip():
    x = _clips()
    out = DiffAugment("brightness", p=1.0)(x, _seeded())
    shift = out - x  # [N, C, T, H, W]
    per_clip = shift.flatten(1)
    torch.testing.assert_close(per_clip, per_clip[:, :1].expand_as(per_clip))
    assert per_clip[:, 0].unique().numel() == len(x)  # a different draw for every clip
    assert per_clip.abs().max() <= 0.5


def _fit_factor(y, x):
    """Least-squares f per clip in y ≈ f·x: [N, 1, 1, 1, 1]."""
    return ((y * x).flatten(1).sum(1) / x.square().flatten(1).sum(1)).view(-1, 1, 1, 1, 1)


def test_contrast_is_one_factor_around_the_clip_mean():
    x = _clips()
    x[:, :, 0] += 0.5  # frames with different means: a per-frame mean would show
    out = DiffAugment("contrast", p=1.0)(x, _seeded())
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)  # [N, 1, 1, 1, 1]
    factor = _fit_factor(out - mean, x - mean)
    torch.testing.assert_close(out - mean, factor * (x - mean))  # out = f·(x − m) + m, one f per clip
    assert ((factor >= 0.5) & (factor <= 1.5)).all() and factor.unique().numel() == len(x)


def test_saturation_is_one_factor_around_each_pixels_grey():
    x = _clips()
    out = DiffAugment("saturation", p=1.0)(x, _seeded())
    grey = x.mean(dim=1, keepdim=True)  # [N, 1, T, H, W]
    factor = _fit_factor(out - grey, x - grey)
    torch.testing.assert_close(out - grey, factor * (x - grey))  # out = f·(x − grey) + grey, one f per clip
    assert ((factor >= 0) & (factor <= 2)).all() and factor.unique().numel() == len(x)


def test_geometry_is_the_same_on_every_frame():
    # frames of constant, non-zero, different values: zeros can only come from translation or cutout
    n, t, size = 8, 5, 16
    x = (torch.arange(1, t + 1, dtype=torch.float32) / t).view(1, 1, t, 1, 1).expand(n, 3, t, size, size)
    out = DiffAugment("translation,cutout", p=1.0)(x.contiguous(), _seeded(3))
    zero = out == 0  # [N, C, T, H, W]
    assert zero.any()
    for frame in range(1, t):
        assert torch.equal(zero[:, :, frame], zero[:, :, 0])
    patterns = {tuple(zero[i, 0, 0].flatten().tolist()) for i in range(n)}
    assert len(patterns) > 1  # the clips were not all cut the same way


def test_translation_is_a_whole_pixel_shift_with_zero_fill():
    x = _clips(n=6, t=3, size=16) + 3  # no zeros in the input
    out = DiffAugment("translation", p=1.0)(x, _seeded(1))
    max_shift = 2  # 0.125 × 16
    for i in range(len(x)):
        matches = []
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                shifted = torch.zeros_like(x[i])
                src = x[i][..., max(0, -dy) : 16 - max(0, dy), max(0, -dx) : 16 - max(0, dx)]
                shifted[..., max(0, dy) : 16 - max(0, -dy), max(0, dx) : 16 - max(0, -dx)] = src
                if torch.equal(out[i], shifted):
                    matches.append((dy, dx))
        assert len(matches) == 1, f"clip {i}: not a single whole-pixel shift of every frame"


def test_clips_get_different_draws():
    x = _clips(n=1).expand(6, -1, -1, -1, -1).contiguous()  # six copies of one clip
    out = DiffAugment(p=1.0)(x, _seeded())
    for i in range(1, 6):
        assert not torch.equal(out[i], out[0])


def test_generator_makes_draws_reproducible():
    x = _clips()
    aug = DiffAugment(p=1.0)
    assert torch.equal(aug(x, _seeded(7)), aug(x, _seeded(7)))
    assert not torch.equal(aug(x, _seeded(7)), aug(x, _seeded(8)))
    torch.manual_seed(5)
    a = aug(x)
    torch.manual_seed(5)
    assert torch.equal(a, aug(x))  # without a generator: the global RNG


def test_probability_is_per_operation_per_clip():
    x = _clips(n=400, t=1, size=4)
    out = DiffAugment("brightness", p=0.3)(x, _seeded())
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.22 < changed < 0.38
    with pytest.raises(ValueError, match=r"probability p must be in \[0, 1\]; got 1.5"):
        DiffAugment(p=1.5)
    aug = DiffAugment()
    with pytest.raises(ValueError, match=r"got -0.1"):
        aug.p = -0.1


def test_differentiable():
    x = _clips(n=2, t=2, size=8).double().requires_grad_(True)

    def augment(v):
        return diff_augment(v, DEFAULT_POLICY, p=1.0, generator=_seeded(2))  # same draw every call

    assert torch.autograd.gradcheck(augment, (x,), fast_mode=True)
    out = augment(x)
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0


def test_images_are_augmented_too():
    images = _clips(n=3, t=1)[:, :, 0]  # [N, C, H, W]
    out = DiffAugment(p=1.0)(images, _seeded())
    assert out.shape == images.shape and not torch.equal(out, images)


def test_policy_parsing_and_errors():
    assert parse_policy("color") == ("brightness", "saturation", "contrast")
    assert parse_policy("cutout, translation") == ("translation", "cutout")  # applied in a fixed order
    assert parse_policy(["contrast"]) == ("contrast",)
    with pytest.raises(ValueError, match="unknown augmentation 'flip'; allowed: color, brightness"):
        DiffAugment("color,flip")
    with pytest.raises(ValueError, match=r"input must be \[N, C, T, H, W\] or \[N, C, H, W\]; got shape \[3, 16, 16\]"):
        DiffAugment(p=1.0)(torch.zeros(3, 16, 16))
