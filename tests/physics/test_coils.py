import math

import pytest
import torch

from bayesmri.physics.cartesian import MultiCoilMRI
from bayesmri.physics.coils import (
    birdcage_maps,
    coil_combine,
    noise_covariance,
    normalize_maps,
    prewhiten,
    rss,
    svd_coil_compression,
    whitening_matrix,
)
from bayesmri.physics.fft import fft2c


def _crandn(*shape, g, dtype=torch.float32):
    return torch.complex(torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype))


def _phantom(H, W):
    """Two ellipses with a smooth phase; returns the image (H, W) and its support."""
    y = (torch.arange(H) - H / 2) / (H / 2)
    x = (torch.arange(W) - W / 2) / (W / 2)
    Y, X = torch.meshgrid(y, x, indexing="ij")
    support = (X / 0.7) ** 2 + (Y / 0.85) ** 2 < 1
    img = support.double() - 0.6 * (((X - 0.2) / 0.2) ** 2 + ((Y + 0.1) / 0.35) ** 2 < 1).double()
    return (img * torch.exp(1j * (0.8 * X + 0.5 * Y**2))).to(torch.complex64), support


# ----------------------------------------------------------------------------- birdcage / normalisation


def test_birdcage_maps_normalised_distinct_and_smooth():
    C, H, W = 8, 64, 64
    S = birdcage_maps((C, H, W))
    assert S.shape == (C, H, W) and S.dtype == torch.complex64
    assert torch.allclose(rss(S), torch.ones(H, W), atol=1e-5)
    # Coils are linearly independent (well-conditioned Gram matrix over the image).
    G = S.reshape(C, -1) @ S.reshape(C, -1).mH
    ev = torch.linalg.eigvalsh(G.to(torch.complex128))
    assert float(ev[0] / ev[-1]) > 1e-3
    # Each coil sees most signal on its own side: the brightest pixel of coil c lies near angle 2 pi c / C.
    for c in range(C):
        i, j = divmod(int(S[c].abs().argmax()), W)
        ang = math.atan2((i - H / 2), (j - W / 2))
        d = (ang - 2 * math.pi * c / C + math.pi) % (2 * math.pi) - math.pi
        assert abs(d) < 2 * math.pi / C
    # Smooth: almost all k-space energy of the maps lies within the central 9x9 frequencies.
    K = fft2c(S)
    c0 = H // 2
    low = K[:, c0 - 4 : c0 + 5, c0 - 4 : c0 + 5].abs().pow(2).sum()
    assert float(low / K.abs().pow(2).sum()) > 0.95  # white noise: 81 / 4096 = 0.02
    # and neighbouring pixels differ little (random unit-norm maps: mean difference ~0.5).
    for d in ((S[:, 1:, :] - S[:, :-1, :]).abs(), (S[:, :, 1:] - S[:, :, :-1]).abs()):
        assert float(d.mean()) < 0.02 and float(d.max()) < 0.25


def test_birdcage_maps_3d_and_dtype():
    S = birdcage_maps((16, 4, 24, 24), nzz=8, dtype=torch.complex128)
    assert S.shape == (16, 4, 24, 24) and S.dtype == torch.complex128
    assert torch.allclose(rss(S, dim=0), torch.ones(4, 24, 24, dtype=torch.float64), atol=1e-10)
    # Two rings: the first ring is stronger at the first slice, the second at the last.
    assert S[:8, 0].abs().pow(2).sum() > S[8:, 0].abs().pow(2).sum()
    assert S[8:, -1].abs().pow(2).sum() > S[:8, -1].abs().pow(2).sum()
    with pytest.raises(ValueError):
        birdcage_maps((8, 16))
    with pytest.raises(TypeError):
        birdcage_maps((8, 16, 16), dtype=torch.float32)


def test_normalize_maps():
    g = torch.Generator().manual_seed(0)
    S = _crandn(2, 4, 8, 8, g=g)
    S[:, :, :2] = 0  # "outside the object"
    N = normalize_maps(S)
    r = rss(N)
    assert torch.allclose(r[:, 2:], torch.ones_like(r[:, 2:]), atol=1e-6)
    assert bool((N[:, :, :2] == 0).all())
    # Only the per-pixel scale changes: N is a positive multiple of S.
    ratio = coil_combine(S, N) / rss(S).clamp_min(1e-12)
    assert torch.allclose(ratio[:, 2:].real, torch.ones(2, 6, 8), atol=1e-5)
    assert torch.allclose(normalize_maps(N), N, atol=1e-6)
    with pytest.raises(TypeError):
        normalize_maps(S.abs())


# ----------------------------------------------------------------------------- rss / coil_combine


