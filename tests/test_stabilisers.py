"""The discriminator's small-data stabilisers (spectral norm, R1, differentiable and adaptive
augmentation, LeCam), the conditional generator's options against AC-GAN's collapse, and the
within-class variety metric (docs/stabilisers.md)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from conftest import resumed_equals_whole
from translate.engine.augment import AdaptiveAugment, augment, parse_policy
from translate.engine.regularisers import LeCam, r1_penalty
from translate.models.base import GANModel
from translate.nn.spectral import fold_spectral_norm, has_spectral_norm, spectral_norm

TINY = {"ngf": 8, "ndf": 8, "size": 32, "workers": 0, "log_every": 1, "sample_every": 100, "checkpoint_every": 1,
        "n_samples": 2, "synthetic_count": 8}
EVERY = {"spectral_norm": True, "spectral_norm_g": True, "r1_gamma": 1.0, "r1_every": 2,
         "d_augment": "color,translation,cutout", "d_augment_p": 0.5, "ada_target": 0.6, "ada_interval": 2,
         "ada_steps": 8,
         "lecam_weight": 0.1}


# --- the generators' moving average ---------------------------------------------------------------
def test_the_moving_average_of_a_short_run_forgets_the_random_start():
    """ema=0.999 over 300 steps: a plain average would still hold 74 % of the initial weights; the
    warmed-up decay holds none of them, and later steps move by exactly 1 - decay."""
    from translate.engine.ema import EMA

    live = nn.ModuleDict({"G": nn.Linear(4, 4)})
    ema = EMA(live, 0.999)
    start = ema.model["G"].weight.clone()
    with torch.no_grad():
        live["G"].weight.add_(1.0)
    for step in range(300):
        ema.update(live, step)
    assert torch.allclose(ema.model["G"].weight, live["G"].weight, atol=1e-6)
    with torch.no_grad():
        live["G"].weight.copy_(start)
    before = ema.model["G"].weight.clone()
    ema.update(live, 100_000)
    assert torch.allclose(ema.model["G"].weight, before + 0.001 * (start - before), atol=1e-6)


# --- spectral normalisation --------------------------------------------------------------------
def largest_singular_value(m: nn.Module) -> float:
    w = m.weight.detach()
    if isinstance(m, nn.ConvTranspose2d):
        w = w.transpose(0, 1)
    return float(torch.linalg.matrix_norm(w.flatten(1), ord=2))


def test_spectral_norm_brings_every_layer_to_a_largest_singular_value_of_one():
    from translate.nn.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    d = spectral_norm(DCGANDiscriminator(16, 1, ndf=8, n_classes=3, norm="none"))
    g = spectral_norm(DCGANGenerator(16, 16, 1, ngf=8))
    layers = [m for net in (d, g) for m in net.modules()
              if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding))]
    assert len(layers) >= 7 and all(has_spectral_norm(m) for m in layers)
    with torch.no_grad():
        raw = [float(torch.linalg.matrix_norm(m.parametrizations.weight.original.flatten(1), ord=2)) for m in layers]
        assert max(abs(s - 1) for s in raw) > 0.5  # the stored weights are far from norm 1
        for m in layers:  # scale the stored weights: the normalised ones must not care
            m.parametrizations.weight.original.mul_(7.0)
        for _ in range(5):  # a few training-mode forwards: five power-iteration steps per layer
            d(torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 0]))
            g(torch.randn(4, 16))
    assert all(abs(largest_singular_value(m) - 1) < 0.05 for m in layers), [largest_singular_value(m) for m in layers]


def test_folding_keeps_what_the_network_computes_and_leaves_plain_weights():
    torch.manual_seed(0)
    net = spectral_norm(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 3, 4, 2, 1)))
    for _ in range(3):
        net(torch.randn(2, 3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        before = net.eval()(x)
        after = fold_spectral_norm(net)(x)
    assert torch.allclose(before, after, atol=1e-6)
    assert not has_spectral_norm(net) and set(net.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


# --- R1 ----------------------------------------------------------------------------------------
@dataclass
class _Cfg:
    gan_loss: str = "wgan"


class _Quadratic(nn.Module):
    """D(x) = sum a * x^2 over each image: its input gradient is 2 a x, by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return (self.a * x * x).flatten(1).sum(1)


