"""Exact-likelihood posterior sampling with preconditioned ULA (pULA; Holliber, Uecker et al. 2025,
as implemented in BART's ``sample`` tool; GUIDE sec. 4).

Target at noise level ``sigma_i`` (real-component conventions of :mod:`bayesmri.samplers.base`):

    pi_i(x) ~ p_{sigma_i}(x) exp(-c ||y - A x||^2 / (2 nu^2)),      c = 2 complex, 1 real

Preconditioner = inverse Hessian of the likelihood times the flat Gaussian prior at ``sigma_i``
(paper eq. 8): ``M_i = H_i^{-1}``, ``H_i = c / nu^2 A^H A + sigma_i^{-2} I``. One pULA step
(paper eqs. 8, 10, 11) with step size ``eps``:

    x+ = x + eps M_i g(x) + sqrt(2 eps) M_i^{1/2} xi,   g = c / nu^2 A^H (y - A x) + s(x, sigma_i)

drawn by perturb-and-optimise (Papandreou & Yuille; paper eq. 10) with **one** CG solve:

    x+ = H_i^{-1} [ H_i x + eps g(x) + sqrt(2 eps) (sqrt(c)/nu A^H xi_1 + xi_2 / sigma_i) ]

where ``xi_1`` (k-space) and ``xi_2`` (image) are white with unit variance per real component, so
that the bracketed noise has covariance ``H_i`` and ``M_i (.)`` has covariance ``2 eps M_i``. CG is
warm-started from ``x`` and run for ``cg_iter`` (10) iterations.

Initial sample at ``sigma_max`` (paper eq. 9): the exact posterior under the flat prior
``N(0, sigma_max^2 I)``, ``x ~ N(H^{-1} c/nu^2 A^H y, H^{-1})``, drawn as
``x = H^{-1} [c/nu^2 A^H y + sqrt(c)/nu A^H xi_1 + xi_2 / sigma_max]`` (GUIDE: ``CN(P_N A^H y, P_N)``).

Note on GUIDE's formula: GUIDE writes the noise term as ``sqrt(tau) (A^H n1 + n2/sigma)`` with
standard complex ``n``; in its (Wirtinger, ``CN``) units the Euler-Maruyama step needs
``sqrt(2 tau)``. The factor is the one that makes ULA's small-step limit exact; the tests check
posterior variances to a few percent and fail with the ``sqrt(tau)`` version.
"""
from __future__ import annotations

import math
import warnings

import torch

from ..physics.linop import conjugate_gradient
from .base import Measurement, Sampler, batch_norm, geometric_sigmas, white_noise

__all__ = ["PULA", "gaussian_posterior_draw"]


def _hessian(meas: Measurement, sigma: float):
    a = meas.c / meas.sigma**2
    b = sigma**-2
    return lambda v: a * meas.op.normal(v) + b * v


def _lik_noise(meas: Measurement, n: int, g) -> torch.Tensor:
    """``sqrt(c)/nu A^H xi_1``: covariance ``c/nu^2 A^H A`` (per real component)."""
    rs = meas.op.range_shape
    xi = white_noise((n, *rs), meas.y.dtype, meas.y.device, g)
    return (math.sqrt(meas.c) / meas.sigma) * meas.op.A_adjoint(xi)


def gaussian_posterior_draw(meas: Measurement, AHy: torch.Tensor, sigma: float, n: int, g,
                            cg_iter: int = 30, tol: float = 1e-6):
    """Exact draw from the posterior under the flat prior ``N(0, sigma^2 I)`` (paper eq. 9-10).

    Returns ``(x, None)`` with ``x: (n, *domain)`` (mean ``H^{-1} c/nu^2 A^H y``; the second slot is reserved).
    """
    H = _hessian(meas, sigma)
    a = meas.c / meas.sigma**2
    shape = (n, *AHy.shape[1:])
    rhs = a * AHy + _lik_noise(meas, n, g) + white_noise(shape, AHy.dtype, AHy.device, g) / sigma
    x = conjugate_gradient(H, rhs, None, max_iter=cg_iter, tol=tol)
    return x, None


