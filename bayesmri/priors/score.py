"""A trained score network as a prior at the data's intensity scale (Chung & Ye 2022; Holliber, Uecker et al. 2025).

:class:`ScorePrior` turns a network with ``score(x, sigma)`` on real single-channel images (e.g.
:class:`bayesmri.priors.score_unet.ScoreUNet`, trained on magnitude slices each divided by its 95th
percentile; any prior of :mod:`bayesmri.priors.registry`, the PoGMDM included) into a prior for every
score-based sampler of :mod:`bayesmri.samplers` at the **intensity scale of the data**:

    s_data(x, sigma) = s_net(x / a, sigma / a) / a                                         (1)

which is the exact score of the prior of ``a X`` when ``X`` follows the network's prior
(``p_aX(x) = p_X(x / a) / a^n``, and the diffusion noise ``sigma`` on ``a X`` is ``sigma / a`` on
``X``). ``a`` is estimated from the measured data only (:func:`bayesmri.samplers.learned.data_scale`).

Complex images ``x = u + i v`` get ``s(u) + i s(v)`` (Chung & Ye Alg. 3) in **one** network call on
the batch ``[u; v]`` of size ``2P`` (one NFE, as :class:`~bayesmri.samplers.base.ComplexSplitScore`).
``sigma`` is per real component (``docs/samplers.md``). Evaluation runs under ``torch.no_grad`` on
the network's device, in chunks of at most ``chunk_size`` images, and returns on the input's device.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

__all__ = ["ScorePrior", "load_default_score_prior", "DEFAULT_SCORE_WEIGHTS", "REALSIZE_SCORE_WEIGHTS",
           "default_score_weights"]

DEFAULT_SCORE_WEIGHTS = "score_small64"
#: Weights for real matrix sizes: trained on 64x64 crops of 1 mm slices at 0.6-2.0 mm per pixel and
#: evaluated tiled (``docs/realsize.md``); ``score_small64`` learned whole 64x64 brains (about 3.5 mm).
REALSIZE_SCORE_WEIGHTS = "score_native"
#: Images whose smaller side is at least this many pixels get :data:`REALSIZE_SCORE_WEIGHTS` by default.
REALSIZE_MIN_PIXELS = 96


def default_score_weights(shape) -> str:
    """The shipped score weights for an image of ``shape = (..., H, W)`` when the user names none."""
    return REALSIZE_SCORE_WEIGHTS if min(int(shape[-2]), int(shape[-1])) >= REALSIZE_MIN_PIXELS else DEFAULT_SCORE_WEIGHTS


class ScorePrior:
    """Score prior from a network, at the data's intensity scale (eq. 1 of the module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        Has ``score(x, sigma)`` for real ``x: (B, H, W)`` (per-real-component ``sigma``; a scalar
        or ``(B,)``), e.g. ``ScoreUNet``. Put in eval mode; its device is used for evaluation.
    scale : float
        ``a``: image intensity of the data relative to the training normalisation (1 = data
        normalised like the training images). See :func:`data_scale` and :meth:`with_scale`.
    chunk_size : int, optional
        Largest batch passed to the network at once (memory bound); default: all at once.
    sigma_range : (float, float), optional
        Noise levels the network was trained on (network units); read from ``model.meta["prior"]``
        when present. Only reported (``sigma_range``) and used for defaults; not enforced.
    image_mean_quantiles : sequence of float, optional
        Equally spaced quantiles (0 .. 1) of the training images' means (network units), read from
        ``model.meta["prior"]["image_mean_quantiles"]`` when present. The network hardly models the
        image mean (see :func:`sample_prior`); this 1-D distribution completes the generative model
        (:meth:`draw_image_means`).

    Notes
    -----
    ``score`` accepts real ``(B, H, W)`` / ``(B, 1, H, W)`` or complex ``(B, H, W)`` tensors and
    returns a tensor of the same shape and dtype. ``calls`` counts network calls (one per ``score``).
    """

    def __init__(self, model, scale: float = 1.0, chunk_size: int | None = None, sigma_range=None,
                 image_mean_quantiles=None):
        if not hasattr(model, "score") or not callable(model.score):
            raise TypeError(f"model must have score(x, sigma), got {type(model).__name__}")
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self.model = model
        self.scale = scale
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        meta = getattr(model, "meta", None) or {}
        pr = meta.get("prior", {}) if isinstance(meta, dict) else {}  # what the exported JSON says
        if sigma_range is None and "sigma_min" in pr and "sigma_max" in pr:
            sigma_range = (float(pr["sigma_min"]), float(pr["sigma_max"]))
        self.sigma_range = None if sigma_range is None else (float(sigma_range[0]), float(sigma_range[1]))
        if image_mean_quantiles is None:
            image_mean_quantiles = pr.get("image_mean_quantiles")
        if image_mean_quantiles is not None:
            q = [float(v) for v in image_mean_quantiles]
            if len(q) < 2 or any(b < a for a, b in zip(q, q[1:])) or not all(map(math.isfinite, q)):
                raise ValueError("image_mean_quantiles must be >= 2 finite, non-decreasing values")
            image_mean_quantiles = tuple(q)
        self.image_mean_quantiles = image_mean_quantiles
        self.calls = 0

    @property
    def device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.model.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def with_scale(self, scale: float) -> "ScorePrior":
        """The same network at another intensity scale (shares the model; no copy)."""
        return ScorePrior(self.model, scale, self.chunk_size, self.sigma_range, self.image_mean_quantiles)

    def draw_image_means(self, n: int, generator=None) -> torch.Tensor:
        """``n`` image means from the stored training distribution, in the data's units (``a`` x network).

        Inverse-CDF sampling of the piecewise-linear CDF through :attr:`image_mean_quantiles`.
        """
        if self.image_mean_quantiles is None:
            raise ValueError("this prior carries no image-mean distribution (image_mean_quantiles; weights "
                             "exported before session 5 lack it): pass the means to sample_prior(mean=...)")
        from .._validate import as_generator

        q = torch.tensor(self.image_mean_quantiles, dtype=torch.float64)
        u = torch.rand(int(n), generator=as_generator(generator), dtype=torch.float64) * (len(q) - 1)
        lo = u.floor().long().clamp_max(len(q) - 2)
        m = q[lo] + (u - lo) * (q[lo + 1] - q[lo])
        return (m * self.scale).float()

    def lipschitz_factor(self, sigma: float) -> float:
        """``kappa >= 1`` with the score's Lipschitz constant at most ``kappa / sigma^2`` at the data's scale:
        the network's ``lipschitz_factor(sigma / a)`` where it has one (a product of experts, e.g.
        :class:`~bayesmri.priors.registry.PoGMDMScore`; ``sigma^2 L`` is scale-free), else 1 (a diffused
        density's bound, what the step sizes of the Langevin samplers assume)."""
        fn = getattr(self.model, "lipschitz_factor", None)
        return max(1.0, float(fn(float(sigma) / self.scale))) if callable(fn) else 1.0

    def sigma_max_data(self) -> float | None:
        """The largest trained noise level in the data's units (``a * sigma_max``), if known."""
        return None if self.sigma_range is None else self.sigma_range[1] * self.scale

    def _net_score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Network score on real ``x: (N, H, W)`` in network units, chunked, on the model's device."""
        dev, dt = self.device, self.dtype
        xin = x.to(device=dev, dtype=dt)
        n = xin.shape[0]
        cs = self.chunk_size or n
        with torch.no_grad():
            outs = [self.model.score(xin[i:i + cs], float(sigma)) for i in range(0, n, cs)]
        return torch.cat(outs, 0) if len(outs) > 1 else outs[0]

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """``grad log p_sigma(x)`` at the data's scale (real components; see module docstring)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        shape4 = x.ndim == 4
        if shape4:
            if x.shape[1] != 1:
                raise ValueError(f"x must be (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
            x3 = x[:, 0]
        elif x.ndim == 3:
            x3 = x
        else:
            raise ValueError(f"x must be (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
        a = self.scale
        self.calls += 1
        if x3.is_complex():
            n = x3.shape[0]
            s = self._net_score(torch.cat([x3.real, x3.imag], 0) / a, sigma / a) / a
            s = s.to(device=x.device, dtype=x3.real.dtype)
            out = torch.complex(s[:n], s[n:])
        else:
            out = (self._net_score(x3 / a, sigma / a) / a).to(device=x.device, dtype=x3.dtype)
        return out[:, None] if shape4 else out

    def denoise(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Tweedie denoiser ``x + sigma^2 score(x, sigma)``."""
        return x + float(sigma) ** 2 * self.score(x, sigma)


@lru_cache(maxsize=4)
def _load_cached(name: str, device: str):
    from .loading import load_model

    return load_model(name, device=device)


def load_default_score_prior(name: str = DEFAULT_SCORE_WEIGHTS, device="cpu", scale: float = 1.0,
                             chunk_size: int | None = None) -> ScorePrior:
    """:class:`ScorePrior` of shipped weights (``bayesmri/weights/<name>.safetensors|.json``) or a path.

    Loads with :func:`bayesmri.priors.loading.load_model` (safetensors + JSON, no pickles, no network);
    the model is cached per ``(name, device)``. ``FileNotFoundError`` names the shipped weights if
    ``name`` does not exist.
    """
    model = _load_cached(str(name), str(torch.device(device)))
    return ScorePrior(model, scale=scale, chunk_size=chunk_size)
