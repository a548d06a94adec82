"""The registered ``cinn`` recon method with the shipped weights (Denker et al. 2021).

Each test checks a property that the demo bug (cINN ~12 dB, far below zero-filled ~21.5 dB on the
demo's complex multi-coil images) would have failed: the method must beat its own inversion layer on
data simulated the way its weights were trained, be equivariant to the k-space scale and invariant to
a global phase.
"""
import math
from pathlib import Path

import pytest
import torch

from bayesmri.data import MRISample, load_slices
from bayesmri.flows.cinn import MULTICOIL_WEIGHTS, SINGLE_COIL_WEIGHTS
from bayesmri.flows.conditioning import lowres_phase, remove_lowres_phase
from bayesmri.methods import get_method
from bayesmri.metrics import psnr
from bayesmri.physics.fft import fft2c, ifft2c
from tests.test_uncertainty import check_summaries

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _have(stem: Path) -> bool:
    return Path(str(stem) + ".safetensors").is_file() and Path(str(stem) + ".json").is_file()


needs_single = pytest.mark.skipif(not _have(SINGLE_COIL_WEIGHTS), reason="single-coil cINN weights not installed")
needs_multi = pytest.mark.skipif(not _have(MULTICOIL_WEIGHTS), reason="multi-coil cINN weights not installed")


def _single_coil_samples(n=4, noise=0.01, seed=1):
    """Single-coil samples simulated exactly as ``make_problem("mri")`` trains: the fixed mask, noise 0.01."""
    from bayesmri.flows.cinn import mri_training_mask as _mri_mask

    x = load_slices("test", size=64)[:: 123 // n][:n]
    mask = _mri_mask(64)
    g = torch.Generator().manual_seed(seed)
    out = []
    for xi in x:
        k = fft2c(xi.to(torch.complex64))
        nz = torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g)) * (noise / math.sqrt(2))
        y = (mask * (k + nz))[None]
        s = float(torch.quantile(ifft2c(y).abs().flatten(), 0.95))
        out.append(MRISample(kspace=y / s, img_shape=(64, 64), mask=mask, target=(xi / s).to(torch.complex64),
                             maps_true=torch.ones(1, 64, 64, dtype=torch.complex64), noise_sigma=noise / s, scale=s,
                             num_acs=5))
    return out


def _zf_psnr(s):
    return float(psnr(ifft2c(s.kspace).abs()[0] if s.ncoils == 1 else s.operator("true").A_adjoint(s.y)[0].abs(),
                      s.target.abs()))


@needs_single
def test_single_coil_cinn_mean_beats_zero_filled():
    fn = get_method("cinn")
    gains = []
    for s in _single_coil_samples():
        r = fn(s, n_samples=8, generator=0, maps="true", weights=SINGLE_COIL_WEIGHTS)
        assert r.diagnostics["in_training_family"] is True
        assert r.samples.shape == (8, 64, 64) and r.samples.is_complex()
        check_summaries(r)
        gains.append(float(psnr(r.mean.abs(), s.target.abs())) - _zf_psnr(s))
    # the shipped model gains ~4 dB over zero-filled on its own acquisition; 1.5 dB leaves room for noise
    assert sum(gains) / len(gains) > 1.5, gains


@needs_single
def test_cinn_scale_equivariant_and_global_phase_invariant():
    fn = get_method("cinn")
    s = _single_coil_samples(1)[0]
    ref = fn(s, n_samples=4, generator=3, maps="true", weights=SINGLE_COIL_WEIGHTS).mean
    s10 = MRISample(**{**s.__dict__, "kspace": 10.0 * s.kspace, "_maps_espirit": None})
    torch.testing.assert_close(fn(s10, n_samples=4, generator=3, maps="true", weights=SINGLE_COIL_WEIGHTS).mean,
                               10.0 * ref, rtol=1e-3, atol=1e-3)
    # a global phase of the data (e.g. of a coil combination) must not change the magnitude estimate;
    # the original bug fed [re, im] of a rotated image to a model trained on real images
    sph = MRISample(**{**s.__dict__, "kspace": s.kspace * complex(math.cos(2.0), math.sin(2.0)), "_maps_espirit": None})
    rot = fn(sph, n_samples=4, generator=3, maps="true", weights=SINGLE_COIL_WEIGHTS).mean
    torch.testing.assert_close(rot.abs(), ref.abs(), rtol=1e-3, atol=2e-3)


