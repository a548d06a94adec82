"""Unadjusted Langevin samplers: exact likelihood (plain ULA) and annealed likelihood (Jalal et al.).

Both run ``K`` Langevin steps at each of ``N`` noise levels ``sigma_i = sigma(i / N)`` (exponential
schedule, :func:`~bayesmri.samplers.base.geometric_sigmas`) after an initial draw at ``sigma_max``.
Target at level ``i`` (real-component conventions of :mod:`bayesmri.samplers.base`):

    pi_i(x) ~ p_{sigma_i}(x) exp(-c ||y - A x||^2 / (2 rho_i^2)),   c = 2 (complex) or 1 (real)

and one ULA step is the Euler-Maruyama step

    x <- x + tau_i [ c / rho_i^2 A^H (y - A x) + s(x, sigma_i) ] + sqrt(2 tau_i) xi,

``xi`` white with unit variance per real component, ``tau_i = gamma / (kappa_i sigma_i^-2 + c lambda_max /
rho_i^2)`` with ``lambda_max = ||A||^2`` (GUIDE sec. 4; BART ``sample --posterior`` without
preconditioning) and ``kappa_i = prior.lipschitz_factor(sigma_i)`` (1 for a score network; larger for a
product of experts such as PoGMDM). **Exact likelihood**: ``rho_i = nu`` (the noise std) at every level.
**Annealed likelihood** (Jalal et al. 2021; Holliber et al. eq. 6 and eq. 12): the data noise grows
with the diffusion level, geometrically from ``rho(0) = nu`` to ``rho(1) = sigma_max sqrt(c lambda_max)``
so that at ``sigma_max`` the Lipschitz constants of likelihood and prior balance (eq. 12):
``rho(t) = nu (sigma_max sqrt(c lambda_max) / nu)^t`` (never below ``nu``).
"""
from __future__ import annotations

import math


from .base import Measurement, Sampler, geometric_sigmas, white_noise

__all__ = ["ULA", "AnnealedULA"]


