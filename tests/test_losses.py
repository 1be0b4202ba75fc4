import math

import pytest
import torch
from torch import nn

from translate.engine.losses import AdversarialLoss, gradient_penalty

LOG2 = math.log(2.0)


def test_bce_losses_at_zero_logits():
    real, fake = torch.zeros(4, 1, 3, 3), torch.zeros(4, 1, 3, 3)
    for kind in ("minimax", "nonsaturating"):
        loss = AdversarialLoss(kind)
        assert loss.d_loss(real, fake).item() == pytest.approx(2 * LOG2)
    assert AdversarialLoss("nonsaturating").g_loss(fake).item() == pytest.approx(LOG2)
    assert AdversarialLoss("minimax").g_loss(fake).item() == pytest.approx(-LOG2)


def test_minimax_generator_saturates_but_nonsaturating_does_not():
    x = torch.tensor([-8.0], requires_grad=True)  # D is confident the fake is fake
    AdversarialLoss("minimax").g_loss(x).backward()
    g_minimax = x.grad.abs().item()
    x.grad = None
    AdversarialLoss("nonsaturating").g_loss(x).backward()
    assert g_minimax < 1e-3 < x.grad.abs().item()


def test_lsgan_known_values():
    loss = AdversarialLoss("lsgan")
    real, fake = torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), 0.25)
    assert loss.d_loss(real, fake).item() == pytest.approx(0.25 + 0.0625)
    assert loss.g_loss(fake).item() == pytest.approx(0.5625)


def test_wgan_and_hinge_known_values():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-0.5, 0.5])
    w = AdversarialLoss("wgan")
    assert w.d_loss(real, fake).item() == pytest.approx(0.0 - 1.0)
    assert w.g_loss(fake).item() == pytest.approx(0.0)
    h = AdversarialLoss("hinge")
    # relu(1 - [2, 0]) = [0, 1] -> 0.5 ; relu(1 + [-0.5, 0.5]) = [0.5, 1.5] -> 1.0
    assert h.d_loss(real, fake).item() == pytest.approx(1.5)
    assert h.g_loss(fake).item() == pytest.approx(0.0)


def test_one_sided_label_smoothing():
    loss = AdversarialLoss("lsgan", label_smoothing=0.1)
    real, fake = torch.ones(3), torch.zeros(3)
    # real target 0.9 -> (1 - 0.9)^2 = 0.01; fake target stays 0
    assert loss.d_loss(real, fake).item() == pytest.approx(0.01)
    assert loss.g_loss(fake).item() == pytest.approx(1.0)  # generator targets are not smoothed


def test_noisy_labels_ranges():
    loss = AdversarialLoss("lsgan", noisy_labels=True)
    pred = torch.zeros(10000)
    t_real, t_fake = loss._d_targets(pred, pred)
    assert 0.7 <= t_real.min() and t_real.max() <= 1.2 and t_real.std() > 0.1
    assert 0.0 <= t_fake.min() and t_fake.max() <= 0.3


def test_label_flip_probability():
    torch.manual_seed(0)
    loss = AdversarialLoss("minimax", label_flip=0.25)
    pred = torch.zeros(4000, 1, 2, 2)
    t_real, t_fake = loss._d_targets(pred, pred)
    flipped = (t_real[:, 0, 0, 0] == 0).float()
    assert flipped.mean().item() == pytest.approx(0.25, abs=0.03)
    assert torch.equal(t_fake[:, 0, 0, 0], flipped)  # a flip swaps both targets of that sample


def test_label_tricks_rejected_for_wasserstein():
    with pytest.raises(ValueError, match="target-based"):
        AdversarialLoss("wgan", label_smoothing=0.1)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        AdversarialLoss("bogus")


def test_gradient_penalty_of_linear_critic():
    critic = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))  # |grad| = 5 everywhere
    real, fake = torch.randn(8, 4), torch.randn(8, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(16.0)
    assert AdversarialLoss("wgan-gp", gp_weight=10).penalty(critic, real, fake).item() == pytest.approx(160.0)
    assert AdversarialLoss("lsgan").penalty(critic, real, fake) is None


def test_weight_clipping_only_for_wgan():
    net = nn.Linear(3, 3)
    with torch.no_grad():
        net.weight.fill_(1.0)
    AdversarialLoss("hinge").clip_(net)
    assert net.weight.max().item() == 1.0
    AdversarialLoss("wgan", clip_value=0.01).clip_(net)
    assert net.weight.abs().max().item() == pytest.approx(0.01)
