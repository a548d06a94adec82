"""Analytic priors with exact scores at every diffusion level, and exact posteriors.

These let the samplers be tested exactly. Noise-level convention (``bayesmri.samplers.base``):
``p_sigma = p * N(0, sigma^2 I)`` per real component, so a complex pixel gets ``E|n|^2 = 2 sigma^2``;
scores are gradients with respect to the real components (``d/dRe + i d/dIm`` for complex tensors).

* Real Gaussian component ``N(mu, S)``: diffused ``N(mu, S + sigma^2 I)``.
* Complex (circular) component ``CN(mu, S)`` with ``S = E[(x - mu)(x - mu)^H]``: diffused
  ``CN(mu, S + 2 sigma^2 I)``; its real-component score is ``-2 (S + 2 sigma^2 I)^{-1} (x - mu)``.
* A Gaussian mixture convolved with a Gaussian is a Gaussian mixture with the same weights, so
  :meth:`GaussianMixturePrior.score` is exact at every ``sigma``.
* Under ``y = A x + e`` with ``e ~ N(0, nu^2 I)`` (real) or ``CN(0, nu^2 I)`` (complex), the posterior
  of a mixture is a mixture (:meth:`GaussianMixturePrior.posterior`): component ``k`` has covariance
  ``C_k = (S_k^{-1} + A^H A / nu^2)^{-1}``, mean ``m_k = C_k (S_k^{-1} mu_k + A^H y / nu^2)`` and weight
  ``w_k N(y; A mu_k, A S_k A^H + nu^2 I)`` normalised.
"""
from __future__ import annotations

import math

import torch

from .._validate import as_generator, check_finite
from ..physics.fft import fft2c, ifft2c
from ..physics.linop import DenseOperator  # noqa: F401 (moved to physics; re-exported)

__all__ = ["DenseOperator", "GaussianMixturePrior", "GaussianPrior", "StationaryGaussianPrior",
           "gaussian_mixture_image_prior"]


