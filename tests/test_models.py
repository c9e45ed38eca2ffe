"""vidgan.models: shapes, parameter counts, initialisation, gradients, switches, save / load."""

import itertools
import json

import pytest
import torch
from torch import nn

from vidgan.checkpoint import load_model, save_model
from vidgan.losses import d_loss, g_loss, mask_l1
from vidgan.models.common import ConditionalBatchNorm, motion_trajectory
from vidgan.models import (
    FRAMES,
    SIZES,
    DCGANDiscriminator,
    DCGANGenerator,
    FrameGenerator,
    VideoDiscriminator,
    VideoFrameDiscriminator,
    VideoGenerator,
    channels_last,
    convert_sync_batchnorm,
    count_parameters,
    to_channels_last,
)

Z = 8  # small latent for fast tests
CH = 4  # small width for fast tests
N = 2  # batch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_dcgan_shapes(size):
    G = DCGANGenerator(z_dim=Z, channels=CH, size=size)
    D = DCGANDiscriminator(channels=CH, size=size)
    x = G(torch.randn(N, Z))
    assert x.shape == (N, 3, size, size)
    assert x.abs().max() <= 1  # tanh
    assert D(x).shape == (N,)


@pytest.mark.parametrize(("size", "frames", "two_stream"), list(itertools.product(SIZES, FRAMES, (False, True))))
def test_video_generator_shapes(size, frames, two_stream):
    G = VideoGenerator(z_dim=Z, channels=CH, size=size, frames=frames, two_stream=two_stream)
    z = torch.randn(N, Z)
    video, mask = G(z, return_mask=True)
    assert video.shape == (N, 3, frames, size, size)
    assert video.abs().max() <= 1
    if two_stream:
        assert mask.shape == (N, 1, frames, size, size)
        assert 0 <= mask.min() and mask.max() <= 1
    else:
        assert mask is None
    assert G(z).shape == video.shape  # without return_mask: the clip alone


