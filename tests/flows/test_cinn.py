import math

import pytest
import torch

from bayesmri.flows.base import RadialGaussian
from bayesmri.flows.cinn import MultiScaleCINN, conditional_mean_std, load_cinn, refine_sample, save_cinn
from bayesmri.flows.cinn_layers import HaarDownsampling, LearnedOrthogonalDownsampling
from bayesmri.flows.conditioning import gradient_tikhonov_matrix, pseudo_inverse_matrix
from bayesmri.flows.iunet import ConditionalIUNet


def _perturb(model, scale=0.1, seed=0):
    """Zero-initialised couplings are the identity: randomise every weight so the tests mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _tiny(kind, size=8, **kw):
    torch.manual_seed(0)
    if kind == "iunet":
        return ConditionalIUNet(size, 1, scales=2, couplings=1, hidden=4, unet_chans=2, unet_pools=1, feat_ch=2, **kw)
    return MultiScaleCINN(size, 2, n_levels=2, couplings=1, hidden=4, cond_channels=2, fc_couplings=1,
                          fc_hidden=8, cond_vec=4, downsampling=kind, **kw)


MODELS = [("haar", {}), ("checkerboard", {}), ("learned", {}), ("iunet", {"coupling": "additive"}),
          ("iunet", {"coupling": "affine"})]


@pytest.mark.parametrize("kind,kw", MODELS)
def test_invertible(kind, kw):
    m = _perturb(_tiny(kind, size=16, **kw)).eval()
    x = torch.randn(3, 1, 16, 16)
    c = torch.randn(3, m.cond_in, 16, 16)
    z, _ = m(x, c)
    assert z.shape == (3, 256)
    assert float((m.inverse(z, c) - x).abs().max()) < 1e-4
    z2 = torch.randn(3, 256)
    z2_back, _ = m(m.inverse(z2, c), c)
    assert float((z2_back - z2).abs().max()) < 1e-4


@pytest.mark.parametrize("kind,kw", MODELS)
def test_logdet_matches_bruteforce_jacobian(kind, kw):
    m = _perturb(_tiny(kind, **kw), scale=0.2).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    c = torch.randn(1, m.cond_in, 8, 8, dtype=torch.float64)
    cond = m.conditioning(c)
    _, logdet = m(x, cond=cond)
    J = torch.autograd.functional.jacobian(lambda v: m(v.reshape(1, 1, 8, 8), cond=cond)[0][0], x.flatten())
    ref = torch.linalg.slogdet(J)[1]
    assert float(logdet[0]) == pytest.approx(float(ref), abs=1e-6)
    if kw.get("coupling") == "additive":
        assert float(logdet.abs().max()) == 0.0  # volume preserving, by construction


def test_downsamplings_are_orthogonal():
    x = torch.randn(2, 3, 6, 6)
    for layer in (HaarDownsampling(), _perturb(LearnedOrthogonalDownsampling(3))):
        y, ld = layer(x)
        assert y.shape == (2, 12, 3, 3) and float(ld.abs().max()) == 0
        assert float(y.norm() / x.norm()) == pytest.approx(1.0, abs=1e-5)
        assert float((layer.inverse(y) - x).abs().max()) < 1e-5
    # Haar: the first quarter of the channels is the (scaled) 2x2 average
    y, _ = HaarDownsampling()(x)
    avg = torch.nn.functional.avg_pool2d(x, 2) * 2
    assert torch.allclose(y[:, :3], avg, atol=1e-6)


def test_radial_base_normalised_and_sampler_matches():
    base = RadialGaussian()
    g = torch.Generator().manual_seed(0)
    n = 5
    # importance sampling, E_q[p/q] = 1. A Gaussian proposal has infinite variance here (p ~ ||z||^(1-n)
    # at 0), so the proposal shares the singularity: z = r u, r ~ Exp(1), u uniform on the sphere, i.e.
    # q(z) = exp(-r) / (S_n r^(n-1)) with S_n computed independently of base.py.
    r = torch.empty(400_000, dtype=torch.float64).exponential_(1.0, generator=g)
    u = torch.randn(400_000, n, generator=g, dtype=torch.float64)
    q = r[:, None] * u / u.norm(dim=1, keepdim=True)
    log_sn = math.log(2 * math.pi ** (n / 2) / math.gamma(n / 2))
    log_q = -r - log_sn - (n - 1) * torch.log(r)
    est = torch.exp(base.log_prob(q) - log_q).mean()
    assert float(est) == pytest.approx(1.0, abs=0.01)
    # the sampler: ||z|| is half-normal, the direction uniform; compare with the density's radial law
    z = base.sample(200_000, 50, generator=g, dtype=torch.float64)
    r = z.norm(dim=1)
    assert float(r.mean()) == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)
    assert float((r**2).mean()) == pytest.approx(1.0, abs=0.02)
    assert float(z.mean(0).abs().max()) < 0.01


def test_sampling_mean_std_and_reproducibility():
    m = _perturb(_tiny("haar")).eval()
    c = torch.randn(2, 2, 8, 8)
    a = m.sample(c, 5, generator=3)
    b = m.sample(c, 5, generator=3)
    assert a.shape == (5, 2, 1, 8, 8) and torch.equal(a, b)
    mean, std, xs = conditional_mean_std(m, c, n_samples=7, generator=1, chunk=3, return_samples=True)
    assert xs.shape == (7, 2, 1, 8, 8)
    assert torch.allclose(mean, xs.mean(0), atol=1e-6) and torch.allclose(std, xs.std(0), atol=1e-6)
    assert float(std.min()) > 0
    with pytest.raises(ValueError):
        m.sample(c, 0)



def test_chunked_sampling_gives_the_same_samples_and_a_stop_keeps_the_finished_ones():
    m = _perturb(_tiny("haar")).eval()
    c = torch.randn(2, 2, 8, 8)
    a = m.sample(c, 5, generator=3)
    b = m.sample(c, 5, generator=3, chunk=2)  # the base samples are drawn before the chunks
    assert b.shape == a.shape and torch.allclose(a, b, atol=1e-5)
    cut = m.sample(c, 5, generator=3, chunk=2, max_time=0.0)  # the shared loop stops after one chunk
    assert cut.shape == (2, 2, 1, 8, 8) and torch.equal(cut, b[:2])
    with pytest.raises(ValueError):
        m.sample(c, 2, chunk=0)


def test_refinement_reduces_data_misfit():
    m = _perturb(_tiny("haar")).eval()
    A = torch.randn(20, 64, generator=torch.Generator().manual_seed(0)) / 8
    x_true = torch.rand(2, 1, 8, 8)
    fwd = lambda x: x.flatten(1) @ A.T  # noqa: E731
    y = fwd(x_true)
    c = torch.randn(2, 2, 8, 8)
    x0 = m.sample(c, 1, generator=0)[0]
    x1 = refine_sample(m, fwd, y, c, x0, lam=0.0, steps=30, lr=0.05)
    assert float((fwd(x1) - y).norm()) < 0.5 * float((fwd(x0) - y).norm())
    assert all(p.requires_grad for p in m.parameters())


def test_nll_training_decreases_and_save_load(tmp_path):
    torch.manual_seed(0)
    m = _tiny("haar")
    c = torch.rand(16, 2, 8, 8)
    x = c[:, :1] + 0.05 * torch.randn(16, 1, 8, 8)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    nll0 = float(-m.log_prob(x, c).mean())
    for _ in range(40):
        loss = -m.log_prob(x, c).mean() / 64
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(-m.log_prob(x, c).mean()) < nll0 - 64 * 0.5
    save_cinn(m, tmp_path / "w")
    m2, meta = load_cinn(tmp_path / "w")
    assert meta["model_type"] == "cinn_multiscale"
    assert torch.allclose(m2.log_prob(x, c), m.eval().log_prob(x, c), atol=1e-5)


def test_cs_inversion_matrices():
    A = torch.randn(30, 64, generator=torch.Generator().manual_seed(0)) / math.sqrt(30)
    P = pseudo_inverse_matrix(A)
    assert torch.allclose(A @ P, torch.eye(30), atol=1e-4)
    R = gradient_tikhonov_matrix(A, 0.1, (8, 8))
    # a constant image has zero gradient, so the regulariser leaves R (A x) = x for it... up to A's nullspace
    x = torch.ones(64)
    assert float((R @ (A @ x) - x).norm() / x.norm()) < float((P @ (A @ x) - x).norm() / x.norm())
    with pytest.raises(ValueError):
        gradient_tikhonov_matrix(A, 0.0, (8, 8))


def test_bad_inputs():
    with pytest.raises(ValueError):
        MultiScaleCINN(10, 1, n_levels=2)
    with pytest.raises(ValueError):
        ConditionalIUNet(16, 1, coupling="multiplicative")
    m = _tiny("haar")
    with pytest.raises(ValueError):
        m(torch.randn(1, 1, 8, 9), torch.randn(1, 2, 8, 8))
    with pytest.raises(ValueError):
        m.inverse(torch.randn(1, 10), torch.randn(1, 2, 8, 8))


def test_training_noise_is_default_and_noise_free_degenerate_targets_warn():
    """Regression for the multi-scale MRI cINN below zero-filled (issue 8, benchmarks/results/cinn.md).

    The MRI targets are exactly 0 on ~68 % of the pixels; trained without the paper's target noise, the
    likelihood of a volume-changing flow is unbounded there. The loss must add the noise by default and
    warn when it is turned off on such targets (not for volume-preserving additive iUNets).
    """
    import argparse
    import warnings

    from bayesmri.flows.cinn import TRAINING_NOISE_STD
    from bayesmri.train.cinn import CINNLoss, cli_add_arguments

    assert CINNLoss().noise_std == pytest.approx(math.sqrt(0.005)) == TRAINING_NOISE_STD
    ap = argparse.ArgumentParser()
    cli_add_arguments(ap)
    assert ap.parse_args(["--problem", "mri"]).train_noise is True
    assert ap.parse_args(["--problem", "mri", "--no-train-noise"]).train_noise is False

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    x_bg = x * (torch.rand(4, 1, 8, 8, generator=g) > 0.5)  # half the pixels exactly 0
    c = torch.randn(4, 2, 8, 8, generator=g)
    ms = _tiny("haar")
    with pytest.warns(UserWarning, match="unbounded"):
        CINNLoss(0.0)(ms, {"x": x_bg, "c": c}, g)
    add = _tiny("iunet", coupling="additive")
    aff = _tiny("iunet", coupling="affine")
    c1 = c[:, :1]
    with pytest.warns(UserWarning, match="unbounded"):
        CINNLoss(0.0)(aff, {"x": x_bg, "c": c1}, g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CINNLoss(0.0)(add, {"x": x_bg, "c": c1}, g)  # logdet = 0: no collapse possible
        CINNLoss(0.0)(ms, {"x": x, "c": c}, g)  # continuous targets
        loss, info = CINNLoss()(ms, {"x": x_bg, "c": c}, g)  # default: noised targets
    # the noise really reaches the likelihood: the default loss differs from the noise-free one
    with pytest.warns(UserWarning):
        _, info0 = CINNLoss(0.0)(ms, {"x": x_bg, "c": c}, g)
    assert abs(info["nll"] - info0["nll"]) > 1e-3
