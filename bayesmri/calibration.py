"""Calibration statistics of posterior samples: simulation-based calibration (SBC) and the P-gain.

Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating Bayesian
inference algorithms with simulation-based calibration"): draw ``x ~ p(x)``, ``y ~ p(y | x)`` and ``L``
posterior samples ``x_1..x_L`` of ``p(x | y)``. If the samples are exact, then for every scalar
component ``f`` (here: the real and the imaginary part of each pixel) the rank

    r = #{ l : f(x_l) < f(x) }  in  {0, 1, ..., L}                                         (SBC eq. 1)

is uniform on ``{0, ..., L}`` (Talts et al. Theorem 1): ``x`` is then one more draw of the same
posterior, exchangeable with the samples. Too narrow a sampler puts ``x`` outside its samples (a
U-shaped rank histogram), too wide a sampler puts it in the middle (a hump), a biased one tilts it.
Uniform ranks are necessary, not sufficient.

Credible intervals follow from the ranks. The central interval of level ``alpha`` from ``L`` samples is
``[x_(a), x_(L+1-a)]`` (order statistics, 1-indexed) with ``a = floor((1 - alpha) (L + 1) / 2) >= 1``, and

    x in [x_(a), x_(L+1-a)]   <=>   a <= r <= L - a,                                        (1)

so an exact sampler covers ``x`` with probability exactly ``(L + 1 - 2a) / (L + 1)`` (the *nominal*
coverage, equal to ``alpha`` when ``(1 - alpha)(L + 1) / 2`` is an integer, e.g. ``L = 39`` for 50, 90 and
95 %). Measured coverage is the fraction of components with ``a <= r <= L - a``.

Statistical units. Components of one replicate are correlated (they share ``x``, ``y`` and the
posterior), so the ``n`` components of ``R`` replicates are *not* ``R n`` independent trials. Standard
errors and the uniformity test therefore treat replicates as the independent units (cluster-robust):

* coverage: ``se = std_r(c_r) / sqrt(R)`` with ``c_r`` replicate ``r``'s covered fraction;
* uniformity: with ``h_r`` replicate ``r``'s rank histogram over ``B`` equal bins (fractions), and
  ``d = hbar - 1/B`` the deviation of their mean, Hotelling's statistic on the first ``B - 1`` bins
  ``T^2 = R d^T S^{-1} d`` (``S`` the sample covariance of ``h_r``) gives
  ``F = T^2 (R - B + 1) / ((B - 1)(R - 1)) ~ F(B - 1, R - B + 1)`` under uniform ranks (for large ``R``
  ``T^2 ~ chi^2(B - 1)``: Pearson's chi-square with the multinomial covariance replaced by the measured
  one). Pearson's chi-square on the pooled histogram, which assumes independent components, is
  reported beside it (``p_pearson``); it rejects exact samplers when components are correlated.

P-gain (Wen et al. sec. 4.1): for exact, independent samples the complex-PSNR gain of the mean of ``P``
samples over one sample is ``10 log10(2P / (P + 1))`` (:func:`bayesmri.metrics.mean_gain_reference`);
:func:`bayesmri.metrics.mean_gain_curve` measures it with all replicates pooled.

This module is in the metrics layer: it takes samples and truths, not samplers. Running a sampler in an
SBC loop is :func:`bayesmri.samplers.sbc.run_sbc`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ._validate import as_generator
from .metrics import mean_gain_curve, mean_gain_reference

__all__ = [
    "components",
    "rank_statistics",
    "interval_coverage",
    "rank_uniformity",
    "CalibrationReport",
    "calibration_statistics",
    "LEVELS",
    "FLAG_THRESHOLDS",
    "CalibrationFlag",
    "calibration_flags",
]

#: Credible levels reported by default.
LEVELS = (0.5, 0.9, 0.95)


def components(x: torch.Tensor, event_ndim: int) -> torch.Tensor:
    """Real scalar components of each item: ``(..., *event)`` -> ``(..., n)``, complex -> ``[re, im]`` (``2n``)."""
    flat = x.reshape(*x.shape[: x.ndim - event_ndim], -1)
    if flat.is_complex():
        flat = torch.cat([flat.real, flat.imag], -1)
    return flat


def rank_statistics(x_true: torch.Tensor, samples: torch.Tensor, generator=None) -> torch.Tensor:
    """SBC ranks (eq. 1) of every real component of ``x_true`` among ``samples``.

    Parameters
    ----------
    x_true : Tensor ``(R, *event)``, real or complex
        One prior draw per replicate.
    samples : Tensor ``(L, R, *event)``
        ``L`` posterior samples per replicate.
    generator : torch.Generator or int, optional
        Breaks ties at random (a tie ``f(x_l) = f(x)`` counts as below with probability 1/2 each, so
        ranks stay uniform for samplers that reproduce measured values exactly).

    Returns
    -------
    Tensor ``(R, n)`` int64 in ``{0, ..., L}``, ``n`` = number of real components (``2 prod(event)``
    for complex images).
    """
    if samples.ndim != x_true.ndim + 1 or tuple(samples.shape[1:]) != tuple(x_true.shape):
        raise ValueError(f"samples must be (L, *x_true.shape) = (L, {tuple(x_true.shape)}), got {tuple(samples.shape)}")
    ev = x_true.ndim - 1
    xt = components(x_true.to(samples.dtype), ev)  # (R, n)
    xs = components(samples, ev)  # (L, R, n)
    below = (xs < xt).sum(0)
    ties = (xs == xt).sum(0)
    if bool((ties > 0).any()):
        g = as_generator(generator)
        u = torch.rand(ties.shape, generator=g, dtype=torch.float64)
        below = below + torch.floor(u * (ties + 1).to(torch.float64)).to(below.dtype)
    return below.to(torch.int64)


def _interval_index(level: float, L: int) -> int:
    # floor: the interval never has less than the requested level (nominal >= level)
    a = int(math.floor((1.0 - level) * (L + 1) / 2.0 + 1e-9))
    if a < 1:
        raise ValueError(f"a central {level:.0%} interval needs L >= {math.ceil(2 / (1 - level)) - 1} samples, got L = {L}")
    return a


def interval_coverage(ranks: torch.Tensor, L: int, levels: Sequence[float] = LEVELS) -> dict:
    """Coverage of central credible intervals by the truth, from SBC ranks (eq. 1 of the module docstring).

    Parameters
    ----------
    ranks : Tensor ``(R, n)`` from :func:`rank_statistics`
    L : int
        Number of posterior samples per replicate.
    levels : credible levels in (0, 1)

    Returns
    -------
    dict ``level -> {"coverage", "nominal", "se"}``: the covered fraction over all components, the exact
    coverage of an exact sampler with this ``L``, and the replicate-clustered standard error.
    """
    out = {}
    for lev in levels:
        a = _interval_index(float(lev), L)
        inside = ((ranks >= a) & (ranks <= L - a)).to(torch.float64)
        per_rep = inside.mean(1)
        R = per_rep.numel()
        se = float(per_rep.std(correction=1) / math.sqrt(R)) if R > 1 else float("nan")
        out[float(lev)] = {"coverage": float(inside.mean()), "nominal": (L + 1 - 2 * a) / (L + 1), "se": se}
    return out


def rank_uniformity(ranks: torch.Tensor, L: int, n_bins: int | None = None) -> dict:
    """Test the rank histogram for uniformity (module docstring: Hotelling ``T^2`` over replicates).

    Parameters
    ----------
    ranks : Tensor ``(R, n)`` in ``{0..L}``
    L : int
    n_bins : int, optional
        Number of equal bins; must divide ``L + 1`` (default: the largest divisor of ``L + 1`` that is at
        most ``min(20, R / 5)``, so that the covariance of the ``B - 1`` bin fractions is well estimated;
        the smallest divisor if there is none).

    Returns
    -------
    dict with ``histogram`` (counts per bin, pooled), ``n_bins``, ``p_value`` (Hotelling, replicates as
    units), ``t2``, ``p_pearson`` and ``chi2_pearson`` (pooled counts as independent trials), ``dof``.
    """
    from scipy import stats

    R, n = ranks.shape
    if n_bins is None:
        divisors = [b for b in range(2, L + 2) if (L + 1) % b == 0]
        few = [b for b in divisors if b <= min(20, R // 5)]
        n_bins = few[-1] if few else divisors[0]
    if n_bins < 2 or (L + 1) % n_bins:
        raise ValueError(f"n_bins must be >= 2 and divide L + 1 = {L + 1}, got {n_bins}")
    width = (L + 1) // n_bins
    bins = torch.div(ranks, width, rounding_mode="floor")
    h = torch.zeros(R, n_bins, dtype=torch.float64)
    h.scatter_add_(1, bins, torch.ones_like(bins, dtype=torch.float64))
    counts = h.sum(0)
    expected = R * n / n_bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    dof = n_bins - 1
    out = {"histogram": counts.to(torch.int64).tolist(), "n_bins": n_bins, "dof": dof,
           "chi2_pearson": chi2, "p_pearson": float(stats.chi2.sf(chi2, dof))}
    frac = h[:, :dof] / n  # the last bin is determined by the others
    d = frac.mean(0) - 1.0 / n_bins
    if R > dof + 1:
        S = torch.cov(frac.T).reshape(dof, dof)
        t2 = float(R * d @ torch.linalg.solve(S + 1e-15 * torch.eye(dof, dtype=S.dtype), d))
        fstat = t2 * (R - dof) / (dof * (R - 1))
        out.update(t2=t2, p_value=float(stats.f.sf(fstat, dof, R - dof)))
    else:
        out.update(t2=float("nan"), p_value=float("nan"))
    return out


@dataclass
class CalibrationReport:
    """SBC and P-gain results for one sampler on one problem (:func:`calibration_statistics`).

    Attributes
    ----------
    ranks : Tensor ``(R, n)``
        Ranks of each real component of the truth among ``L`` samples.
    n_samples : int
        ``L``.
    coverage : dict ``level -> {"coverage", "nominal", "se"}``
    uniformity : dict (see :func:`rank_uniformity`)
    gain_P, gain, gain_theory : lists
        ``P`` values, measured complex-PSNR gains (dB) of the P-sample mean over one sample, and
        ``10 log10(2P / (P + 1))``.
    std_ratio : float
        ``sqrt(mean_r E|x_true - mean|^2 / ((1 + 1/L) mean_r std^2))``: RMS error of the sample mean
        over the spread that an exact sampler would predict for it (1 for a calibrated sampler; > 1
        over-confident, < 1 under-confident).
    info : dict
        Free-form extras (sampler settings, NFE, time).
    """

    ranks: torch.Tensor
    n_samples: int
    coverage: dict
    uniformity: dict
    gain_P: list
    gain: list
    gain_theory: list
    std_ratio: float
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-friendly summary (no ranks)."""
        return {"n_replicates": int(self.ranks.shape[0]), "n_components": int(self.ranks.shape[1]),
                "n_samples": self.n_samples, "coverage": {str(k): v for k, v in self.coverage.items()},
                "uniformity": self.uniformity, "gain": dict(zip(map(str, self.gain_P), self.gain)),
                "gain_theory": dict(zip(map(str, self.gain_P), self.gain_theory)), "std_ratio": self.std_ratio,
                **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}}

    def passes(self, level: float = 0.9, tol: float = 0.03, alpha: float = 1e-3) -> bool:
        """Coverage of ``level`` within ``tol`` of nominal and the uniformity test not rejected at ``alpha``."""
        c = self.coverage[float(level)]
        return abs(c["coverage"] - c["nominal"]) <= tol and self.uniformity["p_value"] > alpha

    def summary(self) -> str:
        cov = ", ".join(f"{k:.0%}: {v['coverage']:.3f}" + ("" if abs(v["nominal"] - k) < 1e-9 else f" (nominal {v['nominal']:.3f})")
                        for k, v in self.coverage.items())
        g = self.gain[-1] if self.gain else float("nan")
        gt = self.gain_theory[-1] if self.gain_theory else float("nan")
        P = self.gain_P[-1] if self.gain_P else 0
        return (f"coverage {cov}; rank uniformity p = {self.uniformity['p_value']:.3g} "
                f"(Pearson {self.uniformity['p_pearson']:.3g}); P-gain at P={P}: {g:.2f} dB "
                f"(theory {gt:.2f}); std ratio {self.std_ratio:.3f}")