@pytest.mark.parametrize(("size", "frames"), list(itertools.product(SIZES, FRAMES)))
def test_video_discriminator_shapes(size, frames):
    D = VideoDiscriminator(channels=CH, size=size, frames=frames)
    assert D(torch.randn(N, 3, frames, size, size)).shape == (N,)
    # the time axis ends at one step per clip whatever the length: a [N, 1, 1, 1, 1] map before the reshape
    feature = D.main[:-1](torch.randn(N, 3, frames, size, size))
    assert feature.shape[2:] == (max(1, frames // (size // 4)), 4, 4)


def test_time_axis_below_16_frames_is_kept_by_the_first_blocks():
    G = VideoGenerator(z_dim=Z, channels=CH, size=64, frames=8)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [c.stride for c in convs] == [(1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert convs[0].kernel_size == (1, 4, 4)
    G = VideoGenerator(z_dim=Z, channels=CH, size=128, frames=8)
    convs = [m for m in G.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert [c.stride[0] for c in convs] == [1, 1, 1, 2, 2, 2]


def test_two_stream_clip_is_mask_blend_of_foreground_and_static_background():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=True).eval()
    z = torch.randn(N, Z)
    parts = G.decompose(z)
    assert parts.background.shape == (N, 3, 32, 32)  # one image per clip: static
    assert parts.foreground.shape == (N, 3, 8, 32, 32)
    expected = parts.mask * parts.foreground + (1 - parts.mask) * parts.background[:, :, None]
    torch.testing.assert_close(parts.video, expected, rtol=0, atol=0)
    video, mask = G(z, return_mask=True)
    torch.testing.assert_close(video, parts.video, rtol=0, atol=0)
    torch.testing.assert_close(mask, parts.mask, rtol=0, atol=0)
    with pytest.raises(ValueError, match="decompose needs two_stream=True"):
        VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8).decompose(z)


# --- parameter counts -----------------------------------------------------------------------


def test_dcgan_parameter_counts_match_pytorch_examples():
    assert count_parameters(DCGANGenerator(z_dim=100, channels=64, size=64)) == 3_576_704
    assert count_parameters(DCGANDiscriminator(channels=64, size=64)) == 2_765_568


def test_video_generator_parameter_count():
    assert count_parameters(VideoGenerator(z_dim=100, channels=64, size=64, frames=32)) == 12_662_656


def test_video_discriminator_parameter_count():
    # Conv3d 3→64, 64→128 + BN, 128→256 + BN, 256→512 + BN (all k 4³, no bias), then 512→1 over [2, 4, 4]
    expected = 3 * 64 * 64 + (64 * 128 * 64 + 2 * 128) + (128 * 256 * 64 + 2 * 256) + (256 * 512 * 64 + 2 * 512)
    expected += 512 * 2 * 4 * 4
    assert count_parameters(VideoDiscriminator(channels=64, size=64, frames=32)) == expected


def test_no_bias_in_convs_by_default_and_bias_without_batchnorm():
    for model in (DCGANGenerator(), DCGANDiscriminator(), VideoGenerator(two_stream=True), VideoDiscriminator()):
        conv_types = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
        convs = [m for m in model.modules() if isinstance(m, conv_types)]
        assert convs and all(c.bias is None for c in convs)
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    convs = [m for m in D.modules() if isinstance(m, nn.Conv3d)]
    assert [c.bias is not None for c in convs] == [False, True, True, False]


# --- errors at construction and at the boundaries -------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DCGANGenerator(size=48), "DCGANGenerator: size must be one of 32, 64, 128; got 48"),
        (lambda: DCGANDiscriminator(size=256), "DCGANDiscriminator: size must be one of 32, 64, 128; got 256"),
        (lambda: VideoGenerator(size=96), "VideoGenerator: size must be one of 32, 64, 128; got 96"),
        (lambda: VideoGenerator(frames=24), "VideoGenerator: frames must be one of 8, 16, 32, 64; got 24"),
        (lambda: VideoGenerator(frames=4), "VideoGenerator: frames must be one of 8, 16, 32, 64; got 4"),
        (lambda: VideoDiscriminator(frames=128), "VideoDiscriminator: frames must be one of 8, 16, 32, 64; got 128"),
        (lambda: VideoDiscriminator(size=16), "VideoDiscriminator: size must be one of 32, 64, 128; got 16"),
        (lambda: VideoGenerator(channels=0), "VideoGenerator: channels must be a positive integer; got 0"),
        (lambda: VideoGenerator(head="pixelshuffle"),
         "VideoGenerator: head must be one of transposed, resize; got 'pixelshuffle'"),
        (lambda: VideoGenerator(time_padding="reflect"),
         "VideoGenerator: time_padding must be one of zeros, replicate; got 'reflect'"),
    ],
)
def test_unsupported_configurations_fail_at_construction(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_wrong_layouts_are_rejected_with_the_expected_layout():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8)
    with pytest.raises(ValueError, match=r"z must be \[N, z_dim\] = \[\*, 8\]; got shape \[2, 8, 1\]"):
        G(torch.randn(N, Z, 1))
    D = VideoDiscriminator(channels=CH, size=32, frames=8)
    # frames and channels swapped: [N, T, C, H, W] instead of [N, C, T, H, W]
    expected = r"input must be \[N, C, T, H, W\] = \[\*, 3, 8, 32, 32\]; got shape \[2, 8, 3, 32, 32\]"
    with pytest.raises(ValueError, match=expected):
        D(torch.randn(N, 8, 3, 32, 32))
    with pytest.raises(ValueError, match=r"input must be \[N, C, H, W\] = \[\*, 3, 32, 32\]"):
        DCGANDiscriminator(channels=CH, size=32)(torch.randn(N, 3, 1, 32, 32))
    with pytest.raises(ValueError, match=r"z must be \[N, z_dim\]"):
        DCGANGenerator(z_dim=Z, channels=CH, size=32)(torch.randn(N, Z + 1))


# --- initialisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: DCGANGenerator(),
        lambda: DCGANDiscriminator(),
        lambda: VideoGenerator(two_stream=True),
        lambda: VideoDiscriminator(),
        lambda: VideoDiscriminator(batchnorm=False, spectral_norm=True),
    ],
)
def test_dcgan_initialisation(make):
    model = make()
    conv_weights, bn_weights, biases = [], [], []
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            biases.append(p)
        elif p.ndim == 1:
            bn_weights.append(p)
        else:
            conv_weights.append(p)
    for w in conv_weights:
        if w.numel() >= 20_000:  # enough samples for tight bounds
            assert abs(w.mean().item()) < 0.001
            assert 0.0195 < w.std().item() < 0.0205
    assert sum(w.numel() for w in conv_weights) > 0.99 * count_parameters(model)
    if bn_weights:
        bn = torch.cat([w.detach() for w in bn_weights])
        assert abs(bn.mean().item() - 1) < 0.003 and 0.017 < bn.std().item() < 0.023
    for b in biases:
        assert torch.count_nonzero(b) == 0


