import math

import pytest
import torch

from bayesmri.flows.base import RadialGaussian, StandardGaussian, log_unit_sphere_area, make_base


def test_log_sphere_area_known_values():
    # S_1 = 2 (two points), S_2 = 2 pi (circle), S_3 = 4 pi (sphere), S_4 = 2 pi^2
    for n, s in [(1, 2.0), (2, 2 * math.pi), (3, 4 * math.pi), (4, 2 * math.pi**2)]:
        assert log_unit_sphere_area(n) == pytest.approx(math.log(s), rel=1e-12)
    # huge n stays finite (lgamma, no overflow)
    assert math.isfinite(log_unit_sphere_area(10**6))


def test_radial_density_integrates_to_one_monte_carlo():
    # n = 2: uniform Monte Carlo on the box [-L, L]^n (the density is singular like ||z||^(1-n) at 0, integrable)
    n = 2
    g = torch.Generator().manual_seed(0)
    L, N = 6.0, 400_000
    z = (torch.rand(N, n, generator=g, dtype=torch.float64) * 2 - 1) * L
    p = RadialGaussian().log_prob(z).exp()
    est = float(p.mean()) * (2 * L) ** n
    assert est == pytest.approx(1.0, abs=0.03)


def test_radial_n1_is_standard_normal():
    z = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(-1, 1)
    assert torch.allclose(RadialGaussian().log_prob(z), StandardGaussian().log_prob(z), atol=1e-12)


def test_radial_sampling_matches_density():
    g = torch.Generator().manual_seed(1)
    n = 1000
    z = RadialGaussian().sample(20000, n, generator=g, dtype=torch.float64)
    r = z.norm(dim=1)
    # radius is |N(0,1)|: mean sqrt(2/pi), P(r < 1) = erf(1/sqrt 2); not concentrated at sqrt(n) like a Gaussian
    assert float(r.mean()) == pytest.approx(math.sqrt(2 / math.pi), abs=0.02)
    assert float((r < 1).double().mean()) == pytest.approx(math.erf(1 / math.sqrt(2)), abs=0.015)
    # directions are isotropic: the mean direction is ~0 and coordinates are exchangeable
    u = z / r[:, None]
    assert float(u.mean(0).abs().max()) < 0.01
    assert float((u**2).mean(0).mean()) == pytest.approx(1 / n, rel=0.05)


def test_gaussian_log_prob_and_sample():
    z = torch.randn(5, 3, 4, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(1)
    assert torch.allclose(StandardGaussian().log_prob(z), ref)
    s = StandardGaussian().sample(4000, 50, generator=torch.Generator().manual_seed(0))
    assert float(s.var()) == pytest.approx(1.0, abs=0.02)


def test_bad_input():
    with pytest.raises(ValueError):
        make_base("laplace")
    with pytest.raises(TypeError):
        RadialGaussian().log_prob(torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(ValueError):
        log_unit_sphere_area(0)
