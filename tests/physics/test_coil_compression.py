"""SVD software coil compression (issue 18 item 5): the physics function, the sample/method option and the
properties a reconstruction relies on (unitary at V = C, near-lossless at 16 -> 8, lossy at 1-2 coils)."""
import math

import pytest
import torch

from bayesmri.data.simulate import simulate_builtin
from bayesmri.methods import get_method
from bayesmri.metrics import psnr
from bayesmri.physics.cartesian import MultiCoilMRI
from bayesmri.physics.coils import birdcage_maps, coil_energy_profile, rss, svd_coil_compression
from bayesmri.physics.fft import fft2c, ifft2c
from bayesmri.physics.masks import apply_mask, make_mask


def _crandn(*shape, g):
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


@pytest.fixture(scope="module")
def sim16():
    """Two simulated 64x64 brain slices, 16 birdcage coils, GRO R=4, SNR 30 dB."""
    return simulate_builtin("test", 2, "gro", 4.0, coils=16, snr=30.0, seed=0, size=64)


def _smooth_16coil_kspace(H=48, W=48):
    y = (torch.arange(H) - H / 2) / (H / 2)
    x = (torch.arange(W) - W / 2) / (W / 2)
    Y, X = torch.meshgrid(y, x, indexing="ij")
    img = (((X / 0.7) ** 2 + (Y / 0.85) ** 2) < 1).double() * torch.exp(1j * (0.8 * X))
    S = birdcage_maps((16, H, W))
    return fft2c(S * img.to(torch.complex64)), S, img.to(torch.complex64)


# ----------------------------------------------------------------------------- (a) V = C is unitary


def test_full_rank_compression_keeps_rss_and_least_squares_reconstruction():
    g = torch.Generator().manual_seed(0)
    k_full, S, x = _smooth_16coil_kspace()
    k_full = k_full + 0.01 * _crandn(*k_full.shape, g=g)
    mask = make_mask("gro", (48, 48), 4.0, num_acs=8)
    y = apply_mask(k_full, mask).to(torch.complex128)  # double: CG would amplify float32 rounding
    S = S.to(torch.complex128)
    yc, M = svd_coil_compression(y, 16)
    # RSS of the zero-filled coil images is invariant under the unitary coil rotation
    assert torch.allclose(rss(ifft2c(yc)), rss(ifft2c(y)), rtol=1e-10, atol=1e-12)
    # SENSE least squares: y_v = P F (U^H S) x, so the compressed maps give the same image
    op = MultiCoilMRI(S[None], mask)
    op_c = MultiCoilMRI(torch.einsum("vc,chw->vhw", M, S)[None], mask)
    x0 = op.A_dagger(y[None], lam=1e-3, max_iter=50, tol=1e-10)
    x1 = op_c.A_dagger(yc[None], lam=1e-3, max_iter=50, tol=1e-10)
    assert float((x1 - x0).abs().max()) < 1e-8 * float(x0.abs().max())
    # and it is not a trivial identity: the basis did change
    assert float((M - torch.eye(16, dtype=M.dtype)).abs().max()) > 0.1


def test_full_rank_compression_of_a_sample_leaves_the_methods_unchanged(sim16):
    s = sim16[0]
    c = s.compress_coils(16)
    assert c.ncoils == 16 and c.metadata["coil_compression"]["energy_kept"] == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(rss(c.coil_images), rss(s.coil_images), rtol=1e-4, atol=1e-6)
    for maps in ("true", "espirit"):  # ESPIRiT is estimated again on the rotated coils: it must agree
        a = get_method("sense")(s, maps=maps).mean
        b = get_method("sense")(s, maps=maps, virtual_coils=16).mean
        assert float((a.abs() - b.abs()).abs().max()) < 1e-3 * float(a.abs().max()), maps
    assert s.compress_coils(16) is c  # cached: chunks and methods share its ESPIRiT maps


# ----------------------------------------------------------------------------- (b) 16 -> 8 keeps, 1-2 lose


def test_16_to_8_keeps_energy_and_psnr_while_1_or_2_coils_lose(sim16):
    for s in sim16:
        prof = coil_energy_profile(s.kspace)
        assert prof.shape == (16,) and float(prof[-1]) == pytest.approx(1.0)
        assert bool((prof[1:] >= prof[:-1] - 1e-12).all())
        c8 = s.compress_coils(8)
        assert c8.kspace.shape == (8, 64, 64)
        kept = c8.metadata["coil_compression"]["energy_kept"]
        assert kept >= 0.99 and kept == pytest.approx(float(prof[7]), abs=1e-4)
        ref = s.target.abs()[None]
        p = {V: float(psnr(get_method("tv")(s, maps="true", virtual_coils=V).mean.abs()[None], ref))
             for V in (None, 8, 2, 1)}
        assert abs(p[8] - p[None]) < 0.2, p
        assert p[1] < p[None] - 2.0 and p[2] < p[None] - 0.3 and p[1] < p[2], p


def test_svd_basis_beats_any_other_subspace_of_the_same_size():
    # The SVD subspace is optimal for its calibration data: a random 8-dim coil subspace keeps less.
    g = torch.Generator().manual_seed(1)
    k, _, _ = _smooth_16coil_kspace()
    kc, M = svd_coil_compression(k, 8)
    e = float(kc.abs().pow(2).sum() / k.abs().pow(2).sum())
    assert e > 0.99
    for _ in range(3):
        Q, _ = torch.linalg.qr(_crandn(16, 8, g=g).to(torch.complex64))
        e_rand = float(torch.einsum("vc,chw->vhw", Q.mH, k).abs().pow(2).sum() / k.abs().pow(2).sum())
        assert e_rand < e - 0.05
    # virtual coils are sorted by energy
    ev = kc.abs().pow(2).sum((1, 2))
    assert bool((ev[1:] <= ev[:-1] * (1 + 1e-5)).all())


