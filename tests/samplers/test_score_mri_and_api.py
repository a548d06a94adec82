"""Score-MRI data consistency, and the sampler interface (seeding, NFE, Tweedie, split, errors)."""
import math

import pytest
import torch

from bayesmri.physics import MultiCoilMRI, SingleCoilMRI
from bayesmri.priors import DenseOperator, GaussianMixturePrior, StationaryGaussianPrior
from bayesmri.samplers import (PULA, ULA, AnnealedULA, ComplexSplitScore, Measurement, ScoreMRI,
                               TweedieScore)

from .gaussian_problem import make_problem


def _real_image_prior(H=32, W=32):
    """A real stationary Gaussian prior on (H, W) images via its exact score (real convention)."""
    ky = torch.arange(H) - H // 2
    kx = torch.arange(W) - W // 2
    power = (0.01 + 1.0 / (1 + (ky[:, None] ** 2 + kx[None] ** 2) / 9.0)).double()
    comp = StationaryGaussianPrior(torch.zeros(H, W, dtype=torch.complex128), 2 * power)

    class RealPrior:
        def score(self, x, sigma):
            # a real field with spectrum "power": same formula with real input
            return comp.score(x.to(torch.complex128), sigma).real.to(x.dtype)

    return RealPrior()


def test_score_mri_single_coil_data_consistency():
    H = W = 32
    mask = torch.zeros(W)
    mask[::3] = 1
    mask[W // 2 - 3: W // 2 + 3] = 1
    op = SingleCoilMRI(mask, (H, W))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, H, W, dtype=torch.complex64, generator=g)
    nu = 0.05
    y = op.A(x) + nu * mask * torch.randn(1, H, W, dtype=torch.complex64, generator=g)
    s = ScoreMRI(n_levels=30, sigma_max=5.0, mode="complex", split_complex=True)
    res = s.sample(Measurement(y, op, nu), _real_image_prior(H, W), 4, generator=1)
    r = (op.A(res.samples) - y).abs()
    m = mask.expand(H, W).bool()
    assert float(r[:, m].pow(2).mean().sqrt()) <= nu
    assert res.nfe == 30 * 2



def test_score_mri_noisy_data_noises_the_measurement_to_the_level():
    # Song et al. 2022: with lam = 1 and A^H A a projection (single coil), the chain after one level is
    # consistent with y + A(sqrt(sigma^2 - nu^2 / 2) xi): its measured residual has exactly that std per
    # real component; without the option it is consistent with y itself.
    H = W = 16
    mask = torch.zeros(W)
    mask[::2] = 1
    op = SingleCoilMRI(mask, (H, W))
    nu = 0.2
    y = nu * mask * torch.randn(1, H, W, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))

    class Zero:  # score 0: only the data-consistency step and the added noise act
        def score(self, x, sigma):
            return torch.zeros_like(x)

    kw = dict(n_levels=1, n_corrector=0, sigma_max=5.0, sigma_min=0.5, t0=1.0)
    for noisy, expected in ((True, math.sqrt(0.5**2 - nu**2 / 2)), (False, 0.0)):
        x = ScoreMRI(noisy_data=noisy, **kw).sample(Measurement(y, op, nu), Zero(), n_samples=200,
                                                    generator=0).samples
        r = torch.view_as_real((op.A(x) - y)[..., mask.bool()])
        assert float(r.std()) == pytest.approx(expected, rel=0.03, abs=1e-5)
    # measurement noise above the level: nothing is added (the paper's step)
    lo = dict(kw, sigma_min=0.1)
    a = ScoreMRI(noisy_data=True, **lo).sample(Measurement(y, op, nu), Zero(), n_samples=4, generator=0).samples
    b = ScoreMRI(noisy_data=False, **lo).sample(Measurement(y, op, nu), Zero(), n_samples=4, generator=0).samples
    torch.testing.assert_close(a, b)


def test_score_mri_proximal_data_consistency():
    # dc_cg_iter > 0: argmin ||A v - y||^2 / nu^2 + ||v - x||^2 / (2 sigma^2). Single-coil Cartesian A
    # (A^H A a projection) and sigma >> nu: the paper's lam = 1 step. Non-Cartesian: it fits the data
    # far better than eq. 12's step, which must be divided by ||A||^2.
    from bayesmri.physics.nufft import NonCartesianMRI
    from bayesmri.physics.trajectories import radial_trajectory

    class Zero:
        def score(self, x, sigma):
            return torch.zeros_like(x)

    H = W = 16
    mask = torch.zeros(W)
    mask[::2] = 1
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(1, H, W, dtype=torch.complex128, generator=g)
    kw = dict(n_levels=1, n_corrector=0, sigma_max=50.0, sigma_min=20.0, t0=1.0)
    op = SingleCoilMRI(mask, (H, W))
    meas = Measurement(op.A(x0), op, 1e-3)
    a = ScoreMRI(dc_cg_iter=10, **kw).sample(meas, Zero(), n_samples=2, generator=0).samples
    b = ScoreMRI(**kw).sample(meas, Zero(), n_samples=2, generator=0).samples
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    rop = NonCartesianMRI(radial_trajectory(8, 16, dtype=torch.float64), (H, W))
    rmeas = Measurement(rop.A(x0), rop, 1e-3)
    resid = {}
    for it in (0, 30):
        x = ScoreMRI(dc_cg_iter=it, **kw).sample(rmeas, Zero(), n_samples=2, generator=0).samples
        resid[it] = float((rop.A(x) - rmeas.y).abs().norm() / rmeas.y.abs().norm())
    assert resid[30] < 0.05 * resid[0], resid
    with pytest.raises(ValueError, match="dc_cg_iter"):
        ScoreMRI(dc_cg_iter=-1)

