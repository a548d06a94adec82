"""NUFFT operators for the shared adjointness test (``tests/physics/test_adjointness.py``)."""
import torch

from bayesmri.physics.nufft import NonCartesianMRI
from bayesmri.physics.trajectories import radial_trajectory, spiral_trajectory


def _maps(B, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    s = torch.complex(torch.randn(B, C, H, W, generator=g), torch.randn(B, C, H, W, generator=g))
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def _random_traj(B, K, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, K, 2, generator=g) - 0.5


NUFFT_FACTORIES = {
    "nufft_single_coil_radial": lambda: NonCartesianMRI(radial_trajectory(13, 16), (16, 16)),
    "nufft_multi_coil_spiral": lambda: NonCartesianMRI(
        spiral_trajectory(4, 16), (16, 16), coil_maps=_maps(1, 3, 16, 16, 0)
    ),
    "nufft_multi_coil_batched_traj": lambda: NonCartesianMRI(
        _random_traj(2, 150, 1), (12, 14), coil_maps=_maps(2, 4, 12, 14, 2)
    ),
    "nufft_single_coil_batched_traj_double": lambda: NonCartesianMRI(
        _random_traj(3, 120, 3).double(), (10, 9)
    ),
}
