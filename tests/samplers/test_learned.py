"""Learned-prior adapter and the registered diffusion methods (tiny random networks, analytic priors)."""
import math

import pytest
import torch

from bayesmri.data import load_slices, simulate_acquisition
from bayesmri.methods import available_methods, get_method, method_info
from bayesmri.physics.masks import make_mask
from bayesmri.physics.nufft import NonCartesianMRI
from bayesmri.physics.linop import conjugate_gradient
from bayesmri.physics.trajectories import radial_trajectory
from bayesmri.priors import StationaryGaussianPrior
from bayesmri.priors.score_unet import build_score_unet
from bayesmri.samplers import PULA, AnnealedULA, Measurement, ScoreMRI
from bayesmri.priors.score import ScorePrior
from bayesmri.samplers.learned import data_scale, sample_prior
import bayesmri.methods.diffusion  # noqa: F401  (registers the methods on import)
from bayesmri.methods.diffusion import DEFAULTS, estimate_noise_sigma
from tests.test_uncertainty import check_summaries

METHODS = ("pula", "ula-annealed", "score-mri")
FAST = {  # few levels: the tests check plumbing and properties, not image quality
    "pula": dict(n_levels=4),
    "ula-annealed": dict(n_levels=30),
    "score-mri": dict(n_levels=10, t0=0.5, n_corrector=1),
}
NFE = {"pula": 4, "ula-annealed": 30, "score-mri": 2 * 5}  # + 1 for the default final Tweedie step


def tiny_net(seed=0):
    torch.manual_seed(seed)
    net = build_score_unet(dict(base_channels=4, channel_mult=(1, 2), num_res_blocks=1, attention=False,
                                embed_dim=8, dropout=0.0, fourier_scale=16.0, sigma_data=0.5,
                                input_scaling=True))
    with torch.no_grad():  # the output conv starts at zero (score 0): give it small random weights
        net.conv_out.weight.normal_(0, 0.05)
    return net.eval()


class GaussNet(torch.nn.Module):
    """Score of N(0, v I) per real component: -x / (v + sigma^2) (a 'network' with a closed form)."""

    def __init__(self, v=1.0):
        super().__init__()
        self.v = torch.nn.Parameter(torch.tensor(float(v)), requires_grad=False)

    def score(self, x, sigma):
        return -x / (self.v + float(sigma) ** 2)


@pytest.fixture(scope="module")
def tiny_sample():
    mag = load_slices("test", size=32)[5]
    mask = make_mask("gro", (32, 32), 4, seed=0)
    return simulate_acquisition(mag, mask=mask, ncoils=4, snr_db=30, seed=1)


def test_methods_registered():
    names = available_methods()
    for m in METHODS:
        assert m in names and method_info(m).stochastic


def test_scoreprior_scale_is_exact_for_gaussian():
    # p_net = N(0, v); data a X ~ N(0, a^2 v): score at sigma = -x / (a^2 v + sigma^2)
    a, v, sigma = 2.5, 0.7, 0.3
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    got = ScorePrior(GaussNet(v), scale=a).score(x, sigma)
    torch.testing.assert_close(got, -x / (a**2 * v + sigma**2), rtol=1e-5, atol=1e-6)
    # complex: Re and Im scored separately, one network call
    z = torch.randn(3, 8, 8, dtype=torch.complex64)
    p = ScorePrior(GaussNet(v), scale=a)
    s = p.score(z, sigma)
    assert s.dtype == z.dtype and s.shape == z.shape and p.calls == 1
    torch.testing.assert_close(s, -z / (a**2 * v + sigma**2), rtol=1e-5, atol=1e-6)
    assert p.score(z[:, None], sigma).shape == (3, 1, 8, 8)


def test_scoreprior_chunking_and_errors():
    net = tiny_net()
    x = torch.randn(5, 16, 16, dtype=torch.complex64)
    full = ScorePrior(net, scale=1.3).score(x, 0.2)
    chunked = ScorePrior(net, scale=1.3, chunk_size=2).score(x, 0.2)
    torch.testing.assert_close(full, chunked, rtol=1e-4, atol=1e-5)
    assert full.abs().max() > 0  # the random network gives a non-zero score
    with pytest.raises(ValueError, match="scale"):
        ScorePrior(net, scale=0.0)
    with pytest.raises(ValueError, match="sigma"):
        ScorePrior(net).score(x, -1.0)
    with pytest.raises(TypeError):
        ScorePrior(object())


