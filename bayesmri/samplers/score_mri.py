"""Score-MRI predictor-corrector sampling (Chung & Ye 2022, Algorithms 2-5, CCDF start).

Noise schedule ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` (eq. 19) at ``t = i / N``,
``i = N .. 0``. For ``i = N-1 .. 0`` (real-component conventions of :mod:`bayesmri.samplers.base`):

* predictor (reverse diffusion, eq. 11): ``x <- x + (sigma_{i+1}^2 - sigma_i^2) s(x, sigma_{i+1})
  + sqrt(sigma_{i+1}^2 - sigma_i^2) xi``;
* data consistency (eq. 12): ``x <- x + lambda A^H (y - A x)`` (``lambda`` divided by ``||A||^2``
  when that exceeds 1, e.g. non-Cartesian operators, so the map stays non-expansive, Prop. 1);
* ``M`` Langevin correctors (eq. 15) with step ``eps = 2 (r ||xi|| / ||s||)^2``, ``r = 0.16``
  (Song et al.'s rule; eq. 18 of the paper lost the square), each followed by data consistency.

Variants (``mode``):

* ``"real"`` (Alg. 2): real images, ``x <- Re(x + A^H (y - A x))``.
* ``"complex"`` (Alg. 3): complex images; with ``split_complex=True`` a real-valued prior is applied
  to the real and imaginary parts separately (both parts in one batched call = one NFE), and the
  corrector step size is computed for each part separately.
* ``"ssos"`` (Alg. 4): Cartesian multi-coil; each coil image is sampled with the single-coil model
  ``A_sc = P F`` and its own k-space; the output is the root sum of squares of the coil images
  (real, ``(P, H, W)``); the coil images are in ``diagnostics["coil_samples"]``.
* ``"hybrid"`` (Alg. 5): SSOS plus, every ``m`` iterations, the SENSE aggregation step (eq. 16)
  on the coil-image stack, ``x <- x + lambda_j S A_mc^H (y - A_mc S^H x)``, with ``lambda_j``
  decreasing linearly from 1 to 0.2 over the iterations actually run.

Measurement noising (``noisy_data=True``; Song, Shen, Xing & Ermon, ICLR 2022, not in Chung & Ye): the
data-consistency steps at level ``sigma_i`` use ``y_i = y + A(sqrt(sigma_i^2 - nu^2 / 2) xi)`` (fresh ``xi``
per step; ``nu`` the measurement's noise std per complex sample) instead of ``y``, so the measured
components of the chain carry the same noise level as the unmeasured ones and the network sees the
noisy images it was trained on. With ``y`` itself (the paper), the measured components are nearly
noise-free at every level, a mismatch that leaves a fine texture in the samples.

CCDF (Chung et al. 2021): ``t0 < 1`` starts from ``x = x0 + sigma(t0) xi`` with ``x0 = x_init`` (an
initial reconstruction; zero-filled ``A^H y`` if none is given) and runs only ``round(t0 N)`` levels.
NFE = (1 + M) x levels run.
"""
from __future__ import annotations

import math

import torch

from ..physics.coil_fourier import CartesianCoilFourier
from ..physics.linop import conjugate_gradient
from .base import ComplexSplitScore, Measurement, Sampler, batch_norm, white_noise

__all__ = ["ScoreMRI", "data_consistency"]