@pytest.mark.parametrize("mode", ["complex", "ssos", "hybrid"])
def test_score_mri_multicoil_data_consistency(mode):
    prior, op, meas, x_true, power, maps, mask = make_problem(nu=0.05, dtype=torch.complex64)
    s = ScoreMRI(n_levels=20, sigma_max=3.0, mode=mode, split_complex=False, hybrid_every=2)
    res = s.sample(meas, prior, 2, generator=0)
    sampled = (op.mask.expand_as(meas.y) > 0)
    if mode == "complex":
        k = op.A(res.samples)
    else:
        k = op.mask * torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(
            res.diagnostics["coil_samples"], dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        assert res.samples.shape == (2, 64, 64) and not res.samples.is_complex()
    rms = float((k - meas.y)[sampled.expand_as(k)].abs().pow(2).mean().sqrt())
    # A posterior sample under SENSE (more data than unknowns) misses y by about the noise itself;
    # per-coil data consistency (SSOS) reproduces y on the samples (the hybrid's last step is 0.2 SENSE).
    assert rms <= (1.5 if mode == "complex" else 1.0) * meas.sigma, rms
    if mode == "ssos":
        assert rms < 1e-5
    if mode == "hybrid":
        lams = res.diagnostics["hybrid_lambdas"]
        assert lams[0] == pytest.approx(1.0) and lams[-1] == pytest.approx(0.2) and len(lams) == 10


def test_ccdf_runs_fewer_levels():
    prior, op, meas, *_ = make_problem(nu=0.05, dtype=torch.complex64)
    res = ScoreMRI(n_levels=40, sigma_max=3.0, split_complex=False, t0=0.25).sample(meas, prior, 1, generator=0)
    assert res.diagnostics["levels_run"] == 10 and res.nfe == 20


def test_seeded_and_reproducible():
    means = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    prior = GaussianMixturePrior(means, torch.tensor([0.2, 0.2], dtype=torch.float64))
    meas = Measurement(torch.tensor([[0.1]], dtype=torch.float64), DenseOperator(torch.eye(2, dtype=torch.float64)[:1]), 0.2)
    for S in (PULA(n_levels=5), ULA(n_levels=5), AnnealedULA(n_levels=5)):
        a = S.sample(meas, prior, 7, generator=4)
        b = S.sample(meas, prior, 7, generator=4)
        assert torch.equal(a.samples, b.samples) and a.samples.shape == (7, 2)
        assert a.mean.shape == (2,) and a.std.shape == (2,) and a.nfe == 5


def test_tweedie_and_split_agree_with_exact_scores():
    # Exact denoiser of N(0, v I) at level sigma: D = v / (v + sigma^2) x, so Tweedie gives -x/(v+sigma^2)
    v = 0.7
    prior = GaussianMixturePrior(torch.zeros(1, 5, dtype=torch.float64), torch.tensor([v], dtype=torch.float64))
    tw = TweedieScore(lambda x, s: v / (v + s**2) * x)
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(tw.score(x, 0.3), prior.score(x, 0.3))
    # Real prior applied to Re and Im separately == complex circular prior with E|x|^2 = 2 v
    cprior = GaussianMixturePrior(torch.zeros(1, 5, dtype=torch.complex128), torch.tensor([2 * v], dtype=torch.float64))
    xc = torch.randn(3, 5, dtype=torch.complex128)
    assert torch.allclose(ComplexSplitScore(prior).score(xc, 0.3), cprior.score(xc, 0.3))


def test_score_is_gradient_of_log_prob():
    torch.manual_seed(0)
    means = torch.randn(3, 4, dtype=torch.complex128)
    prior = GaussianMixturePrior(means, torch.tensor([0.5, 0.3, 0.8], dtype=torch.float64))
    x = torch.randn(2, 4, dtype=torch.complex128, requires_grad=True)
    prior.log_prob(x, 0.4).sum().backward()
    # torch's complex grad of a real function is d/dRe + i d/dIm
    assert torch.allclose(prior.score(x.detach(), 0.4), x.grad)


def test_bad_input():
    op = DenseOperator(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma"):
        Measurement(torch.zeros(1, 2, dtype=torch.float64), op, 0.0)
    with pytest.raises(ValueError, match="shape"):
        Measurement(torch.zeros(1, 3, dtype=torch.float64), op, 1.0)
    meas = Measurement(torch.zeros(1, 2, dtype=torch.float64), op, 1.0)
    with pytest.raises(TypeError, match="score"):
        PULA(n_levels=2).sample(meas, object(), 2)
    with pytest.raises(ValueError, match="mode"):
        ScoreMRI(mode="bogus")
    with pytest.raises(TypeError, match="MultiCoilMRI"):
        ScoreMRI(mode="ssos", n_levels=2).sample(meas, GaussianMixturePrior(torch.zeros(1, 2, dtype=torch.float64), 1.0), 1)


def test_max_time_stops_early_and_keeps_chains():
    prior = GaussianMixturePrior(torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64))
    meas = Measurement(torch.zeros(1, 1, dtype=torch.float64), DenseOperator(torch.eye(2, dtype=torch.float64)[:1]), 0.1)
    res = ULA(n_levels=10_000).sample(meas, prior, 3, generator=0, max_time=0.05, trajectory_every=1)
    assert res.diagnostics["interrupted"] and 0 < res.diagnostics["levels_done"] < 10_000
    assert res.samples.shape == (3, 2) and len(res.trajectory) == res.diagnostics["levels_done"]
