import pytest
import torch

from translate.engine.noise import InstanceNoise
from translate.engine.replay import ReplayBuffer


def batch(value, n=1):
    return torch.full((n, 3, 2, 2), float(value))


def test_disabled_buffer_returns_input():
    buf = ReplayBuffer(0)
    x = batch(1, 4)
    assert buf(x) is x and len(buf) == 0


def test_fills_then_swaps_with_probability():
    buf = ReplayBuffer(capacity=5, p=0.5, seed=0)
    for i in range(5):  # while filling, every fake is stored and shown as is
        assert torch.equal(buf(batch(i)), batch(i))
    assert len(buf) == 5
    outs = [buf(batch(100 + i))[0, 0, 0, 0].item() for i in range(400)]
    old = sum(v < 100 + i for i, v in enumerate(outs))  # an older image came back
    assert 150 < old < 250  # about half
    assert len(buf) == 5


def test_returned_images_are_past_fakes():
    buf = ReplayBuffer(capacity=3, p=1.0, seed=1)
    buf(torch.cat([batch(1), batch(2), batch(3)]))
    out = buf(batch(9))
    assert out[0, 0, 0, 0].item() in (1.0, 2.0, 3.0)
    assert 9.0 in buf.images[:, 0, 0, 0].tolist()


def test_state_round_trip_is_exact():
    a = ReplayBuffer(capacity=4, p=0.5, seed=3)
    for i in range(6):
        a(batch(i, 2))
    b = ReplayBuffer(capacity=4, p=0.5, seed=99)
    b.load_state_dict(a.state_dict())
    for i in range(10):
        assert torch.equal(a(batch(50 + i, 2)), b(batch(50 + i, 2)))


def test_instance_noise_anneals_to_zero():
    noise = InstanceNoise(0.2, anneal_steps=100)
    noise.set_step(0)
    x = torch.zeros(10000)
    assert noise(x).std().item() == pytest.approx(0.2, rel=0.05)
    noise.set_step(50)
    assert noise.sigma == pytest.approx(0.1)
    noise.set_step(100)
    assert torch.equal(noise(x), x)
