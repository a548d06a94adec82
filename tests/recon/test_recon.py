"""Zero-filled, CG-SENSE, TV (ADMM) and l1-wavelet (FISTA) reconstructions on any LinearOperator."""
import pytest
import torch

from bayesmri.physics import MultiCoilMRI, SingleCoilMRI
from bayesmri.physics.linop import cdot
from bayesmri.physics.masks import make_mask
from bayesmri.recon import (
    WaveletTransform,
    cg_sense,
    l1_wavelet_objective,
    l1_wavelet_recon,
    tv_objective,
    tv_recon,
    zero_filled,
)

from . import psnr, shepp_logan, smooth_maps


def _nufft_op(n, C):
    from bayesmri.physics.nufft import NonCartesianMRI
    from bayesmri.physics.trajectories import radial_trajectory

    return NonCartesianMRI(radial_trajectory(2 * n, 2 * n), (n, n), coil_maps=smooth_maps(C, n, n))


def _random_nufft_op(n, C):
    """Uniform random samples over the whole k-space square, 2x oversampled: a determined problem."""
    from bayesmri.physics.nufft import NonCartesianMRI

    g = torch.Generator().manual_seed(5)
    traj = torch.rand(2 * n * n, 2, generator=g) - 0.5
    return NonCartesianMRI(traj, (n, n), coil_maps=smooth_maps(C, n, n))


def _make_op(kind, n=32):
    if kind == "single":
        return SingleCoilMRI(make_mask("gaussian2d", (n, n), 4, num_acs=8, seed=0), (n, n))
    if kind == "multi":
        return MultiCoilMRI(smooth_maps(4, n, n), make_mask("gaussian2d", (n, n), 4, num_acs=8, seed=0))
    if kind == "nufft":
        return _nufft_op(n, 2)
    raise ValueError(kind)


OPS = ["single", "multi", "nufft"]


def test_zero_filled_is_coil_combined_ifft():
    x = shepp_logan(32)
    S = smooth_maps(4, 32, 32)
    mask = make_mask("equispaced", (32, 32), 2, num_acs=4, seed=0)
    op = MultiCoilMRI(S, mask)
    y = op.A(x)
    zf = zero_filled(op, y)
    expected = (S.conj() * torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(y, dim=(-2, -1)), norm="ortho"),
                                              dim=(-2, -1))).sum(1)
    torch.testing.assert_close(zf, expected)


@pytest.mark.parametrize("kind", ["multi", "nufft"])
def test_cg_sense_recovers_image_from_determined_data(kind):
    n = 32
    x = shepp_logan(n)
    if kind == "multi":
        # 8 coils at R=2: an overdetermined, well-conditioned SENSE problem.
        op = MultiCoilMRI(smooth_maps(8, n, n), make_mask("equispaced", (n, n), 2, num_acs=4, seed=0))
    else:
        op = _random_nufft_op(n, 4)
    y = op.A(x)
    seen = []
    xr = cg_sense(op, y, max_iter=100, tol=1e-7, callback=lambda it, v: seen.append(it))
    assert float(torch.linalg.vector_norm(xr - x) / torch.linalg.vector_norm(x)) < 1e-3
    assert seen and seen[0] == 0
    # Zero-filled alone is far off (aliasing), so the test would fail without the CG solve.
    assert float(torch.linalg.vector_norm(zero_filled(op, y) - x) / torch.linalg.vector_norm(x)) > 0.05