def test_data_scale_tracks_the_image(tiny_sample):
    op, y = tiny_sample.operator("true"), tiny_sample.y
    a = data_scale(op, y)
    t = float(torch.quantile(tiny_sample.target.abs().reshape(-1), 0.95))
    assert abs(a / t - 1) < 0.15
    assert abs(data_scale(op, 3 * y) / a - 3) < 1e-3  # linear in the data


def test_noise_estimate():
    mag = load_slices("test", size=64)[5]
    s = simulate_acquisition(mag, mask=make_mask("gro", (64, 64), 4, seed=0), ncoils=4, snr_db=30, seed=1)
    ratio = estimate_noise_sigma(s.y) / s.noise_sigma
    assert 0.7 < ratio < 2.0, ratio
    s2 = simulate_acquisition(mag, mask=make_mask("gro", (64, 64), 4, seed=0), ncoils=4, snr_db=20, seed=1)
    assert estimate_noise_sigma(s2.y) > 1.5 * estimate_noise_sigma(s.y)  # follows the noise level (x3.2)


@pytest.mark.parametrize("name", METHODS)
def test_registered_method_on_tiny_sample(name, tiny_sample):
    fn = get_method(name)
    prior = ScorePrior(tiny_net())
    P = 3
    kw = dict(prior=prior, maps="true", **FAST[name])
    r1 = fn(tiny_sample, n_samples=P, generator=torch.Generator().manual_seed(4), **kw)
    assert r1.samples.shape == (P, 32, 32) and r1.samples.is_complex()
    assert r1.mean.shape == (32, 32) and r1.std.shape == (32, 32)
    check_summaries(r1)
    assert r1.nfe == NFE[name] + 1
    assert r1.wall_time > 0 and bool(torch.isfinite(r1.samples).all())
    r2 = fn(tiny_sample, n_samples=P, generator=torch.Generator().manual_seed(4), **kw)
    torch.testing.assert_close(r1.samples, r2.samples, rtol=0, atol=0)
    r3 = fn(tiny_sample, n_samples=P, generator=torch.Generator().manual_seed(5), **kw)
    assert not torch.allclose(r1.samples, r3.samples)
    # data consistency: a posterior sample misses the data by about the noise on each measured point
    # (checked on the chains themselves: the final Tweedie step of a random network may move them)
    # (and at sigma_min = 0.01: the last level's own noise sets the floor of Score-MRI's residual)
    r1 = fn(tiny_sample, n_samples=P, generator=torch.Generator().manual_seed(4), final_denoise=False,
            **dict(kw, sigma_min=0.01))
    assert r1.nfe == NFE[name]
    op, y = tiny_sample.operator("true"), tiny_sample.y
    m = op.mask.expand_as(y) if hasattr(op, "mask") else torch.ones_like(y.real)
    resid = ((op.A(r1.samples) - y).abs() ** 2 * m).sum((1, 2, 3)) / m.sum()
    nu = tiny_sample.noise_sigma
    zf_resid = float(((op.A(torch.zeros_like(r1.mean)[None]) - y).abs() ** 2).sum() / m.sum()) ** 0.5
    assert zf_resid > 30 * nu  # the bounds below are not trivially met
    if name == "pula":  # exact likelihood, preconditioned: within the noise after any number of levels
        assert float(resid.sqrt().max()) < 3 * nu, float(resid.sqrt().max()) / nu
    else:  # plain gradient / DC steps against a random score: far closer to the data than 0 is
        assert float(resid.sqrt().max()) < 0.5 * zf_resid, float(resid.sqrt().max()) / zf_resid


def test_pula_cg_iterations_follow_the_operator(tiny_sample):
    # cg_iter="auto": the paper's 10 for Cartesian data, 40 for the worse-conditioned non-Cartesian
    # normal operator; an explicit value wins.
    fn = get_method("pula")
    kw = dict(prior=ScorePrior(tiny_net()), maps="true", n_levels=2, n_samples=1, generator=0)
    assert fn(tiny_sample, **kw).diagnostics["cg_iter"] == 10
    assert fn(tiny_sample, cg_iter=7, **kw).diagnostics["cg_iter"] == 7
    mag = load_slices("test", size=32)[5]
    rad = simulate_acquisition(mag, trajectory=radial_trajectory(12, 32), ncoils=2, snr_db=30, seed=1)
    assert fn(rad, **kw).diagnostics["cg_iter"] == 40


