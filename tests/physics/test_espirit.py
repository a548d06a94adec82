"""ESPIRiT calibration: recovery of known maps, calibration-region handling, and agreement with BART.

BART conventions (checked, and asserted in ``test_bart_fft_convention_matches_fft2c``): BART arrays are
``(READ, PHS1, PHS2, COIL)``; our ``(C, H, W)`` is ``transpose(a[:, :, 0, :], (2, 0, 1))``. BART's
centred FFT (``fftmod``-based ``fftc``) puts DC at index ``N/2`` like ``fft2c``; ``bart fft -i -u 3``
(unitary) equals our orthonormal ``ifft2c`` to float precision for N = 64 (N divisible by 4; for
N = 2 mod 4 BART's ``fftmod`` differs by a global sign, which ESPIRiT is blind to). BART's plain
``fft`` is unnormalised, which ESPIRiT is also blind to (maps are scale invariant).

BART ``ecalib`` parameters vs ours: ``-t`` thresholds *squared* singular values (``s_i / s_0 >
sqrt(t)`` in ``calib.c``), so ``-t t`` is our ``threshold = sqrt(t)``; ``-c`` is our ``crop``. BART 0.8
finds the top eigenvector with 30 orthogonal (power) iterations started from the first coil, which
has not converged where the eigengap is small (edges of the object); ``max_iter=30`` reproduces it,
our default uses an exact ``eigh``. BART rotates the phase against the first principal component of
the calibration data as we do; the singular vector's own global phase is arbitrary, so the two sets
of maps may differ by one global phase factor.
"""
import math

import numpy as np
import pytest
import torch

from bayesmri.bart import bart, bart_available
from bayesmri.physics.coils import birdcage_maps, coil_combine, rss
from bayesmri.physics.espirit import calibration_region, espirit_maps
from bayesmri.physics.fft import fft2c, ifft2c

needs_bart = pytest.mark.skipif(not bart_available(), reason="BART ('bart' binary) is not installed; .ci/run installs it")


def _phantom(H, W, phase=True):
    """Ellipses with a smooth phase; returns the image (H, W) complex64 and its support."""
    y = (torch.arange(H) - H / 2) / (H / 2)
    x = (torch.arange(W) - W / 2) / (W / 2)
    Y, X = torch.meshgrid(y, x, indexing="ij")
    support = (X / 0.7) ** 2 + (Y / 0.85) ** 2 < 1
    img = support.double()
    img = img - 0.6 * (((X - 0.2) / 0.2) ** 2 + ((Y + 0.1) / 0.35) ** 2 < 1).double()
    img = img + 0.5 * (((X + 0.25) / 0.15) ** 2 + ((Y - 0.2) / 0.15) ** 2 < 1).double()
    if phase:
        img = img * torch.exp(1j * (0.8 * X + 0.5 * Y**2))
    return img.to(torch.complex64), support


def _projection_residual(coil_images, maps, region):
    """``||x_c - S_c (S^H x)|| / ||x||`` over ``region``: how far the coil images are from the map subspace."""
    proj = maps * coil_combine(coil_images, maps).unsqueeze(-3)
    num = (coil_images - proj).abs().pow(2).sum(-3)[region].sum()
    den = coil_images.abs().pow(2).sum(-3)[region].sum()
    return float(torch.sqrt(num / den))


def _simulated(H=64, W=64, C=8):
    S = birdcage_maps((C, H, W))
    x, support = _phantom(H, W)
    return S, x, support, fft2c(S * x).unsqueeze(0)


def _interior(support):
    # Stay two pixels inside the object: the calibrated maps are band-limited, the object edge is not.
    s = support.float()[None, None]
    return -torch.nn.functional.max_pool2d(-s, 5, 1, 2)[0, 0] > 0.5  # erosion