def test_energy_fraction_picks_the_fewest_coils_reaching_it():
    k, _, _ = _smooth_16coil_kspace()
    prof = coil_energy_profile(k)
    for frac in (0.9, 0.95, 0.99, 0.999):
        kc, M = svd_coil_compression(k, energy=frac)
        V = kc.shape[0]
        assert M.shape == (V, 16) and float(prof[V - 1]) >= frac - 1e-9
        assert V == 1 or float(prof[V - 2]) < frac
    assert svd_coil_compression(k, energy=1.0)[0].shape[0] <= 16
    # batched: one V for the batch, the largest any item needs; a (C, H, W) calib region works too
    kb = torch.stack([k, k * torch.linspace(0.5, 1.5, 16).view(16, 1, 1)])
    kc, M = svd_coil_compression(kb, energy=0.99, calib=16)
    Vs = [int((coil_energy_profile(kb[i], calib=16) < 0.99 - 1e-12).sum()) + 1 for i in range(2)]
    assert kc.shape[:2] == (2, max(Vs)) and M.shape == (2, max(Vs), 16)
    # the sample option takes a fraction too and records the choice
    s = simulate_builtin("test", 1, "gro", 4.0, coils=16, snr=30.0, seed=0, size=64)[0]
    c = s.compress_coils(0.99)
    cc = c.metadata["coil_compression"]
    assert cc["energy"] == 0.99 and cc["virtual_coils"] == c.ncoils < 16 and cc["energy_kept"] >= 0.99


def test_compressed_true_maps_are_the_exact_model_of_the_compressed_data(sim16):
    s = sim16[1]
    c = s.compress_coils(4)
    # noise-free coil images compressed with the same matrix: U^H (S x) == (U^H S) x
    assert torch.allclose(c.coil_images, c.maps_true * s.target, atol=1e-5)
    assert c.noise_sigma == s.noise_sigma and c.scale == s.scale and c.target is s.target
    assert not c.has_espirit


# ----------------------------------------------------------------------------- (c) bad input


def test_bad_number_of_virtual_coils_or_data_gives_a_clear_error(sim16):
    g = torch.Generator().manual_seed(2)
    k = _crandn(2, 6, 8, 8, g=g)
    for bad in (0, 7, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="num_virtual"):
            svd_coil_compression(k, bad)
    for bad in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="energy"):
            svd_coil_compression(k, energy=bad)
    with pytest.raises(ValueError, match="exactly one"):
        svd_coil_compression(k, 3, energy=0.9)
    with pytest.raises(ValueError, match="exactly one"):
        svd_coil_compression(k)
    nan = k.clone()
    nan[0, 1, 2, 3] = complex(float("nan"), 0)
    with pytest.raises(ValueError, match="non-finite"):
        svd_coil_compression(nan, 2)
    with pytest.raises(ValueError, match="shape"):
        svd_coil_compression(k[None], 2)
    with pytest.raises(ValueError, match="at least 3 dimensions"):
        svd_coil_compression(k[0, 0], 1)
    with pytest.raises(ValueError, match="all zero"):
        svd_coil_compression(torch.zeros(6, 8, 8, dtype=torch.complex64), 2)
    with pytest.raises(ValueError, match="calib"):
        svd_coil_compression(k, 2, calib=(0, 4))
    with pytest.raises(TypeError, match="complex"):
        svd_coil_compression(k.real, 2)
    s = sim16[0]
    for bad in (0, 17, 1.0 + 1e-3, -0.5, None, True):
        with pytest.raises(ValueError, match="virtual_coils"):
            s.compress_coils(bad)
    with pytest.raises(ValueError, match="virtual_coils"):
        get_method("tv")(s, virtual_coils=17)
    with pytest.raises(ValueError, match="virtual_coils"):
        get_method("pula")(s, virtual_coils=0)


def test_compression_of_non_cartesian_samples():
    from bayesmri.data.simulate import simulate_acquisition
    from bayesmri.physics.trajectories import density_compensation, radial_trajectory

    traj = radial_trajectory(24, 64)
    dcf = density_compensation(traj, (32, 32))
    img = torch.zeros(32, 32)
    img[8:24, 10:22] = 1.0
    s = simulate_acquisition(img, trajectory=traj, dcf=dcf, ncoils=8, snr_db=30.0, seed=0)
    c = s.compress_coils(8)
    assert c.kspace.shape == s.kspace.shape
    assert float(c.kspace.abs().pow(2).sum()) == pytest.approx(float(s.kspace.abs().pow(2).sum()), rel=1e-4)
    c3 = s.compress_coils(3)
    assert c3.kspace.shape == (3, s.kspace.shape[1]) and c3.maps_true.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="Cartesian"):
        s.compress_coils(3, calib=8)
    assert math.isfinite(c3.metadata["coil_compression"]["energy_kept"])


def test_diffusion_sampler_option_compresses_and_reports(sim16):
    s = sim16[0]
    g = torch.Generator().manual_seed(0)
    r = get_method("pula")(s, n_samples=1, generator=g, virtual_coils=8, n_levels=2, maps="true")
    cc = r.diagnostics["coil_compression"]
    assert cc["coils"] == 16 and cc["virtual_coils"] == 8 and cc["energy_kept"] >= 0.99
    assert r.mean.shape == (64, 64) and bool(torch.isfinite(r.mean).all())
    r0 = get_method("pula")(s, n_samples=1, generator=torch.Generator().manual_seed(0), n_levels=2, maps="true")
    assert "coil_compression" not in r0.diagnostics
