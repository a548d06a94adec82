"""Phase estimation and phase-modulated operators (bayesmri.physics.phase)."""
import math

import pytest
import torch

from bayesmri.data.simulate import smooth_phase
from bayesmri.physics import MultiCoilMRI, PhaseModulated, lowres_phase, remove_lowres_phase


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