# --- gradients ------------------------------------------------------------------------------


def _assert_all_grads(model):
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


@pytest.mark.parametrize(
    ("two_stream", "d_options"),
    [(False, {}), (True, {}), (False, {"batchnorm": False, "spectral_norm": True})],
)
def test_gradients_reach_every_parameter_of_video_g_and_d(two_stream, d_options):
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=two_stream)
    D = VideoDiscriminator(channels=CH, size=32, frames=8, **d_options)
    reals = torch.rand(4, 3, 8, 32, 32) * 2 - 1
    fake, mask = G(torch.randn(4, Z), return_mask=True)
    # D step (fakes detached), then G step through D
    d_loss(D(reals), D(fake.detach())).backward()
    _assert_all_grads(D)
    assert all(p.grad is None for p in G.parameters())
    loss = g_loss(D(fake))
    if mask is not None:
        loss = loss + 0.1 * mask_l1(mask)
    loss.backward()
    _assert_all_grads(G)


def test_gradients_reach_every_parameter_of_dcgan():
    G = DCGANGenerator(z_dim=Z, channels=CH, size=32)
    D = DCGANDiscriminator(channels=CH, size=32)
    g_loss(D(G(torch.randn(4, Z)))).backward()
    _assert_all_grads(G)
    _assert_all_grads(D)


# --- switches -------------------------------------------------------------------------------


def test_spectral_norm_bounds_each_weight_to_unit_spectral_norm():
    D = VideoDiscriminator(channels=CH, size=32, frames=8, spectral_norm=True)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 4 and all(nn.utils.parametrize.is_parametrized(c, "weight") for c in convs)
    with torch.no_grad():
        D(torch.randn(N, 3, 8, 32, 32))
        for conv in convs:
            for _ in range(30):  # power iterations: one each time the weight is computed in training mode
                conv.weight
    for conv in convs:
        raw = conv.parametrizations.weight.original
        raw_sigma = torch.linalg.matrix_norm(raw.flatten(1), ord=2)
        assert abs(raw_sigma.item() - 1) > 0.3  # the raw weight's spectral norm is far from 1 ...
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)  # ... its normalised form is not
        assert abs(sigma.item() - 1) < 0.02


def test_sync_batchnorm_conversion_keeps_weights_and_outputs():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=True).eval()
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in G.modules())
    z = torch.randn(N, Z)
    with torch.no_grad():
        before = G(z)
    state = {k: v.clone() for k, v in G.state_dict().items()}
    S = convert_sync_batchnorm(G)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in S.modules()) == n_bn > 0
    assert not any(type(m) in (nn.BatchNorm2d, nn.BatchNorm3d) for m in S.modules())
    assert all(torch.equal(state[k], v) for k, v in S.state_dict().items()) and state.keys() == S.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(S(z), before)  # eval: no process group needed