def test_registered_method_rejects_unknown_option(tiny_sample):
    with pytest.raises(ValueError, match="unknown option"):
        get_method("pula")(tiny_sample, prior=ScorePrior(tiny_net()), n_stepz=3)
    with pytest.raises(TypeError):
        get_method("pula")(tiny_sample, prior=42, maps="true")
    assert set(DEFAULTS) == set(METHODS)


def test_unconditional_sampler_matches_gaussian():
    # N(0, v) per pixel: reverse diffusion must end with per-pixel variance v (independent pixels)
    v = 0.25
    x = sample_prior(ScorePrior(GaussNet(v)), 400, (8, 8), n_levels=60, sigma_max=10.0, sigma_min=0.01,
                     n_corrector=1, denoise_last=False, generator=0)
    assert x.shape == (400, 8, 8)
    assert abs(float(x.var()) / v - 1) < 0.1
    assert abs(float(x.mean())) < 0.03
    y = sample_prior(ScorePrior(tiny_net()), 2, (16, 16), n_levels=3, generator=0)
    assert y.shape == (2, 16, 16) and bool(torch.isfinite(y).all())


def test_unconditional_sampler_conditioned_on_the_mean_matches_gaussian():
    # N(0, v I) given the image mean m: the mean is exactly m and, as the mean and the zero-mean part of
    # an isotropic Gaussian are independent, the zero-mean part is distributed as without conditioning.
    v, N = 0.25, 64
    m = torch.tensor([0.3, -0.2]).repeat(200)
    kw = dict(n_levels=60, sigma_max=10.0, sigma_min=0.01, denoise_last=False, generator=0)
    x = sample_prior(ScorePrior(GaussNet(v)), 400, (8, 8), n_corrector=1, mean=m, **kw)
    torch.testing.assert_close(x.mean(dim=(1, 2)), m, rtol=0, atol=1e-5)
    r = (x - m[:, None, None]).reshape(400, N)
    assert abs(float(r.var(dim=0).mean()) / (v * (1 - 1 / N)) - 1) < 0.12
    # Predictor only: the same draws give the same zero-mean part with and without the condition
    # (the projection touches nothing but the mean).
    a = sample_prior(ScorePrior(GaussNet(v)), 50, (8, 8), n_corrector=0, mean=m[:50], **kw)
    b = sample_prior(ScorePrior(GaussNet(v)), 50, (8, 8), n_corrector=0, **kw)
    zm = lambda u: u - u.mean(dim=(1, 2), keepdim=True)  # noqa: E731
    torch.testing.assert_close(zm(a), zm(b), rtol=0, atol=1e-5)
    assert float((b.mean(dim=(1, 2)) - m[:50]).abs().mean()) > 0.05  # without it the mean is free
    y = sample_prior(ScorePrior(tiny_net()), 2, (16, 16), n_levels=3, generator=0, mean=0.5)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.full((2,), 0.5), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="mean"):
        sample_prior(ScorePrior(GaussNet(v)), 3, (4, 4), n_levels=2, mean=[0.1, 0.2])


