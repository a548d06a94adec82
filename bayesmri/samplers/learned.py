"""Learned score priors in the samplers: the data's intensity scale and unconditional prior samples.

:class:`~bayesmri.priors.score.ScorePrior` turns a network with ``score(x, sigma)`` on real single-channel images (e.g.
:class:`bayesmri.priors.score_unet.ScoreUNet`, trained on magnitude slices each divided by its 95th
percentile) into a prior for :mod:`bayesmri.samplers` at the **intensity scale of the data**:

    s_data(x, sigma) = s_net(x / a, sigma / a) / a                                         (1)

which is the exact score of the prior of ``a X`` when ``X`` follows the network's prior
(``p_aX(x) = p_X(x / a) / a^n``, and the diffusion noise ``sigma`` on ``a X`` is ``sigma / a`` on
``X``). ``a`` is estimated from the measured data only (:func:`data_scale`: the 95th percentile of
the magnitude of a least-squares reconstruction ``A^+ y``), never from the ground truth.

Complex images ``x = u + i v`` get ``s(u) + i s(v)`` (Chung & Ye Alg. 3) in **one** network call on
the batch ``[u; v]`` of size ``2P`` (one NFE, as :class:`~bayesmri.samplers.base.ComplexSplitScore`).
``sigma`` is per real component (``docs/samplers.md``). Evaluation runs under ``torch.no_grad`` on
the network's device, in chunks of at most ``chunk_size`` images, and returns on the input's device.

:func:`sample_prior` draws unconditional samples (reverse-diffusion predictor + Langevin corrector,
Song et al. 2021 / Chung & Ye Alg. 1 without data consistency).
"""
from __future__ import annotations

import math

import torch

from .base import batch_norm, geometric_sigmas, white_noise

__all__ = ["data_scale", "least_squares_image", "sample_prior"]


def least_squares_image(op, y: torch.Tensor, n_iter: int = 10, lam: float = 1e-3) -> torch.Tensor:
    """``x_ls = argmin ||A x - y||^2 + lam ||x||^2`` by ``n_iter`` CG iterations from 0 (domain shape)."""
    from ..physics.linop import conjugate_gradient

    with torch.no_grad():
        rhs = op.A_adjoint(y)
        return conjugate_gradient(lambda v: op.normal(v) + lam * v, rhs, None, max_iter=int(n_iter), tol=1e-8)


def data_scale(op, y: torch.Tensor, q: float = 0.95, n_iter: int = 10, lam: float = 1e-3,
               x_ls: torch.Tensor | None = None) -> float:
    """Intensity scale of the image behind ``y``, from the measured data only.

    The ``q`` quantile of ``|x_ls|``, ``x_ls`` = regularised least squares
    ``argmin ||A x - y||^2 + lam ||x||^2`` by ``n_iter`` CG iterations from 0
    (:func:`least_squares_image`; pass ``x_ls`` to reuse one), the same statistic as the training
    normalisation (each slice divided by its 95th percentile magnitude). Works for any operator
    (Cartesian, non-Cartesian). Returns 1.0 for an all-zero measurement.
    """
    from ..physics.intensity import intensity_scale

    with torch.no_grad():
        x = least_squares_image(op, y, n_iter, lam) if x_ls is None else x_ls
    return intensity_scale(x.abs(), q)