class _Tiny(GANModel):
    def __init__(self, train, gan_loss: str = "wgan") -> None:
        super().__init__(_Cfg(gan_loss), train)
        self.discriminators = nn.ModuleDict({"D": _Quadratic()})
        self.generators = nn.ModuleDict({"G": nn.Identity()})


def test_r1_matches_a_hand_computed_penalty_on_its_steps_only():
    from translate.config import TrainConfig

    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    plain = _Tiny(TrainConfig())
    r1 = _Tiny(TrainConfig(r1_gamma=2.0, r1_every=4))
    assert r1.needs_double_backward and not plain.needs_double_backward
    base = plain.d_score(plain.discriminators["D"], real, fake)  # wgan: D(fake) - D(real)
    hand = (2 * 0.3 * real).square().flatten(1).sum(1).mean()  # E ||2 a x||^2
    r1.set_schedule(8, 100, None)  # a multiple of r1_every: R1 is due, gamma / 2 x every
    assert torch.allclose(r1.d_score(r1.discriminators["D"], real, fake), base + 2.0 / 2 * 4 * hand)
    r1.set_schedule(9, 100, None)
    assert torch.allclose(r1.d_score(r1.discriminators["D"], real, fake), base)
    # the penalty back-propagates into D's weights (the double backward): d/da of E||2 a x||^2 = 8 a E||x||^2
    r1.set_schedule(0, 100, None)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(r1_penalty(r1.discriminators["D"](x), x), r1.discriminators["D"].a)
    assert torch.allclose(grad, 8 * 0.3 * real.square().flatten(1).sum(1).mean())


# --- augmentation ------------------------------------------------------------------------------
def test_diffaugment_treats_both_halves_of_a_pair_alike_and_is_differentiable():
    assert parse_policy("cutout, color") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,zoom")
    policy = parse_policy("color,translation,cutout")
    a, b = torch.rand(6, 3, 16, 16) * 2 - 1, torch.rand(6, 3, 16, 16) * 2 - 1
    torch.manual_seed(1)
    same = augment(torch.cat([a, a], 1), policy)
    assert torch.equal(same[:, :3], same[:, 3:]) and not torch.allclose(same[:, :3], a)
    torch.manual_seed(1)
    pair = augment(torch.cat([a, b], 1), policy)
    assert torch.equal(pair[:, :3], same[:, :3])  # one set of parameters per pair; halves never mix
    assert (pair == 0).flatten(1).all(1).sum() == 0 and ((pair[:, :3] == 0) & (pair[:, 3:] == 0)).any()  # one cutout
    torch.manual_seed(1)
    assert torch.allclose(augment(a, policy, p=0.0), a, atol=1e-6)  # probability 0: the identity

    # the generator's gradient passes through the augmentation into its weights
    g = nn.Conv2d(3, 3, 3, padding=1)
    d = nn.Sequential(nn.Conv2d(6, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, padding=1))
    src = torch.rand(2, 3, 16, 16) * 2 - 1
    d(augment(torch.cat([src, g(src)], 1), policy)).mean().backward()
    assert g.weight.grad is not None and g.weight.grad.abs().sum() > 0 and torch.isfinite(g.weight.grad).all()