def test_espirit_recovers_true_maps():
    S, x, support, k = _simulated()
    M, ev = espirit_maps(k, num_acs=24, return_eigenvalues=True)
    assert M.shape == (1, 8, 64, 64) and M.dtype == torch.complex64 and ev.shape == (1, 64, 64)
    # Normalisation: sum_c |S_c|^2 = 1 where kept, 0 where cropped; the whole object is kept.
    r = rss(M[0])
    kept = r > 0
    assert torch.allclose(r[kept], torch.ones_like(r[kept]), atol=1e-5)
    assert bool(kept[support].all())
    assert bool((ev[0][support] > 0.95).all())
    assert not bool(kept.all())  # the empty corners are cropped
    # Same subspace as the truth: |<S_true, S_est>| = 1 up to a per-pixel phase.
    overlap = coil_combine(S, M[0]).abs()
    assert float(overlap[support].min()) > 0.999
    # Coil images lie in the estimated map subspace (measured ~3e-3 at 64 and 128).
    assert _projection_residual(S * x, M[0], support) < 1e-2
    # Wrong maps are detected by this measure (it is not trivially small).
    assert _projection_residual(S * x, torch.roll(M[0], 1, dims=0), support) > 0.3


def test_espirit_phase_reference_is_virtual_body_coil():
    """Maps are the true maps rotated so that their projection on the ACS's first principal component
    (virtual body coil) is real positive: smooth, and free of the object's phase."""
    S, x, support, k = _simulated()
    Y, X = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    for obj_phase in (torch.zeros(64, 64), 2.5 * (X**2 - Y)):
        kk = fft2c(S * x * torch.exp(1j * obj_phase)).unsqueeze(0)
        M = espirit_maps(kk)[0]
        acs = kk[0, :, 20:44, 20:44].reshape(8, -1).numpy()
        u = torch.from_numpy(np.linalg.svd(acs, full_matrices=False)[0][:, 0])
        p = (u.conj()[:, None, None] * S).sum(0)
        expected = S * (p.conj() / p.abs())
        rel = (M - expected)[:, support].norm() / expected[:, support].norm()
        assert float(rel) < 0.01
        pm = (u.conj()[:, None, None] * M).sum(0)[support]
        assert float(pm.imag.abs().max()) < 1e-4 and float(pm.real.min()) > 0
        # smooth inside the object (eigh's own per-pixel phase would not be)
        inner = _interior(support)
        d = (M[:, 1:, :] - M[:, :-1, :]).abs().sum(0)[inner[1:] & inner[:-1]]
        assert float(d.max()) < 0.3
    M_raw = espirit_maps(k, phase_reference=False)[0]
    assert torch.allclose(coil_combine(M_raw, M).abs()[support], torch.ones(int(support.sum())), atol=1e-3)
    assert float((M_raw - M)[:, support].norm() / M[:, support].norm()) > 0.1


def test_espirit_uses_only_the_fully_sampled_centre():
    S, x, support, k = _simulated()
    # 16 fully sampled centre columns plus every 4th column: ESPIRiT must calibrate on 24 x 16 only.
    mask = torch.zeros(64)
    mask[1::4] = 1
    mask[32 - 8 : 32 + 8] = 1
    rows, cols = calibration_region(k * mask, 24)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (20, 44, 24, 40)
    M_under = espirit_maps(k * mask, num_acs=24)
    M_ref = espirit_maps(k, num_acs=(24, 16))
    assert torch.allclose(M_under, M_ref, atol=1e-5)
    # k-space outside the calibration region has no influence
    k_noisy = k.clone()
    k_noisy[..., :10, :] += 100.0
    assert torch.allclose(espirit_maps(k_noisy, num_acs=24), espirit_maps(k, num_acs=24), atol=1e-6)


