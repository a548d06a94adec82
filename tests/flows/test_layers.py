import pytest
import torch

from bayesmri.flows.layers import (ActNorm, AdditiveCoupling, AffineCoupling, FixedOrthogonal1x1,
                                   InvertibleSequential, Squeeze, soft_clamp)
from bayesmri.flows.unet import UNet



@pytest.fixture(autouse=True)
def _float64():
    # exact log-determinants need double precision; restore the default for the other test modules
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _randomise(module, scale=0.3, seed=0):
    """Give zero-initialised layers random weights, so that the tests are not of the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return module


def _brute_logdet(layer, x, cond):
    J = torch.autograd.functional.jacobian(lambda v: layer(v.reshape(x.shape), cond)[0].reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(J)[1]


LAYERS = [
    lambda: ActNorm(4),
    lambda: FixedOrthogonal1x1(4, seed=3),
    lambda: Squeeze(),
    lambda: AffineCoupling(4, cond_channels=2, hidden=6, clamp=1.5),
    lambda: AdditiveCoupling(4, cond_channels=2, hidden=6),
    lambda: InvertibleSequential(ActNorm(4), FixedOrthogonal1x1(4), AffineCoupling(4, 2, 6), Squeeze()),
]


@pytest.mark.parametrize("make", LAYERS)
def test_inverse_and_logdet(make):
    torch.manual_seed(0)
    layer = _randomise(make()).eval()
    x = torch.randn(1, 4, 4, 4)
    cond = torch.randn(1, 2, 4, 4)
    y, ld = layer(x, cond)
    assert torch.allclose(layer.inverse(y, cond), x, atol=1e-10)
    assert ld.shape == (1,)
    assert float(ld.detach()) == pytest.approx(float(_brute_logdet(layer, x, cond)), abs=1e-8)


def test_logdet_is_per_sample():
    layer = _randomise(AffineCoupling(4, 0, 6)).eval()
    x = torch.randn(3, 4, 2, 2)
    _, ld = layer(x)
    for b in range(3):
        assert float(ld[b]) == pytest.approx(float(layer(x[b : b + 1])[1]), abs=1e-10)


def test_actnorm_data_init_whitens():
    a = ActNorm(3).train()
    x = torch.randn(8, 3, 5, 5) * torch.tensor([2.0, 0.5, 7.0]).view(1, 3, 1, 1) + 4
    y, _ = a(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-10)
    assert torch.allclose(y.std((0, 2, 3)), torch.ones(3), atol=1e-6)
    assert int(a.initialized) == 1
    # the init happens once: a second batch does not re-fit
    y2, _ = a(x * 3)
    assert not torch.allclose(y2.std((0, 2, 3)), torch.ones(3), atol=1e-2)


def test_orthogonal_is_orthogonal_and_fixed():
    m = FixedOrthogonal1x1(6, seed=1)
    W = m.weight.double()
    assert torch.allclose(W @ W.T, torch.eye(6), atol=1e-6)
    assert not any(True for _ in m.parameters())  # never trained
    assert torch.equal(FixedOrthogonal1x1(6, seed=1).weight, m.weight)


def test_soft_clamp_bounds():
    s = torch.linspace(-10, 10, 101)
    c = soft_clamp(s, 2.0)
    assert float(c.abs().max()) < 2.0
    assert torch.allclose(soft_clamp(torch.tensor([1e-3]), 2.0), torch.tensor([1e-3]), rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError):
        Squeeze()(torch.randn(1, 2, 3, 4))
    with pytest.raises(ValueError):
        AffineCoupling(1)
    with pytest.raises(ValueError):
        UNet(2, 2, chans=0)


def test_unet_shapes_and_features():
    u = UNet(4, 6, chans=4, num_pools=2)
    out, feat = u.forward_features(torch.randn(2, 4, 12, 10))
    assert out.shape == (2, 6, 12, 10) and feat.shape == (2, 4, 12, 10)
    assert UNet(2, 2, 4, 3)(torch.randn(1, 2, 26, 22)).shape == (1, 2, 26, 22)


def test_unet_learns_identity():
    # a property that fails if the skip/decoder wiring is broken: the UNet can fit a 1x1 mapping quickly
    torch.manual_seed(0)
    u = UNet(2, 2, chans=4, num_pools=2).float()
    opt = torch.optim.Adam(u.parameters(), 1e-2)
    x = torch.randn(8, 2, 16, 16, dtype=torch.float32)
    for _ in range(150):
        loss = ((u(x) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1
