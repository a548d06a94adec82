"""Joint image / coil-map reconstruction with the PoGMDM prior (Nagler Alg. 1)."""
import math

import pytest
import torch

from bayesmri.physics import fft2c, ifft2c
from bayesmri.physics.coils import birdcage_maps
from bayesmri.priors.pogmdm import PoGMDM
from bayesmri.samplers import ComplexSplitScore
from bayesmri.samplers.pogmdm_joint import (
    JointPoGMDM,
    coil_nullspace_residual,
    dirichlet_eigenvalues,
    dst1,
    smoothness_prox,
)
from tests.test_uncertainty import check_summaries


def _dirichlet_laplacian(n):
    D = torch.zeros(n + 1, n, dtype=torch.float64)
    for i in range(n + 1):
        if i < n:
            D[i, i] = -1.0
        if i > 0:
            D[i, i - 1] = 1.0
    return D.T @ D  # forward differences with zero values outside the grid


def test_dst_is_orthonormal_involution_and_diagonalises_laplacian():
    x = torch.randn(3, 6, 9, dtype=torch.float64)
    assert torch.allclose(dst1(dst1(x)), x, atol=1e-12)
    assert torch.allclose(dst1(x).norm(), x.norm())
    n = 7
    S = dst1(torch.eye(n, dtype=torch.float64), 0)
    Lam = S @ _dirichlet_laplacian(n) @ S
    tau = 4 * torch.sin(math.pi * torch.arange(1, n + 1, dtype=torch.float64) / (2 * (n + 1))) ** 2
    assert torch.allclose(Lam, torch.diag(tau), atol=1e-12)
    # the 2-D eigenvalues are the sums of the 1-D ones
    assert torch.allclose(dirichlet_eigenvalues(n, 3, dtype=torch.float64)[:, 0] - tau,
                          torch.full((n,), 4 * math.sin(math.pi / 8) ** 2, dtype=torch.float64))


def test_smoothness_prox_matches_direct_linear_solve():
    H, W, w = 5, 8, 0.7
    L = torch.kron(_dirichlet_laplacian(H), torch.eye(W, dtype=torch.float64)) + torch.kron(
        torch.eye(H, dtype=torch.float64), _dirichlet_laplacian(W))
    v = torch.randn(2, H, W, dtype=torch.complex128)
    ref = torch.linalg.solve((torch.eye(H * W) + w * L).to(v.dtype), v.reshape(2, -1).T).T.reshape(2, H, W)
    assert torch.allclose(smoothness_prox(v, w), ref, atol=1e-10)
    # optimality of the prox: grad of 1/2||u - v||^2 + w/2 <u, L u> vanishes
    u = smoothness_prox(v, w).reshape(2, -1)
    assert torch.allclose(u - v.reshape(2, -1) + w * (L.to(v.dtype) @ u.T).T, torch.zeros_like(u), atol=1e-10)


def test_nullspace_residual_zero_for_true_maps():
    maps = birdcage_maps((4, 16, 16))
    maps = maps / (maps.abs() ** 2).sum(0).sqrt()
    x = torch.randn(16, 16, dtype=torch.complex64)
    coil = maps * x
    assert float(coil_nullspace_residual(maps[None], coil[None])) < 1e-10
    wrong = torch.roll(maps, 1, 0)
    assert float(coil_nullspace_residual(wrong[None], coil[None])) > 1e-2


