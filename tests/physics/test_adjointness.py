"""One adjointness test for every linear operator in bayesmri.physics.

Operators register a factory in ``OPERATOR_FACTORIES``; the NUFFT and any later operator add theirs.
"""
import pytest
import torch

from bayesmri.physics import CoilImageMRI, MultiCoilMRI, PhaseModulated, RealInput, SingleCoilMRI


def _maps(B, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.complex(torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g))
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def _mask(W, seed):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(W, generator=g) < 0.4).float()
    m[W // 2] = 1
    return m


OPERATOR_FACTORIES = {
    "single_coil": lambda: SingleCoilMRI(_mask(20, 0), (16, 20)),
    "multi_coil_sense": lambda: MultiCoilMRI(_maps(2, 4, 16, 20, 1), _mask(20, 2)),
    "multi_coil_sense_2d_mask": lambda: MultiCoilMRI(_maps(1, 3, 12, 12, 3), (torch.rand(12, 12) < 0.3).float() + (torch.arange(12)==6).float()),
    "coil_image": lambda: CoilImageMRI(_mask(20, 4), (16, 20), ncoils=3),
    "phase_modulated_sense": lambda: PhaseModulated(
        MultiCoilMRI(_maps(2, 4, 16, 20, 5), _mask(20, 6)),
        torch.exp(1j * torch.randn(2, 16, 20, generator=torch.Generator().manual_seed(7)))),
    "real_input_phase_modulated_sense": lambda: RealInput(PhaseModulated(
        MultiCoilMRI(_maps(2, 4, 16, 20, 8), _mask(20, 9)),
        torch.exp(1j * torch.randn(2, 16, 20, generator=torch.Generator().manual_seed(10))))),
}

try:  # non-Cartesian operators join when their module is present
    from tests.physics.nufft_factories import NUFFT_FACTORIES

    OPERATOR_FACTORIES.update(NUFFT_FACTORIES)
except ImportError:
    pass


@pytest.mark.parametrize("name", sorted(OPERATOR_FACTORIES))
def test_adjointness(name):
    op = OPERATOR_FACTORIES[name]()
    assert op.adjointness_test(generator=0) < 1e-5
