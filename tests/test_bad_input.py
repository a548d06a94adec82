"""Bad input gets a clear ValueError/TypeError that names the problem (foundation issue)."""
import pytest
import torch

from bayesmri.physics import MultiCoilMRI, NonCartesianMRI, SingleCoilMRI, make_mask
from bayesmri.recon import cg_sense, l1_wavelet_recon, tv_recon, zero_filled


def _op(C=4, H=16, W=16):
    maps = torch.ones(1, C, H, W, dtype=torch.complex64) / C**0.5
    return MultiCoilMRI(maps, make_mask("equispaced", (H, W), 4, num_acs=4))


def test_mismatched_coil_counts():
    op = _op(C=4)
    with pytest.raises(ValueError, match=r"\(B, 4, 16, 16\)"):
        op.A_adjoint(torch.zeros(1, 3, 16, 16, dtype=torch.complex64))
    with pytest.raises(ValueError, match="coil"):
        MultiCoilMRI(torch.ones(1, 4, 8, 8, dtype=torch.complex64), torch.ones(1, 3, 8, 8))


def test_non_complex_kspace():
    with pytest.raises(TypeError, match="complex"):
        zero_filled(_op(), torch.zeros(1, 4, 16, 16))
    with pytest.raises(TypeError, match="complex"):
        _op().A(torch.zeros(1, 16, 16))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("recon", [zero_filled, cg_sense, tv_recon, l1_wavelet_recon])
def test_nan_or_inf_in_kspace(bad, recon):
    y = torch.zeros(1, 4, 16, 16, dtype=torch.complex64)
    y[0, 1, 3, 4] = bad
    kwargs = {} if recon in (zero_filled, cg_sense) else {"lam": 0.01}
    with pytest.raises(ValueError, match="non-finite"):
        recon(_op(), y, **kwargs)


def test_mask_with_no_samples():
    with pytest.raises(ValueError, match="no sampled points"):
        SingleCoilMRI(torch.zeros(16), (16, 16))
    with pytest.raises(ValueError, match="no sampled points"):
        MultiCoilMRI(torch.ones(1, 2, 16, 16, dtype=torch.complex64), torch.zeros(16, 16))


def test_trajectory_outside_range():
    traj = torch.tensor([[0.0, 0.1], [0.6, 0.0]])
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        NonCartesianMRI(traj, (8, 8))
