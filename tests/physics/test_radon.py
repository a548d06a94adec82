import math

import pytest
import torch

from bayesmri.physics.radon import ParallelBeamRadon, poisson_log_noise, ramp_filter


@pytest.fixture(scope="module")
def op():
    return ParallelBeamRadon(32, 30)


def _disk(N, r):
    c = (N - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(N) - c, torch.arange(N) - c, indexing="ij")
    return ((xx**2 + yy**2) <= r**2).float()[None], xx, yy


def test_adjointness(op):
    assert op.adjointness_test(generator=0) < 1e-5
    op64 = ParallelBeamRadon(16, 7, dtype=torch.float64)
    assert op64.adjointness_test(generator=1) < 1e-12


def test_gaussian_line_integrals_match_analytic(op):
    # a smooth blob avoids the pixelation error of a disk: its projection at every angle is
    # sqrt(2 pi) sigma exp(-s^2 / (2 sigma^2))
    sig = 3.0
    _, xx, yy = _disk(32, 1)
    blob = torch.exp(-(xx**2 + yy**2) / (2 * sig**2))[None]
    sino = op.A(blob)[0]
    s = torch.arange(op.n_detectors) - (op.n_detectors - 1) / 2
    exact = (math.sqrt(2 * math.pi) * sig * torch.exp(-(s**2) / (2 * sig**2))).expand_as(sino)
    assert float((sino - exact).norm() / exact.norm()) < 0.01


def test_fbp_recovers_disk(op):
    disk, xx, yy = _disk(32, 10)
    rec = op.fbp(op.A(disk))
    inside = (xx**2 + yy**2) < 7**2
    outside = (xx**2 + yy**2) > 13**2
    assert float((rec - disk)[0][inside].abs().mean()) < 0.03
    assert float(rec[0][outside].abs().mean()) < 0.05
    # wrong normalisation of the ramp would scale the whole image
    assert abs(float(rec.sum() / disk.sum()) - 1) < 0.05


def test_ramp_filter_shape_and_dc():
    H = ramp_filter(45)
    assert H.shape[0] >= 90 and abs(float(H[0])) < 0.01  # |f| vanishes at DC (up to the band-limit correction)
    assert float(H[H.shape[0] // 2]) == pytest.approx(0.5, abs=0.01)  # Nyquist: |f| = 0.5


def test_poisson_noise_is_unbiased_at_high_dose(op):
    disk, _, _ = _disk(32, 10)
    p = op.A(disk)
    y = poisson_log_noise(p, photons=1e7, mu=0.05, generator=0)
    assert float((y - p).abs().max()) < 0.3
    y_low = poisson_log_noise(p, photons=100, mu=0.05, generator=0)
    assert float((y_low - p).std()) > float((y - p).std()) * 10


def test_bad_inputs(op):
    with pytest.raises(ValueError):
        op.A(torch.zeros(1, 31, 32))
    with pytest.raises(TypeError):
        op.A(torch.zeros(1, 32, 32, dtype=torch.complex64))
    with pytest.raises(ValueError):
        ParallelBeamRadon(0, 10)
    with pytest.raises(ValueError):
        ramp_filter(10, window="shepp")