def test_espirit_batch_scale_and_dtype():
    S, x, _, k = _simulated(48, 40, 6)
    k2 = fft2c(torch.roll(S, 1, dims=0) * x).unsqueeze(0)
    kb = torch.cat([k, k2])
    Mb = espirit_maps(kb, num_acs=20)
    assert Mb.shape == (2, 6, 48, 40)
    assert torch.allclose(Mb[0], espirit_maps(k, num_acs=20)[0], atol=1e-6)
    assert torch.allclose(Mb[1], espirit_maps(k2, num_acs=20)[0], atol=1e-6)
    assert torch.allclose(espirit_maps(1e-3 * k, num_acs=20), Mb[:1], atol=1e-5)  # scale invariant
    M128 = espirit_maps(k[0].to(torch.complex128), num_acs=20)  # unbatched in, unbatched out
    assert M128.shape == (6, 48, 40) and M128.dtype == torch.complex128
    # odd sizes work and give the right image positions
    S3, x3, sup3, k3 = _simulated(45, 51, 6)
    M3 = espirit_maps(k3, num_acs=20)[0]
    assert float(coil_combine(S3, M3).abs()[sup3].min()) > 0.999


@pytest.mark.parametrize("acs", [6, 8])
def test_small_acs_shrinks_the_kernel_instead_of_returning_zeros(acs):
    """6-8 ACS lines with kernel 6 gave 1-3 patches across, eigenvalues ~0.5-0.9 and all-zero maps after
    the 0.95 crop; the kernel now shrinks to half the region along the narrow axis."""
    S, x, support, k = _simulated()
    mask = torch.zeros(64)
    mask[32 - acs // 2 : 32 - acs // 2 + acs] = 1
    # 24 x acs band, and for 8 lines an 8 x 8 square (BART's ``ecalib -r 8``; a 6 x 6 square, 16 patches
    # of 3 x 3, still crops a few object pixels)
    for num_acs in (24, acs) if acs == 8 else (24,):
        M, ev = espirit_maps(k * mask, num_acs=num_acs, return_eigenvalues=True)
        r = rss(M[0])
        assert bool((r[support] > 0.999).all()) and bool((ev[0][support] > 0.95).all())
        overlap = coil_combine(S, M[0]).abs()[support]
        if num_acs == 24:  # measured min 0.9969 (6 lines) / 0.9986 (8 lines)
            assert float(overlap.min()) > 0.995
        else:  # 8 x 8 square, 25 patches of 4 x 4: measured mean 0.9995, min 0.991
            assert float(overlap.mean()) > 0.995


def test_calibration_region_finds_2d_calibration_block():
    """2-D patterns: grow both axes together, not a 1 x n strip through isolated samples."""
    from bayesmri.physics.masks import gaussian_mask_2d, poisson_disc_mask

    for make in (poisson_disc_mask, gaussian_mask_2d):
        m = make((128, 128), 8, num_acs=10, seed=0)
        k = torch.ones(1, 2, 128, 128, dtype=torch.complex64) * m
        rows, cols = calibration_region(k, 24)
        h, w = rows.stop - rows.start, cols.stop - cols.start
        assert h >= 10 and w >= 10 and bool((m[rows, cols] > 0).all())
        assert rows.start <= 64 < rows.stop and cols.start <= 64 < cols.stop
    # limits per axis, and an all-sampled grid gives the full centred region
    full = torch.ones(1, 2, 16, 12, dtype=torch.complex64)
    assert calibration_region(full, 100) == (slice(0, 16), slice(0, 12))
    assert calibration_region(full, (5, 4)) == (slice(6, 11), slice(4, 8))


def test_espirit_on_poisson_r8_with_calibration_block():
    from bayesmri.physics.masks import poisson_disc_mask

    S, x, support, k = _simulated()
    M = espirit_maps(k * poisson_disc_mask((64, 64), 8, num_acs=12, seed=1))[0]
    assert float(coil_combine(S, M).abs()[support].min()) > 0.995


def test_espirit_maps_are_unit_norm_on_builtin_val_slices():
    """Built-in val slices, 128 x 128, 8 coils, 30 dB, GRO R=4 (6 fully sampled centre lines): the maps
    held ~3 % of the energy (sum |S|^2 over the object 0.035 on slice 20) before the kernel was fitted
    to the calibration region."""
    from bayesmri.data import SimulatedBrainDataset

    ds = SimulatedBrainDataset("val", size=128, pattern="gro", acceleration=4)
    for i in (5, 20, 40):
        s = ds[i]
        tgt = s.target.abs().squeeze()
        obj = tgt > 0.05 * tgt.max()
        M = s.maps("espirit")
        unit = (rss(M) - 1).abs() < 1e-3
        assert float(unit[obj].float().mean()) >= 0.95  # measured 1.000 on all three
        St = s.maps("true")
        St = St / rss(St).clamp_min(1e-12)
        assert float(coil_combine(St, M).abs()[obj].mean()) > 0.999  # measured 0.9998-0.9999


def test_power_iteration_option_converges_to_eigh():
    _, _, support, k = _simulated(40, 40)
    M = espirit_maps(k, num_acs=20)[0]
    M30 = espirit_maps(k, num_acs=20, max_iter=30)[0]
    M1000 = espirit_maps(k, num_acs=20, max_iter=300)[0]
    assert float(coil_combine(M, M1000).abs()[support].min()) > 0.9999
    assert float(coil_combine(M, M30).abs()[support].min()) <= float(coil_combine(M, M1000).abs()[support].min())


def test_espirit_errors():
    _, _, _, k = _simulated(32, 32, 4)
    with pytest.raises(TypeError, match="complex"):
        espirit_maps(k.abs())
    bad = k.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        espirit_maps(bad)
    with pytest.raises(ValueError, match="at least 2 coils"):
        espirit_maps(k[:, :1])
    with pytest.raises(ValueError, match="centre"):
        espirit_maps(torch.roll(k * (torch.arange(32) < 8), 0, -1))
    mask = torch.zeros(32)
    mask[15:18] = 1  # 3 ACS lines: too few even for a shrunk kernel
    with pytest.raises(ValueError, match="at least 4 fully sampled lines"):
        espirit_maps(k * mask)
    with pytest.raises(ValueError, match="threshold"):
        espirit_maps(k, threshold=1.5)
    with pytest.raises(ValueError, match="crop"):
        espirit_maps(k, crop=1.0)
    with pytest.raises(ValueError, match="shape"):
        espirit_maps(k[0, 0])


# ----------------------------------------------------------------------------- against BART


def _bart_phantom(n=64, coils=8):
    kb = bart(f"phantom -x {n} -k -s {coils}")  # (READ, PHS1, 1, COIL)
    return kb, torch.from_numpy(np.ascontiguousarray(np.transpose(kb[:, :, 0, :], (2, 0, 1))))


def _to_ours(a):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a.reshape(a.shape[0], a.shape[1], -1), (2, 0, 1))))


