import math

import numpy as np
import pytest
import torch

from bayesmri.cli import main
from bayesmri.priors.loading import load_model
from bayesmri.train.score import (
    MRIAugment,
    ScoreMatchingLoss,
    load_training_images,
    normalize_images,
    sigma_max_from_data,
    smooth_random_images,
)


def test_sigma_max_is_largest_pairwise_distance():
    x = smooth_random_images(7, 16, seed=1)
    x[3] *= 4.0  # make one pair clearly the farthest
    flat = x.reshape(7, -1).numpy().astype(np.float64)
    brute = max(np.linalg.norm(a - b) for a in flat for b in flat)
    assert sigma_max_from_data(x, chunk=3) == pytest.approx(brute, rel=1e-10)
    with pytest.raises(ValueError, match="2 images"):
        sigma_max_from_data(x[:1])


def test_normalize_images_uses_95th_percentile():
    x = smooth_random_images(3, 16, seed=2) * torch.tensor([1.0, 5.0, 0.1])[:, None, None]
    n = normalize_images(x)
    q = torch.quantile(n.reshape(3, -1), 0.95, dim=1)
    torch.testing.assert_close(q, torch.ones(3))
    with pytest.raises(TypeError, match="complex"):
        normalize_images(torch.zeros(2, 4, 4, dtype=torch.complex64))


