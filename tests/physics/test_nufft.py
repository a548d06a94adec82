import math

import pytest
import torch

from bayesmri.physics import fft2c
from bayesmri.physics.nufft import NonCartesianMRI
from bayesmri.physics.trajectories import density_compensation, radial_trajectory


def _crandn(*shape, g, dtype=torch.complex64):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(dtype)


def _maps(B, C, H, W, g):
    s = _crandn(B, C, H, W, g=g)
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def _nudft_matrix(traj, H, W):
    """Dense ``(K, H*W)`` NUDFT with the operator's centring and 1/sqrt(HW) scaling, in float64."""
    r = torch.stack(
        torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij"), -1
    ).reshape(-1, 2).double()
    return torch.exp(-2j * math.pi * (traj.double() @ r.T)) / math.sqrt(H * W)


def _relerr(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])
def test_forward_and_adjoint_match_direct_nudft(shape):
    H, W = shape
    g = torch.Generator().manual_seed(0)
    traj = torch.rand(300, 2, generator=g) - 0.5
    op = NonCartesianMRI(traj, shape)
    E = _nudft_matrix(traj, H, W)
    x = _crandn(2, H, W, g=g)
    ref = (x.reshape(2, -1).to(torch.complex128) @ E.T)
    assert _relerr(op.A(x)[:, 0], ref) < 1e-4  # finufft eps = 1e-6 in single precision
    y = _crandn(2, 1, 300, g=g)
    ref_adj = (y[:, 0].to(torch.complex128) @ E.conj()).reshape(2, H, W)
    assert _relerr(op.A_adjoint(y), ref_adj) < 1e-4


def test_double_precision_reaches_1e_10():
    g = torch.Generator().manual_seed(1)
    traj = (torch.rand(200, 2, generator=g) - 0.5).double()
    op = NonCartesianMRI(traj, (12, 12))
    x = _crandn(1, 12, 12, g=g, dtype=torch.complex128)
    assert op.A(x).dtype == torch.complex128
    ref = x.reshape(1, -1) @ _nudft_matrix(traj, 12, 12).T
    assert _relerr(op.A(x)[:, 0], ref) < 1e-10