def test_rss_and_coil_combine_identities():
    g = torch.Generator().manual_seed(1)
    C, H, W = 6, 32, 32
    S = birdcage_maps((C, H, W)).unsqueeze(0)
    x = _crandn(2, H, W, g=g)
    y = S * x.unsqueeze(1)  # coil images, maps broadcast over the batch
    assert torch.allclose(coil_combine(y, S), x, atol=1e-5)  # S^H S = I for normalised maps
    assert torch.allclose(rss(y), x.abs(), atol=1e-5)
    # coil_combine is the adjoint of x -> S x.
    z = _crandn(2, C, H, W, g=g)
    lhs = (y.conj() * z).sum()
    rhs = (x.conj() * coil_combine(z, S)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-4)
    # rss equals the magnitude of the optimal (normalised-map) combination for any maps.
    assert torch.allclose(rss(z, dim=1), z.abs().pow(2).sum(1).sqrt(), atol=1e-5)
    # unbatched
    assert torch.allclose(coil_combine(y[0], S[0]), x[0], atol=1e-5)


def test_coil_combine_errors():
    S = birdcage_maps((4, 8, 8))
    with pytest.raises(ValueError, match="coils"):
        coil_combine(torch.zeros(1, 3, 8, 8, dtype=torch.complex64), S[None])
    with pytest.raises(TypeError, match="complex"):
        coil_combine(torch.zeros(1, 4, 8, 8), S[None])
    with pytest.raises(TypeError, match="complex"):
        rss(torch.zeros(4, 8, 8))


# ----------------------------------------------------------------------------- SVD coil compression


def test_svd_compression_full_rank_keeps_everything():
    g = torch.Generator().manual_seed(2)
    k = _crandn(2, 6, 16, 16, g=g)
    kc, M = svd_coil_compression(k, 6)
    assert kc.shape == (2, 6, 16, 16) and M.shape == (2, 6, 6)
    eye = torch.eye(6, dtype=M.dtype).expand(2, 6, 6)
    assert torch.allclose(M @ M.mH, eye, atol=1e-5)
    assert torch.allclose(M.mH @ M, eye, atol=1e-5)  # square: unitary
    assert torch.allclose(kc.abs().pow(2).sum((1, 2, 3)), k.abs().pow(2).sum((1, 2, 3)), rtol=1e-5)
    # invertible: M^H recovers the original coils
    assert torch.allclose(torch.einsum("bcv,bvhw->bchw", M.mH, kc), k, atol=1e-4)


def test_svd_compression_smooth_maps_keeps_most_energy():
    C, H, W = 8, 64, 64
    x, _ = _phantom(H, W)
    k = fft2c(birdcage_maps((C, H, W)) * x).unsqueeze(0)
    total = k.abs().pow(2).sum()
    kept = []
    for V in (1, 2, 4, 6):
        kc, M = svd_coil_compression(k, V)
        assert kc.shape == (1, V, H, W)
        assert torch.allclose(M @ M.mH, torch.eye(V, dtype=M.dtype)[None], atol=1e-5)
        kept.append(float(kc.abs().pow(2).sum() / total))
        # the virtual coils are sorted by energy
        e = kc.abs().pow(2).sum((0, 2, 3))
        assert bool((e[1:] <= e[:-1] * (1 + 1e-5)).all())
    assert kept == sorted(kept)
    assert kept[2] > 0.95  # 8 -> 4 virtual coils keeps > 95 % of the energy of smooth birdcage data
    assert kept[1] > 0.8