@needs_multi
def test_multicoil_cinn_mean_beats_zero_filled_on_demo_acquisitions():
    from bayesmri.data.simulate import simulate_builtin

    fn = get_method("cinn")
    for pat, R in (("gro", 4), ("poisson", 8)):
        ss = simulate_builtin("test", 3, pat, R, 8, 30.0, 0, 64)
        gain = 0.0
        for s in ss:
            r = fn(s, n_samples=8, generator=0, maps="true", weights=MULTICOIL_WEIGHTS)
            assert r.diagnostics["in_training_family"] is True
            gain += float(psnr(r.mean.abs(), s.target.abs())) - _zf_psnr(s)
        assert gain / len(ss) > 1.0, (pat, gain / len(ss))


@needs_multi
def test_cinn_temperature_widens_the_samples():
    """The shipped flows are volume preserving: the sample spread follows the base radius (issue 19)."""
    from bayesmri.data.simulate import simulate_builtin

    fn = get_method("cinn")
    s = simulate_builtin("test", 1, "gro", 4, 8, 30.0, 0, 64)[0]
    r1 = fn(s, n_samples=4, generator=0, maps="true", weights=MULTICOIL_WEIGHTS)
    r3 = fn(s, n_samples=4, generator=0, maps="true", weights=MULTICOIL_WEIGHTS, temperature=3.0)
    check_summaries(r3)
    assert float(r3.std.mean()) > 2 * float(r1.std.mean())
    with pytest.raises(ValueError, match="temperature"):
        fn(s, temperature=0)


def test_remove_lowres_phase_recovers_real_image():
    x = load_slices("test", size=64)[40:42].to(torch.complex64)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    phase = torch.polar(torch.ones(64, 64), 1.5 * xx + 0.8 * yy ** 2 + 0.3)
    z = remove_lowres_phase(x * phase)
    obj = x.abs() > 0.2
    # inside the object the smooth phase is removed: the imaginary part is small against the real part
    assert float(z.imag[obj].abs().mean()) < 0.1 * float(z.real[obj].abs().mean())
    assert float(z.real[obj].mean()) > 0
    torch.testing.assert_close(z.abs(), x.abs())  # a unit-modulus rotation only
    ph = lowres_phase(x)  # a real non-negative image has ~zero low-resolution phase
    assert float(ph.angle()[obj].abs().max()) < 0.2


def test_cinn_method_rejects_bad_input():
    fn = get_method("cinn")
    s = _single_coil_samples(1)[0]
    with pytest.raises(ValueError, match="unknown option"):
        fn(s, bogus=1)
    with pytest.raises(ValueError, match="n_samples"):
        fn(s, n_samples=0)
    with pytest.raises(TypeError):
        lowres_phase(torch.ones(1, 8, 8))


def test_multicoil_problem_pairs_are_normalised_and_phase_free():
    from bayesmri.train.cinn import make_problem

    p = make_problem("mri", size=64, n_train=2, n_test=1, sim="multicoil", repeats=1)
    assert p.x_train.shape == (4, 1, 64, 64) and p.c_train.shape == (4, 2, 64, 64)  # 2 slices x 2 patterns
    p95 = torch.quantile(p.c_train.norm(dim=1).flatten(1), 0.95, dim=1)
    torch.testing.assert_close(p95, torch.ones(4), rtol=1e-4, atol=1e-4)
    # the simulated images are complex; after phase normalisation the conditioning is ~real
    assert float((p.c_train[:, 1] ** 2).sum()) < 0.1 * float((p.c_train[:, 0] ** 2).sum())
    assert p.info["sim"] == "multicoil"