@pytest.mark.parametrize("two_stream", [False, True])
def test_channels_last_keeps_outputs(two_stream):
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=two_stream).eval()
    D = VideoDiscriminator(channels=CH, size=32, frames=8).eval()
    z = torch.randn(N, Z)
    with torch.no_grad():
        ref_video = G(z)
        ref_logits = D(ref_video)
        to_channels_last(G)
        to_channels_last(D)
        conv5 = [p for p in G.parameters() if p.ndim == 5] + [p for p in D.parameters() if p.ndim == 5]
        assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in conv5)
        if two_stream:
            conv4 = [p for p in G.background.parameters() if p.ndim == 4]
            assert conv4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv4)
        video = G(z)
        logits = D(channels_last(video))
    torch.testing.assert_close(video, ref_video, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert channels_last(video).is_contiguous(memory_format=torch.channels_last_3d)
    assert channels_last(torch.randn(N, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


# --- save / load ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "input_shape"),
    [
        (lambda: DCGANGenerator(z_dim=Z, channels=CH, size=32, out_channels=1), (N, Z)),
        (lambda: DCGANDiscriminator(channels=CH, size=64, batchnorm=False), (N, 3, 64, 64)),
        (lambda: VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=True), (N, Z)),
        (lambda: VideoGenerator(z_dim=Z, channels=CH, size=64, frames=8, time_padding="replicate"), (N, Z)),
        (lambda: VideoGenerator(z_dim=Z, channels=CH, size=32, frames=16, head="resize", out_bias=True), (N, Z)),
        (lambda: FrameGenerator(z_dim=Z, channels=CH, size=32, frames=8, motion_dim=3, out_bias=True), (N, Z)),
        (lambda: VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, num_classes=3), (N, Z)),
        (lambda: VideoDiscriminator(channels=CH, size=32, frames=16, spectral_norm=True), (N, 3, 16, 32, 32)),
        (lambda: VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False, minibatch_std=2), (N, 3, 8, 32, 32)),
    ],
)
def test_save_load_round_trip_is_bit_exact(tmp_path, make, input_shape):
    model = make()
    with torch.no_grad():  # move BatchNorm running statistics and spectral norm vectors off their initial values
        for _ in range(2):
            model(torch.randn(input_shape))
    model.eval()
    to_channels_last(model)  # non-contiguous weights must save too
    folder = save_model(model, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["class"] == type(model).__name__ and saved["config"] == model.config

    loaded = load_model(folder).eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert original[key].dtype == restored[key].dtype, key
        assert torch.equal(original[key], restored[key]), key
    to_channels_last(loaded)  # the same memory order, hence the same kernels and bit-equal outputs
    x = torch.randn(input_shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_model(folder, expect=type(model)).config == model.config


def test_load_model_checks_the_class_and_the_folder(tmp_path):
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8)
    save_model(G, tmp_path / "g")
    with pytest.raises(ValueError, match="holds a VideoGenerator, not a VideoDiscriminator"):
        load_model(tmp_path / "g", expect=VideoDiscriminator)
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        load_model(tmp_path / "missing")


def test_save_unwraps_compiled_and_data_parallel_models(tmp_path):
    G = DCGANGenerator(z_dim=Z, channels=CH, size=32)
    compiled = torch.compile(nn.DataParallel(G))  # wrapping only: nothing is compiled until it is called
    save_model(compiled, tmp_path / "g")
    loaded = load_model(tmp_path / "g")
    assert G.state_dict().keys() == loaded.state_dict().keys()  # no "_orig_mod." or "module." prefixes
    assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(TypeError, match="not a vidgan model: Linear"):
        save_model(nn.Linear(2, 2), tmp_path / "linear")


def test_frame_discriminator_judges_distinct_random_frames_beside_the_clip():
    from vidgan.models import VideoFrameDiscriminator

    d = VideoFrameDiscriminator(CH, 32, 8, 3).eval()  # per-sample BatchNorm, to compare frame by frame
    x = torch.randn(N, 3, 8, 32, 32)
    logits = d(x)
    assert logits.shape == (N, 4)
    assert torch.allclose(logits[:, 0], d.video(x))
    frame_logits = torch.stack([d.image(x[:, :, t]) for t in range(8)], dim=1)  # [N, 8]
    for n in range(N):  # each frame logit is one frame's, and no frame twice
        matches = [int((frame_logits[n] - v).abs().argmin()) for v in logits[n, 1:]]
        assert len(set(matches)) == 3
        assert torch.allclose(frame_logits[n, matches], logits[n, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="frame_count must be at most frames"):
        VideoFrameDiscriminator(CH, 32, 8, 9)


def test_generator_output_bias_switch(tmp_path):
    g = VideoGenerator(Z, CH, 32, 8, out_bias=True)
    assert g.head.bias is not None and VideoGenerator(Z, CH, 32, 8).head.bias is None
    save_model(g, tmp_path / "g")
    assert load_model(tmp_path / "g").head.bias is not None


@pytest.mark.parametrize("block", [dict(kernel_size=4, stride=2, padding=1),
                                   dict(kernel_size=(3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1))])
def test_replicate_time_padding_draws_edge_frames_like_the_rest(block):
    from vidgan.models.video import ReplicateTimeConvTranspose3d

    plain, replicate = nn.ConvTranspose3d(2, 3, **block), ReplicateTimeConvTranspose3d(2, 3, **block)
    replicate.load_state_dict(plain.state_dict())  # the same parameters under the same names
    for layer in (plain, replicate):
        nn.init.constant_(layer.weight, 1.0)
    x = torch.ones(1, 2, 4, 3, 3)  # [N, C, T, H, W], the same in every frame
    with torch.no_grad():
        faded, even = plain(x), replicate(x)
    assert even.shape == faded.shape
    per_frame = lambda y: y[0, 0, :, 2, 2]  # noqa: E731, one interior pixel through time
    assert torch.allclose(per_frame(even), per_frame(even)[1:-1].mean())  # every frame alike
    assert per_frame(faded)[0] < per_frame(faded)[1:-1].mean()  # zero padding: the edge frame is fainter
    assert torch.equal(per_frame(faded)[1:-1], per_frame(even)[1:-1])  # interior frames unchanged


def test_resize_head_has_no_checkerboard():
    from vidgan.models.video import ResizeConv3d

    x = torch.ones(1, 4, 4, 4, 4)  # [N, C, T, H, W]: a flat feature map
    resize, transposed = ResizeConv3d(4, 3), nn.ConvTranspose3d(4, 3, 4, 2, 1, bias=False)
    with torch.no_grad():
        flat, checkered = resize(x), transposed(x)
    assert flat.shape == checkered.shape == (1, 3, 8, 8, 8)
    assert torch.allclose(flat, flat[:, :, :1, :1, :1].expand_as(flat), atol=1e-6)  # flat stays flat
    inner = checkered[0, 0, 2:6, 2:6, 2:6]  # away from the edges: still a period-2 pattern
    assert not torch.allclose(inner[0::2], inner[1::2])
    for head in ("resize", "transposed"):
        g = VideoGenerator(Z, CH, 32, 8, head=head)
        assert g(torch.randn(N, Z)).shape == (N, 3, 8, 32, 32)


def test_replicate_time_padding_weight_gradient_is_exact():
    # the shape of the first block of a 32² × 16-frame G, where a time padding of 3 instead of a crop
    # meets a wrong oneDNN weight gradient on the CPU (torch 2.14)
    from vidgan.models.video import ReplicateTimeConvTranspose3d

    layer = ReplicateTimeConvTranspose3d(32, 16, 4, 2, 1, bias=False)
    x, upstream = torch.randn(4, 32, 2, 4, 4), torch.randn(4, 16, 4, 8, 8)
    layer(x).backward(upstream)
    single = layer.weight.grad.clone()
    layer.double().weight.grad = None
    layer(x.double()).backward(upstream.double())
    assert torch.allclose(single.double(), layer.weight.grad, atol=1e-5)


def test_generator_time_padding_switch_keeps_shapes_and_parameters():
    torch.manual_seed(1)
    zeros = VideoGenerator(Z, CH, 32, 16)
    torch.manual_seed(1)
    replicate = VideoGenerator(Z, CH, 32, 16, time_padding="replicate")
    assert zeros.state_dict().keys() == replicate.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(zeros.parameters(), replicate.parameters()))
    z = torch.randn(N, Z)
    assert replicate(z).shape == zeros(z).shape == (N, 3, 16, 32, 32)
    assert not torch.allclose(replicate(z)[:, :, 0], zeros(z)[:, :, 0])  # the edge frames differ


def test_recomputed_batchnorm_statistics_match_the_generators_own_batches():
    from vidgan.ema import recompute_batchnorm, update_ema

    g, ema = VideoGenerator(Z, CH, 32, 8), VideoGenerator(Z, CH, 32, 8)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, g, beta=0.5, copy_buffers=False)
    for p_ema, p, p0 in zip(ema.parameters(), g.parameters(), before):
        assert torch.allclose(p_ema, (p + p0) / 2)
    assert all(torch.equal(b, b0) for b, b0 in zip(ema.buffers(), VideoGenerator(Z, CH, 32, 8).buffers()))
    z = torch.randn(256, Z)

    def gap():  # eval-mode output against batch statistics of a batch like those the running ones see
        with torch.no_grad():
            in_eval = ema.eval()(z)
            in_train = ema.train()(z)
        ema.eval()
        return (in_eval - in_train).abs().mean().item()

    before = gap()  # running statistics still at their initial 0 and 1
    recompute_batchnorm(ema, Z, "cpu", batches=4, batch=256)
    assert not ema.training
    assert gap() < 0.02 and gap() < 0.2 * before


