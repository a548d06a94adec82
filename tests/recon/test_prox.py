"""Proximal operators, finite differences and the wavelet transform against closed forms."""
import math

import pytest
import torch

from bayesmri.physics.linop import cdot
from bayesmri.recon.prox import (
    WaveletTransform,
    finite_difference,
    finite_difference_adjoint,
    group_soft_threshold,
    project_l2_ball,
    soft_threshold,
    tv_norm,
)


def _crandn(*shape, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def test_soft_threshold_closed_form():
    # prox of t|.| on C: keep the phase, shrink the magnitude by t, zero below t.
    x = torch.tensor([3 + 4j, 0.3 - 0.4j, -2.0 + 0j, 0j, 1j], dtype=torch.complex128)
    out = soft_threshold(x, 1.0)
    expected = torch.tensor([3 * 0.8 + 4j * 0.8, 0, -1.0, 0, 0], dtype=torch.complex128)
    torch.testing.assert_close(out, expected)
    # real input: the classic sign(x) max(|x| - t, 0)
    xr = torch.linspace(-3, 3, 13, dtype=torch.float64)
    torch.testing.assert_close(soft_threshold(xr, 0.7), torch.sign(xr) * torch.clamp(xr.abs() - 0.7, min=0))


def test_soft_threshold_minimises_prox_objective():
    x = _crandn(500)
    t = 0.6
    p = soft_threshold(x, t)

    def f(z):
        return 0.5 * (z - x).abs() ** 2 + t * z.abs()

    for s in range(5):
        d = _crandn(500, seed=s + 1) * 1e-3
        assert bool((f(p) <= f(p + d) + 1e-12).all())


def test_group_soft_threshold_and_projection():
    g = _crandn(2, 2, 5, 6)
    t = 0.8
    norm = torch.sqrt((g.abs() ** 2).sum(1, keepdim=True))
    shrink = group_soft_threshold(g, t)
    expected = torch.where(norm > t, g * (1 - t / norm), torch.zeros_like(g))
    torch.testing.assert_close(shrink, expected)
    proj = project_l2_ball(g, t)
    assert float(torch.sqrt((proj.abs() ** 2).sum(1)).max()) <= t + 1e-12
    # Moreau: prox of t||.||_2 plus projection onto the t-ball gives back the input.
    torch.testing.assert_close(shrink + proj, g)


def test_finite_difference_adjoint_and_tv_of_step():
    x = _crandn(2, 7, 9)
    g = _crandn(2, 2, 7, 9, seed=1)
    lhs = cdot(finite_difference(x), g, batch_dims=0)
    rhs = cdot(x, finite_difference_adjoint(g), batch_dims=0)
    assert abs(complex(lhs - rhs)) < 1e-12 * float(x.abs().sum() * g.abs().sum())
    # A vertical step of height (1+1j) across an 8-wide image: TV = 8 |1+1j|.
    step = torch.zeros(1, 6, 8, dtype=torch.complex128)
    step[:, 3:] = 1 + 1j
    assert float(tv_norm(step)) == pytest.approx(8 * math.sqrt(2))
    # A constant image has no variation.
    assert float(tv_norm(torch.full((1, 5, 5), 2 - 1j, dtype=torch.complex128))) == 0.0


@pytest.mark.parametrize("wavelet,shape", [("db4", (64, 64)), ("haar", (32, 48)), ("db2", (64, 32))])
def test_wavelet_is_orthogonal(wavelet, shape):
    W = WaveletTransform(shape, wavelet)
    x = _crandn(2, *shape, dtype=torch.complex64)
    c = W.forward(x)
    energy = sum(float((d.abs() ** 2).sum()) for d in [c[0]] + [d for det in c[1:] for d in det])
    assert energy == pytest.approx(float((x.abs() ** 2).sum()), rel=1e-5)
    assert float((W.inverse(c) - x).abs().max()) < 1e-4
    # Complex-linear: W(i x) = i W(x).
    ci = W.forward(1j * x)
    assert float((ci[0] - 1j * c[0]).abs().max()) < 1e-5


def test_wavelet_prox_is_the_prox():
    """``W^T soft(W x)`` minimises ``0.5 ||z - x||^2 + t ||detail(W z)||_1`` (coarsest band unpenalised)."""
    W = WaveletTransform((32, 32), "db4")
    x = _crandn(1, 32, 32, dtype=torch.complex64) * 3
    t = 1.0
    p = W.prox_l1(x, t)

    def f(z):
        return float(0.5 * ((z - x).abs() ** 2).sum() + t * W.detail_l1(z).sum())

    fp = f(p)
    for s in range(6):
        d = _crandn(1, 32, 32, seed=10 + s, dtype=torch.complex64) * 1e-2
        assert fp <= f(p + d) + 1e-4
    # The approximation band passes unchanged; details are shrunk by exactly t in magnitude.
    cx, cp = W.forward(x), W.forward(p)
    assert float((cx[0] - cp[0]).abs().max()) < 1e-4
    dx, dp = cx[-1][0], cp[-1][0]
    torch.testing.assert_close(dp.abs(), torch.clamp(dx.abs() - t, min=0), atol=1e-4, rtol=0)


def test_wavelet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not orthogonal"):
        WaveletTransform((32, 32), "bior2.2")
    with pytest.raises(ValueError, match="PyWavelets"):
        WaveletTransform((32, 32), "nope")
    with pytest.raises(ValueError, match="too deep"):
        WaveletTransform((32, 32), "db4", level=5)
    with pytest.raises(TypeError, match="complex"):
        WaveletTransform((32, 32), "db4").forward(torch.zeros(1, 32, 32))


@pytest.mark.parametrize("wavelet,shape", [("db4", (64, 64)), ("haar", (32, 48)), ("db2", (64, 32)), ("sym8", (128, 96))])
def test_wavelet_coefficients_are_ptwts(wavelet, shape):
    """The dense per-level products give ptwt.MatrixWavedec2's coefficients (list and packed layout)."""
    import warnings

    import ptwt

    W = WaveletTransform(shape, wavelet)
    g = torch.Generator().manual_seed(0)
    x = torch.complex(torch.randn(2, *shape, generator=g, dtype=torch.float64),
                      torch.randn(2, *shape, generator=g, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ptwt.MatrixWavedec2(wavelet, level=W.level)(torch.cat([x.real, x.imag], 0))
    ours = W.forward(x)
    assert len(ours) == len(ref) == W.level + 1
    torch.testing.assert_close(ours[0], torch.complex(ref[0][:2], ref[0][2:]), rtol=0, atol=1e-12)
    for det_o, det_r in zip(ours[1:], ref[1:]):
        for d_o, d_r in zip(det_o, det_r):
            torch.testing.assert_close(d_o, torch.complex(d_r[:2], d_r[2:]), rtol=0, atol=1e-12)
    torch.testing.assert_close(W.inverse(ours), x, rtol=0, atol=1e-10)
    packed = W.forward_packed(x)
    torch.testing.assert_close(W.inverse_packed(packed), x, rtol=0, atol=1e-10)
    # the packed layout holds the same numbers: equal l1 norms of the details
    torch.testing.assert_close(W.detail_l1(x), sum(d.abs().flatten(1).sum(-1) for det in ours[1:] for d in det))