@needs_bart
def test_anisotropic_kernel_on_small_acs_agrees_with_bart():
    """8 ACS lines: our kernel shrinks to 6 x 4; BART ``ecalib -k 6:4:1 -r 24:8:1`` gives the same maps."""
    kb, k = _bart_phantom()
    mask = torch.zeros(64)
    mask[28:36] = 1
    ku = k * mask
    kbu = np.ascontiguousarray(np.transpose(ku.numpy(), (1, 2, 0))[:, :, None, :])
    mb = bart("ecalib -m1 -r 24:8:1 -k 6:4:1 -t 0.001 -c 0.8", kbu)
    Sb = _to_ours(mb)
    M30 = espirit_maps(ku[None], num_acs=24, kernel_size=6, threshold=math.sqrt(0.001), crop=0.8, max_iter=30)[0]
    x = ifft2c(k)
    obj = (rss(x) > 0.1 * rss(x).max()) & (Sb.abs().sum(0) > 0)
    ip = coil_combine(Sb, M30)[obj]
    assert float(ip.abs().min()) > 1 - 1e-4
    g = ip.sum() / ip.sum().abs()
    assert float((M30 - g.conj() * Sb)[:, obj].norm() / Sb[:, obj].norm()) < 1e-4


@needs_bart
def test_bart_fft_convention_matches_fft2c():
    kb, k = _bart_phantom()
    assert int(k[0].abs().argmax()) == 32 * 64 + 32  # DC at (N/2, N/2)
    xb = _to_ours(bart("fft -i -u 3", kb))
    assert float((ifft2c(k) - xb).norm() / xb.norm()) < 1e-5