def test_image_means_drawn_from_the_stored_distribution():
    # Inverse-CDF draws through quantiles [0, 1, 3] (CDF: half the mass on [0, 1], half on [1, 3]).
    pr = ScorePrior(GaussNet(0.25), image_mean_quantiles=[0.0, 1.0, 3.0])
    m = pr.draw_image_means(4000, generator=0)
    assert float(m.min()) >= 0 and float(m.max()) <= 3
    assert abs(float((m < 1).double().mean()) - 0.5) < 0.03
    assert abs(float(m.median()) - 1.0) < 0.05
    torch.testing.assert_close(pr.with_scale(2.0).draw_image_means(4000, generator=0), 2 * m)  # data units
    # sample_prior(mean="prior") draws the means with its generator and conditions on them exactly
    x = sample_prior(pr, 6, (8, 8), n_levels=4, generator=3, mean="prior")
    torch.testing.assert_close(x.mean(dim=(1, 2)), pr.draw_image_means(6, generator=3), rtol=0, atol=1e-5)
    # The quantiles travel with the weights' metadata
    net = GaussNet(0.25)
    net.meta = {"prior": {"image_mean_quantiles": [0.1, 0.2]}}
    assert ScorePrior(net).image_mean_quantiles == (0.1, 0.2)
    with pytest.raises(ValueError, match="image-mean distribution"):
        sample_prior(ScorePrior(GaussNet(0.25)), 2, (4, 4), n_levels=2, mean="prior")
    with pytest.raises(ValueError, match="non-decreasing"):
        ScorePrior(GaussNet(0.25), image_mean_quantiles=[1.0, 0.0])


def test_shipped_score_weights_carry_the_training_mean_distribution():
    from bayesmri.priors.score import load_default_score_prior
    from bayesmri.train.score import image_mean_quantiles, load_training_images

    q = load_default_score_prior().image_mean_quantiles
    expected = image_mean_quantiles(load_training_images("builtin", size=64))
    assert q is not None and len(q) == 21
    torch.testing.assert_close(torch.tensor(q), torch.tensor(expected), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ non-Cartesian + analytic prior
def _radial_problem():
    torch.manual_seed(0)
    H = W = 16
    dt = torch.complex128
    ky = torch.arange(H, dtype=torch.float64) - H // 2
    k2 = ky[:, None] ** 2 + ky[None, :] ** 2
    power = 0.05 + 2.0 / (1 + k2 / 8.0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    mean = (((xx**2 + yy**2) < 0.5).double() * torch.exp(1j * 0.5 * xx)).to(dt)
    prior = StationaryGaussianPrior(mean, power)
    maps = torch.stack([torch.exp(-((xx - c) ** 2) / 0.8) * torch.exp(1j * c * yy) for c in (-0.7, 0.7)])
    maps = (maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))).to(dt)[None]
    traj = radial_trajectory(6, 16, dtype=torch.float64)
    op = NonCartesianMRI(traj, (H, W), coil_maps=maps)
    x = prior.sample(1, generator=1)
    nu = 0.05
    g = torch.Generator().manual_seed(2)
    noise = torch.view_as_complex(torch.randn(*op.A(x).shape, 2, generator=g, dtype=torch.float64)) * nu / math.sqrt(2)
    y = op.A(x) + noise
    meas = Measurement(y, op, nu)
    # closed-form posterior mean: (2/nu^2 A^H A + S^-1) m = 2/nu^2 A^H y + S^-1 mu
    Hm = lambda v: (2 / nu**2) * op.normal(v) + prior.precision_apply(v)  # noqa: E731
    m = conjugate_gradient(Hm, (2 / nu**2) * op.A_adjoint(y) + prior.precision_apply(mean[None]), None,
                           max_iter=500, tol=1e-12)
    return meas, prior, m[0], x[0]


@pytest.fixture(scope="module")
def radial_problem():
    return _radial_problem()


def test_pula_reports_and_warns_about_an_unconverged_cg_solve(radial_problem):
    # Two CG iterations on the radial normal operator are far from a solve: the sampler says so
    # (the samples would carry the solver error as a noise floor); enough iterations are silent.
    meas, prior, _, _ = radial_problem
    meas = Measurement(meas.y, meas.op, meas.sigma / 10)  # higher SNR: a worse-conditioned Hessian
    with pytest.warns(RuntimeWarning, match="raise cg_iter"):
        bad = PULA(n_levels=3, sigma_max=3.0, cg_iter=2).sample(meas, prior, n_samples=2, generator=0)
    assert bad.diagnostics["cg_residual"] > 0.2
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        good = PULA(n_levels=3, sigma_max=3.0, cg_iter=200).sample(meas, prior, n_samples=2, generator=0)
    assert good.diagnostics["cg_residual"] < 1e-3


