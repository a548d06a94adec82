"""One definition of the posterior summaries: ``SamplerResult.from_samples`` (docs/uncertainty.md)."""
import numpy as np
import torch

from bayesmri.samplers.base import SamplerResult


def check_summaries(res, atol=1e-5):
    """``res.mean`` / ``res.std`` / ``res.std_magnitude`` are those of ``from_samples(res.samples)``.

    Used by the tests of every stochastic registered method: a method that computes its own std
    (of ``|x - mean|``, of ``|x|``, ...) fails here.
    """
    ref = SamplerResult.from_samples(res.samples)
    assert res.std is not None and res.std_magnitude is not None
    assert res.std.shape == res.mean.shape == res.samples.shape[1:]
    torch.testing.assert_close(res.std, ref.std, atol=atol, rtol=1e-4)
    torch.testing.assert_close(res.std_magnitude, ref.std_magnitude, atol=atol, rtol=1e-4)


def test_from_samples_is_the_complex_std_and_the_magnitude_std():
    g = torch.Generator().manual_seed(0)
    P = 40
    # pure phase uncertainty: |x| = 1 exactly, so the magnitude std is 0 while the complex std is not
    phi = torch.rand(P, 3, 4, generator=g) * 2 * np.pi
    x = torch.polar(torch.ones(P, 3, 4), phi)
    r = SamplerResult.from_samples(x, nfe=7, wall_time=1.5)
    xn = x.numpy().astype(np.complex128)
    ref = np.sqrt((np.abs(xn - xn.mean(0)) ** 2).sum(0) / (P - 1))
    np.testing.assert_allclose(r.std.numpy(), ref, rtol=1e-5)
    assert float(r.std_magnitude.abs().max()) < 1e-6 and float(r.std.min()) > 0.5
    assert r.mean.shape == (3, 4) and r.nfe == 7 and r.wall_time == 1.5 and not r.std.is_complex()
    # real and imaginary variances add: std^2 = var(Re) + var(Im)
    np.testing.assert_allclose(r.std.numpy() ** 2, xn.real.var(0, ddof=1) + xn.imag.var(0, ddof=1), rtol=1e-5)
    # real samples: the usual std; the magnitude std is that of |x|
    y = torch.randn(P, 5, generator=g, dtype=torch.float64)
    ry = SamplerResult.from_samples(y)
    torch.testing.assert_close(ry.std, y.std(0))
    torch.testing.assert_close(ry.std_magnitude, y.abs().std(0))
    # one sample: zero spread, mean = the sample
    r1 = SamplerResult.from_samples(x[:1])
    assert torch.equal(r1.mean, x[0]) and bool((r1.std == 0).all()) and bool((r1.std_magnitude == 0).all())


def test_check_summaries_rejects_another_definition():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, 4, dtype=torch.complex64, generator=g)
    r = SamplerResult.from_samples(x)
    check_summaries(r)
    r.std = (x - r.mean).abs().std(0)  # the CNF's old definition: std of |x - mean|
    try:
        check_summaries(r)
    except AssertionError:
        return
    raise AssertionError("check_summaries accepted the std of |x - mean|")