def calibration_statistics(x_true: torch.Tensor, samples: torch.Tensor, *, levels: Sequence[float] = LEVELS,
                           n_bins: int | None = None, Ps: Sequence[int] | None = None, generator=None,
                           info: dict | None = None) -> CalibrationReport:
    """All calibration statistics of ``L`` posterior samples per replicate against the prior draws.

    Parameters
    ----------
    x_true : Tensor ``(R, *event)``
        Prior draws (the truths), real or complex.
    samples : Tensor ``(L, R, *event)``
        Posterior samples of replicate ``r`` given its simulated data.
    levels : credible levels for :func:`interval_coverage`
    n_bins : bins of the rank histogram (:func:`rank_uniformity`)
    Ps : sample counts of the P-gain curve (default 1, 2, 4, 8, ... up to ``L``)
    generator : torch.Generator or int (tie-breaking and the P-gain subsets)
    info : extras stored in the report

    Returns
    -------
    CalibrationReport
    """
    g = as_generator(generator)
    L = int(samples.shape[0])
    ranks = rank_statistics(x_true, samples, g)
    cov = interval_coverage(ranks, L, [lev for lev in levels if math.floor((1 - lev) * (L + 1) / 2 + 1e-9) >= 1])
    uni = rank_uniformity(ranks, L, n_bins)
    if Ps is None:
        Ps = [p for p in (1, 2, 4, 8, 16, 32, 64) if p <= L]
    Ps = [int(p) for p in Ps]
    gain = mean_gain_curve(samples, x_true, Ps, n_repeats=8, generator=g).tolist() if Ps else []
    theory = [float(mean_gain_reference(p)) for p in Ps]
    dt = torch.complex128 if samples.is_complex() else torch.float64
    s = samples.to(dt)
    mean = s.mean(0)
    err2 = float(((mean - x_true.to(dt)).abs() ** 2).sum())
    var = float(((s - mean).abs() ** 2).sum(0).sum()) / max(L - 1, 1)
    std_ratio = math.sqrt(err2 / ((1 + 1 / L) * var)) if var > 0 else float("inf")
    return CalibrationReport(ranks=ranks, n_samples=L, coverage=cov, uniformity=uni, gain_P=Ps, gain=gain,
                             gain_theory=theory, std_ratio=std_ratio, info=dict(info or {}))


