"""PoGMDM prior: analytic score/energy, diffusion variance update, shearlet system, projections."""
import math

import pytest
import torch

from bayesmri.priors.pogmdm import PoGMDM, project_simplex
from bayesmri.train.optim import ProjectedAdaBelief


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = PoGMDM()
    with torch.no_grad():  # move away from the symmetric initialisation so the checks are generic
        m.w_half.add_(0.01 * torch.rand_like(m.w_half))
        m.P.add_(0.002 * torch.randn_like(m.P))
        m.gamma.mul_(0.5 + torch.rand_like(m.gamma))
        m.project()
    return m


def test_parameter_count_matches_paper(model):
    # 9 + 17^2 + o ceil(L/2) + o = 1578 (Nagler sec. 3.2); with a low-pass expert o + 1: 1642
    assert PoGMDM(lowpass_expert=False).num_parameters() == 1578
    assert model.num_parameters() == 1642
    assert model.weights().shape == (21, 125)


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.3])
def test_score_is_minus_energy_gradient(model, fast, sigma):
    x = torch.rand(2, 24, 30, dtype=torch.float64).float().requires_grad_(True)
    e = model.energy(x, sigma, fast=fast).sum()
    (g,) = torch.autograd.grad(e, x)
    s = model.score(x.detach(), sigma, fast=fast)
    tol = 2e-4 if fast else 1e-5  # fast: cubic Hermite interpolation of the experts
    assert float((g + s).abs().max()) < tol * float(s.abs().max())


def test_fast_tables_agree_with_exact_mixture(model):
    x = 2 * torch.rand(3, 20, 20) - 0.5
    for sigma in (0.0, 0.02, 0.2):
        exact = model.score(x, sigma, fast=False)
        with torch.no_grad():
            fast = model.score(x, sigma)
        assert (fast - exact).abs().max() < 1e-3 * exact.abs().max()  # linear tables, step ~5e-4


def test_gmm_variance_update_is_exact_gaussian_convolution(model):
    """psi_k(., sigma) = psi_k(., 0) * N(0, (gamma_k eta_k sigma)^2): check the mixture density numerically."""
    with torch.no_grad():
        eta = model._spectra(64, 64)[1]
    k, sigma = 3, 0.1
    v0 = float(model.expert_variances(0.0, eta)[k])
    v1 = float(model.expert_variances(sigma, eta)[k])
    assert v1 == pytest.approx(model.sigma0**2 + (float(model.gamma[k] * eta[k]) * sigma) ** 2, rel=1e-6)
    z = torch.linspace(-1.5, 1.5, 3001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    with torch.no_grad():
        p0 = torch.exp(-model.potentials(z, 0.0)[k].double())
        p1 = torch.exp(-model.potentials(z, sigma)[k].double())
    s2 = v1 - v0
    kern = torch.exp(-(z - z.mean()) ** 2 / (2 * s2)) / math.sqrt(2 * math.pi * s2) * dz
    conv = torch.nn.functional.conv1d(p0[None, None], kern.flip(0)[None, None], padding=1500)[0, 0]
    assert (p1.sum() * dz) == pytest.approx(1.0, abs=1e-3)
    assert torch.allclose(conv[500:2500], p1[500:2500], atol=1e-3 * float(p1.max()))


def test_filters_are_real_directional_and_any_size(model):
    spec = model.filter_spectra(40, 56, with_lowpass=True)
    assert spec.shape == (21, 40, 56)
    assert PoGMDM(lowpass_expert=False).filter_spectra(40, 56).shape == (20, 40, 56)
    kern = torch.fft.ifft2(spec)
    assert kern.imag.abs().max() < 1e-5 * kern.real.abs().max()  # real kernels
    # vertical-cone filters carry their energy at |w1| > |w2|, horizontal ones at |w2| > |w1|
    spec = model.filter_spectra(64, 64)
    w = torch.fft.fftfreq(64)
    vert_region = (w[:, None].abs() > w[None, :].abs()).float()
    e = spec.abs() ** 2
    frac = (e * vert_region).flatten(1).sum(1) / e.flatten(1).sum(1)
    # unsheared filters (s = 0: indices 2, 7 and 12, 17) lie inside their cone
    assert bool((frac[[2, 7]] > 0.8).all()) and bool((frac[[12, 17]] < 0.2).all())
    assert float(frac[:10].mean()) > 0.6 and float(frac[10:20].mean()) < 0.4


def test_projections():
    v = torch.randn(5, 9)
    p = project_simplex(v)
    assert torch.allclose(p.sum(-1), torch.ones(5)) and bool((p >= 0).all())
    # optimality: p minimises ||p - v|| on the simplex, checked against random simplex points
    q = torch.distributions.Dirichlet(torch.ones(9)).sample((200,))
    assert bool(((p[:, None] - v[:, None]).norm(dim=-1) <= (q[None] - v[:, None]).norm(dim=-1) + 1e-6).all())
    m = PoGMDM()
    opt = ProjectedAdaBelief(m.parameters(), lr=0.5, project=m.project)
    x = torch.rand(2, 16, 16)
    loss = m(x + 0.1 * torch.randn_like(x), 0.1).pow(2).mean()
    loss.backward()
    opt.step()
    w = m.weights()
    assert torch.allclose(w.sum(-1), torch.ones(21), atol=1e-5) and bool((w >= 0).all())
    assert torch.allclose(w, w.flip(-1))
    assert float(m.h.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(m.P.abs().sum()) == pytest.approx(1.0, abs=1e-5)
    assert bool((m.gamma >= 0).all())


def test_bad_input():
    m = PoGMDM()
    with pytest.raises(TypeError):
        m.score(torch.zeros(1, 8, 8, dtype=torch.complex64), 0.1)
    with pytest.raises(ValueError):
        m.score(torch.zeros(1, 2, 3, 8, 8), 0.1)
    with pytest.raises(ValueError):
        m.score(torch.zeros(1, 8, 8), -1.0)
    with pytest.raises(ValueError):
        PoGMDM(n_components=124)


def test_shipped_weights_denoise_better_than_gaussian_filter():
    """The trained prior's Tweedie denoiser beats the best Gaussian filter on held-out test slices."""
    from bayesmri.priors.pogmdm import load_pogmdm
    from bayesmri.train.pogmdm import builtin_slices

    try:
        model = load_pogmdm()
    except FileNotFoundError:
        pytest.skip("no shipped PoGMDM weights")
    x = builtin_slices("test", 128)[::30][:4]  # the training scale: 128x128 slices
    g = torch.Generator().manual_seed(0)
    sigma = 0.1
    y = x + sigma * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        d = model.denoise(y, sigma)

    def psnr(a):
        return float(10 * torch.log10(1.0 / (a - x).pow(2).mean()))

    best_gauss = -1e9
    for s in (0.5, 0.75, 1.0, 1.5, 2.0):
        r = torch.arange(-6, 7, dtype=torch.float32)
        k = torch.exp(-r**2 / (2 * s**2))
        k = k / k.sum()
        blur = torch.nn.functional.conv2d(y[:, None], (k[:, None] * k[None, :])[None, None], padding=6)[:, 0]
        best_gauss = max(best_gauss, psnr(blur))
    assert psnr(d) > best_gauss + 1.0