class PULA(Sampler):
    """Preconditioned ULA with the exact likelihood (see the module docstring).

    Parameters
    ----------
    n_levels : int
        Number ``N`` of noise levels after the initial draw (exponential schedule).
    n_steps : int
        pULA steps ``K`` per level; NFE = N K.
    sigma_max, sigma_min : float
        Schedule end points (per real component); BART defaults 10 and 0.01.
    step : float
        ``eps`` (BART's ``gamma`` = 0.5); the same at every level.
    cg_iter : int
        CG iterations per step (warm-started), 10 as in the paper. ``diagnostics["cg_residual"]`` is the
        last level's CG residual relative to the warm start's; above 0.2 the sampler warns (the
        solver error stays in the samples; non-Cartesian operators need ~40).
    init_cg_iter : int
        CG iterations for the initial exact Gaussian draw.
    final_denoise : bool
        Tweedie step at ``sigma_min`` on the final chains (:attr:`Sampler.final_denoise`).
    """

    name = "pula"

    def __init__(self, n_levels: int = 50, n_steps: int = 1, sigma_max: float = 10.0, sigma_min: float = 0.01,
                 step: float = 0.5, cg_iter: int = 10, init_cg_iter: int = 30, cg_tol: float = 1e-6,
                 final_denoise: bool = False):
        if n_levels < 1 or n_steps < 1:
            raise ValueError(f"n_levels and n_steps must be >= 1, got {n_levels}, {n_steps}")
        if not (0 < step < 2):
            raise ValueError(f"step must be in (0, 2), got {step}")
        if cg_iter < 1 or init_cg_iter < 1:
            raise ValueError("cg_iter and init_cg_iter must be >= 1")
        self.n_levels, self.n_steps = n_levels, n_steps
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.step = step
        self.cg_iter, self.init_cg_iter, self.cg_tol = cg_iter, init_cg_iter, cg_tol
        self.final_denoise = bool(final_denoise)
        self.noise_scale = 1.0  # multiplies sqrt(2 eps); only tests change it (broken variants)

    def _run(self, meas: Measurement, score, n, g, progress, x_init, diag):
        op, c, nu = meas.op, meas.c, meas.sigma
        a = c / nu**2
        AHy = meas.AHy()
        x, _ = gaussian_posterior_draw(meas, AHy, self.sigma_max, n, g, self.init_cg_iter, self.cg_tol)
        self._loop.x = x
        sigmas = geometric_sigmas(self.sigma_max, self.sigma_min, self.n_levels)
        eps = self.step
        ns = self.noise_scale * math.sqrt(2 * eps)
        for i in self._levels(self.n_levels, progress):
            sig = float(sigmas[i])
            H = _hessian(meas, sig)
            for _ in range(self.n_steps):
                nx = op.normal(x)
                s = score(x, sig)
                noise = _lik_noise(meas, n, g) + white_noise(x.shape, x.dtype, x.device, g) / sig
                # H x + eps g(x) + noise, with H x = a A^H A x + x / sigma^2
                step = eps * (a * (AHy - nx) + s) + ns * noise  # = rhs - H x: the warm start's residual
                rhs = a * nx + x / sig**2 + step
                # H x is a nx + x / sigma^2, so the warm start's residual is `step`: no extra A^H A.
                x = conjugate_gradient(H, rhs, x, max_iter=self.cg_iter, tol=self.cg_tol, r0=step)
            self._level_done(x, sig)
        # An unconverged solve is not a pULA step: its error stays in the samples as a noise floor
        # (non-Cartesian operators, ||A||^2 >> 1, need far more iterations than Cartesian ones). Measured
        # against the warm start's residual: relative to ||rhs|| it looks small, as rhs contains H x.
        res = float((batch_norm(H(x) - rhs) / batch_norm(step).clamp_min(1e-30)).max())
        if res > 0.2:
            warnings.warn(f"pULA: CG stopped at relative residual {res:.2g} after cg_iter={self.cg_iter} "
                          "iterations on the last level; the samples carry the solver error: raise cg_iter",
                          RuntimeWarning, stacklevel=3)
        self._denoise_last(x, score, sig, diag)
        diag.update(sigmas=sigmas, step=eps, cg_iter=self.cg_iter, cg_residual=res)
