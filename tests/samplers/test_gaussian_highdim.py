"""64x64 complex Gaussian prior, 8-coil Cartesian SENSE at R = 4: samplers against the closed form.

Metrics: ``e_mean = ||mean_P - m||^2 / (tr C / P)`` (about 1 for a correct sampler: the Monte-Carlo
floor) and the pixel-averaged ratio of empirical to exact variance ``E|x - m|^2``. A pULA whose
Langevin noise is off by sqrt(2) (the complex/real convention slip) gives a variance ratio near 0.5
(or 2) and must fail the same checks.
"""
import math

import pytest
import torch

from bayesmri.samplers import PULA, AnnealedULA

from .gaussian_problem import exact_posterior, make_problem

P = 16


@pytest.fixture(scope="module")
def problem():
    prior, op, meas, x_true, power, maps, mask = make_problem(dtype=torch.complex64)
    mean, var, trC = exact_posterior(prior, meas, power, maps, mask)
    return prior, meas, mean, var, float(trC)


def _metrics(res, mean, var, trC):
    x = res.samples.to(torch.complex128)
    e_mean = float(((x.mean(0) - mean).abs() ** 2).sum()) / (trC / x.shape[0])
    v = ((x - x.mean(0)).abs() ** 2).sum(0) / (x.shape[0] - 1)
    return e_mean, float((v / var).mean())


def test_pula_matches_closed_form(problem):
    prior, meas, mean, var, trC = problem
    res = PULA(n_levels=40, n_steps=1, sigma_max=1.0).sample(meas, prior, P, generator=1)
    e_mean, vr = _metrics(res, mean, var, trC)
    assert e_mean < 2.5, e_mean
    assert 0.85 < vr < 1.3, vr


def test_annealed_ula_matches_closed_form(problem):
    prior, meas, mean, var, trC = problem
    # annealed ULA needs ~20x the NFE of pULA here (the pULA paper's point); 8 chains keep it fast
    res = AnnealedULA(n_levels=20, n_steps=40, sigma_max=0.3).sample(meas, prior, 8, generator=2)
    e_mean, vr = _metrics(res, mean, var, trC)
    assert e_mean < 2.5, e_mean
    assert 0.85 < vr < 1.3, vr


@pytest.mark.parametrize("scale", [1 / math.sqrt(2), math.sqrt(2)])
def test_broken_noise_scaling_is_detected(problem, scale):
    """The same pULA with the Langevin noise scaled by 1/sqrt(2) or sqrt(2) fails the variance check."""
    prior, meas, mean, var, trC = problem
    s = PULA(n_levels=40, n_steps=1, sigma_max=1.0)
    s.noise_scale = scale  # same seed and schedule as test_pula_matches_closed_form
    res = s.sample(meas, prior, P, generator=1)
    _, vr = _metrics(res, mean, var, trC)
    assert not (0.85 < vr < 1.3), vr