@pytest.fixture(scope="module")
def tiny_problem():
    H = W = 32
    C = 4
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    img = ((xx / 0.8) ** 2 + (yy / 0.7) ** 2 <= 1).float() * (0.6 + 0.4 * torch.exp(-((xx - .2) ** 2 + yy**2) / .1))
    x = img * torch.exp(1j * 0.5 * xx)
    maps = birdcage_maps((C, H, W), r=1.2)
    maps = maps / (maps.abs() ** 2).sum(0).sqrt()
    mask = torch.zeros(W)
    mask[::2] = 1
    mask[W // 2 - 4: W // 2 + 4] = 1
    g = torch.Generator().manual_seed(0)
    k = fft2c(maps * x) * mask
    k = k + 1e-3 * torch.randn(k.shape, generator=g, dtype=torch.complex64) * mask
    return x.to(torch.complex64), maps.to(torch.complex64), mask, k.to(torch.complex64), img


@pytest.fixture(scope="module")
def prior():
    # one untrained prior for the reconstruction tests: its expert tables (one per level) are cached,
    # so tests with the same schedule share them
    torch.manual_seed(0)
    return PoGMDM()


def test_joint_reconstruction_recovers_smooth_coil_maps(tiny_problem, prior):
    x, maps, mask, k, img = tiny_problem
    sampler = JointPoGMDM(prior, n_steps=200, zeta_start=0.1, mu=1.0, n_corrector=0, map_steps=20)
    res = sampler.sample(k, mask, n_samples=2, generator=1)
    est = res.diagnostics["coil_maps"]
    support = (img > 0.1)[None]
    init = ifft2c(k * mask)
    init = init / (init.abs() ** 2).sum(0).sqrt().clamp_min(1e-3)
    r_est = float(coil_nullspace_residual(est[None], (maps * x)[None], support))
    r_init = float(coil_nullspace_residual(init[None], (maps * x)[None], support))
    assert r_est < 0.5 * r_init and r_est < 0.02
    # pixel-wise agreement of the map directions inside the object
    corr = (est.conj() * maps).sum(0).abs()[support[0]]
    assert float(corr.mean()) > 0.97
    # the image: magnitude error well below the zero-filled RSS's
    zf = ifft2c(k * mask).abs().pow(2).sum(0).sqrt()
    err = (res.mean.abs() - x.abs()).norm() / x.abs().norm()
    err_zf = (zf - x.abs()).norm() / x.abs().norm()
    assert float(err) < 0.7 * float(err_zf)
    assert res.samples.shape == (2, 32, 32) and res.std.shape == (32, 32) and res.nfe == len(res.diagnostics["zetas"]) - 1
    check_summaries(res)


def test_known_maps_mode_keeps_maps_and_plain_prior_wrapper(tiny_problem):
    x, maps, mask, k, _ = tiny_problem
    prior = PoGMDM()
    sampler = JointPoGMDM(prior, n_steps=50, zeta_start=0.05, n_corrector=0, map_steps=0, update_maps=False)
    res = sampler.sample(k, mask, n_samples=1, generator=0, coil_maps=maps)
    assert torch.allclose(res.diagnostics["coil_maps"], maps, atol=1e-5)
    # the prior works as a plain complex prior through the samplers' wrapper
    s = ComplexSplitScore(prior).score(x[None], 0.1)
    ref = torch.complex(prior.score(x.real[None], 0.1), prior.score(x.imag[None], 0.1))
    assert torch.allclose(s, ref, atol=1e-5 * float(ref.abs().max()))


def test_bad_inputs(tiny_problem):
    _, _, mask, k, _ = tiny_problem
    s = JointPoGMDM(PoGMDM(), n_steps=10, zeta_start=0.05)
    with pytest.raises(TypeError):
        s.sample(k.real, mask)
    with pytest.raises(ValueError):
        s.sample(k, torch.ones(5))
    with pytest.raises(ValueError):
        JointPoGMDM(PoGMDM(), n_steps=10, zeta_start=0.001).schedule()
    with pytest.raises(ValueError):
        smoothness_prox(k, -1.0)


# ------------------------------------------------------------------------------ non-Cartesian (NUFFT)
@pytest.fixture(scope="module")
def radial_problem(tiny_problem):
    from bayesmri.physics.nufft import NonCartesianMRI
    from bayesmri.physics.trajectories import density_compensation, radial_trajectory

    x, maps, _, _, img = tiny_problem
    H, W = x.shape
    traj = radial_trajectory(16, 32)  # K = 512 = H W / 2
    dcf = density_compensation(traj, (H, W))
    k = NonCartesianMRI(traj, (H, W), coil_maps=maps[None]).A(x[None])[0]
    g = torch.Generator().manual_seed(0)
    k = k + 1e-3 * torch.randn(k.shape, generator=g, dtype=torch.complex64)
    return x, maps, traj, dcf, k, img


def test_nufft_fourier_operator_is_adjoint_and_norm_is_power_iteration(radial_problem):
    from bayesmri.samplers.pogmdm_joint import CartesianCoilFourier, NonCartesianCoilFourier

    x, maps, traj, dcf, k, _ = radial_problem
    g = torch.Generator().manual_seed(3)
    for weighting in ("none", "dcf"):
        F = NonCartesianCoilFourier(traj, x.shape, dcf=dcf, weighting=weighting)
        z = torch.randn((2, 4, *x.shape), generator=g, dtype=torch.complex64)
        r = torch.randn((2, 4, traj.shape[0]), generator=g, dtype=torch.complex64)
        w = dcf if weighting == "dcf" else torch.ones_like(dcf)
        # <W F z, r> = <z, F^H W r>
        lhs = (w * F.forward(z) * r.conj()).sum()
        rhs = (z * F.adjoint_weighted(r).conj()).sum()
        assert abs(complex(lhs - rhs)) < 1e-4 * abs(complex(lhs))
        # norm = largest eigenvalue of F^H W F: no random direction exceeds it, and it is attained closely
        ratios = [float((F.adjoint_weighted(F.forward(v)) * v.conj()).sum().real / v.norm() ** 2)
                  for v in torch.randn((8, 1, 1, *x.shape), generator=g, dtype=torch.complex64)]
        assert max(ratios) <= F.norm * 1.001 and F.norm > 1.0
    # the radial norm is about the number of spokes crossing the centre without weights
    assert 8 < NonCartesianCoilFourier(traj, x.shape, dcf=dcf, weighting="none").norm < 17
    assert CartesianCoilFourier(torch.ones(32), x.shape).norm == 1.0


@pytest.mark.parametrize("weighting", ["dcf"])
def test_joint_reconstruction_radial_nufft(radial_problem, prior, weighting):
    """NUFFT forward model: the joint reconstruction recovers the smooth maps and beats gridding."""
    from bayesmri.physics.nufft import NonCartesianMRI

    x, maps, traj, dcf, k, img = radial_problem
    H, W = x.shape
    sampler = JointPoGMDM(prior, n_steps=200, zeta_start=0.1, mu=1.0, n_corrector=0, map_steps=20)
    res = sampler.sample(k, n_samples=2, generator=1, trajectory=traj, dcf=dcf, img_shape=(H, W),
                         weighting=weighting)
    support = (img > 0.1)[None]
    est = res.diagnostics["coil_maps"]
    r_est = float(coil_nullspace_residual(est[None], (maps * x)[None], support))
    assert r_est < 0.005
    assert float((est.conj() * maps).sum(0).abs()[support[0]].mean()) > 0.99
    grid = NonCartesianMRI(traj, (H, W), dcf=dcf).gridding(k.reshape(4, 1, -1)).abs().pow(2).sum(0).sqrt()
    err = (res.mean.abs() - x.abs()).norm() / x.abs().norm()
    err_grid = (grid - x.abs()).norm() / x.abs().norm()
    assert float(err) < 0.6 * float(err_grid)
    assert float((res.diagnostics["map"].abs() - x.abs()).norm() / x.abs().norm()) < 0.7 * float(err_grid)
    assert res.samples.shape == (2, H, W) and res.diagnostics["fourier_norm"] > 1


def test_radial_bad_inputs(radial_problem):
    x, _, traj, dcf, k, _ = radial_problem
    s = JointPoGMDM(PoGMDM(), n_steps=10, zeta_start=0.05, map_steps=0)
    with pytest.raises(ValueError, match=r"\[-0.5, 0.5\]"):
        s.sample(k, trajectory=traj * 2, dcf=dcf, img_shape=x.shape)
    with pytest.raises(ValueError, match="K="):
        s.sample(k[:, :-1], trajectory=traj, dcf=dcf, img_shape=x.shape)
    with pytest.raises(ValueError, match="img_shape"):
        s.sample(k, trajectory=traj, dcf=dcf)
    with pytest.raises(ValueError, match="exactly one"):
        s.sample(k, torch.ones(32), trajectory=traj, img_shape=x.shape)
    with pytest.raises(ValueError, match="weighting"):
        s.sample(k, trajectory=traj, dcf=dcf, img_shape=x.shape, weighting="ramp")
    with pytest.raises(ValueError, match="dcf"):
        s.sample(k, trajectory=traj, dcf=dcf[:-3], img_shape=x.shape)


def test_registered_method_runs_on_non_cartesian_sample(tiny_problem):
    """``pogmdm-joint`` takes an MRISample with a trajectory (NUFFT path, dcf weighting by default)."""
    from bayesmri.data import simulate_acquisition
    from bayesmri.physics.trajectories import density_compensation, radial_trajectory
    from bayesmri.methods.pogmdm import pogmdm_joint_method

    img = tiny_problem[4]
    traj = radial_trajectory(16, 32)
    s = simulate_acquisition(img, trajectory=traj, dcf=density_compensation(traj, (32, 32)), ncoils=4,
                             snr_db=40, seed=0)
    res = pogmdm_joint_method(s, n_samples=2, generator=0, n_steps=30, zeta_start=0.05, map_steps=5,
                              estimate="map", maps="true")
    assert res.samples.shape == (2, 32, 32) and res.mean.shape == (32, 32)  # the registry's shapes
    assert bool(torch.isfinite(res.mean).all()) and 1.0 < res.diagnostics["fourier_norm"] < 4.0
    err = (res.mean.abs() - s.target.abs()).norm() / s.target.abs().norm()
    assert float(err) < 0.3


class _WhiteGaussian:
    """Pixel-wise N(0, tau^2) prior on real images: s(x, zeta) = -x / (tau^2 + zeta^2)."""

    def __init__(self, tau: float):
        self.tau2 = tau**2

    def score(self, x, sigma):
        return -x / (self.tau2 + float(sigma) ** 2)


def test_final_denoise_is_the_tweedie_step_at_the_last_level(tiny_problem):
    _, maps, mask, k, _ = tiny_problem
    prior = _WhiteGaussian(0.5)
    kw = dict(n_steps=40, zeta_min=0.05, zeta_start=0.3, n_corrector=0, map_steps=0, update_maps=False)
    plain = JointPoGMDM(prior, **kw).sample(k, mask, n_samples=2, generator=3, coil_maps=maps)
    den = JointPoGMDM(prior, final_denoise=True, **kw).sample(k, mask, n_samples=2, generator=3, coil_maps=maps)
    # the same chains, shrunk by Tweedie's E[x | x + zeta n] = x tau^2 / (tau^2 + zeta^2) for this prior
    shrink = prior.tau2 / (prior.tau2 + 0.05**2)
    assert torch.allclose(den.samples, plain.samples * shrink, atol=1e-5 * float(plain.samples.abs().max()))
    assert den.nfe == plain.nfe + 1