def test_cg_sense_tikhonov_matches_closed_form():
    # Single-coil Cartesian: (A^H A + lam I) is diagonal in k-space, solved exactly by A_dagger.
    n = 32
    op = SingleCoilMRI(make_mask("gaussian2d", (n, n), 3, num_acs=6, seed=1), (n, n))
    y = op.A(shepp_logan(n))
    xr = cg_sense(op, y, lam=0.3, max_iter=50, tol=1e-8)
    torch.testing.assert_close(xr, op.A_dagger(y, lam=0.3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", OPS)
def test_l1_wavelet_fista_monotone_and_converged(kind):
    torch.manual_seed(0)
    op = _make_op(kind)
    x = shepp_logan(32)
    y = op.A(x)
    lam = 0.01 * float(zero_filled(op, y).abs().max())
    W = WaveletTransform((32, 32), "db4")
    objs = []
    xr = l1_wavelet_recon(op, y, lam, max_iter=60, random_shift=False,
                          callback=lambda it, v: objs.append(float(l1_wavelet_objective(op, y, v, lam, W))))
    assert len(objs) == 60
    diffs = torch.tensor(objs).diff()
    assert float(diffs.max()) <= 1e-6 * objs[0]  # monotone (MFISTA), to float32 rounding
    ref = l1_wavelet_recon(op, y, lam, max_iter=400, random_shift=False)
    f_ref = float(l1_wavelet_objective(op, y, ref, lam, W))
    assert objs[-1] <= f_ref * 1.01
    f_start = float(l1_wavelet_objective(op, y, zero_filled(op, y), lam, W))
    assert objs[-1] < f_start - 0.5 * (f_start - f_ref)
    # Optimality certificate independent of the iteration history: the long-run point is a fixed
    # point of the proximal-gradient map x = prox_{t lam R}(x - t A^H (A x - y)).
    t = 1.0 / op.compute_norm()
    fp = W.prox_l1(ref - t * op.A_adjoint(op.A(ref) - y), lam * t)
    assert float(torch.linalg.vector_norm(fp - ref) / torch.linalg.vector_norm(ref)) < 1e-3


def _lbfgs_smoothed_tv(op, y, lam, x0, eps, iters=300):
    """Independent reference: L-BFGS on ``0.5||Ax-y||^2 + lam sum sqrt(|Dx|^2 + eps^2)``."""
    from bayesmri.recon.prox import finite_difference

    v = torch.view_as_real(x0.clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([v], lr=1, max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        x = torch.view_as_complex(v)
        r = op.A(x) - y
        g = finite_difference(x)
        f = 0.5 * (r.abs() ** 2).sum() + lam * torch.sqrt((g.abs() ** 2).sum(1) + eps**2).sum()
        f.backward()
        return f

    opt.step(closure)
    return torch.view_as_complex(v.detach())


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_tv_admm_reaches_optimum(kind):
    op = _make_op(kind)
    x = shepp_logan(32)
    y = op.A(x)
    lam = 0.01 * float(zero_filled(op, y).abs().max())
    objs = []
    xr = tv_recon(op, y, lam, max_iter=100,
                  callback=lambda it, v: objs.append(float(tv_objective(op, y, v, lam))))
    assert len(objs) == 100
    f_admm = objs[-1]
    # Reference optimum by a different method (smoothed TV + L-BFGS, evaluated in the exact objective).
    x_ref = _lbfgs_smoothed_tv(op, y, lam, xr.clone(), eps=1e-4 * float(x.abs().max()))
    f_ref = float(tv_objective(op, y, x_ref, lam))
    assert f_admm <= f_ref * 1.005
    f_start = float(tv_objective(op, y, zero_filled(op, y), lam))
    assert f_admm < f_start - 0.5 * (f_start - f_ref)


@pytest.mark.parametrize("kind", ["multi", "nufft"])
def test_tv_with_zero_lambda_is_least_squares(kind):
    n = 32
    x = shepp_logan(n)
    if kind == "multi":
        op = MultiCoilMRI(smooth_maps(8, n, n), make_mask("equispaced", (n, n), 2, num_acs=4, seed=0))
    else:
        op = _random_nufft_op(n, 4)
    y = op.A(x)
    ls = cg_sense(op, y, max_iter=200, tol=1e-8)
    xt = tv_recon(op, y, 0.0, max_iter=40)
    assert float(torch.linalg.vector_norm(xt - ls) / torch.linalg.vector_norm(ls)) < 1e-3


def test_regularised_recons_beat_zero_filled_at_r4():
    """Single-coil Shepp-Logan, 2-D Poisson-disc R=4, small complex noise."""
    n = 64
    x = shepp_logan(n)
    op = SingleCoilMRI(make_mask("poisson", (n, n), 4, num_acs=12, seed=3), (n, n))
    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(1, n, n, generator=g), torch.randn(1, n, n, generator=g)) * 0.01
    y = op.A(x) + op.mask * noise
    scale = float(zero_filled(op, y).abs().max())
    p_zf = psnr(zero_filled(op, y), x)
    p_cg = psnr(cg_sense(op, y), x)
    p_tv = max(psnr(tv_recon(op, y, f * scale, max_iter=80), x) for f in (0.003, 0.01))
    p_wav = max(psnr(l1_wavelet_recon(op, y, f * scale, max_iter=80), x) for f in (0.003, 0.01))
    # Measured: zero-filled = CG-SENSE 17.3 dB, TV 25.0 dB, l1-wavelet 23.9 dB.
    assert p_tv > p_zf + 6.0
    assert p_wav > p_zf + 4.0
    assert p_tv > p_cg + 6.0 and p_wav > p_cg + 4.0


def test_l1_wavelet_average_last_is_the_mean_of_the_last_iterates_and_steadier_across_seeds():
    n = 64
    x = shepp_logan(n)
    op = MultiCoilMRI(smooth_maps(4, n, n), make_mask("gaussian2d", (n, n), 4, num_acs=8, seed=0))
    g = torch.Generator().manual_seed(1)
    y = op.A(x) + op.mask * 0.01 * torch.complex(torch.randn(1, 4, n, n, generator=g), torch.randn(1, 4, n, n, generator=g))
    lam = 0.003 * float(zero_filled(op, y).abs().max())
    its = []
    plain = l1_wavelet_recon(op, y, lam, max_iter=60, generator=0, callback=lambda it, v: its.append(v.clone()))
    avg = l1_wavelet_recon(op, y, lam, max_iter=60, generator=0, average_last=20)
    torch.testing.assert_close(plain, its[-1], rtol=0, atol=0)  # the default is the last iterate
    torch.testing.assert_close(avg, torch.stack(its[-20:]).mean(0), rtol=1e-5, atol=1e-6)
    # cycle spinning makes the last iterate a random draw; the average of many is steadier
    last = torch.stack([l1_wavelet_recon(op, y, lam, max_iter=60, generator=s) for s in range(4)])
    mean = torch.stack([l1_wavelet_recon(op, y, lam, max_iter=60, generator=s, average_last=30) for s in range(4)])
    # measured: 0.0037 against 0.0073
    assert float((mean - mean.mean(0)).abs().mean()) < 0.7 * float((last - last.mean(0)).abs().mean())
    for bad in (-1, 61, 2.5, True):
        with pytest.raises(ValueError, match="average_last"):
            l1_wavelet_recon(op, y, lam, max_iter=60, average_last=bad)


def test_batched_reconstruction_matches_per_item():
    n = 32
    S = smooth_maps(4, n, n)
    mask = make_mask("gaussian2d", (n, n), 4, num_acs=8, seed=0)
    op = MultiCoilMRI(S, mask)
    xs = torch.cat([shepp_logan(n), 0.5 * shepp_logan(n, smooth_phase=False).flip(-1)])
    y = op.A(xs)
    lam = 0.02
    both = tv_recon(op, y, lam, max_iter=20)
    one = tv_recon(op, y[1:], lam, max_iter=20)
    torch.testing.assert_close(both[1:], one, atol=1e-4, rtol=1e-4)
    both_w = l1_wavelet_recon(op, y, lam, max_iter=20)
    one_w = l1_wavelet_recon(op, y[1:], lam, max_iter=20)
    torch.testing.assert_close(both_w[1:], one_w, atol=1e-4, rtol=1e-4)


def test_progress_bar_runs():
    op = _make_op("single")
    y = op.A(shepp_logan(32))
    for fn in (cg_sense, lambda o, v, **k: tv_recon(o, v, 0.01, max_iter=3, **k),
               lambda o, v, **k: l1_wavelet_recon(o, v, 0.01, max_iter=3, **k)):
        assert fn(op, y, progress=True).shape == (1, 32, 32)


def test_bad_input_raises_clear_errors():
    op = _make_op("multi")
    y = op.A(shepp_logan(32))
    with pytest.raises(TypeError, match="LinearOperator"):
        zero_filled(object(), y)
    with pytest.raises(TypeError, match="complex"):
        cg_sense(op, y.abs())
    with pytest.raises(ValueError, match="shape"):
        tv_recon(op, y[:, :2], 0.1)
    with pytest.raises(ValueError, match="lam"):
        l1_wavelet_recon(op, y, -1.0)
    with pytest.raises(ValueError, match="non-finite"):
        cg_sense(op, y * float("nan"))
    with pytest.raises(ValueError, match="max_iter"):
        tv_recon(op, y, 0.1, max_iter=-2)


def test_non_cartesian_baselines_use_gridding_and_a_norm_relative_weight():
    # zf on radial data is the density-compensated adjoint (the plain adjoint over-weights the centre
    # by orders of magnitude), and the default TV weight is relative to ||A||^2, so it still helps
    from bayesmri.data import SimulatedBrainDataset
    from bayesmri.methods import get_method
    from bayesmri.metrics import psnr

    s = SimulatedBrainDataset("val", size=48, acceleration=4, ncoils=4, trajectory="radial", indices=[20])[0]
    op = s.operator("true")
    zf = get_method("zf")(s, maps="true").mean
    torch.testing.assert_close(zf, op.gridding(s.y)[0])
    p_zf = float(psnr(zf, s.target))
    assert p_zf > float(psnr(op.A_adjoint(s.y)[0], s.target)) + 10
    assert float(psnr(get_method("tv")(s, maps="true").mean, s.target)) > p_zf + 3
