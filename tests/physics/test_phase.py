"""Phase estimation and phase-modulated operators (bayesmri.physics.phase)."""
import math

import pytest
import torch

from bayesmri.data.simulate import smooth_phase
from bayesmri.physics import (MultiCoilMRI, PhaseModulated, fit_smooth_phase, legendre_basis, lowres_phase,
                              remove_lowres_phase)


def _object(H=48, W=48):
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    m = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).float() * (1 + 0.3 * torch.cos(6 * xx))
    return m


def test_remove_lowres_phase_puts_a_smooth_phase_object_on_the_real_axis():
    m = _object()
    phi = smooth_phase(m.shape, torch.Generator().manual_seed(0), phase_max=math.pi / 2)
    x = (m * torch.exp(1j * phi)).to(torch.complex64)[None]
    frac_before = float((x.imag ** 2).sum() / (x.abs() ** 2).sum())
    z = remove_lowres_phase(x, width=10)
    frac_after = float((z.imag ** 2).sum() / (z.abs() ** 2).sum())
    assert frac_before > 0.1
    assert frac_after < 0.1 * frac_before
    assert torch.allclose(z.abs(), x.abs(), atol=1e-5)  # demodulation keeps the magnitude


def test_phase_modulated_operator_is_A_diag_p():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(1, 4, 16, 16, dtype=torch.complex64, generator=g)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    mask = (torch.rand(16, generator=g) < 0.5).float()
    op = MultiCoilMRI(maps, mask)
    p = torch.exp(1j * torch.randn(1, 16, 16, generator=g)).to(torch.complex64)
    pm = PhaseModulated(op, p)
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    assert torch.allclose(pm.A(x), op.A(p * x), atol=1e-6)
    y = op.A(x)
    assert torch.allclose(p * pm.A_adjoint(y), op.A_adjoint(y), atol=1e-6)
    assert torch.allclose(pm.normal(x), pm.A_adjoint(pm.A(x)), atol=1e-6)
    # the demodulated image of x is a solution of the modulated problem with the same data
    assert torch.allclose(pm.A(p.conj() * x), y, atol=1e-5)


def test_phase_modulated_rejects_bad_phase():
    op = MultiCoilMRI(torch.ones(1, 2, 8, 8, dtype=torch.complex64) / 2**0.5, torch.ones(8))
    with pytest.raises(ValueError, match="unit modulus"):
        PhaseModulated(op, 2 * torch.ones(1, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="broadcast"):
        PhaseModulated(op, torch.ones(1, 7, 8, dtype=torch.complex64))
    with pytest.raises(TypeError, match="complex"):
        PhaseModulated(op, torch.ones(1, 8, 8))


def test_lowres_phase_is_unit_modulus():
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(lowres_phase(x, 4).abs(), torch.ones(2, 16, 16), atol=1e-5)


def _imag_rms(p, x):
    """rms of ``Im(conj(p) x)``: what a demodulating phase ``p`` leaves on the imaginary axis."""
    return float((p.conj() * x).imag.pow(2).mean().sqrt())


def test_legendre_basis_is_the_total_degree_family_and_orthogonal():
    P = legendre_basis((64, 48), 4)
    assert P.shape == (15, 64, 48)  # (4 + 1)(4 + 2) / 2
    G = torch.einsum("khw,lhw->kl", P, P) / (64 * 48)
    off = G - torch.diag(torch.diagonal(G))
    assert float(off.abs().max()) < 0.05 * float(torch.diagonal(G).min())  # midpoint rule: near-orthogonal
    with pytest.raises(ValueError, match="degree"):
        legendre_basis((8, 8), -1)


def test_fit_smooth_phase_recovers_a_polynomial_phase_exactly_on_the_object():
    # A phase inside the model (total degree <= 8) under a sharp-edged magnitude with an empty background:
    # the weighted Gauss-Newton fit converges to it; the low-resolution phase cannot (it mixes the phase
    # across the object's edge).
    m = _object(64, 64)
    P = legendre_basis((64, 64), 3)
    c = torch.tensor([0.3, 0.8, -0.5, 0.2, 0.4, -0.3, 0.1, 0.2, -0.1, 0.15], dtype=torch.float64)
    phi = torch.einsum("k,khw->hw", c, P)
    x = (m * torch.exp(1j * phi)).to(torch.complex128)[None]
    p = fit_smooth_phase(x, degree=8, iters=3)
    assert p.shape == x.shape and p.dtype == x.dtype
    assert torch.allclose(p.abs(), torch.ones(1, 64, 64, dtype=torch.float64), atol=1e-12)
    inside = m > 0
    err = torch.angle(p[0] * torch.exp(-1j * phi))[inside]
    assert float(err.abs().max()) < 1e-4
    assert _imag_rms(lowres_phase(x, 13), x) > 1e3 * _imag_rms(p, x)


def test_fit_smooth_phase_beats_the_lowres_phase_on_noisy_data_and_is_per_item():
    # A smooth phase outside the polynomial model (the simulator's), complex noise: the fitted phase
    # leaves less of the object on the imaginary axis than the low-resolution phase at any window.
    g = torch.Generator().manual_seed(5)
    m = _object(64, 64)
    clean, noisy = [], []
    for _ in range(2):
        phi = smooth_phase((64, 64), g, phase_max=math.pi / 2)
        clean.append(m * torch.exp(1j * phi))
        noisy.append(clean[-1] + 0.02 * torch.complex(torch.randn(64, 64, generator=g),
                                                     torch.randn(64, 64, generator=g)))
    x, x0 = torch.stack(noisy).to(torch.complex64), torch.stack(clean).to(torch.complex64)
    p = fit_smooth_phase(x)
    best_lowres = min(_imag_rms(lowres_phase(x, w), x0) for w in (4, 8, 13, 20))
    assert _imag_rms(p, x0) < 0.5 * best_lowres
    # each item is fitted on its own: the batch gives what the items give one at a time
    for k in range(2):
        torch.testing.assert_close(p[k:k + 1], fit_smooth_phase(x[k:k + 1]), rtol=1e-5, atol=1e-5)


def test_fit_smooth_phase_rejects_bad_input():
    with pytest.raises(TypeError, match="complex"):
        fit_smooth_phase(torch.ones(1, 8, 8))
    with pytest.raises(TypeError, match="complex"):
        fit_smooth_phase(torch.ones(8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="iters"):
        fit_smooth_phase(torch.ones(1, 8, 8, dtype=torch.complex64), iters=-1)