def test_pula_radial_posterior_mean(radial_problem):
    meas, prior, m, _ = radial_problem
    P = 64
    res = PULA(n_levels=30, sigma_max=3.0, sigma_min=0.01).sample(meas, prior, n_samples=P, generator=0)
    err = float(((res.mean - m).abs() ** 2).sum())
    tr = float((res.std**2).sum())  # ~ trace of the posterior covariance
    assert err < 2.5 * tr / P, err / (tr / P)
    assert err < 0.02 * float((m.abs() ** 2).sum())


def test_annealed_ula_and_score_mri_radial(radial_problem):
    meas, prior, m, x = radial_problem
    P = 32
    res = AnnealedULA(n_levels=300, sigma_max=3.0, sigma_min=0.01).sample(meas, prior, n_samples=P, generator=0)
    err = float(((res.mean - m).abs() ** 2).sum())
    tr = float((res.std**2).sum())
    # plain ULA converges slowly (the pULA paper's point): 300 levels reach a few percent of ||m||^2
    assert err < 0.1 * float((m.abs() ** 2).sum()), err
    assert err < 0.2 * float(((prior.mean - m).abs() ** 2).sum())  # far closer than the prior mean
    # Score-MRI is not an exact posterior sampler: its mean must still beat the zero-filled image and
    # land near the posterior mean (within the posterior's spread)
    sm = ScoreMRI(n_levels=100, sigma_max=5.0, split_complex=False).sample(meas, prior, n_samples=8, generator=0)
    assert sm.samples.shape == (8, 16, 16)
    e_sm = float(((sm.mean - x).abs() ** 2).sum())
    e_zf = float(((meas.AHy()[0] - x).abs() ** 2).sum())
    assert e_sm < 0.5 * e_zf
    assert float(((sm.mean - m).abs() ** 2).sum()) < 2 * tr


def test_phase_demodulation_is_a_change_of_variables(tiny_sample):
    # With an isotropic Gaussian prior the posterior is invariant under x' = conj(p) x, and every
    # step of pULA is equivariant: the posterior means with and without demodulation agree up to Monte
    # Carlo error. A missing or conjugated back-rotation would rotate the mean by p (or p^2).
    kw = dict(prior=ScorePrior(GaussNet(1.0)), maps="true", n_levels=10, final_denoise=True)
    P = 96
    r0 = get_method("pula")(tiny_sample, n_samples=P, generator=0, phase="none", **kw)
    r1 = get_method("pula")(tiny_sample, n_samples=P, generator=1, phase="lowres", **kw)
    assert r1.diagnostics["phase"] == "lowres" and r0.diagnostics["phase"] == "none"
    err = torch.linalg.vector_norm(r1.mean - r0.mean)
    mc = (2 / P) ** 0.5 * torch.linalg.vector_norm(r0.std)  # std of the difference of two P-means
    assert float(err) < 2 * float(mc), (float(err), float(mc))
    # the test has power: the demodulating phase is far from constant on this sample
    tgt = tiny_sample.target.reshape(r0.mean.shape)
    rot = torch.exp(1j * torch.angle(tgt)) ** 2
    assert float(torch.linalg.vector_norm(rot * r0.mean - r0.mean)) > 5 * float(mc)
    with pytest.raises(ValueError, match="phase"):
        get_method("pula")(tiny_sample, n_samples=1, phase="magnitude", **kw)


def test_final_denoise_is_tweedie_for_a_gaussian_prior(tiny_sample):
    # For N(0, v) the Tweedie step at sigma is the exact E[x0 | x_sigma] = x v / (v + sigma^2) (per
    # real component, at the data scale a): the denoised chains are the raw ones shrunk by that factor.
    kw = dict(prior=ScorePrior(GaussNet(1.0)), maps="true", n_levels=6, phase="none", sigma_min=0.3)
    raw = get_method("pula")(tiny_sample, n_samples=2, generator=3, final_denoise=False, **kw)
    den = get_method("pula")(tiny_sample, n_samples=2, generator=3, final_denoise=True, **kw)
    a, s = raw.diagnostics["scale"], 0.3 * raw.diagnostics["scale"]
    shrink = a**2 / (a**2 + s**2)
    torch.testing.assert_close(den.samples, raw.samples * shrink, rtol=1e-4, atol=1e-6)
    assert den.nfe == raw.nfe + 1 and den.diagnostics["final_denoise_sigma"] == pytest.approx(s)



