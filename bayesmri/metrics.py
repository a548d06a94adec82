"""Image-quality and posterior-calibration metrics (GUIDE section 1; Wen et al. 2023 sec. 4).

All metrics are batched over a leading axis: an input ``(B, ...)`` is ``B`` items and gives a ``(B,)``
tensor; a plain ``(H, W)`` image gives a 0-d tensor. Everything beyond the first axis of a batched
input belongs to one item (e.g. ``(B, 1, H, W)`` or a volume ``(B, S, H, W)``: one value per item,
``max |x_true|`` over the whole item, as fastMRI's ``evaluate`` does per volume). Inputs may be torch
tensors or numpy arrays, real or complex; computation is in float64. ``reduction="mean"`` averages over
the batch.

- ``psnr``: magnitude PSNR, ``10 log10(D max|x|^2 / || |x_hat| - |x| ||^2)`` (Wen eq. 20).
- ``complex_psnr``: the same with the complex difference ``||x_hat - x||^2`` (Wen eq. 22).
- ``ssim``: fastMRI's SSIM of the magnitudes (7x7 uniform window, ``data_range = max|x_true|``,
  K1 = 0.01, K2 = 0.03, sample covariance: ``skimage.metrics.structural_similarity`` defaults).
- ``nmse``: ``|| |x_hat| - |x| ||^2 / || x ||^2`` (magnitude); ``complex_nmse`` with the complex difference.
- ``posterior_mean_std``: pixel-wise mean (Wen eq. 19) and standard deviation of samples.
- ``mean_gain_reference`` / ``mean_gain_curve``: the calibration check ``E_1 / E_P = 2P / (P + 1)``
  (Wen sec. 4.1) for the MSE of the P-sample mean of a correct posterior sampler.
- ``std_error_correlation``: Pearson correlation of a std map and an error map (uncertainty quality).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "psnr",
    "complex_psnr",
    "ssim",
    "nmse",
    "complex_nmse",
    "posterior_mean_std",
    "mean_gain_reference",
    "mean_gain_curve",
    "std_error_correlation",
    "reduce",
]


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (H, W), got shape {tuple(x.shape)}")
    x = x.detach()
    return x.to(torch.complex128) if x.is_complex() else x.to(torch.float64)


def _pair(x_hat, x_true):
    a = _as_tensor(x_hat, "x_hat")
    b = _as_tensor(x_true, "x_true")
    if a.shape != b.shape:
        raise ValueError(f"x_hat {tuple(a.shape)} and x_true {tuple(b.shape)} must have the same shape")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("x_hat and x_true must be finite")
    return a, b


def _items(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` -> one item ``(1, H*W)``; ``(B, ...)`` -> ``(B, prod(...))``."""
    return x.reshape(1, -1) if x.ndim == 2 else x.reshape(x.shape[0], -1)


