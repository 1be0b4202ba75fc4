import pytest
import torch
from torch import nn

from translate.nn import (NLayerDiscriminator, NoiseDropout, PixelDiscriminator, ResnetGenerator, UnetGenerator,
                          count_parameters, init_weights, set_noise_mode, unet_depth_for)


def test_reference_parameter_counts():
    assert count_parameters(ResnetGenerator(3, 3, n_blocks=9)) == 11_378_179
    assert count_parameters(NLayerDiscriminator(3, n_layers=3)) == 2_764_737


def test_resnet6_is_smaller_and_batchnorm_drops_conv_bias():
    assert count_parameters(ResnetGenerator(n_blocks=6)) < count_parameters(ResnetGenerator(n_blocks=9))
    bn = ResnetGenerator(norm="batch", n_blocks=1, ngf=8)
    convs = [m for m in bn.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].bias is None and convs[-1].bias is not None  # final conv has no norm after it


@pytest.mark.parametrize("size", [32, 48, 64])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resnet_shapes(size, upsample):
    g = ResnetGenerator(3, 3, ngf=8, n_blocks=2, upsample=upsample)
    y = g(torch.randn(2, 3, size, size))
    assert y.shape == (2, 3, size, size) and y.abs().max() <= 1.0


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_unet_shapes_and_depth(size, upsample):
    depth = unet_depth_for(size)
    g = UnetGenerator(3, 2, depth=depth, ngf=4, upsample=upsample)
    assert g(torch.randn(2, 3, size, size)).shape == (2, 2, size, size)
    n_noise = sum(isinstance(m, NoiseDropout) for m in g.modules())
    assert n_noise == max(0, depth - 5)  # only the inner 8*ngf decoder blocks carry noise


def test_unet_256_has_three_noise_layers():
    assert unet_depth_for(256) == 8
    g = UnetGenerator(depth=8, ngf=4)
    assert sum(isinstance(m, NoiseDropout) for m in g.modules()) == 3
    with pytest.raises(ValueError):
        unet_depth_for(100)


@pytest.mark.parametrize("n_layers,out", [(1, 30), (3, 6)])
def test_patchgan_output_map(n_layers, out):
    d = NLayerDiscriminator(6, ndf=8, n_layers=n_layers)
    assert d(torch.randn(2, 6, 64, 64)).shape == (2, 1, out, out)


def test_pixel_discriminator_is_per_pixel():
    d = PixelDiscriminator(3, ndf=8, norm="none")
    x = torch.randn(1, 3, 16, 16)
    y = d(x)
    assert y.shape == (1, 1, 16, 16)
    x2 = x.clone()
    x2[..., 0, 0] += 5
    changed = (d(x2) != y)[0, 0]
    assert changed[0, 0] and changed.sum() == 1


def test_noise_dropout_stays_active_in_eval():
    layer = NoiseDropout(0.5).eval()
    x = torch.ones(1, 64, 8, 8)
    a, b = layer(x), layer(x)
    assert not torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 2.0}


def test_noise_dropout_fixed_and_off_modes():
    g = UnetGenerator(depth=6, ngf=4).eval()
    x = torch.randn(1, 3, 64, 64)
    assert not torch.equal(g(x), g(x))  # sampling: outputs vary
    set_noise_mode(g, "fixed")
    assert torch.equal(g(x), g(x))
    set_noise_mode(g, "off")
    y = g(x)
    assert torch.equal(y, g(x))
    set_noise_mode(g, "fixed")
    assert not torch.equal(y, g(x))
    with pytest.raises(ValueError):
        NoiseDropout(0.5, mode="sometimes")


@pytest.mark.parametrize("kind", ["normal", "xavier", "kaiming", "orthogonal"])
def test_init_kinds(kind):
    torch.manual_seed(0)
    net = init_weights(NLayerDiscriminator(3, ndf=8, norm="batch"), kind, 0.02)
    conv = net.model[0]
    assert torch.all(conv.bias == 0)
    if kind == "normal":
        assert conv.weight.std().item() == pytest.approx(0.02, rel=0.2)
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError):
        init_weights(net, "uniformish")