@needs_bart
@pytest.mark.parametrize("bart_t, bart_c", [(0.001, 0.8), (0.0004, 0.95)])
def test_espirit_agrees_with_bart(bart_t, bart_c):
    kb, k = _bart_phantom()
    mb, eb = bart(f"ecalib -m1 -r 24 -k 6 -t {bart_t} -c {bart_c}", kb, n_outputs=2)
    Sb = _to_ours(mb)
    x = ifft2c(k)
    obj = rss(x) > 0.1 * rss(x).max()
    opts = dict(num_acs=24, kernel_size=6, threshold=math.sqrt(bart_t), crop=bart_c)

    # 1. BART's algorithm (30 power iterations): same maps to float precision, up to one global phase.
    M30 = espirit_maps(k[None], max_iter=30, **opts)[0]
    assert bool(((M30.abs().sum(0) > 0) == (Sb.abs().sum(0) > 0))[obj].all())  # same crop inside the object
    both = obj & (Sb.abs().sum(0) > 0)
    ip = coil_combine(Sb, M30)[both]  # <M30, Sb> per pixel
    assert float(ip.abs().min()) > 1 - 1e-4  # measured 1 - 1e-7
    g = ip.sum() / ip.sum().abs()
    assert float((M30 - g.conj() * Sb)[:, both].norm() / Sb[:, both].norm()) < 1e-4  # measured 1.3e-6
    assert float((M30.abs() - Sb.abs())[:, both].abs().max()) < 1e-4  # measured 9e-6

    # 2. Our default (exact eigenvectors) explains the coil images at least as well as BART's maps
    # (measured projection residual 0.027 vs 0.042 for t=0.001, 0.026 vs 0.050 for t=0.0004) and
    # agrees with them except where BART's iteration is unconverged.
    M, ev = espirit_maps(k[None], return_eigenvalues=True, **opts)
    M, ev = M[0], ev[0]
    res_ours, res_bart = _projection_residual(x, M, obj), _projection_residual(x, Sb, obj)
    assert res_ours < 0.035 and res_ours <= res_bart
    ip = coil_combine(Sb, M).abs()[obj]
    assert float(ip.mean()) > 0.999  # measured 0.9997 / 0.9993
    # per-coil projections onto the two subspaces agree to a few per cent of the coil image
    proj_ours = M * coil_combine(x, M)[None]
    proj_bart = Sb * coil_combine(x, Sb)[None]
    rel = (proj_ours - proj_bart)[:, obj].norm(dim=1) / x[:, obj].norm(dim=1)
    assert float(rel.max()) < 0.08  # measured 0.05 / 0.063
    # where BART's iteration converged (its eigenvalue within 1e-4 of ours: 99 % of the object) the maps
    # coincide: measured min |<S, S_bart>| 0.99987 / 0.99991, max ||S| - |S_bart|| 0.010 / 0.008
    eb = torch.from_numpy(np.ascontiguousarray(eb.reshape(64, 64))).real
    conv = obj & ((eb - ev).abs() < 1e-4)
    assert int(conv.sum()) > 0.95 * int(obj.sum())
    assert float(coil_combine(Sb, M).abs()[conv].min()) > 0.9995
    assert float((M.abs() - Sb.abs())[:, conv].abs().max()) < 0.015