def test_loss_matches_analytic_gaussian_optimum():
    """x ~ N(0, I): the optimal F = sigma * score = -sigma x_t / (1 + sigma^2) reaches the per-pixel
    minimum E[1 / (1 + sigma^2)] of eq. 17, a zero network 1; a sign error in the loss would swap them."""
    smin, smax = 0.01, 20.0
    loss = ScoreMatchingLoss(sigma_max=smax, sigma_min=smin)

    def optimal(xt, sigma):
        s = sigma[:, None, None, None]
        return -s * xt / (1 + s**2)

    x = torch.randn(20000, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    l_opt, logs = loss(optimal, x, torch.Generator().manual_seed(1))
    l_zero, _ = loss(lambda xt, s: torch.zeros_like(xt), x, torch.Generator().manual_seed(1))
    # E_{log sigma ~ U}[1/(1+sigma^2)] = 1 - (log(1+smax^2) - log(1+smin^2)) / (2 (log smax - log smin))
    expect = 1 - (math.log1p(smax**2) - math.log1p(smin**2)) / (2 * (math.log(smax) - math.log(smin)))
    assert float(l_opt) == pytest.approx(expect, abs=0.015)
    # Conditioned on the sigmas drawn (the loss draws them first from the generator): much tighter.
    sig = loss.sample_sigma(x.shape[0], torch.Generator().manual_seed(1), "cpu")
    assert float(l_opt) == pytest.approx(float((1 / (1 + sig**2)).mean()), abs=0.003)
    assert float(l_zero) == pytest.approx(1.0, abs=0.01)
    # Per-band logs: low-sigma band near 1, high-sigma band near 0 for the optimum.
    assert logs["loss_sigma_0.01-0.1"] > 0.98 and logs["loss_sigma_10-20"] < 0.01
    # sigma is log-uniform on [smin, smax]
    assert abs(logs["log10_sigma_mean"] - (math.log10(smin) + math.log10(smax)) / 2) < 0.05


def test_augmentation():
    x = smooth_random_images(6, 16, seed=4)[:, None]
    g = torch.Generator().manual_seed(0)
    ident = MRIAugment(flip_lr=False, max_rotation_deg=0, intensity=(1.0, 1.0))
    torch.testing.assert_close(ident(x, g), x)
    flips = MRIAugment(max_rotation_deg=0, intensity=(1.0, 1.0))(x, g)
    same = [(torch.equal(a, b), torch.equal(a, b.flip(-1))) for a, b in zip(flips, x)]
    assert all(s or f for s, f in same) and any(f and not s for s, f in same)
    scaled = MRIAugment(flip_lr=False, max_rotation_deg=0, intensity=(0.5, 2.0))(x, g)
    ratio = scaled.sum(dim=(1, 2, 3)) / x.sum(dim=(1, 2, 3))
    assert bool(((ratio >= 0.5 - 1e-6) & (ratio <= 2.0 + 1e-6)).all()) and ratio.std() > 0
    # Small rotations keep the (zero-background) image's mass and move pixels.
    rot = MRIAugment(flip_lr=False, max_rotation_deg=10, intensity=(1.0, 1.0))(x, g)
    torch.testing.assert_close(rot.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.03, atol=0)
    assert (rot - x).abs().max() > 1e-3
    with pytest.raises(ValueError):
        MRIAugment(intensity=(2.0, 1.0))


def test_strong_augmentation_warps_changes_contrast_and_keeps_sharpness():
    x = smooth_random_images(6, 32, seed=5)[:, None]
    x = x / x.flatten(1).quantile(0.95, dim=1)[:, None, None, None]
    # Defaults draw exactly as before (the shipped weights' augmentation is unchanged).
    torch.testing.assert_close(MRIAugment(zoom=(1.0, 1.0), elastic=0.0, gamma=(1.0, 1.0))(x, torch.Generator().manual_seed(3)),
                               MRIAugment()(x, torch.Generator().manual_seed(3)))
    # Gamma alone: zeros stay zero, the ordering of intensities is kept, the contrast changes.
    gam = MRIAugment(flip_lr=False, max_rotation_deg=0, intensity=(1.0, 1.0), gamma=(0.5, 2.0))(x, torch.Generator().manual_seed(0))
    assert torch.equal(gam == 0, x == 0)
    for a, b in zip(gam, x):
        m = b > 0
        assert torch.equal(torch.argsort(a[m]), torch.argsort(b[m]))
    assert (gam - x).abs().max() > 1e-2
    # Zoom alone changes the support size, within the factor range squared.
    zm = MRIAugment(flip_lr=False, max_rotation_deg=0, intensity=(1.0, 1.0), zoom=(0.8, 1.25))(x, torch.Generator().manual_seed(1))
    area = (zm > 0.05).float().sum(dim=(1, 2, 3)) / (x > 0.05).float().sum(dim=(1, 2, 3))
    assert bool(((area > 0.8**2 * 0.85) & (area < 1.25**2 * 1.15)).all()) and area.std() > 0.02
    # Elastic alone moves pixels; a smooth 2 % field changes the mass by well under 20 %.
    el = MRIAugment(flip_lr=False, max_rotation_deg=0, intensity=(1.0, 1.0), elastic=0.02)(x, torch.Generator().manual_seed(2))
    assert (el - x).abs().max() > 1e-2
    torch.testing.assert_close(el.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.2, atol=0)
    # Supersampling: warping at 2x and resampling keeps more high-frequency energy than warping at 1x
    # (bilinear interpolation low-passes), and returns the training size.
    from bayesmri.data.builtin import resize_magnitude

    hi = smooth_random_images(6, 64, seed=6)
    hi = hi + 0.3 * (torch.rand(hi.shape, generator=torch.Generator().manual_seed(0)) * (hi > 0))  # texture
    lo = resize_magnitude(hi, 32)
    aug = dict(flip_lr=False, max_rotation_deg=10, intensity=(1.0, 1.0))
    a2 = MRIAugment(downsample=2, **aug)(hi[:, None], torch.Generator().manual_seed(4))
    a1 = MRIAugment(**aug)(lo[:, None], torch.Generator().manual_seed(4))
    assert a2.shape == a1.shape == (6, 1, 32, 32)

    def hf(v):  # energy of the horizontal/vertical pixel differences
        return float((v.diff(dim=-1) ** 2).mean() + (v.diff(dim=-2) ** 2).mean())

    assert hf(a2) > 1.15 * hf(a1)
    assert hf(lo[:, None]) > 1.15 * hf(a1)
    with pytest.raises(ValueError, match="divisible"):
        MRIAugment(downsample=3)(x, torch.Generator())
    with pytest.raises(ValueError, match="gamma"):
        MRIAugment(gamma=(1.5, 1.0))
    assert MRIAugment.strong().config()["elastic"] > 0


def test_cli_train_score_runs_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["train"]) == 2  # no model named: help, exit status 2
    out = str(tmp_path / "run")
    args = ["train", "score", "--data", "synthetic", "--steps", "2", "--batch-size", "2", "--warmup", "1",
            "--out", out, "--no-progress", "--export-dtype", "float16"]
    assert main(args) == 0
    m = load_model(f"{out}/model_ema")
    assert m.meta["prior"]["sigma_min"] == 0.01 and m.meta["prior"]["sigma_max"] > 1
    assert m.meta["training"]["steps"] == 2
    q = m.meta["prior"]["image_mean_quantiles"]  # the image-mean distribution sample_prior(mean="prior") draws
    means = load_training_images("synthetic", 64).mean(dim=(1, 2))
    assert len(q) == 21 and q == sorted(q)
    assert q[0] == pytest.approx(float(means.min()), abs=1e-5) and q[-1] == pytest.approx(float(means.max()), abs=1e-5)
    assert main(args) == 1  # checkpoint exists, no --resume: clear error, nothing overwritten
    assert "resume" in capsys.readouterr().err
    assert main(args[:5] + ["4"] + args[6:] + ["--resume"]) == 0
    assert load_model(f"{out}/model_ema").meta["training"]["steps"] == 4
    # --export-only writes the checkpoint's EMA weights elsewhere without training or touching the run.
    ck = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    assert main(args[:5] + ["9"] + args[6:] + ["--export-only", "--export-to", str(tmp_path / "w")]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == ck
    m = load_model(tmp_path / "w")
    assert m.meta["training"]["steps"] == 4
    # float16 export: parameters are halved, the fixed Fourier frequencies stay exact (float32).
    from safetensors.torch import load_file

    st = load_file(str(tmp_path / "w.safetensors"))
    assert st["fourier.W"].dtype == torch.float32 and st["conv_in.weight"].dtype == torch.float16


def test_cli_strong_augmentation_with_supersampling(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["train", "score", "--data", "synthetic", "--steps", "2", "--batch-size", "2", "--warmup", "1",
            "--out", out, "--no-progress", "--augment", "strong", "--supersample", "2"]
    assert main(args) == 0
    m = load_model(f"{out}/model_ema")
    aug = m.meta["prior"]["augment"]
    assert aug["downsample"] == 2 and aug["elastic"] > 0 and m.meta["prior"]["image_size"] == [64, 64]
    # sigma_max comes from the images at the training size, not the supersampled ones.
    from bayesmri.train.score import load_training_images, sigma_max_from_data

    assert m.meta["prior"]["sigma_max"] == pytest.approx(sigma_max_from_data(load_training_images("synthetic", 64)))
    assert main(args[:-4] + ["--augment", "none", "--supersample", "2", "--out", str(tmp_path / "r2")]) != 0
    assert "--supersample needs augmentation" in capsys.readouterr().err