def reduce(values: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Apply ``reduction`` (``"none"`` or ``"mean"``) to per-item metric values."""
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def _finish(vals: torch.Tensor, x: torch.Tensor, reduction: str) -> torch.Tensor:
    if x.ndim == 2:
        vals = vals[0]
    return reduce(vals, reduction)


def _psnr_from(err2: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    D = ref.shape[1]
    peak = ref.abs().amax(dim=1) ** 2
    return 10.0 * torch.log10(D * peak / err2)


def psnr(x_hat, x_true, reduction: str = "none") -> torch.Tensor:
    """Magnitude PSNR in dB (Wen eq. 20): ``10 log10(D max|x_true|^2 / || |x_hat| - |x_true| ||^2)``.

    ``D`` is the number of pixels of one item. Shapes ``(H, W)`` -> 0-d, ``(B, ...)`` -> ``(B,)``.
    A perfect reconstruction gives ``inf``.
    """
    a, b = _pair(x_hat, x_true)
    fa, fb = _items(a.abs()), _items(b.abs())
    err2 = ((fa - fb) ** 2).sum(1)
    return _finish(_psnr_from(err2, fb), a, reduction)


def complex_psnr(x_hat, x_true, reduction: str = "none") -> torch.Tensor:
    """Complex PSNR in dB (Wen eq. 22): ``10 log10(D max|x_true|^2 / ||x_hat - x_true||^2)``.

    The metric under which the posterior-mean gain ``10 log10(2P/(P+1))`` holds for complex images.
    """
    a, b = _pair(x_hat, x_true)
    fa, fb = _items(a), _items(b)
    err2 = ((fa - fb).abs() ** 2).sum(1)
    return _finish(_psnr_from(err2, fb), a, reduction)


def nmse(x_hat, x_true, reduction: str = "none") -> torch.Tensor:
    """Magnitude NMSE ``|| |x_hat| - |x_true| ||^2 / || x_true ||^2`` (fastMRI ``evaluate.nmse``)."""
    a, b = _pair(x_hat, x_true)
    fa, fb = _items(a.abs()), _items(b.abs())
    return _finish(((fa - fb) ** 2).sum(1) / (fb**2).sum(1), a, reduction)


def complex_nmse(x_hat, x_true, reduction: str = "none") -> torch.Tensor:
    """Complex NMSE ``||x_hat - x_true||^2 / ||x_true||^2``."""
    a, b = _pair(x_hat, x_true)
    fa, fb = _items(a), _items(b)
    return _finish(((fa - fb).abs() ** 2).sum(1) / (fb.abs() ** 2).sum(1), a, reduction)


def ssim(
    x_hat,
    x_true,
    reduction: str = "none",
    *,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range=None,
) -> torch.Tensor:
    """SSIM of the magnitudes as fastMRI's ``evaluate.ssim`` (= skimage's ``structural_similarity``).

    ``win_size x win_size`` uniform window, sample covariances (``N / (N - 1)``), ``C1 = (k1 L)^2``,
    ``C2 = (k2 L)^2`` with ``L = data_range``, default ``max |x_true|`` over each item; the SSIM map is
    averaged over the window centres that lie ``(win_size - 1) / 2`` pixels inside the border (skimage
    crops that border, so no padding convention enters). Items with several 2-D slices
    (``(B, S, H, W)``) average over slices, as fastMRI does per volume.
    """
    a, b = _pair(x_hat, x_true)
    a, b = a.abs(), b.abs()
    H, W = a.shape[-2:]
    if win_size < 2 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and >= 3, got {win_size}")
    if H < win_size or W < win_size:
        raise ValueError(f"images {H}x{W} are smaller than the {win_size}x{win_size} SSIM window")
    single = a.ndim == 2
    B = 1 if single else a.shape[0]
    a4 = a.reshape(B, -1, H, W)
    b4 = b.reshape(B, -1, H, W)
    if data_range is None:
        L = b4.reshape(B, -1).amax(1)
    else:
        L = torch.as_tensor(data_range, dtype=torch.float64).reshape(-1).expand(B)
    L = L.reshape(B, 1, 1, 1)
    C1, C2 = (k1 * L) ** 2, (k2 * L) ** 2
    S = a4.shape[1]
    x = a4.reshape(B * S, 1, H, W)
    y = b4.reshape(B * S, 1, H, W)

    def mean_filter(t):  # valid positions only == skimage's cropped region
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean_filter(x), mean_filter(y)
    uxx, uyy, uxy = mean_filter(x * x), mean_filter(y * y), mean_filter(x * y)
    n = win_size * win_size
    cov_norm = n / (n - 1.0)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    ux, uy, vx, vy, vxy = (t.reshape(B, S, *t.shape[-2:]) for t in (ux, uy, vx, vy, vxy))
    smap = ((2 * ux * uy + C1) * (2 * vxy + C2)) / ((ux**2 + uy**2 + C1) * (vx + vy + C2))
    vals = smap.mean(dim=(-2, -1)).mean(dim=1)
    return reduce(vals[0] if single else vals, reduction)


def posterior_mean_std(samples, dim: int = 0, correction: int = 1):
    """Pixel-wise posterior mean (Wen eq. 19) and standard deviation of ``P`` samples along ``dim``.

    For complex samples the std is that of the complex deviation,
    ``sqrt(sum_p |x_p - mean|^2 / (P - correction))`` (real and imaginary variances add). With a
    single sample the std is zero. Returns ``(mean, std)`` with ``dim`` removed; mean keeps the input
    dtype, std is real. This is the formula of ``SamplerResult.from_samples``, through which every method
    returns (``docs/uncertainty.md``).
    """
    if isinstance(samples, np.ndarray):
        samples = torch.from_numpy(np.ascontiguousarray(samples))
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor or numpy array, got {type(samples).__name__}")
    if samples.ndim == 0 or samples.shape[dim] < 1:
        raise ValueError(f"samples must have at least one sample along dim={dim}, got {tuple(samples.shape)}")
    if not (samples.is_complex() or samples.is_floating_point()):
        samples = samples.to(torch.float32)
    P = samples.shape[dim]
    mean = samples.mean(dim=dim)
    dev2 = (samples - mean.unsqueeze(dim)).abs() ** 2
    denom = max(P - correction, 1) if P > 1 else 1
    std = (dev2.sum(dim=dim) / denom).sqrt()
    return mean, std


def mean_gain_reference(P):
    """Expected gain (dB) of the P-sample posterior mean over one sample: ``10 log10(2P / (P + 1))``.

    For a correct sampler ``E||x_hat(P) - x||^2 = (1 + 1/P) tr Cov`` (Wen sec. 4.1), hence
    ``E_1 / E_P = 2P / (P + 1)``: 0 dB at ``P = 1``, -> 3.01 dB as ``P -> inf``. Accepts an int (float
    out) or an array/tensor (tensor out).
    """
    if isinstance(P, (int, float, np.integer, np.floating)):
        if P < 1:
            raise ValueError(f"P must be >= 1, got {P}")
        return 10.0 * math.log10(2.0 * P / (P + 1.0))
    Pt = torch.as_tensor(P, dtype=torch.float64)
    if bool((Pt < 1).any()):
        raise ValueError("every P must be >= 1")
    return 10.0 * torch.log10(2.0 * Pt / (Pt + 1.0))


def mean_gain_curve(samples, x_true, Ps: Sequence[int], n_repeats: int = 8, generator=None) -> torch.Tensor:
    """Measured complex-PSNR gain (dB) of the P-sample mean over single samples, for each P in ``Ps``.

    ``gain(P) = 10 log10(E_1 / E_P)`` where ``E_P`` is the squared error ``||mean_S - x_true||^2``
    (all pixels of all items pooled) averaged over subsets ``S`` of ``P`` samples: ``n_repeats`` random
    permutations, each split into ``floor(N / P)`` disjoint subsets. Equal to the difference of complex
    PSNRs (Wen eq. 22) of the means, since the peak term cancels. Compare with ``mean_gain_reference``.

    Parameters
    ----------
    samples : (N, ...) tensor, complex or real
    x_true : tensor broadcasting to ``samples.shape[1:]``
    Ps : sequence of ints in ``[1, N]``
    n_repeats : int
    generator : torch.Generator or int seed, optional

    Returns
    -------
    Tensor ``(len(Ps),)`` float64.
    """
    from ._validate import as_generator

    if isinstance(samples, np.ndarray):
        samples = torch.from_numpy(np.ascontiguousarray(samples))
    if isinstance(x_true, np.ndarray):
        x_true = torch.from_numpy(np.ascontiguousarray(x_true))
    if not isinstance(samples, torch.Tensor) or not isinstance(x_true, torch.Tensor):
        raise TypeError("samples and x_true must be torch tensors or numpy arrays")
    if samples.ndim < 2:
        raise ValueError(f"samples must be (N, ...), got shape {tuple(samples.shape)}")
    N = samples.shape[0]
    dt = torch.complex128 if (samples.is_complex() or x_true.is_complex()) else torch.float64
    dev = samples.to(dt) - x_true.to(dt)  # mean_S - x = mean_S(x_p - x)
    try:
        torch.broadcast_shapes(x_true.shape, samples.shape[1:])
    except RuntimeError:
        raise ValueError(f"x_true {tuple(x_true.shape)} does not broadcast to a sample {tuple(samples.shape[1:])}")
    dev = dev.reshape(N, -1)
    Ps = [int(p) for p in Ps]
    if any(p < 1 or p > N for p in Ps):
        raise ValueError(f"every P must lie in [1, {N}] (the number of samples), got {Ps}")
    g = as_generator(generator)
    E1 = (dev.abs() ** 2).sum(1).mean()
    gains = []
    for p in Ps:
        errs = []
        for _ in range(max(1, int(n_repeats))):
            perm = torch.randperm(N, generator=g)
            k = N // p
            groups = dev[perm[: k * p]].reshape(k, p, -1).mean(1)
            errs.append((groups.abs() ** 2).sum(1))
        EP = torch.cat(errs).mean()
        gains.append(10.0 * torch.log10(E1 / EP))
    return torch.stack(gains)


def std_error_correlation(std_map, error_map, reduction: str = "none") -> torch.Tensor:
    """Pearson correlation between a posterior std map and the absolute error map, per item.

    ``error_map`` may be complex (its magnitude is used). Shapes ``(H, W)`` -> 0-d, ``(B, ...)`` ->
    ``(B,)``. A well-calibrated sampler's std is high where its error is high (correlation near 1).
    """
    s, e = _pair(std_map, error_map)
    fs, fe = _items(s.abs()), _items(e.abs())
    fs = fs - fs.mean(1, keepdim=True)
    fe = fe - fe.mean(1, keepdim=True)
    den = torch.sqrt((fs**2).sum(1) * (fe**2).sum(1))
    if bool((den == 0).any()):
        raise ValueError("correlation undefined: a std or error map is constant")
    return _finish((fs * fe).sum(1) / den, s, reduction)