@pytest.mark.parametrize("shape", [(2, 8, 10, 14), (1, 5, 9, 7), (1, 16, 34, 34)])
def test_winograd_matches_direct_convolution(shape):
    from torch.nn import functional as F

    from translate.nn import winograd_conv3x3

    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = (torch.randn(6, shape[1], 3, 3) * 0.1).requires_grad_()
    b = torch.randn(6, requires_grad=True)
    y_ref, y = F.conv2d(x, w, b), winograd_conv3x3(x, w, b)
    assert y.shape == y_ref.shape
    gy = torch.randn_like(y)
    pairs = [(y, y_ref), *zip(torch.autograd.grad(y, [x, w, b], gy), torch.autograd.grad(y_ref, [x, w, b], gy))]
    for got, ref in pairs:  # float rounding only: differences far below the values' scale
        assert (got - ref).abs().max() <= 2e-5 * ref.abs().max()


def test_winograd_layer_is_a_plain_conv_outside_cpu_fp32():
    from translate.nn import WinogradConv2d, set_winograd

    conv = WinogradConv2d(4, 4)
    assert set(conv.state_dict()) == set(nn.Conv2d(4, 4, 3).state_dict())
    x = torch.randn(1, 4, 42, 42)  # 10 x 10 output tiles: enough to pay
    assert conv._use_winograd(x)
    assert not conv._use_winograd(torch.randn(1, 4, 18, 18))  # 16 tiles: oneDNN is faster
    traced = torch.jit.trace(conv, x)  # export paths see an ordinary convolution
    assert "conv" in str(traced.graph).lower() and "bmm" not in str(traced.graph)
    set_winograd(conv, False)
    assert not conv._use_winograd(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        set_winograd(conv, True)
        assert not conv._use_winograd(x)


def test_hash_mask_is_a_fair_coin_per_position_and_seed():
    from translate.nn.layers import hash_keep_mask

    x = torch.zeros(4, 64, 32, 48)
    keep = hash_keep_mask(x, torch.tensor([0, 1, 2, 12345]), 0.5)
    assert keep.float().mean().item() == pytest.approx(0.5, abs=0.01)
    for i in range(1, 4):  # seeds give unrelated masks
        assert (keep[0] == keep[i]).float().mean().item() == pytest.approx(0.5, abs=0.02)
    k = keep.float() * 2 - 1  # no structure between neighbours in any direction
    for shifted in (k[:, 1:] * k[:, :-1], k[:, :, 1:] * k[:, :, :-1], k[..., 1:] * k[..., :-1]):
        assert abs(shifted.mean().item()) < 0.02
    assert hash_keep_mask(x, torch.tensor([7] * 4), 0.2).float().mean().item() == pytest.approx(0.8, abs=0.01)
    # a function of position: a crop of the image sees the same mask as the full image there
    assert torch.equal(hash_keep_mask(x[:1, :, :16, :20], torch.tensor([1]), 0.5), keep[1:2, :, :16, :20])


def test_instance_norm_gradients_with_channels_last_batches_of_one():
    """torch's instance_norm backward is wrong for a batch of one with a channels_last incoming
    gradient (torch 2.14.1, CPU); ours matches the NCHW result and keeps the memory format."""
    from translate.nn.layers import InstanceNorm2d

    torch.manual_seed(0)
    norm = InstanceNorm2d(8)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    grad = torch.randn(1, 8, 6, 6)
    expected = torch.autograd.grad(torch.nn.functional.instance_norm(x), x, grad)[0]
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = norm(xc)
    assert y.is_contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(y, xc, grad.contiguous(memory_format=torch.channels_last))[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, torch.nn.functional.instance_norm(x), rtol=1e-5, atol=1e-5)