def _flat(x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    return x.reshape(*x.shape[: x.ndim - event_ndim], -1)


class GaussianMixturePrior:
    """Gaussian mixture ``sum_k w_k N(mu_k, S_k)`` (real) or ``sum_k w_k CN(mu_k, S_k)`` (complex).

    Parameters
    ----------
    means : Tensor ``(K, *event_shape)``
        Component means; complex dtype makes a complex (circular) mixture.
    covs : Tensor ``(K, n, n)`` (``n = prod(event_shape)``), or ``(K,)`` / scalar for isotropic
        ``S_k = v_k I``. For complex mixtures ``S_k = E[(x - mu)(x - mu)^H]``.
    weights : Tensor ``(K,)``, optional
        Non-negative, normalised here (uniform by default).

    ``score(x, sigma)`` is exact at every diffusion level and counts its calls in ``nfe``.
    """

    def __init__(self, means: torch.Tensor, covs, weights: torch.Tensor | None = None):
        if not isinstance(means, torch.Tensor) or means.ndim < 2:
            raise TypeError("means must be a tensor (K, *event_shape)")
        check_finite(means, "means")
        K = means.shape[0]
        self.event_shape = tuple(means.shape[1:])
        n = math.prod(self.event_shape)
        self.is_complex = means.is_complex()
        real = means.real.dtype
        self.means = means.reshape(K, n)
        covs = torch.as_tensor(covs, dtype=means.dtype, device=means.device)
        if covs.ndim <= 1:
            v = covs.real.to(real).expand(K) if covs.ndim == 1 else covs.real.to(real).repeat(K)
            if bool((v <= 0).any()):
                raise ValueError("isotropic variances must be positive")
            covs = v.reshape(K, 1, 1) * torch.eye(n, dtype=means.dtype, device=means.device)
        if covs.shape != (K, n, n):
            raise ValueError(f"covs must have shape ({K}, {n}, {n}) (or (K,) isotropic), got {tuple(covs.shape)}")
        self.covs = 0.5 * (covs + covs.transpose(-1, -2).conj())
        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=real, device=means.device)
        weights = torch.as_tensor(weights, dtype=real, device=means.device)
        if weights.shape != (K,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        self.weights = weights / weights.sum()
        self.n = n
        self.nfe = 0

    @property
    def dtype(self):
        return self.means.dtype

    # ---------------------------------------------------------------------------------
    def _noise_var(self, sigma: float) -> float:
        """Variance added to each component's covariance by diffusion at level sigma."""
        return (2.0 if self.is_complex else 1.0) * sigma**2

    def _components(self, sigma: float):
        eye = torch.eye(self.n, dtype=self.dtype, device=self.means.device)
        return self.covs + self._noise_var(sigma) * eye

    def _log_gauss(self, xf: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor):
        """log density of each component at xf (B, n) -> (B, K), and ``S_k^{-1} (x - mu_k)`` (B, K, n)."""
        prec = torch.linalg.inv(cov)  # (K, n, n); K and n are small for dense mixtures
        logdet = torch.linalg.slogdet(cov)[1]
        d = xf.unsqueeze(1) - mean.unsqueeze(0)  # (B, K, n)
        sol = torch.einsum("kij,bkj->bki", prec, d)
        quad = (d.conj() * sol).sum(-1).real
        if self.is_complex:
            logp = -quad - logdet - self.n * math.log(math.pi)
        else:
            logp = -0.5 * quad - 0.5 * logdet - 0.5 * self.n * math.log(2 * math.pi)
        return logp, sol

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """``log p_sigma(x)`` for ``x: (B, *event_shape)`` -> ``(B,)``."""
        xf = _flat(x, len(self.event_shape)).to(self.dtype)
        logp, _ = self._log_gauss(xf, self.means, self._components(sigma))
        return torch.logsumexp(logp + torch.log(self.weights), dim=1)

    def responsibilities(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """Posterior component probabilities ``(B, K)`` of points ``x`` under ``p_sigma``."""
        xf = _flat(x, len(self.event_shape)).to(self.dtype)
        logp, _ = self._log_gauss(xf, self.means, self._components(sigma))
        return torch.softmax(logp + torch.log(self.weights), dim=1)

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        """Exact real-component score ``grad log p_sigma(x)``, shaped like ``x``."""
        self.nfe += 1
        xf = _flat(x, len(self.event_shape)).to(self.dtype)
        logp, sol = self._log_gauss(xf, self.means, self._components(sigma))
        r = torch.softmax(logp + torch.log(self.weights), dim=1).to(self.dtype)  # (B, K)
        s = -(r.unsqueeze(-1) * sol).sum(1)
        if self.is_complex:
            s = 2 * s  # real-component gradient = 2 x Wirtinger derivative
        return s.reshape(x.shape).to(x.dtype)

    def sample(self, n: int, generator=None, sigma: float = 0.0) -> torch.Tensor:
        """``n`` draws from ``p_sigma`` -> ``(n, *event_shape)``."""
        g = as_generator(generator)
        dev = self.means.device
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=g).to(dev)
        L = torch.linalg.cholesky(self._components(sigma))
        real = self.means.real.dtype
        if self.is_complex:
            z = torch.view_as_complex(torch.randn(n, self.n, 2, generator=g, dtype=real).to(dev)) / math.sqrt(2)
        else:
            z = torch.randn(n, self.n, generator=g, dtype=real).to(dev)
        x = self.means[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)
        return x.reshape(n, *self.event_shape)

    def posterior(self, matrix: torch.Tensor, y: torch.Tensor, noise_sigma: float) -> "GaussianMixturePrior":
        """Exact posterior under ``y = matrix @ x + e`` (see the module docstring).

        ``matrix: (m, n)``, ``y: (m,)``; ``noise_sigma`` is the per-sample noise std (complex:
        ``E|e|^2 = noise_sigma^2``). Returns the posterior as a ``GaussianMixturePrior``.
        """
        A = matrix.to(self.dtype)
        y = y.reshape(-1).to(self.dtype)
        nu2 = noise_sigma**2
        m = A.shape[0]
        eye_m = torch.eye(m, dtype=self.dtype, device=A.device)
        Sy = A @ self.covs @ A.conj().T + nu2 * eye_m  # (K, m, m)
        logp, _ = self._log_gauss(y.unsqueeze(0), self.means @ A.T, Sy)
        w = torch.softmax(logp[0] + torch.log(self.weights), 0)
        # Gain form (stable even for singular prior covariances): C = S - S A^H Sy^-1 A S.
        SAh = self.covs @ A.conj().T  # (K, n, m)
        Gain = torch.linalg.solve(Sy, SAh.transpose(-1, -2).conj()).transpose(-1, -2).conj()  # S A^H Sy^-1
        resid = y.unsqueeze(0) - self.means @ A.T  # (K, m)
        means = self.means + (Gain @ resid.unsqueeze(-1)).squeeze(-1)
        covs = self.covs - Gain @ SAh.transpose(-1, -2).conj()
        return GaussianMixturePrior(means.reshape(-1, *self.event_shape), covs, w)

    def mean(self) -> torch.Tensor:
        return (self.weights.to(self.dtype).unsqueeze(-1) * self.means).sum(0).reshape(self.event_shape)


def GaussianPrior(mean: torch.Tensor, cov) -> GaussianMixturePrior:
    """A single Gaussian ``N(mean, cov)`` (complex dtype: ``CN``) as a one-component mixture."""
    cov = torch.as_tensor(cov, dtype=mean.dtype, device=mean.device)
    return GaussianMixturePrior(mean.unsqueeze(0), cov.unsqueeze(0) if cov.ndim == 2 else cov.reshape(1))


class StationaryGaussianPrior:
    """Complex Gaussian image prior with a stationary (circulant) covariance.

    ``x ~ CN(mu, S)`` on ``(H, W)`` images with ``S = F^H diag(power) F`` (``F`` the centred
    orthonormal 2-D FFT), i.e. independent k-space coefficients with ``E|(F(x - mu))_k|^2 = power_k``.
    Diffusion adds ``2 sigma^2`` to every ``power_k``. The exact score is
    ``s(x, sigma) = -2 F^H [F(x - mu) / (power + 2 sigma^2)]``; scores broadcast over a batch.
    """

    def __init__(self, mean: torch.Tensor, power: torch.Tensor):
        if not mean.is_complex() or mean.ndim != 2:
            raise TypeError("mean must be a complex (H, W) tensor")
        if power.shape != mean.shape or bool((power <= 0).any()):
            raise ValueError("power must be a positive (H, W) tensor like mean")
        self.mean = mean
        self.power = power.to(mean.real.dtype)
        self.nfe = 0

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        k = fft2c(x - self.mean) / (self.power + 2 * sigma**2)
        return (-2 * ifft2c(k)).to(x.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        g = as_generator(generator)
        z = torch.view_as_complex(torch.randn(n, *self.mean.shape, 2, generator=g, dtype=self.power.dtype))
        return self.mean + ifft2c(z / math.sqrt(2) * self.power.sqrt())

    def precision_apply(self, x: torch.Tensor) -> torch.Tensor:
        """``S^{-1} x`` (Wirtinger convention: ``CN(mu, S)`` has density ``exp(-(x-mu)^H S^{-1} (x-mu))``)."""
        return ifft2c(fft2c(x) / self.power)


def gaussian_mixture_image_prior(shape=(8, 8), weights=(0.45, 0.35, 0.2), scales=(0.05, 0.1, 0.2),
                                 dtype: torch.dtype = torch.complex128) -> GaussianMixturePrior:
    """A small complex image mixture with exact scores, for calibration tests (``bayesmri.samplers.sbc``).

    Component ``k`` is ``CN(mu_k, S_k)`` on ``(H, W)`` images: ``mu_k`` a disc, a ring and an off-centre
    square (magnitude 1) with a smooth linear phase, ``S_k = scales_k F^H diag(p_k) F`` a stationary
    covariance whose power spectrum ``p_k = 0.05 + 1 / (1 + |k|^2 / r_k^2)`` (``r_k = 1, 2, 3``
    frequency units) makes smooth correlated images. Dense ``(HW, HW)`` covariances: small images only.
    """
    H, W = shape
    K = len(weights)
    if len(scales) != K or K > 3:
        raise ValueError("weights and scales must have the same length, at most 3 components")
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=real), torch.linspace(-1, 1, W, dtype=real),
                            indexing="ij")
    rr = torch.sqrt(xx**2 + yy**2)
    shapes = [(rr < 0.7), (rr > 0.45) & (rr < 0.95), (xx.abs() < 0.45) & ((yy - 0.3).abs() < 0.45)]
    phase = torch.polar(torch.ones_like(xx), 0.6 * xx - 0.3 * yy)
    means = torch.stack([shapes[k].to(real) * phase for k in range(K)]).to(dtype)
    ky = (torch.arange(H, dtype=real) - H // 2)[:, None]
    kx = (torch.arange(W, dtype=real) - W // 2)[None, :]
    basis = torch.eye(H * W, dtype=dtype).reshape(H * W, H, W)
    covs = []
    for k in range(K):
        p = 0.05 + 1.0 / (1.0 + (ky**2 + kx**2) / float(k + 1) ** 2)
        p = p / p.mean()  # unit mean pixel variance before the scale
        cols = ifft2c(p.to(dtype) * fft2c(basis)).reshape(H * W, H * W)  # row j = S e_j, so S = cols^T
        covs.append(float(scales[k]) * cols.T)
    return GaussianMixturePrior(means, torch.stack(covs), torch.tensor(weights, dtype=real))
