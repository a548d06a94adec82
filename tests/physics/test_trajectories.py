import math

import numpy as np
import pytest
import torch

from bayesmri.physics.nufft import NonCartesianMRI
from bayesmri.physics.trajectories import (
    GOLDEN_ANGLE_DEG,
    density_compensation,
    radial_trajectory,
    spiral_trajectory,
)


@pytest.mark.parametrize("golden", [True, False])
def test_radial_shape_range_and_centre(golden):
    t = radial_trajectory(21, 32, golden=golden)
    assert t.shape == (21 * 32, 2) and t.dtype == torch.float32
    assert float(t.abs().max()) <= 0.5
    spokes = t.reshape(21, 32, 2)
    assert torch.all(spokes[:, 16] == 0)  # every spoke passes through the centre
    # readout spacing is one Cartesian cell
    assert torch.allclose(spokes[:, 1:].sub(spokes[:, :-1]).norm(dim=-1), torch.full((21, 31), 1 / 32), atol=1e-6)


def _spoke_angles(t, n_spokes, n_readout):
    end = t.reshape(n_spokes, n_readout, 2)[:, 0].double()  # sample at radius -1/2
    return torch.rad2deg(torch.atan2(-end[:, 1], -end[:, 0]))


def test_golden_and_uniform_angle_spacing():
    ang = _spoke_angles(radial_trajectory(8, 16, golden=True), 8, 16)
    step = torch.remainder(ang[1:] - ang[:-1], 360.0)
    assert torch.allclose(step, torch.full_like(step, 111.2461), atol=1e-3)
    assert GOLDEN_ANGLE_DEG == pytest.approx(111.2461, abs=1e-4)
    ang = _spoke_angles(radial_trajectory(10, 16, golden=False), 10, 16)
    assert torch.allclose(torch.remainder(ang[1:] - ang[:-1], 360.0), torch.full((9,), 18.0, dtype=torch.float64), atol=1e-4)


def test_spiral_shape_range_and_density_falls_outward():
    N = 64
    t = spiral_trajectory(8, N, centre_radius=0.1, decay=1.0)
    assert t.ndim == 2 and t.shape[1] == 2 and t.dtype == torch.float32
    assert t.shape[0] % 8 == 0
    r = t.norm(dim=1).numpy()
    assert r.max() <= 0.5 + 1e-6 and r.max() > 0.49
    edges = np.array([0.02, 0.1, 0.2, 0.3, 0.4, 0.5])
    counts, _ = np.histogram(r, bins=edges)
    density = counts / (np.pi * (edges[1:] ** 2 - edges[:-1] ** 2))
    assert np.all(np.diff(density) < 0), density
    # Inside the centre the turns are Nyquist-spaced: about one sample per Cartesian cell.
    assert 0.7 < density[0] / N**2 < 1.6
    # decay=0 is a uniform-density Archimedean spiral: no fall-off beyond the centre.
    r0 = spiral_trajectory(8, N, decay=0.0).norm(dim=1).numpy()
    c0, _ = np.histogram(r0, bins=edges)
    d0 = c0 / (np.pi * (edges[1:] ** 2 - edges[:-1] ** 2))
    assert d0[-1] / d0[1] > 0.8


def test_trajectory_argument_errors():
    with pytest.raises(ValueError, match="n_spokes"):
        radial_trajectory(0, 16)
    with pytest.raises(ValueError, match="centre_radius"):
        spiral_trajectory(4, 32, centre_radius=0.7)
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        density_compensation(torch.full((10, 2), 0.6), (8, 8))
    with pytest.raises(ValueError, match="unknown density"):
        density_compensation(radial_trajectory(4, 8), (8, 8), method="magic")


def _smooth_phantom(N):
    yy, xx = torch.meshgrid(torch.arange(N) - N // 2, torch.arange(N) - N // 2, indexing="ij")
    yy, xx = yy.double(), xx.double()

    def blob(cy, cx, s, a):
        return a * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))

    x = blob(0, 0, N / 6, 1.0) + blob(5, -6, 3, -0.5) + blob(-8, 4, 2.5, 0.7)
    return (x * torch.exp(2j * xx / N)).to(torch.complex64)[None]


def _relerr(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize(
    "kind,methods",
    [("radial", ["pipe", "ramp", "voronoi"]), ("spiral", ["pipe", "voronoi"])],
)
def test_dcf_gridding_recovers_smooth_phantom(kind, methods):
    N = 48
    traj = radial_trajectory(int(math.ceil(math.pi / 2 * N)), N) if kind == "radial" else spiral_trajectory(16, N)
    x = _smooth_phantom(N)
    op = NonCartesianMRI(traj, (N, N))
    y = op.A(x)
    err_none = _relerr(op.A_adjoint(y), x)
    for m in methods:
        w = density_compensation(traj, (N, N), method=m)
        assert w.shape == (traj.shape[0],) and bool((w > 0).all())
        err = _relerr(op.gridding(y, w), x)
        assert err < 0.12, (m, err)
        assert err < 0.05 * err_none, (m, err, err_none)


def test_ramp_and_pipe_agree_in_the_middle_of_k_space():
    N = 48
    traj = radial_trajectory(76, N)
    r = traj.norm(dim=1)
    ramp = density_compensation(traj, (N, N), method="ramp")
    pipe = density_compensation(traj, (N, N), method="pipe")
    mid = (r > 0.05) & (r < 0.4)
    ratio = pipe[mid] / ramp[mid]
    assert 0.7 < float(ratio.median()) < 1.3


def test_batched_trajectory_dcf():
    t = torch.stack([radial_trajectory(8, 16), radial_trajectory(8, 16, golden=False)])
    w = density_compensation(t, (16, 16), method="ramp")
    assert w.shape == (2, 128)