def test_minibatch_std_reports_the_spread_within_groups():
    from vidgan.models.common import MinibatchStd

    x = torch.randn(6, 3, 2, 4, 4)
    out = MinibatchStd(group=4)(x)  # 4 does not divide 6: groups of 3, samples (0, 2, 4) and (1, 3, 5)
    assert out.shape == (6, 4, 2, 4, 4) and torch.equal(out[:, :3], x)
    spread = torch.stack([x[0::2].std(dim=0, unbiased=False).mean(), x[1::2].std(dim=0, unbiased=False).mean()])
    assert torch.allclose(out[:, 3].flatten(1), spread.repeat(3)[:, None].expand(6, 32), atol=1e-4)
    copies = x[:1].expand(6, -1, -1, -1, -1)
    assert MinibatchStd(4)(copies)[:, 3].abs().max() < 1e-3  # a collapsed batch has no spread
    # a D with it: the logits of one clip depend on the others in its group
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False, minibatch_std=2).eval()
    clips = torch.randn(4, 3, 8, 32, 32)
    with torch.no_grad():
        a = D(clips)
        clips[2] = clips[0]  # clip 0's group partner is clip 2
        b = D(clips)
    assert a[0] != b[0] and a[1] == b[1]
    with pytest.raises(ValueError, match="minibatch_std must be a positive integer"):
        VideoDiscriminator(channels=CH, size=32, frames=8, minibatch_std=-1)