def sample_prior(prior, n: int, shape, n_levels: int = 200, sigma_max: float = 10.0, sigma_min: float = 0.01,
                 n_corrector: int = 1, snr: float = 0.16, denoise_last: bool = True, generator=None,
                 dtype=torch.float32, device="cpu", progress: bool = False, mean=None) -> torch.Tensor:
    """Unconditional samples of a score prior: reverse-diffusion predictor-corrector, no likelihood.

    VE-SDE, ``sigma_i`` geometric from ``sigma_max`` to ``sigma_min`` (Chung & Ye eq. 19). From
    ``x ~ N(0, sigma_max^2 I)``, for each level: predictor ``x + (s_{i+1}^2 - s_i^2) s(x, s_{i+1}) +
    sqrt(s_{i+1}^2 - s_i^2) xi`` (eq. 11), then ``n_corrector`` Langevin steps with
    ``eps = 2 (snr ||xi|| / ||s||)^2`` (eq. 15). ``denoise_last`` returns the Tweedie estimate at
    ``sigma_min`` (removes the last noise; Song et al.'s ``denoise=True``). NFE = ``n_levels (1 +
    n_corrector) + denoise_last``.

    ``mean`` (float, ``(n,)`` or ``"prior"``): condition on the image mean, i.e. a noise-free k-space
    centre sample, which every MR acquisition measures. ``"prior"`` draws the means from the training
    distribution the weights carry (:meth:`~bayesmri.priors.score.ScorePrior.draw_image_means`), which makes the samples
    unconditional draws of the two-stage model ``p(mean) p(x | mean)``. After each update the per-image
    mean is projected onto the given value (Chung & Ye's hard data-consistency step with ``A`` the mean
    functional). Why: a
    convolutional score network with GroupNorm hardly sees a constant offset, so it does not remove the
    mean of the initial noise (std ``sigma_max / sqrt(H W)``, 0.47 at 64x64 for ``sigma_max`` = 30),
    and unconditional samples end up shifted (mostly empty or negative images; measured on
    ``score_small64``, ``benchmarks/results/diffusion.md``). Posterior sampling is not affected: the
    k-space centre is always in the data.

    Returns
    -------
    Tensor ``(n, *shape)`` of ``dtype`` (real, or complex for a complex dtype).
    """
    from .._validate import as_generator

    if n < 1 or n_levels < 1 or n_corrector < 0:
        raise ValueError("n >= 1, n_levels >= 1 and n_corrector >= 0 are required")
    g = as_generator(generator, device=device)
    sig = geometric_sigmas(sigma_max, sigma_min, n_levels).tolist()
    levels = [float(sigma_max)] + sig
    full = (int(n), *tuple(shape))
    if isinstance(mean, str):
        if mean != "prior":
            raise ValueError(f"mean must be a number, one value per sample or 'prior', got {mean!r}")
        if not hasattr(prior, "draw_image_means"):
            raise TypeError(f"mean='prior' needs a ScorePrior with image_mean_quantiles, got {type(prior).__name__}")
        gm = g if g is None or g.device.type == "cpu" else torch.Generator().manual_seed(g.initial_seed())
        mean = prior.draw_image_means(n, generator=gm)
    x = float(sigma_max) * white_noise(full, dtype, device, g)

    def fix(v):  # identity unless the image mean is given
        return v

    if mean is not None:
        m = torch.as_tensor(mean, dtype=x.real.dtype, device=x.device).reshape(-1)
        if m.numel() not in (1, int(n)) or not bool(torch.isfinite(m).all()):
            raise ValueError(f"mean must be a finite scalar or one value per sample ({n}), got shape {tuple(m.shape)}")
        m = m.to(x.dtype).reshape(-1, *([1] * len(shape)))
        dims = tuple(range(1, x.ndim))

        def fix(v):  # noqa: F811 - projection onto {mean(v) = m}
            return v - v.mean(dim=dims, keepdim=True) + m

    x = fix(x)
    it = range(n_levels)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="prior samples", leave=False)
    with torch.no_grad():
        for i in it:
            hi, lo = levels[i], levels[i + 1]
            d2 = hi**2 - lo**2
            x = x + d2 * prior.score(x, hi) + math.sqrt(d2) * white_noise(full, dtype, device, g)
            x = fix(x)
            for _ in range(n_corrector):
                s = prior.score(x, lo)
                xi = white_noise(full, dtype, device, g)
                eps = 2 * (snr * batch_norm(xi) / batch_norm(s).clamp_min(1e-30)) ** 2
                x = x + eps * s + torch.sqrt(2 * eps) * xi
                x = fix(x)
        if denoise_last:
            x = x + levels[-1] ** 2 * prior.score(x, levels[-1])
            x = fix(x)
    return x