def test_cartesian_points_reproduce_fft2c():
    H, W = 10, 8
    ky, kx = torch.meshgrid((torch.arange(H) - H // 2) / H, (torch.arange(W) - W // 2) / W, indexing="ij")
    op = NonCartesianMRI(torch.stack([ky, kx], -1).reshape(-1, 2), (H, W))
    x = _crandn(3, H, W, g=torch.Generator().manual_seed(2))
    assert _relerr(op.A(x)[:, 0].reshape(3, H, W), fft2c(x)) < 1e-5
    assert op.compute_norm() == pytest.approx(1.0, rel=1e-4)  # unitary scaling: ||A|| = 1 on the grid


def test_multicoil_is_nufft_of_coil_images_and_broadcasts_chains():
    g = torch.Generator().manual_seed(3)
    H, W, C = 12, 12, 4
    traj = radial_trajectory(10, 12)
    S = _maps(1, C, H, W, g)
    op = NonCartesianMRI(traj, (H, W), coil_maps=S)
    single = NonCartesianMRI(traj, (H, W))
    x = _crandn(5, H, W, g=g)
    y = op.A(x)
    assert y.shape == (5, C, traj.shape[0])
    for c in range(C):
        assert _relerr(y[:, c], single.A(S[:, c] * x)[:, 0]) < 1e-5
    assert torch.allclose(op.A(x[2:3]), y[2:3], atol=1e-5)
    assert op.A_adjoint(y).shape == (5, H, W)


def test_batched_trajectories_use_their_own_points():
    g = torch.Generator().manual_seed(4)
    traj = torch.rand(2, 80, 2, generator=g) - 0.5
    op = NonCartesianMRI(traj, (8, 8))
    x = _crandn(2, 8, 8, g=g)
    y = op.A(x)
    for b in range(2):
        ref = NonCartesianMRI(traj[b], (8, 8)).A(x[b : b + 1])
        assert torch.allclose(y[b : b + 1], ref, atol=1e-5)
    # One image against two trajectories broadcasts.
    assert op.A(x[:1]).shape == (2, 1, 80)


def test_autograd_backward_is_the_adjoint():
    g = torch.Generator().manual_seed(5)
    H, W = 10, 10
    op = NonCartesianMRI(torch.rand(120, 2, generator=g) - 0.5, (H, W), coil_maps=_maps(1, 2, H, W, g))
    x = _crandn(1, H, W, g=g).requires_grad_(True)
    v = _crandn(1, 2, 120, g=g)
    # d/dx of Re<v, A x> (torch's conjugate convention) is A^H v.
    loss = torch.real((v.conj() * op.A(x)).sum())
    (gx,) = torch.autograd.grad(loss, x)
    assert _relerr(gx, op.A_adjoint(v)) < 1e-5
    # Double backward through the adjoint: gradient of ||A^H y||^2 / 2 w.r.t. y is A A^H y.
    y = v.clone().requires_grad_(True)
    (gy,) = torch.autograd.grad(0.5 * op.A_adjoint(y).abs().pow(2).sum(), y)
    assert _relerr(gy, op.A(op.A_adjoint(v))) < 1e-5
    # The same check numerically against a finite difference along a direction.
    d = _crandn(1, H, W, g=g)
    f = lambda z: float(0.5 * (op.A(z) - v).abs().pow(2).sum())  # noqa: E731
    xd = x.detach().to(torch.complex64)
    (gfd,) = torch.autograd.grad(0.5 * (op.A(xd.requires_grad_(True)) - v).abs().pow(2).sum(), xd)
    h = 1e-2
    fd = (f(xd.detach() + h * d) - f(xd.detach() - h * d)) / (2 * h)
    assert fd == pytest.approx(float(torch.real((gfd.conj() * d).sum())), rel=1e-3)


def test_cg_dagger_inverts_a_well_conditioned_trajectory():
    N = 12
    g = torch.Generator().manual_seed(6)
    # 3 samples per Cartesian cell spread over the whole square: A is injective and well conditioned.
    op = NonCartesianMRI(torch.rand(3 * N * N, 2, generator=g) - 0.5, (N, N), coil_maps=_maps(1, 2, N, N, g))
    x = _crandn(2, N, N, g=g)
    xr = op.A_dagger(op.A(x), max_iter=100, tol=1e-7)
    assert _relerr(xr, x) < 1e-3
    assert _relerr(op.A_adjoint(op.A(x)), x) > 0.1  # the adjoint alone is not the inverse


def test_gridding_with_dcf_and_errors():
    N = 16
    traj = radial_trajectory(26, N)
    w = density_compensation(traj, (N, N), method="ramp")
    op = NonCartesianMRI(traj, (N, N), dcf=w)
    y = op.A(torch.ones(1, N, N, dtype=torch.complex64))
    assert torch.allclose(op.gridding(y), op.A_adjoint(w * y))
    with pytest.raises(ValueError, match="density compensation"):
        NonCartesianMRI(traj, (N, N)).gridding(y)
    with pytest.raises(ValueError, match="dcf"):
        NonCartesianMRI(traj, (N, N), dcf=w[:-1])


def test_bad_input_errors():
    g = torch.Generator().manual_seed(7)
    traj = torch.rand(50, 2, generator=g) - 0.5
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        NonCartesianMRI(traj * 3, (8, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., K, 2\)"):
        NonCartesianMRI(torch.rand(50, 3) - 0.5, (8, 8))
    with pytest.raises(TypeError, match="real floating"):
        NonCartesianMRI(traj.to(torch.complex64), (8, 8))
    with pytest.raises(ValueError, match="img_shape"):
        NonCartesianMRI(traj, (8, 8), coil_maps=_maps(1, 3, 8, 9, g))
    op = NonCartesianMRI(traj, (8, 8), coil_maps=_maps(1, 3, 8, 8, g))
    with pytest.raises(TypeError, match="complex"):
        op.A(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="coils=3"):
        op.A_adjoint(_crandn(1, 4, 50, g=g))
    with pytest.raises(ValueError, match=r"image must have shape"):
        op.A(_crandn(1, 8, 7, g=g))
    opb = NonCartesianMRI(torch.rand(2, 50, 2, generator=g) - 0.5, (8, 8))
    with pytest.raises(ValueError, match="batch"):
        opb.A(_crandn(3, 8, 8, g=g))