# --------------------------------------------------------------------------------------------------
# automatic flags (the report, metrics.json)
# --------------------------------------------------------------------------------------------------
#: Thresholds of :func:`calibration_flags`, the one place they are defined (quoted by the report's reading
#: guide and ``docs/uncertainty.md``). The P-gain of an exact sampler is ``g = 10 log10(2P/(P+1))``:
#: below ``collapsed_below * g`` the samples are (nearly) one image (cINN: 0.05-0.15 dB where g = 2.0-2.5);
#: above ``overdispersed_above * g`` they scatter more than their error (annealed ULA's geometric schedule:
#: 3.37 dB where g = 2.50, ratio 1.35; pULA at 40 levels 1.11 and an exact sampler 0.99 stay unflagged);
#: a std map whose Pearson correlation with the |error| map is below ``min_std_error_correlation`` does
#: not say where the errors are.
FLAG_THRESHOLDS = {"collapsed_below": 0.25, "overdispersed_above": 1.25, "min_std_error_correlation": 0.3}


@dataclass(frozen=True)
class CalibrationFlag:
    """One automatic finding about a sampler's calibration numbers: ``label`` (short) and ``detail``."""

    label: str
    detail: str


def calibration_flags(cal: dict, thresholds: dict | None = None) -> list[CalibrationFlag]:
    """The flags raised by a ``calibration`` entry of ``metrics.json`` (``docs/metrics_schema.md``).

    Parameters
    ----------
    cal : mapping with ``p_gain_db`` and ``p_gain_reference_db`` (the measured P-gain and the exact
        sampler's), and optionally ``std_error_correlation``; missing or non-finite values raise no flag.
    thresholds : overrides of :data:`FLAG_THRESHOLDS`.

    Returns
    -------
    list of :class:`CalibrationFlag`: ``samples collapsed`` (P-gain below ``collapsed_below`` x the
    exact value), ``over-dispersed`` (above ``overdispersed_above`` x), ``std does not follow error``
    (correlation below ``min_std_error_correlation``); empty when none applies.
    """
    t = {**FLAG_THRESHOLDS, **(thresholds or {})}

    def num(key):
        v = cal.get(key)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(float(v)) else None

    out = []
    gain, ref, corr = num("p_gain_db"), num("p_gain_reference_db"), num("std_error_correlation")
    if gain is not None and ref is not None and ref > 0:
        if gain < t["collapsed_below"] * ref:
            out.append(CalibrationFlag(
                "samples collapsed", f"P-gain {gain:.2f} dB, below {t['collapsed_below']:.0%} of the exact "
                f"sampler's {ref:.2f} dB: the samples are nearly one image and the std map is far too small"))
        elif gain > t["overdispersed_above"] * ref:
            out.append(CalibrationFlag(
                "over-dispersed", f"P-gain {gain:.2f} dB, above {t['overdispersed_above']:.0%} of the exact "
                f"sampler's {ref:.2f} dB: the samples scatter more than their error (std map too large)"))
    if corr is not None and corr < t["min_std_error_correlation"]:
        out.append(CalibrationFlag(
            "std does not follow error", f"correlation of the std map with |error| {corr:.2f}, below "
            f"{t['min_std_error_correlation']:.2f}: the std map does not show where the errors are"))
    return out