def test_phase_constrained_option_samples_a_real_demodulated_image(tiny_sample):
    # phase="lowres-real": every sample is p * (real image), p the same low-resolution phase that
    # "lowres" uses; with "lowres" the demodulated samples keep an imaginary part.
    kw = dict(prior=ScorePrior(GaussNet(1.0)), maps="true", n_levels=4)
    real = get_method("pula")(tiny_sample, n_samples=3, generator=0, phase="lowres-real", **kw)
    free = get_method("pula")(tiny_sample, n_samples=3, generator=0, phase="lowres", **kw)
    # the phase of any nonzero pixel of a real-demodulated sample is +-p: samples are collinear per pixel
    a, b = real.samples[0], real.samples[1]
    cross = (a * b.conj()).imag.abs().max()
    assert float(cross) < 1e-4 * float((a.abs() * b.abs()).max())
    fa, fb = free.samples[0], free.samples[1]
    assert float((fa * fb.conj()).imag.abs().max()) > 1e-2 * float((fa.abs() * fb.abs()).max())


def test_fitted_phase_option_demodulates_by_the_polynomial_fit_of_the_least_squares_image(tiny_sample):
    # phase="fit-real": every sample is p * (real image) with p = fit_smooth_phase(A^+ y) (not the
    # low-resolution phase); phase="fit" runs the same demodulation without the real constraint.
    from bayesmri.methods import prepare
    from bayesmri.physics.phase import fit_smooth_phase, lowres_phase
    from bayesmri.methods.diffusion import PHASE_DEGREE, least_squares_image

    kw = dict(prior=ScorePrior(GaussNet(1.0)), maps="true", n_levels=4)
    real = get_method("pula")(tiny_sample, n_samples=2, generator=0, phase="fit-real", **kw)
    assert real.diagnostics["phase"] == "fit-real"
    _, op, y = prepare(tiny_sample, "cpu", "true")
    x_ls = least_squares_image(op, y)
    H, W = x_ls.shape[-2:]
    p = fit_smooth_phase(x_ls.reshape(-1, H, W), PHASE_DEGREE).reshape(H, W)
    for smp in real.samples:
        big = smp.abs() > 1e-3 * smp.abs().max()
        assert float((smp * p.conj()).imag[big].abs().max()) < 1e-4 * float(smp.abs().max())
    # and it is not the low-resolution phase: that one leaves an imaginary part on these samples
    q = lowres_phase(x_ls.reshape(-1, H, W), round(0.2 * min(H, W))).reshape(H, W)
    assert float((real.samples[0] * q.conj()).imag.abs().max()) > 1e-2 * float(real.samples[0].abs().max())
    free = get_method("pula")(tiny_sample, n_samples=2, generator=0, phase="fit", **kw)
    assert float((free.samples[0] * p.conj()).imag.abs().max()) > 1e-2 * float(free.samples[0].abs().max())
    with pytest.raises(ValueError, match="phase_degree"):
        get_method("pula")(tiny_sample, n_samples=1, phase="fit", phase_degree=2.5, **kw)


def test_benchmark_and_demo_settings_are_valid_sampler_options():
    """The presets (``"demo"``, ``"bench"``) are merged over ``DEFAULTS`` by the demo and the benchmarks: a
    misspelt key would be rejected only at run time, after minutes of other methods; every merged setting
    must also construct its sampler (value checks in the constructors)."""
    from bayesmri.methods.diffusion import CG_ITER_CARTESIAN, PRESETS, SIGMA_MIN_FALLBACK, _build

    assert set(PRESETS) <= set(DEFAULTS)
    for name, presets in PRESETS.items():
        for opts in presets.values():
            assert set(opts) <= set(DEFAULTS[name]), (name, set(opts) - set(DEFAULTS[name]))
            p = dict(DEFAULTS[name], **opts)
            if p.get("cg_iter") == "auto":  # resolved per operator by run_sampler
                p["cg_iter"] = CG_ITER_CARTESIAN
            if p.get("sigma_min") == "auto":  # resolved from the prior's config by run_sampler
                p["sigma_min"] = SIGMA_MIN_FALLBACK
            sampler = _build(name, p, 1.0)  # data scale 1: sigma_max / sigma_min are taken as given
            for k, v in opts.items():
                assert getattr(sampler, k) == v, (name, k)