def test_svd_compression_calib_options_and_shapes():
    g = torch.Generator().manual_seed(3)
    C, H, W = 5, 20, 24
    k = _crandn(C, H, W, g=g)
    kc, M = svd_coil_compression(k, 3, calib=8)  # unbatched in, unbatched out
    assert kc.shape == (3, H, W) and M.shape == (3, C)
    acs = k[:, H // 2 - 4 : H // 2 + 4, W // 2 - 4 : W // 2 + 4]
    kc2, M2 = svd_coil_compression(k, 3, calib=acs)
    # same subspace (singular vectors are defined up to a phase)
    assert torch.allclose((M @ M2.mH).abs(), torch.eye(3), atol=1e-4)
    # The compression matrix is optimal for its calibration data: it captures at least as much ACS energy
    # as the matrix computed from all the data.
    _, Mall = svd_coil_compression(k, 3)
    e_cal = (M @ acs.reshape(C, -1)).abs().pow(2).sum()
    e_all = (Mall @ acs.reshape(C, -1)).abs().pow(2).sum()
    assert float(e_cal) >= float(e_all) * (1 - 1e-5)
    with pytest.raises(ValueError, match="num_virtual"):
        svd_coil_compression(k, 6)
    with pytest.raises(ValueError, match="coils"):
        svd_coil_compression(k, 2, calib=acs[:4])
    with pytest.raises(TypeError, match="complex"):
        svd_coil_compression(k.real, 2)
    bad = k.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        svd_coil_compression(bad, 2)


# ----------------------------------------------------------------------------- noise prewhitening


def _correlated_noise(C, N, g):
    A = _crandn(C, C, g=g, dtype=torch.float64) / math.sqrt(2 * C)
    Psi = A @ A.mH + 0.2 * torch.eye(C, dtype=torch.complex128)
    L0 = torch.linalg.cholesky(Psi)
    z = _crandn(C, N, g=g, dtype=torch.float64) / math.sqrt(2)  # CN(0, I): E|z|^2 = 1
    return Psi, L0 @ z


def test_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(4)
    C, N = 6, 40000
    Psi, n = _correlated_noise(C, N, g)
    cov = noise_covariance(n)
    assert torch.allclose(cov, cov.mH)
    # sampling error of a covariance entry ~ |Psi| / sqrt(N)
    assert float((cov - Psi).abs().max()) < 6 * float(Psi.abs().max()) / math.sqrt(N)
    Wm = whitening_matrix(cov)
    eye = torch.eye(C, dtype=cov.dtype)
    assert torch.allclose(Wm @ cov @ Wm.mH, eye, atol=1e-10)  # exact for the estimate
    assert torch.allclose(torch.tril(Wm), Wm)
    # whitened noise (shaped as k-space (C, H, W)) has identity covariance and unit std per complex sample
    nw = prewhiten(n.reshape(C, 200, 200), cov=cov).reshape(C, N)
    assert torch.allclose(noise_covariance(nw), eye, atol=1e-10)
    # held-out noise with the same Psi, whitened with the estimate: identity within sampling error
    z = _crandn(C, N, g=g, dtype=torch.float64) / math.sqrt(2)
    n2 = torch.linalg.cholesky(Psi) @ z
    cw = noise_covariance(prewhiten(n2.reshape(C, 200, 200), matrix=Wm).reshape(C, N))
    assert float((cw - eye).abs().max()) < 0.05
    assert abs(float(cw.diagonal().real.mean()) - 1.0) < 0.02


def test_prewhitened_sense_is_generalised_least_squares():
    """SENSE with whitened data and whitened maps = the GLS estimate (s^H Psi^-1 s)^-1 s^H Psi^-1 y."""
    g = torch.Generator().manual_seed(6)
    C, H, W = 4, 16, 16
    Psi, _ = _correlated_noise(C, 10, g)
    Psi = Psi.to(torch.complex64)
    S = birdcage_maps((C, H, W)).unsqueeze(0)
    x, _ = _phantom(H, W)
    x = x.unsqueeze(0)
    noise = (torch.linalg.cholesky(Psi) @ _crandn(C, H * W, g=g)).reshape(1, C, H, W) * 0.05
    y = fft2c(S * x.unsqueeze(1)) + noise  # fully sampled
    Wm = whitening_matrix(Psi)
    yw, Sw = prewhiten(y, matrix=Wm), prewhiten(S, matrix=Wm)
    op = MultiCoilMRI(Sw, torch.ones(W))
    x_w = op.A_dagger(yw, max_iter=100, tol=1e-8)
    # Closed form per pixel (full sampling: coil-image noise has covariance Psi too).
    from bayesmri.physics.fft import ifft2c

    img = ifft2c(y)[0].reshape(C, -1)
    s = S[0].reshape(C, -1)
    Pinv = torch.linalg.inv(Psi)
    num = (s.conj() * (Pinv @ img)).sum(0)
    den = (s.conj() * (Pinv @ s)).sum(0)
    x_gls = (num / den).reshape(1, H, W)
    assert float((x_w - x_gls).abs().max() / x_gls.abs().max()) < 1e-3
    # and it differs from the unwhitened least-squares solution (the test can tell them apart)
    x_ls = MultiCoilMRI(S, torch.ones(W)).A_dagger(y, max_iter=100, tol=1e-8)
    assert float((x_ls - x_gls).abs().max() / x_gls.abs().max()) > 1e-2
    # Noise-free undersampled data: whitening does not change the solution of a consistent system.
    mask = torch.zeros(W)
    mask[::2] = 1
    mask[W // 2 - 2 : W // 2 + 2] = 1
    yc = fft2c(S * x.unsqueeze(1)) * mask
    xr = MultiCoilMRI(Sw, mask).A_dagger(prewhiten(yc, matrix=Wm), max_iter=200, tol=1e-10)
    assert float((xr - x).abs().max() / x.abs().max()) < 1e-3


def test_whitening_errors():
    C = 3
    with pytest.raises(ValueError, match="positive definite"):
        whitening_matrix(torch.zeros(C, C, dtype=torch.complex64))
    with pytest.raises(ValueError, match="Hermitian"):
        whitening_matrix(torch.tensor([[1, 1], [0, 1]], dtype=torch.complex64))
    with pytest.raises(ValueError, match="square"):
        whitening_matrix(torch.zeros(2, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="N >= C"):
        noise_covariance(torch.zeros(8, 3, dtype=torch.complex64))
    k = torch.zeros(1, 4, 8, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="4 coils"):
        prewhiten(k, matrix=torch.eye(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="exactly one"):
        prewhiten(k)
    with pytest.raises(TypeError, match="complex"):
        prewhiten(k.real, matrix=torch.eye(4, dtype=torch.complex64))
