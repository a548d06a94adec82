"""Simulation-based calibration (Talts et al. 2018) of a posterior sampler on a prior it can sample.

The loop (:func:`run_sbc`): draw ``R`` truths ``x_r ~ p(x)`` from the prior itself, simulate
``y_r = A x_r + e_r`` through the operator and noise model the sampler assumes (complex
``e ~ CN(0, nu^2 I)`` on the measured k-space samples, the conventions of :mod:`bayesmri.samplers.base`),
draw ``L`` posterior samples per replicate and hand truths and samples to
:func:`bayesmri.calibration.calibration_statistics` (ranks, 50/90/95 % coverage, rank-uniformity test,
P-gain). With the true prior an exact sampler is calibrated, so a failure is the sampler's, not the
prior's.

All replicates run as **one batch** of ``R L`` chains (``y`` repeated ``L`` times per replicate; the
operator broadcasts its batch-1 coil maps), so a sampler's cost is that of one call with ``R L``
chains.

Analytic references: :func:`gmm_exact_sampler` draws exact posterior samples of a
:class:`~bayesmri.priors.GaussianMixturePrior` (the control: it must pass), and
:func:`bayesmri.priors.analytic.gaussian_mixture_image_prior` builds a small image mixture.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from .._validate import as_generator
from ..calibration import CalibrationReport, calibration_statistics
from ..physics.linop import LinearOperator
from .base import Measurement, Sampler, white_noise

__all__ = ["simulate_measurements", "run_sbc", "gmm_exact_sampler", "dense_matrix"]


def simulate_measurements(prior, op: LinearOperator, noise_sigma: float, n: int, generator=None):
    """``n`` truths from the prior and their data ``y = A x + e``.

    Parameters
    ----------
    prior : object with ``sample(n, generator) -> (n, *op.domain_shape)``
    op : LinearOperator (batch 1 broadcast over ``n``)
    noise_sigma : float
        ``nu``: complex ``E|e|^2 = nu^2`` per sample (real data: variance ``nu^2``). Zero-filled
        operators (a ``mask`` attribute) get noise on the sampled locations only, like an acquisition.
    generator : torch.Generator or int

    Returns
    -------
    x : Tensor ``(n, *domain)``, y : Tensor ``(n, *range)``
    """
    g = as_generator(generator)
    x = prior.sample(n, generator=g).reshape(n, *op.domain_shape)
    y = op.A(x.to(op.dtype))
    e = white_noise(y.shape, y.dtype, y.device, g)
    # white_noise has unit variance per real component: complex E|e|^2 = 2, hence nu / sqrt(2)
    e = e * (noise_sigma / math.sqrt(2.0) if y.is_complex() else noise_sigma)
    mask = getattr(op, "mask", None)
    if mask is None and hasattr(op, "op"):  # wrappers (RealInput, PhaseModulated) of a Cartesian operator
        mask = getattr(op.op, "mask", None)
    if isinstance(mask, torch.Tensor):
        e = e * mask.to(e.real.dtype)
    return x, y + e


def dense_matrix(op: LinearOperator) -> torch.Tensor:
    """The operator as a matrix ``(m, n)`` on flattened images (for small problems only)."""
    n = math.prod(op.domain_shape)
    basis = torch.eye(n, dtype=op.dtype, device=op.device).reshape(n, *op.domain_shape)
    return op.A(basis).reshape(n, -1).T.contiguous()


def gmm_exact_sampler(prior, op: LinearOperator) -> Callable:
    """Exact posterior sampler of a Gaussian-mixture prior under ``op`` (the SBC control).

    Returns ``fn(measurement, L, generator) -> (L, *domain)`` for a measurement of **one** replicate,
    using :meth:`GaussianMixturePrior.posterior` on the dense matrix of ``op``.
    """
    M = dense_matrix(op).to(prior.dtype)

    def fn(meas: Measurement, L: int, generator=None) -> torch.Tensor:
        post = prior.posterior(M, meas.y.reshape(-1), meas.sigma)
        return post.sample(L, generator=generator).reshape(L, *op.domain_shape)

    fn.name = "exact"
    return fn


def run_sbc(sampler, prior, op: LinearOperator, noise_sigma: float, *, n_replicates: int = 50,
            n_samples: int = 19, generator=None, sampler_prior=None, chunk: int | None = None,
            Ps=None, n_bins: int | None = None, progress: bool = False, return_samples: bool = False):
    """Simulation-based calibration of ``sampler`` (module docstring).

    Parameters
    ----------
    sampler : Sampler, or callable ``fn(measurement, L, generator) -> (L, *domain)``
        A :class:`~bayesmri.samplers.Sampler` runs all replicates as one batch of chains; a callable
        (e.g. :func:`gmm_exact_sampler`) is called per replicate.
    prior : object with ``sample(n, generator)`` (the truths) and, unless ``sampler_prior`` is given,
        ``score(x, sigma)`` (what the sampler uses)
    op : LinearOperator
    noise_sigma : float
        ``nu`` of the simulated noise, also passed to the sampler (``Measurement.sigma``).
    n_replicates, n_samples : int
        ``R`` truths, ``L`` posterior samples each. ``L = 19`` makes the 50 and 90 % intervals exact
        (module docstring of :mod:`bayesmri.calibration`), ``L = 39`` also the 95 %.
    generator : torch.Generator or int
        One generator drives the truths, the noise, the sampler and the statistics.
    sampler_prior : optional
        The prior the sampler uses, if not ``prior`` (e.g. a deliberately wrong one).
    chunk : int, optional
        Replicates per sampler call (default: all at once).
    Ps, n_bins : passed to :func:`bayesmri.calibration.calibration_statistics`
    return_samples : bool
        Also return the truths ``(R, *domain)``, the samples ``(L, R, *domain)`` and the data, e.g. to
        evaluate a post-processing of the same chains (``benchmarks/bench_calibration.py``: the final
        Tweedie step on and off from one run).

    Returns
    -------
    CalibrationReport, with ``info`` holding ``nfe``, ``wall_time`` and the sampler's name;
    ``(report, x, samples, y)`` with ``return_samples``.
    """
    if n_replicates < 2 or n_samples < 1:
        raise ValueError(f"need n_replicates >= 2 and n_samples >= 1, got {n_replicates}, {n_samples}")
    g = as_generator(generator)
    R, L = int(n_replicates), int(n_samples)
    x, y = simulate_measurements(prior, op, noise_sigma, R, g)
    sp = prior if sampler_prior is None else sampler_prior
    t0 = time.perf_counter()
    nfe = 0
    outs = []
    if isinstance(sampler, Sampler):
        c = R if chunk is None else max(1, int(chunk))
        for i in range(0, R, c):
            yc = y[i:i + c].repeat_interleave(L, 0)  # replicate r's data for its L chains
            res = sampler.sample(Measurement(yc, op, noise_sigma), sp, n_samples=yc.shape[0], generator=g,
                                 progress=progress)
            outs.append(res.samples.reshape(-1, L, *op.domain_shape).transpose(0, 1))
            nfe = res.nfe
        name = getattr(sampler, "name", type(sampler).__name__)
    elif callable(sampler):
        for r in range(R):
            outs.append(sampler(Measurement(y[r:r + 1], op, noise_sigma), L, g).reshape(L, 1, *op.domain_shape))
        name = getattr(sampler, "name", "callable")
    else:
        raise TypeError(f"sampler must be a Sampler or a callable, got {type(sampler).__name__}")
    samples = torch.cat(outs, 1)
    wall = time.perf_counter() - t0
    rep = calibration_statistics(x, samples.to(x.dtype), Ps=Ps, n_bins=n_bins, generator=g,
                                 info={"sampler": name, "nfe": int(nfe), "wall_time": wall,
                                       "noise_sigma": float(noise_sigma)})
    return (rep, x, samples, y) if return_samples else rep