# --- the per-frame generator ----------------------------------------------------------------


def test_frame_generator_holds_content_and_moves_with_the_motion_code():
    G = FrameGenerator(z_dim=Z, channels=CH, size=32, frames=8, motion_dim=3).eval()
    z = torch.randn(N, Z)
    with torch.no_grad():
        clip = G(z)
        assert clip.shape == (N, 3, 8, 32, 32) and clip.abs().max() <= 1
        # each frame is the image generator's picture of (content ‖ that frame's motion code)
        codes = motion_trajectory(G.motion, z[:, Z - 3:], G.frames)  # [N, T, 3]
        assert codes.shape == (N, 8, 3)
        frame5 = G.image(torch.cat([z[:, :Z - 3], codes[:, 5]], dim=1))
        assert torch.allclose(clip[:, :, 5], frame5, atol=1e-6)
        # the motion code changes from frame to frame, so the frames differ
        assert (codes[:, 1:] - codes[:, :-1]).abs().amax() > 1e-3
        assert (clip[:, :, 1:] - clip[:, :, :-1]).abs().amax() > 0.01 * clip.abs().amax()
        # the same motion part gives the same codes whatever the content
        other = torch.cat([torch.randn(N, Z - 3), z[:, Z - 3:]], dim=1)
        assert torch.equal(motion_trajectory(G.motion, other[:, Z - 3:], G.frames), codes)


def test_frame_generator_gradients_and_bad_arguments():
    G = FrameGenerator(z_dim=Z, channels=CH, size=32, frames=8, motion_dim=3, out_bias=True)
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False)
    g_loss(D(G(torch.randn(4, Z)))).backward()
    _assert_all_grads(G)
    assert G.image.main[-2].bias is not None and FrameGenerator(Z, CH, 32, 8, 3).image.main[-2].bias is None
    with pytest.raises(ValueError, match="motion_dim must be smaller than z_dim"):
        FrameGenerator(z_dim=Z, channels=CH, size=32, frames=8, motion_dim=Z)
    with pytest.raises(ValueError, match="frames must be one of"):
        FrameGenerator(z_dim=Z, channels=CH, size=32, frames=12)


# --- the content/motion latent of the 3D generator -------------------------------------------------