def test_a_pix2pix_generator_step_reaches_the_generator_through_the_augmentation():
    from translate.models import build_model
    from translate.train import build_config

    cfg = build_config(dict(TINY, model="pix2pix", d_augment="color,translation,cutout"))
    model = build_model(cfg)
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    model.discriminators.requires_grad_(False)
    model.generator_loss(batch, lambda loss: loss.backward())
    grads = [p.grad for p in model.generators.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def _train_d(model: GANModel, steps: int, fixed: bool) -> float:
    """Train ``model``'s D against fakes: a fixed batch it can memorise, or fresh draws of the
    real images' own distribution it cannot tell apart. Returns the adaptive probability."""
    d = model.discriminators["D"]
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.rand(8, 6, 16, 16, generator=gen) * 2 - 1, torch.rand(8, 6, 16, 16, generator=gen) * 2 - 1
    for step in range(steps):
        model.set_schedule(step, steps, None)
        if not fixed:
            real, fake = torch.rand(8, 6, 16, 16, generator=gen) * 2 - 1, torch.rand(8, 6, 16, 16, generator=gen) * 2 - 1
        opt.zero_grad()
        model.d_score(d, real, fake).backward()
        opt.step()
    return float(model.stabilisers.augments["D"].p)


def test_adaptive_probability_rises_when_d_overfits_and_falls_when_it_cannot():
    from translate.config import TrainConfig

    torch.manual_seed(0)

    class Paired(_Tiny):
        def __init__(self, train):
            super().__init__(train, "hinge")
            self.discriminators = nn.ModuleDict({"D": nn.Sequential(
                nn.Conv2d(6, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 3, padding=1))})

    opts = dict(d_augment="translation,cutout", ada_target=0.6, ada_interval=2, ada_steps=20)
    overfit = Paired(TrainConfig(**opts))
    assert _train_d(overfit, 60, fixed=True) >= 0.5  # a memorised batch: sign(D(real)) -> 1, p climbs
    guessing = Paired(TrainConfig(**opts))
    guessing.stabilisers.augmenter("D").p = torch.tensor(0.8)
    assert _train_d(guessing, 60, fixed=False) <= 0.3  # D cannot be sure of anything: p falls

    # the rule itself: up by interval / speed_steps when E[sign] passes the target, down otherwise
    aug = AdaptiveAugment(("cutout",), target=0.6, interval=2, speed_steps=10)
    aug.observe(torch.tensor([1.0, 2.0, 3.0, -1.0, 4.0]))  # E[sign] = 0.6 ... just not above
    aug.adjust(1)
    assert float(aug.p) == 0.0 and float(aug.count) == 5  # not an adjustment step: the signal is kept
    aug.observe(torch.ones(5))
    aug.adjust(2)
    assert float(aug.p) == pytest.approx(0.2) and float(aug.count) == 0


def test_lecam_pulls_real_scores_towards_the_fake_anchor_and_back():
    lecam = LeCam(decay=0.5)
    first = lecam(torch.tensor([2.0, 2.0]), torch.tensor([-2.0, -2.0]))  # anchors start at this batch
    assert float(first) == pytest.approx(16 + 16)  # relu(2 - -2)^2 + relu(2 - -2)^2
    assert float(lecam.real) == 2.0 and float(lecam.fake) == -2.0
    lecam(torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(lecam.real) == 1.0 and float(lecam.fake) == -1.0  # decay 0.5 towards the new means
    assert float(lecam(torch.tensor([-5.0]), torch.tensor([5.0]))) == 0.0  # no penalty on the safe side


# --- exact resume, export ------------------------------------------------------------------------
def test_every_stabiliser_resumes_exactly_and_exports_plain_weights(tmp_path):
    """pix2pix with all of them: the power-iteration vectors, the augmentation probability and its
    signal, and the LeCam anchors are in the checkpoint; stopped at step 3 and resumed, step 6
    equals an uninterrupted run's; the exported generator holds plain weights."""
    import json

    from translate.export import export_generator
    from translate.run import load_generator

    w = resumed_equals_whole(tmp_path, dict(TINY, model="pix2pix", steps=6, gan_loss="lsgan", ema=0.9, **EVERY))
    assert any(k.endswith("parametrizations.weight.0._u") and k.startswith("discriminators.") for k in w)
    assert any(k.endswith("parametrizations.weight.0._v") and k.startswith("ema.G.") for k in w)
    assert {"aug.D.p", "aug.D.signs", "aug.D.count", "lecam.D.real", "lecam.D.fake"} <= set(w)
    assert float(w["aug.D.p"]) != 0.5  # it moved from its start (resumed across an adjustment with its signal)
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["aug_p/D"] for r in rows][-1] == pytest.approx(float(w["aug.D.p"]))

    g = load_generator(tmp_path / "whole")
    assert not has_spectral_norm(g.net)
    result = export_generator(tmp_path / "whole", out=tmp_path / "g.onnx")
    assert result.max_abs_diff < 1e-4
    graph = onnx.load(str(tmp_path / "g.onnx")).graph
    assert not {n.op_type for n in graph.node} & {"MatMul", "Div", "ReduceL2", "Gemm"}
    assert not any("parametrizations" in i.name for i in graph.initializer)


def test_cgan_with_the_conditional_options_and_stabilisers_resumes_exactly(tmp_path):
    from test_generative import glyphs

    x, y = glyphs()
    np.savez(tmp_path / "glyphs.npz", x=x, y=y)
    opts = {"model": "cgan", "data": str(tmp_path / "glyphs.npz"), "steps": 6, "size": 16, "batch_size": 10,
            "ngf": 8, "ndf": 8, "workers": 0, "checkpoint_every": 1, "sample_every": 100, "ema": 0.9,
            "aux_classifier": 1.0, "twin_classifier": True, "class_minibatch_std": True, "aux_classifier_end": 0.1,
            "minibatch_std": 2, **EVERY}
    w = resumed_equals_whole(tmp_path, opts)
    assert "discriminators.D.twin.parametrizations.weight.original" in w
    assert "discriminators.D.embed.parametrizations.weight.0._u" in w  # the projection, normalised too


def test_cgan_options_are_checked():
    from translate.errors import ConfigError
    from translate.train import build_config

    with pytest.raises(ConfigError, match="twin_classifier"):
        build_config({"model": "cgan", "data": "x.npz", "twin_classifier": True})
    with pytest.raises(ConfigError, match="d_augment"):
        build_config({"model": "pix2pix", "d_augment": "color,zoom"})
    with pytest.raises(ConfigError, match="give d_augment too"):
        build_config({"model": "pix2pix", "ada_target": 0.6})
    with pytest.raises(ConfigError, match="sign of D"):
        build_config({"model": "cyclegan", "gan_loss": "wgan", "d_augment": "color", "ada_target": 0.6})


def test_class_minibatch_std_sees_a_class_drawn_alike():
    from translate.nn.layers import ClassMinibatchStdDev

    layer = ClassMinibatchStdDev(3)
    x = torch.randn(6, 4, 2, 2)
    label = torch.tensor([0, 0, 1, 1, 2, 2])
    x[2:4] = x[2]  # class 1: both images the same
    out = layer(x, label)
    assert out.shape == (6, 1, 2, 2)
    per = out[:, 0, 0, 0]
    assert per[2] == per[3] and float(per[2]) < 1e-3 < float(per[0])
    assert float(layer(x[:3], label[:3])[2, 0, 0, 0]) == 0.0  # alone in its class: nothing to compare


def test_tac_generator_term_subtracts_the_twin_classifiers_loss():
    from translate.config import CGANConfig, TrainConfig
    from translate.models.conditional import CGAN

    torch.manual_seed(0)
    model = CGAN(CGANConfig(channels=1, n_classes=3, ngf=8, ndf=8, aux_classifier=0.5, twin_classifier=True),
                 TrainConfig(model="cgan", size=16))
    d = model.discriminators["D"]
    fake, yf = torch.rand(4, 1, 16, 16) * 2 - 1, torch.tensor([0, 1, 2, 0])
    g = model.g_score(d, fake, yf)
    ce = nn.functional.cross_entropy
    adv = model.adv.g_loss(d(fake, yf))
    assert torch.allclose(g, adv + 0.5 * (ce(d.class_logits, yf) - ce(d.twin_logits, yf)))
    model.set_schedule(50, 100, None)
    assert model.aux_weight_g == 0.5  # constant without aux_classifier_end
    model.cfg.aux_classifier_end = 0.1
    model.set_schedule(50, 100, None)
    assert model.aux_weight_g == pytest.approx(0.3)


# --- the variety metric --------------------------------------------------------------------------
def test_variety_of_real_digits_is_near_one_and_of_a_collapsed_generator_near_zero():
    from test_generative import glyphs

    from translate.classifier import train_classifier
    from translate.evaluate import class_scores

    x, y = glyphs(n_per_class=30, size=16, seed=0)
    net = train_classifier(x[..., None], y, epochs=2)
    held, held_y = glyphs(n_per_class=30, size=16, seed=1)
    other, other_y = glyphs(n_per_class=30, size=16, seed=2)
    classes = [str(i) for i in range(10)]
    real = class_scores(net, other[..., None], other_y, held[..., None], held_y, classes)
    assert 0.85 < real["class_variety"] < 1.15 and set(real["per_class_variety"]) == set(classes)
    collapsed = np.stack([other[other_y == c][0] for c in other_y])  # one image per class, repeated
    bad = class_scores(net, collapsed[..., None], other_y, held[..., None], held_y, classes)
    assert bad["class_variety"] < 0.01
    nearly = np.clip(collapsed.astype(int) + np.random.default_rng(0).integers(-2, 3, collapsed.shape), 0, 255)
    assert class_scores(net, nearly.astype(np.uint8)[..., None], other_y, held[..., None], held_y,
                        classes)["class_variety"] < 0.2


# --- recipes -------------------------------------------------------------------------------------
SMALL_DATA = ("color,translation,cutout", 0.6, 1.0, 16)  # d_augment, ada_target, r1_gamma, r1_every


def test_recipe_small_data_sets_its_stabilisers_for_every_translator_under_the_users_options(
        paired_dir, unpaired_dir):
    from translate.errors import ConfigError
    from translate.train import build_config

    for model, data in (("pix2pix", paired_dir), ("cyclegan", unpaired_dir), ("cut", unpaired_dir),
                        ("fastcut", unpaired_dir)):
        t = build_config({"model": model, "data": str(data), "recipe": "small-data"}).train
        assert (t.d_augment, t.ada_target, t.r1_gamma, t.r1_every) == SMALL_DATA and t.recipe == "small-data"
        assert not t.spectral_norm and t.d_augment_p is None  # the adaptive probability starts at 0
    mine = build_config({"model": "pix2pix", "data": str(paired_dir), "recipe": "small-data", "r1_gamma": 0.1,
                         "d_augment": "translation", "ada_target": 0.8}).train
    assert (mine.d_augment, mine.ada_target, mine.r1_gamma, mine.r1_every) == ("translation", 0.8, 0.1, 16)  # yours win
    # a critic has no sign to adapt by: the augmentation stays, at a fixed probability
    critic = build_config({"model": "cyclegan", "data": str(unpaired_dir), "recipe": "small-data",
                           "gan_loss": "wgan-gp"}).train
    assert (critic.d_augment, critic.ada_target, critic.r1_gamma) == ("color,translation,cutout", 0.0, 1.0)
    with pytest.raises(ConfigError, match="dcgan has no recipe 'small-data'; it has stable"):
        build_config({"model": "dcgan", "data": str(paired_dir / "A"), "recipe": "small-data"})


def test_recipe_small_data_trains_and_data_info_lists_the_recipes(tmp_path):
    import json

    from click.testing import CliRunner

    from translate.cli import cli

    run = CliRunner().invoke(cli, ["train", "--model", "pix2pix", "--recipe", "small-data", "--size", "32", "--steps",
                                   "4", "--workers", "0", "--set", "ngf=8", "--set", "ndf=8", "--set",
                                   "synthetic_count=4", "--set", "log_every=1", "--set", "n_samples=2",
                                   "--run-dir", str(tmp_path / "small")])
    assert run.exit_code == 0, run.output
    t = json.loads((tmp_path / "small" / "config.json").read_text())["train"]
    assert (t["d_augment"], t["ada_target"], t["r1_gamma"], t["r1_every"], t["recipe"]) == (*SMALL_DATA, "small-data")
    rows = [json.loads(line) for line in (tmp_path / "small" / "metrics.jsonl").read_text().splitlines()]
    assert "aug_p/D" in rows[-1]  # the adaptive probability is logged
    info = CliRunner().invoke(cli, ["data", "info", "facades"])
    assert info.exit_code == 0 and "--recipe (pix2pix)  stable, hd, small-data" in info.output


def test_feature_matching_sees_real_and_fake_pairs_through_the_same_augmentation():
    """pix2pixHD's feature matching with DiffAugment and instance noise on: a generator that draws
    the target exactly matches D's features exactly (the real pair gets the fake's transforms)."""
    from translate.models import build_model
    from translate.train import build_config

    torch.manual_seed(0)
    cfg = build_config({**TINY, "model": "pix2pix", "size": 64, "num_D": 2, "lambda_feat": 10.0, "lambda_l1": 0,
                        "d_augment": "color,translation,cutout", "instance_noise": 0.1})
    model = build_model(cfg)
    batch = {"A": torch.rand(2, 3, 64, 64) * 2 - 1, "B": torch.rand(2, 3, 64, 64) * 2 - 1}
    drawn = {"image": batch["B"]}

    class Draws(nn.Module):
        def forward(self, x):
            return drawn["image"].clone().requires_grad_(True)

    model.generators["G"] = Draws()
    logs, _ = model.generator_loss(batch, lambda loss: None)
    assert logs["loss_G_feat"].item() == pytest.approx(0.0, abs=1e-6)
    drawn["image"] = batch["B"].flip(-1)  # a generator that misses: D's features differ
    logs, _ = model.generator_loss(batch, lambda loss: None)
    assert logs["loss_G_feat"].item() > 0.01