class ULA(Sampler):
    """ULA with the exact likelihood at every noise level.

    Parameters
    ----------
    n_levels : int
        Number ``N`` of noise levels after the initial draw.
    n_steps : int
        Langevin steps ``K`` per level (NFE = N K).
    sigma_max, sigma_min : float
        Noise schedule end points (per real component).
    gamma : float
        Step-size factor (BART default 0.5); ``tau_i = gamma / Lipschitz_i``.
    lambda_max : float, optional
        ``||A||^2``; estimated by power iteration when omitted.
    init : {"noise", "gaussian"}
        ``"noise"``: ``x = sigma_max xi`` (a draw of the diffused prior for a prior narrow compared
        to ``sigma_max``); ``"gaussian"``: the exact posterior under the flat Gaussian prior at
        ``sigma_max`` (as pULA, drawn by perturb-and-optimise).
    final_denoise : bool
        Tweedie step at ``sigma_min`` on the final chains (:attr:`Sampler.final_denoise`).
    """

    name = "ula"
    annealed = False

    def __init__(self, n_levels: int = 100, n_steps: int = 1, sigma_max: float = 10.0, sigma_min: float = 0.01,
                 gamma: float = 0.5, lambda_max: float | None = None, init: str = "noise", init_cg_iter: int = 30,
                 final_denoise: bool = False):
        if n_levels < 1 or n_steps < 1:
            raise ValueError(f"n_levels and n_steps must be >= 1, got {n_levels}, {n_steps}")
        if not (0 < gamma < 2):
            raise ValueError(f"gamma must be in (0, 2) for a stable Langevin step, got {gamma}")
        if init not in ("noise", "gaussian"):
            raise ValueError(f"init must be 'noise' or 'gaussian', got {init!r}")
        self.n_levels, self.n_steps = n_levels, n_steps
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.gamma = gamma
        self.lambda_max = lambda_max
        self.init = init
        self.init_cg_iter = init_cg_iter
        self.final_denoise = bool(final_denoise)

    def rho(self, t: float, nu: float, c: float, lam: float) -> float:
        """Likelihood noise std at diffusion time ``t``: ``nu`` for the exact likelihood."""
        return nu

    def _run(self, meas: Measurement, score, n, g, progress, x_init, diag):
        op, nu, c = meas.op, meas.sigma, meas.c
        AHy = meas.AHy()
        lam = self.lambda_max if self.lambda_max is not None else op.compute_norm(n_iter=50, generator=0)
        shape = (n, *AHy.shape[1:])
        if self.init == "gaussian":
            from .pula import gaussian_posterior_draw

            x, _ = gaussian_posterior_draw(meas, AHy, self.sigma_max, n, g, self.init_cg_iter)
        else:
            x = self.sigma_max * white_noise(shape, AHy.dtype, AHy.device, g)
        self._loop.x = x
        sigmas = geometric_sigmas(self.sigma_max, self.sigma_min, self.n_levels)
        # a prior stiffer than a diffused density (ScorePrior.lipschitz_factor) gets smaller steps
        kappa = getattr(getattr(score, "prior", None), "lipschitz_factor", lambda sigma: 1.0)
        taus, rhos = [], []
        for i in self._levels(self.n_levels, progress):
            sig = float(sigmas[i])
            t = (self.n_levels - 1 - i) / self.n_levels
            rho = self.rho(t, nu, c, lam)
            tau = self.gamma / (kappa(sig) * sig**-2 + c * lam / rho**2)
            taus.append(tau)
            rhos.append(rho)
            for _ in range(self.n_steps):
                grad = (c / rho**2) * (AHy - op.normal(x)) + score(x, sig)
                x = x + tau * grad + math.sqrt(2 * tau) * white_noise(shape, x.dtype, x.device, g)
            self._level_done(x, sig)
        self._denoise_last(x, score, sig, diag)
        diag.update(sigmas=sigmas, step_sizes=taus, rhos=rhos, lambda_max=lam)


class AnnealedULA(ULA):
    """ULA with the annealed likelihood of Jalal et al. (see the module docstring for ``rho(t)``).

    ``likelihood_schedule``: ``"geometric"`` (default; pULA paper eqs. 6, 12) or ``"additive"``,
    ``rho_i^2 = nu^2 + c lambda_max sigma_i^2``: the variance of ``A x_sigma - A x`` (at most
    ``c lambda_max sigma^2`` per sample) added to the noise's, the likelihood of ``y`` given the
    *diffused* image. Both start at ``~ sigma_max sqrt(c lambda_max)`` and end at ``nu``; the additive
    one is within 10 % of ``nu`` once ``sigma_i < 0.46 nu / sqrt(c lambda_max)``, while the geometric one
    is still several times ``nu`` at the levels where a chain of step ``tau_i ~ sigma_i^2`` stops moving,
    so that the samples keep the spread of a weaker likelihood (``docs/uncertainty.md``: SBC on a
    Gaussian mixture, 90 % coverage 0.94 at 2000 levels with the geometric schedule).
    """

    name = "annealed-ula"
    annealed = True

    def __init__(self, *args, likelihood_schedule: str = "geometric", **kw):
        super().__init__(*args, **kw)
        if likelihood_schedule not in ("geometric", "additive"):
            raise ValueError(f"likelihood_schedule must be 'geometric' or 'additive', got {likelihood_schedule!r}")
        self.likelihood_schedule = likelihood_schedule

    def rho(self, t: float, nu: float, c: float, lam: float) -> float:
        if self.likelihood_schedule == "additive":
            sig = self.sigma_min * (self.sigma_max / self.sigma_min) ** t
            return math.sqrt(nu**2 + c * lam * sig**2)
        rho1 = self.sigma_max * math.sqrt(c * lam)
        return nu * max(rho1 / nu, 1.0) ** t