@pytest.mark.parametrize("size, frames", [(32, 16), (64, 16), (32, 8)])
def test_content_motion_generator_draws_each_step_from_content_and_its_motion_code(size, frames):
    G = VideoGenerator(z_dim=Z, channels=CH, size=size, frames=frames, latent="content_motion",
                       motion_dim=3).eval()
    assert (G.content_dim, G.motion_dim) == (Z - 3, 3)
    assert G.t_small == max(2, frames // (size // 4))  # a trajectory of at least two steps, even at 64² × 16
    z = torch.randn(N, Z)
    with torch.no_grad():
        clip = G(z)
        assert clip.shape == (N, 3, frames, size, size) and clip.abs().max() <= 1
        # the first layer sees content ‖ motion code t at step t: the content is the same at every step
        steps = G._latent_volume(z)  # [N, Z, t_small, 1, 1]
        codes = motion_trajectory(G.motion, z[:, Z - 3:], G.t_small)  # [N, t_small, 3]
        assert torch.equal(steps[:, : Z - 3, :, 0, 0], z[:, : Z - 3, None].expand(-1, -1, G.t_small))
        assert torch.equal(steps[:, Z - 3:, :, 0, 0], codes.transpose(1, 2))
        assert (codes[:, 1:] - codes[:, :-1]).abs().amax() > 1e-3  # the motion code moves
        # each part changes the clip
        new_motion = torch.cat([z[:, : Z - 3], torch.randn(N, 3)], dim=1)
        new_content = torch.cat([torch.randn(N, Z - 3), z[:, Z - 3:]], dim=1)
        scale = clip.abs().mean()  # (freshly initialised: tiny values)
        assert (G(new_motion) - clip).abs().mean() > 0.05 * scale and (G(new_content) - clip).abs().mean() > 0.05 * scale
    g_loss(VideoDiscriminator(channels=CH, size=size, frames=frames)(G.train()(z))).backward()
    _assert_all_grads(G)  # the GRU is trained with the rest


def test_content_motion_config_and_arguments():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, two_stream=True, num_classes=2,
                       latent="content_motion", motion_dim=3)
    assert G.config["latent"] == "content_motion" and G.config["motion_dim"] == 3
    assert VideoGenerator(**G.config).state_dict().keys() == G.state_dict().keys()  # rebuilt from its config
    # the static background is content: a new motion part leaves it as it was
    z = torch.randn(N, Z)
    with torch.no_grad():
        other = torch.cat([z[:, : Z - 3], torch.randn(N, 3)], dim=1)
        torch.testing.assert_close(G.eval().decompose(z).background, G.decompose(other).background)
    # a single latent keeps its config and state-dict keys (older checkpoints load)
    plain = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8)
    assert "latent" not in plain.config and "motion_dim" not in plain.config and plain.motion_dim == 0
    assert not any(k.startswith("motion") for k in plain.state_dict())
    with pytest.raises(ValueError, match=r"motion_dim must be in \[1, z_dim\)"):
        VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, latent="content_motion", motion_dim=Z)
    with pytest.raises(ValueError, match="latent must be one of"):
        VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, latent="split")


# --- class-conditional G and projection D --------------------------------------------------------

def test_conditional_generator_draws_each_class_from_its_own_batchnorm_affine():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, num_classes=3).eval()
    with torch.no_grad():  # distinct per-class scales and shifts, as training makes them
        for norm in (m for m in G.modules() if isinstance(m, ConditionalBatchNorm)):
            norm.scale.weight.normal_(1.0, 0.5)
            norm.shift.weight.normal_(0.0, 0.5)
    z = torch.randn(1, Z).repeat(3, 1)  # one latent, three classes
    with torch.no_grad():
        clips = G(z, torch.tensor([0, 1, 2]))
        assert all((clips[i] - clips[j]).abs().mean() > 1e-3 for i, j in [(0, 1), (0, 2), (1, 2)])
        torch.testing.assert_close(G(z[:1], torch.tensor([2]))[0], clips[2])  # its own label alone counts
        torch.testing.assert_close(G(z), clips)  # without labels: clip i of class i mod 3
    assert G.config["num_classes"] == 3
    assert "num_classes" not in VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8).config
    # unconditional models keep their state-dict keys (older checkpoints load), conditional ones have tables
    plain = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8).state_dict()
    assert "trunk.1.weight" in plain and "trunk.1.norm.running_mean" not in plain
    assert {"trunk.1.scale.weight", "trunk.1.shift.weight", "trunk.1.norm.running_mean"} <= set(G.state_dict())
    assert G.state_dict()["trunk.1.scale.weight"].shape == (3, CH * 4)


