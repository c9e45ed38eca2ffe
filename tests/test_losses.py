"""vidgan.losses against values computed by hand, R1 against finite differences."""

import math

import pytest
import torch
from torch import nn

from vidgan.losses import (LOSS_KINDS, class_loss, d_loss, d_loss_fake, d_loss_real, g_loss, mask_l1, mode_seeking,
                           r1_penalty)
from vidgan.models import DCGANDiscriminator, VideoDiscriminator

REAL = [2.0, -1.0, 0.0]  # D logits on real samples
FAKE = [0.5, -3.0, 4.0]  # D logits on generated samples


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _mean(values):
    return sum(values) / len(values)


def test_nonsaturating_losses_match_the_log_form():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    # D: −[log D(x) + log(1 − D(G(z)))], G: −log D(G(z)), D(·) = σ(logit), each averaged over its batch
    expected_real = _mean([-math.log(_sigmoid(r)) for r in REAL])
    expected_fake = _mean([-math.log(1 - _sigmoid(f)) for f in FAKE])
    expected_g = _mean([-math.log(_sigmoid(f)) for f in FAKE])
    assert d_loss_real(real).item() == pytest.approx(expected_real, rel=1e-6)
    assert d_loss_fake(fake).item() == pytest.approx(expected_fake, rel=1e-6)
    assert d_loss(real, fake).item() == pytest.approx(expected_real + expected_fake, rel=1e-6)
    assert g_loss(fake).item() == pytest.approx(expected_g, rel=1e-6)
    assert d_loss(real, fake, kind="nonsaturating").item() == d_loss(real, fake).item()  # the default


def test_hinge_losses_match_hand_values():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    # relu(1 − r) = [0, 2, 1] → 1; relu(1 + f) = [1.5, 0, 5] → 6.5 / 3; G: −mean(f) = −1.5 / 3
    assert d_loss_real(real, "hinge").item() == pytest.approx(1.0)
    assert d_loss_fake(fake, "hinge").item() == pytest.approx(6.5 / 3)
    assert d_loss(real, fake, "hinge").item() == pytest.approx(1.0 + 6.5 / 3)
    assert g_loss(fake, "hinge").item() == pytest.approx(-0.5)


def test_nonsaturating_loss_is_stable_at_extreme_logits():
    logits = torch.tensor([-200.0, 200.0], requires_grad=True)
    loss = d_loss(logits, logits) + g_loss(logits)
    loss.backward()
    # −log σ(−200) = 200 and −log σ(200) = 0: finite where log(sigmoid(x)) would give inf
    # d_loss_real = (200 + 0) / 2, d_loss_fake = (0 + 200) / 2, g_loss = (200 + 0) / 2
    assert loss.item() == pytest.approx(300.0)
    assert torch.isfinite(logits.grad).all()


def test_unknown_loss_kind():
    with pytest.raises(ValueError, match="loss kind must be one of nonsaturating, hinge; got 'wgan'"):
        g_loss(torch.zeros(2), "wgan")
    assert LOSS_KINDS == ("nonsaturating", "hinge")


def test_mask_l1_is_mean_absolute_value():
    mask = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 4, 1, 1)
    assert mask_l1(mask).item() == pytest.approx(0.4375)


def _finite_difference_r1(D, reals, eps=1e-6):
    """Mean over the batch of ‖∂ Σ D / ∂x_i‖², each partial derivative by central differences.

    D is in eval mode, so each output depends on its own sample only: every perturbed copy of a sample
    can be pushed through D in one batch.
    """
    total = 0.0
    for x in reals:
        flat = x.reshape(-1)
        grad = torch.empty_like(flat)
        for start in range(0, flat.numel(), 1024):
            idx = torch.arange(start, min(start + 1024, flat.numel()))
            bumps = torch.zeros(len(idx), flat.numel(), dtype=flat.dtype)
            bumps[torch.arange(len(idx)), idx] = eps
            plus = D((flat + bumps).view(-1, *x.shape))
            minus = D((flat - bumps).view(-1, *x.shape))
            grad[idx] = (plus - minus) / (2 * eps)
        total += grad.square().sum().item()
    return total / len(reals)


def test_r1_matches_finite_differences():
    torch.manual_seed(0)
    D = DCGANDiscriminator(channels=2, size=32).double()
    with torch.no_grad():  # give the running statistics non-trivial values before eval mode
        D(torch.randn(8, 3, 32, 32, dtype=torch.float64))
    D.eval()
    reals = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(D(reals), reals)
    with torch.no_grad():
        expected = _finite_difference_r1(D, reals.detach())
    assert expected > 0
    assert r1.item() == pytest.approx(expected, rel=1e-5)


def test_r1_is_out_of_place_and_differentiable_in_d():
    torch.manual_seed(0)
    D = VideoDiscriminator(channels=2, size=32, frames=8, batchnorm=False)
    reals = (torch.rand(2, 3, 8, 32, 32) * 2 - 1).requires_grad_(True)
    r1 = r1_penalty(D(reals), reals)
    assert reals.grad is None  # autograd.grad, not .backward(): nothing accumulated on the input
    assert all(p.grad is None for p in D.parameters())
    r1.backward()  # create_graph=True: the penalty has a gradient with respect to D's weights
    # (not its biases: with piecewise-linear activations ∂D/∂x does not depend on them)
    weights = [p for p in D.parameters() if p.ndim > 1]
    assert len(weights) == 4 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_r1_needs_reals_that_require_grad():
    D = nn.Linear(4, 1)
    reals = torch.randn(2, 4)
    with pytest.raises(ValueError, match="reals must have requires_grad=True"):
        r1_penalty(D(reals).squeeze(1), reals)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_clip_and_frame_logits_are_averaged_apart_and_added(kind):
    # [N, 1 + K]: the clip part and the frame part weigh alike, whatever K is
    clip, frames = torch.tensor(REAL), torch.tensor([FAKE, REAL, FAKE]).T  # [3], [3, 3]
    both = torch.cat([clip[:, None], frames], dim=1)
    for loss in (d_loss_real, d_loss_fake, g_loss):
        assert loss(both, kind).item() == pytest.approx(loss(clip, kind).item() + loss(frames.flatten(), kind).item())


def test_mode_seeking_is_the_inverse_of_output_over_latent_distance():
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [1.0, 3.0]])  # pairs (0, 2) and (1, 3): |Δz| 2 and 1
    fakes = torch.zeros(4, 3)
    fakes[2] = 0.5  # pair (0, 2) apart by 0.5, pair (1, 3) the same clip
    ratio = (0.5 * 3 / 6) / ((2 + 2 + 0 + 2) / 4)  # mean |Δfake| over mean |Δz|
    assert mode_seeking(fakes, z).item() == pytest.approx(1 / (ratio + 1e-5))
    assert mode_seeking(torch.zeros(4, 3), z).item() == pytest.approx(1e5)  # a collapsed batch: the largest value
    # its gradient moves the clips of a pair apart
    apart = torch.zeros(4, 3, requires_grad=True)
    with torch.no_grad():
        apart[2] = 0.5
    mode_seeking(apart, z).backward()
    assert (apart.grad[2] < 0).all() and (apart.grad[0] > 0).all()
    with pytest.raises(ValueError, match="at least 2"):
        mode_seeking(torch.zeros(1, 3), z[:1])


def test_class_loss_is_cross_entropy():
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(1 / (1 + math.e))) / 2
    assert class_loss(logits, labels).item() == pytest.approx(expected)
