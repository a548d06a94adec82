import math

import numpy as np
import pytest
import torch

from bayesmri.metrics import (
    complex_nmse,
    complex_psnr,
    mean_gain_curve,
    mean_gain_reference,
    nmse,
    posterior_mean_std,
    psnr,
    ssim,
    std_error_correlation,
)


def _crandn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))


def _phantom(B=3, H=40, W=36, seed=0):
    """Smooth blobs plus noise: structure for SSIM, complex phase for the complex metrics."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    out = []
    for _ in range(B):
        c = torch.rand(4, 2, generator=g) - 0.5
        img = sum(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.08) for cy, cx in c)
        out.append(img * torch.exp(1j * 2 * (yy + 0.3 * xx)))
    return torch.stack(out).to(torch.complex64)


def test_psnr_and_nmse_match_numpy_formulas():
    x = _phantom()
    xh = x + 0.05 * _crandn(*x.shape, seed=1)
    xn, xhn = x.numpy().astype(np.complex128), xh.numpy().astype(np.complex128)
    for b in range(x.shape[0]):
        a, t = np.abs(xhn[b]), np.abs(xn[b])
        D = t.size
        ref = 10 * np.log10(D * t.max() ** 2 / np.sum((a - t) ** 2))
        refc = 10 * np.log10(D * t.max() ** 2 / np.sum(np.abs(xhn[b] - xn[b]) ** 2))
        assert psnr(xh, x)[b].item() == pytest.approx(ref, abs=1e-9)
        assert complex_psnr(xh, x)[b].item() == pytest.approx(refc, abs=1e-9)
        assert nmse(xh, x)[b].item() == pytest.approx(np.sum((a - t) ** 2) / np.sum(t**2), rel=1e-9)
        assert complex_nmse(xh, x)[b].item() == pytest.approx(
            np.sum(np.abs(xhn[b] - xn[b]) ** 2) / np.sum(np.abs(xn[b]) ** 2), rel=1e-9
        )
    # complex PSNR is never above magnitude PSNR (|a| - |b| <= |a - b|)
    assert bool((complex_psnr(xh, x) <= psnr(xh, x) + 1e-9).all())


def test_hand_made_psnr_value_and_shapes():
    x = torch.zeros(4, 4)
    x[0, 0] = 2.0
    xh = x.clone()
    xh[1, 1] = 0.5  # error energy 0.25, D = 16, peak 4 -> 10 log10(16*4/0.25) = 10 log10(256)
    assert psnr(xh, x).ndim == 0
    assert psnr(xh, x).item() == pytest.approx(10 * math.log10(256.0))
    assert nmse(xh, x).item() == pytest.approx(0.25 / 4.0)
    batch = torch.stack([xh, xh]).unsqueeze(1)  # (B, 1, H, W)
    assert psnr(batch, torch.stack([x, x]).unsqueeze(1)).shape == (2,)
    assert psnr(batch.numpy(), torch.stack([x, x]).unsqueeze(1).numpy(), reduction="mean").item() == pytest.approx(
        10 * math.log10(256.0)
    )


def test_ssim_matches_skimage_with_fastmri_settings():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image is a test-only reference for SSIM")
    x = _phantom(B=3, H=48, W=41)
    xh = x + 0.1 * _crandn(*x.shape, seed=4)
    ours = ssim(xh, x)
    for b in range(x.shape[0]):
        gt, pred = np.abs(x[b].numpy()).astype(np.float64), np.abs(xh[b].numpy()).astype(np.float64)
        ref = skm.structural_similarity(gt, pred, data_range=gt.max())  # fastMRI evaluate.ssim
        assert ours[b].item() == pytest.approx(ref, abs=1e-4)
        assert ours[b].item() < 0.99  # the noise is visible


def test_ssim_volume_matches_fastmri_volume_convention():
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image is a test-only reference for SSIM")
    vol = _phantom(B=4, H=32, W=32).abs()
    volh = vol + 0.05 * torch.rand(vol.shape, generator=torch.Generator().manual_seed(0))
    maxval = vol.max().item()
    ref = np.mean([skm.structural_similarity(vol[s].numpy(), volh[s].numpy(), data_range=maxval) for s in range(4)])
    assert ssim(volh[None], vol[None])[0].item() == pytest.approx(ref, abs=1e-4)


def test_ssim_identity_and_degradation():
    x = _phantom()
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64), atol=1e-12)
    s1 = ssim(x + 0.02 * _crandn(*x.shape, seed=1), x)
    s2 = ssim(x + 0.2 * _crandn(*x.shape, seed=1), x)
    assert bool((s2 < s1).all()) and bool((s1 < 1).all())
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.ones(5, 5), torch.ones(5, 5))
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.ones(4, 4), torch.ones(4, 5))


def test_posterior_mean_std_complex_and_real():
    s = _crandn(50, 6, 7, seed=2)
    mean, std = posterior_mean_std(s)
    sn = s.numpy().astype(np.complex128)
    assert torch.allclose(mean, s.mean(0))
    ref = np.sqrt(np.sum(np.abs(sn - sn.mean(0)) ** 2, 0) / 49)  # std of the complex deviation
    assert np.allclose(std.numpy(), ref, rtol=1e-5)
    assert not std.is_complex()
    r = torch.randn(20, 5, generator=torch.Generator().manual_seed(0))
    _, stdr = posterior_mean_std(r)
    assert torch.allclose(stdr, r.std(0), rtol=1e-5)
    m1, s1 = posterior_mean_std(r[:1])
    assert torch.equal(m1, r[0]) and bool((s1 == 0).all())
    m2, _ = posterior_mean_std(r.T, dim=1)
    assert torch.allclose(m2, r.mean(0))


def test_mean_gain_reference_values():
    assert mean_gain_reference(1) == 0.0
    assert mean_gain_reference(2) == pytest.approx(10 * math.log10(4 / 3))
    assert mean_gain_reference(10**9) == pytest.approx(10 * math.log10(2), abs=1e-6)
    vals = mean_gain_reference([1, 2, 4, 8, 32])
    assert torch.allclose(vals, 10 * torch.log10(torch.tensor([1, 4 / 3, 8 / 5, 16 / 9, 64 / 33], dtype=torch.float64)))
    with pytest.raises(ValueError):
        mean_gain_reference(0)


def test_gain_curve_of_calibrated_gaussian_samples_matches_reference():
    """Samples and truth i.i.d. from the same posterior: gain(P) = 10 log10(2P/(P+1))."""
    N, H, W = 64, 96, 96
    m = _phantom(B=1, H=H, W=W)[0]
    sigma = 0.1
    x_true = m + sigma * _crandn(H, W, seed=10)
    samples = m + sigma * _crandn(N, H, W, seed=11)
    Ps = [1, 2, 4, 8, 16, 32]
    gain = mean_gain_curve(samples, x_true, Ps, generator=0)
    ref = mean_gain_reference(Ps)
    assert gain[0].item() == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(gain, ref, atol=0.05), (gain, ref)
    # the check has teeth: an over-confident sampler (spread 1/2 of the true posterior) fails it
    over = m + 0.5 * sigma * _crandn(N, H, W, seed=11)
    gain_over = mean_gain_curve(over, x_true, Ps, generator=0)
    assert (ref[-1] - gain_over[-1]).item() > 1.0
    # gain(N) is the complex PSNR (Wen eq. 22) of the N-sample mean minus that at the mean single-sample MSE
    full = mean_gain_curve(samples, x_true, [N], n_repeats=1)[0]
    e1 = (samples - x_true).abs().pow(2).sum((1, 2)).double().mean()
    cpsnr_single = 10 * torch.log10(H * W * x_true.abs().max().double() ** 2 / e1)
    assert full.item() == pytest.approx((complex_psnr(samples.mean(0), x_true) - cpsnr_single).item(), abs=1e-4)


def test_std_error_correlation():
    g = torch.Generator().manual_seed(0)
    std = torch.rand(2, 30, 30, generator=g)
    err = std * torch.exp(1j * torch.rand(2, 30, 30, generator=g))  # |err| == std
    assert torch.allclose(std_error_correlation(std, err), torch.ones(2, dtype=torch.float64))
    unrelated = torch.rand(2, 30, 30, generator=g)
    assert bool((std_error_correlation(std, unrelated).abs() < 0.15).all())
    assert std_error_correlation(std, -std + 2, reduction="mean").item() == pytest.approx(-1.0)