def data_consistency(x: torch.Tensor, A, AH, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Chung & Ye eq. 12: ``x + lam A^H (y - A x)``."""
    return x + lam * AH(y - A(x))


class ScoreMRI(Sampler):
    """Score-MRI predictor-corrector sampler (see the module docstring).

    Parameters
    ----------
    n_levels : int
        ``N`` (paper: 2000).
    n_corrector : int
        ``M`` corrector steps per level (paper: 1).
    sigma_max, sigma_min : float
        Paper: 378 and 0.01 (per real component).
    snr : float
        ``r`` in the corrector step size (0.16).
    mode : {"complex", "real", "ssos", "hybrid"}
    split_complex : bool
        Apply the (real-valued) prior to real and imaginary parts separately (Alg. 3). Set False for
        a prior that models complex images itself.
    lam : float
        Data-consistency weight for the per-iteration steps (1 in Algs. 2-4).
    hybrid_every : int
        ``m`` of Alg. 5.
    lam_start, lam_end : float
        Linear schedule of the Alg. 5 SENSE step (1 -> 0.2).
    t0 : float
        CCDF start time in (0, 1]; 1 = full reverse diffusion.
    dc_norm : float, optional
        ``||A||^2`` for the data-consistency step size (estimated by power iteration when omitted).
    final_denoise : bool
        Tweedie step at ``sigma_min`` on the final chains (:attr:`Sampler.final_denoise`).
    noisy_data : bool
        Data consistency with the measurement noised to the current level (module docstring; Song et
        al. 2022). False: the paper's ``y``.
    dc_cg_iter : int
        0: the paper's gradient step (eq. 12). ``> 0``: a proximal data-consistency step instead,
        ``x <- argmin_v ||A v - y||^2 / nu^2 + ||v - x||^2 / (2 sigma_i^2)`` by ``dc_cg_iter`` CG
        iterations (``lam`` is ignored): equal to eq. 12 with ``lam = 1`` for a Cartesian single-coil
        ``A`` when ``sigma_i >> nu``, and a real projection for non-Cartesian operators, where eq. 12's
        step must be divided by ``||A||^2`` (module docstring). Not in the paper.
    """

    name = "score-mri"

    def __init__(self, n_levels: int = 2000, n_corrector: int = 1, sigma_max: float = 378.0,
                 sigma_min: float = 0.01, snr: float = 0.16, mode: str = "complex", split_complex: bool = True,
                 lam: float = 1.0, hybrid_every: int = 1, lam_start: float = 1.0, lam_end: float = 0.2,
                 t0: float = 1.0, dc_norm: float | None = None, final_denoise: bool = False,
                 noisy_data: bool = False, dc_cg_iter: int = 0,
                 likelihood: str = "project", lik_cap: float = 0.5):
        if mode not in ("complex", "real", "ssos", "hybrid"):
            raise ValueError(f"mode must be one of 'complex', 'real', 'ssos', 'hybrid', got {mode!r}")
        if n_levels < 1 or n_corrector < 0 or hybrid_every < 1:
            raise ValueError("n_levels >= 1, n_corrector >= 0 and hybrid_every >= 1 are required")
        if not (0 < t0 <= 1):
            raise ValueError(f"t0 must be in (0, 1], got {t0}")
        if not (0 <= lam <= 1):
            raise ValueError(f"lam must be in [0, 1] (non-expansive data consistency), got {lam}")
        self.n_levels, self.n_corrector = n_levels, n_corrector
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_min)
        self.snr, self.mode, self.split_complex = snr, mode, split_complex
        self.lam, self.hybrid_every = lam, hybrid_every
        self.lam_start, self.lam_end, self.t0 = lam_start, lam_end, t0
        self.dc_norm = dc_norm
        self.final_denoise = bool(final_denoise)
        self.noisy_data = bool(noisy_data)
        if dc_cg_iter < 0:
            raise ValueError(f"dc_cg_iter must be >= 0, got {dc_cg_iter}")
        self.dc_cg_iter = int(dc_cg_iter)
        if likelihood not in ("project", "annealed"):
            raise ValueError(f"likelihood must be 'project' (eq. 12) or 'annealed', got {likelihood!r}")
        if likelihood == "annealed" and mode in ("ssos", "hybrid"):
            raise ValueError("likelihood='annealed' needs mode 'complex' or 'real' (one image, one likelihood)")
        if not 0 < lik_cap <= 1:
            raise ValueError(f"lik_cap must be in (0, 1], got {lik_cap}")
        self.likelihood, self.lik_cap = likelihood, float(lik_cap)

    def sigma(self, t: float) -> float:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    # --- building blocks ---------------------------------------------------------------------
    def _corrector_eps(self, s: torch.Tensor, xi: torch.Tensor, split: bool):
        if split:  # Alg. 3: real and imaginary parts are corrected separately
            er = 2 * (self.snr * batch_norm(xi.real) / batch_norm(s.real).clamp_min(1e-30)) ** 2
            ei = 2 * (self.snr * batch_norm(xi.imag) / batch_norm(s.imag).clamp_min(1e-30)) ** 2
            return er, ei
        e = 2 * (self.snr * batch_norm(xi) / batch_norm(s).clamp_min(1e-30)) ** 2
        return e, None

    def _langevin(self, x, s, xi, split, cap: float | None = None):
        er, ei = self._corrector_eps(s, xi, split)
        if cap is not None:  # stability of the likelihood part: eps <= lik_cap / Lipschitz
            er = er.clamp_max(cap)
            ei = None if ei is None else ei.clamp_max(cap)
        if ei is None:
            return x + er * s + torch.sqrt(2 * er) * xi
        re = x.real + er * s.real + torch.sqrt(2 * er) * xi.real
        im = x.imag + ei * s.imag + torch.sqrt(2 * ei) * xi.imag
        return torch.complex(re, im)

    def _run(self, meas: Measurement, score, n, g, progress, x_init, diag):
        op, y = meas.op, meas.y
        mode = self.mode
        if mode in ("ssos", "hybrid"):
            if not (hasattr(op, "maps") and hasattr(op, "mask")):
                raise TypeError(
                    f"mode {mode!r} needs a Cartesian multi-coil operator with .maps and .mask "
                    f"(MultiCoilMRI), got {type(op).__name__}"
                )
            maps = op.maps
            coil_fourier = CartesianCoilFourier(op.mask, op.domain_shape)  # single-coil model per coil image
            A, AH = coil_fourier.A, coil_fourier.A_adjoint
            dc_scale = 1.0
            # Prior acts on each coil image: (P, C, H, W) -> (P*C, H, W)
            base = score

            def score_fn(v, sig):
                return base(v.reshape(-1, *v.shape[2:]), sig).reshape(v.shape)
        else:
            A, AH = op.A, op.A_adjoint
            score_fn = score
            if self.dc_norm is not None:
                L = self.dc_norm
            else:
                L = op.compute_norm(n_iter=30, generator=0)
            dc_scale = 1.0 / max(1.0, L)
            diag["dc_norm"] = L
        is_complex = y.is_complex() and mode != "real"
        split = is_complex and self.split_complex
        if split:
            wrapper = ComplexSplitScore(_CallablePrior(score_fn))
            prior_fn = wrapper.score
        else:
            prior_fn = score_fn
        lam = self.lam * dc_scale

        nu2 = meas.sigma**2 / 2  # measurement noise variance per real component
        annealed = self.likelihood == "annealed"

        def lik(v, sig):
            """``c / rho^2 A^H (y - A v)`` with ``rho^2 = nu^2 + c ||A||^2 sig^2``, and its Lipschitz constant."""
            rho2 = meas.sigma**2 + meas.c * L * sig**2
            gl = (meas.c / rho2) * AH(y - A(v))
            return (gl.real if mode == "real" else gl), meas.c * L / rho2

        def dc(v, lam_, sig):
            yy = y
            if self.noisy_data and sig**2 > nu2:
                yy = y + A(math.sqrt(sig**2 - nu2) * white_noise(v.shape, v.dtype, v.device, g))
            if self.dc_cg_iter:  # (A^H A + eps I) d = A^H (y - A v), eps = (nu^2 / 2) / sigma^2
                eps = nu2 / sig**2
                d = conjugate_gradient(lambda u: AH(A(u)) + eps * u, AH(yy - A(v)), None,
                                       max_iter=self.dc_cg_iter, tol=1e-6)
                v = v + d
            else:
                v = data_consistency(v, A, AH, yy, lam_)
            return v.real if mode == "real" else v

        # --- start: x_N ~ N(0, sigma_max^2) or CCDF x0 + sigma(t0) xi
        i0 = max(1, int(round(self.t0 * self.n_levels)))
        t_start = i0 / self.n_levels
        ref = AH(y)
        if mode == "real":
            ref = ref.real
        shape = (n, *ref.shape[1:])
        dtype = ref.dtype
        if self.t0 < 1.0:
            if x_init is None:
                x0 = ref
            elif mode in ("ssos", "hybrid") and x_init.ndim == ref.ndim - 1:
                x0 = maps * x_init.unsqueeze(-3)  # image -> coil images
            else:
                x0 = x_init
            x0 = x0.real if mode == "real" else x0.to(dtype)
            x = x0.expand(shape) + self.sigma(t_start) * white_noise(shape, dtype, ref.device, g)
        else:
            x = self.sigma_max * white_noise(shape, dtype, ref.device, g)
        self._loop.x = x
        lams = []
        # Alg. 5: lambda falls linearly from lam_start to lam_end over the SENSE steps actually run
        hyb = [j for j in range(i0) if (i0 - 1 - j) % self.hybrid_every == 0]
        hyb_pos = {j: q for q, j in enumerate(hyb)}
        for j in self._levels(i0, progress):
            i = i0 - 1 - j
            s_hi, s_lo = self.sigma((i + 1) / self.n_levels), self.sigma(i / self.n_levels)
            d2 = s_hi**2 - s_lo**2
            # predictor (eq. 11); annealed: the posterior score (stable: d2 c L / rho^2 < 1)
            drift = prior_fn(x, s_hi)
            if annealed:
                drift = drift + lik(x, s_hi)[0]
            x = x + d2 * drift + math.sqrt(d2) * white_noise(shape, dtype, x.device, g)
            if not annealed:
                x = dc(x, lam, s_lo)
            # corrector(s) (eq. 15)
            for _ in range(self.n_corrector):
                xi = white_noise(shape, dtype, x.device, g)
                if annealed:
                    gl, lip = lik(x, s_lo)
                    x = self._langevin(x, prior_fn(x, s_lo) + gl, xi, split, cap=self.lik_cap / lip)
                else:
                    x = self._langevin(x, prior_fn(x, s_lo), xi, split)
                    x = dc(x, lam, s_lo)
            if mode == "hybrid" and i % self.hybrid_every == 0:
                frac = hyb_pos[j] / max(len(hyb) - 1, 1)
                lam_j = self.lam_start + (self.lam_end - self.lam_start) * frac
                lams.append(lam_j)
                resid = y - op.A((maps.conj() * x).sum(-3))
                x = x + lam_j * maps * op.A_adjoint(resid).unsqueeze(-3)
            self._level_done(x, s_lo)
        x = self._denoise_last(x, prior_fn, s_lo, diag)
        if mode == "real":
            self._loop.x = x.real
        diag.update(levels_run=i0, t_start=t_start, hybrid_lambdas=lams, mode=mode, likelihood=self.likelihood)

    def _output(self, x, diag):
        if self.mode in ("ssos", "hybrid"):
            diag["coil_samples"] = x
            return torch.sqrt((x.abs() ** 2).sum(-3))  # SSOS / RSS (Alg. 4 line 15)
        return x


class _CallablePrior:
    def __init__(self, fn):
        self.fn = fn

    def score(self, x, sigma):
        return self.fn(x, sigma)