def test_projection_discriminator_adds_the_class_embedding_times_the_pooled_features():
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False, num_classes=4)
    with torch.no_grad():
        D.embed.weight.normal_(0.0, 1.0)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        features = D.main[:-1](x).sum(dim=(2, 3, 4))  # [2, width]
        a, b = D(x, torch.tensor([0, 3])), D(x, torch.tensor([1, 2]))
        expected = ((D.embed.weight[[0, 3]] - D.embed.weight[[1, 2]]) * features).sum(1)
    torch.testing.assert_close(a - b, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="needs labels y"):
        D(x)
    assert "embed.weight" not in VideoDiscriminator(channels=CH, size=32, frames=8).state_dict()
    # spectral norm reaches the embedding too (Miyato & Koyama 2018)
    sn = VideoDiscriminator(channels=CH, size=32, frames=8, spectral_norm=True, num_classes=4)
    assert hasattr(sn.embed, "parametrizations")
    # the frame D's video part is conditional, its frames are judged without a class
    both = VideoFrameDiscriminator(channels=CH, size=32, frames=8, frame_count=2, num_classes=4)
    assert both(x, torch.tensor([0, 1])).shape == (2, 3) and both.image.config.get("num_classes") is None


def test_auxiliary_class_head_classifies_from_the_pooled_features():
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False, num_classes=4, class_head=True)
    x, y = torch.randn(2, 3, 8, 32, 32), torch.tensor([1, 3])
    logits, class_logits = D(x, y, classify=True)
    assert logits.shape == (2,) and class_logits.shape == (2, 4)
    torch.testing.assert_close(logits, D(x, y))  # the same judgement with or without the head's output
    pooled = D.main[:-1](x).mean(dim=(2, 3, 4))
    torch.testing.assert_close(class_logits, D.classifier(pooled))
    both = VideoFrameDiscriminator(channels=CH, size=32, frames=8, frame_count=2, num_classes=4, class_head=True)
    frame_logits, class_logits = both(x, y, classify=True)
    assert frame_logits.shape == (2, 3) and class_logits.shape == (2, 4)
    with pytest.raises(ValueError, match="class_head needs num_classes"):
        VideoDiscriminator(channels=CH, size=32, frames=8, class_head=True)
    with pytest.raises(ValueError, match="classify=True needs class_head=True"):
        VideoDiscriminator(channels=CH, size=32, frames=8, num_classes=4)(x, y, classify=True)


def test_conditional_batchnorm_survives_sync_batchnorm_conversion():
    G = VideoGenerator(z_dim=Z, channels=CH, size=32, frames=8, num_classes=3)
    converted = convert_sync_batchnorm(G)
    norms = [m for m in converted.modules() if isinstance(m, ConditionalBatchNorm)]
    assert norms and all(isinstance(m.norm, nn.SyncBatchNorm) for m in norms)


def test_packed_discriminator_judges_groups_of_clips_stacked_along_channels():
    D = VideoDiscriminator(channels=CH, size=32, frames=8, batchnorm=False, pack=2)
    x = torch.randn(6, 3, 8, 32, 32)
    logits = D(x)
    assert logits.shape == (3,) and D.main[0].in_channels == 6
    # group k is clips 2k and 2k + 1, in that order
    torch.testing.assert_close(logits[1], D.main(torch.cat([x[2], x[3]])[None]).reshape(()))
    torch.testing.assert_close(D(x[2:4]), logits[1:2])
    with pytest.raises(ValueError, match="does not split into groups of pack=2"):
        D(x[:5])
    with pytest.raises(ValueError, match="without num_classes"):
        VideoDiscriminator(channels=CH, size=32, frames=8, pack=2, num_classes=3)
    assert "pack" not in VideoDiscriminator(channels=CH, size=32, frames=8).config
