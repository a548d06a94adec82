"""Registers the diffusion-prior posterior samplers as methods (``bayesmri recon --method ...``, demo).

Importing this module registers (see :mod:`bayesmri.methods.registry`):

- ``pula``: exact-likelihood preconditioned ULA (:class:`~bayesmri.samplers.PULA`; Holliber,
  Uecker et al. 2025, BART ``sample --posterior``);
- ``ula-annealed``: ULA with the annealed likelihood of Jalal et al. (:class:`~bayesmri.samplers.AnnealedULA`);
- ``score-mri``: Score-MRI predictor-corrector (:class:`~bayesmri.samplers.ScoreMRI`, Chung & Ye 2022,
  Alg. 3 on the SENSE model, CCDF start).

All three use the learned VE-SDE prior (:func:`~bayesmri.priors.score.load_default_score_prior`,
weights ``score_native`` for images of at least 96 px a side, ``score_small64`` below:
:func:`~bayesmri.priors.score.default_score_weights`) at the data's intensity scale ``a`` = 95th percentile of ``|A^+ y|``
(:func:`~bayesmri.samplers.learned.data_scale`; measured data only). **Noise levels** in the options
(``sigma_max``, ``sigma_min``) are in the units of the training images (95th percentile 1) and are
multiplied by ``a``. The measurement noise is ``sample.noise_sigma`` (per complex k-space sample),
or, when that is 0 (unknown, e.g. real data), estimated from the outer 2 % of the sampled k-space
(:func:`estimate_noise_sigma`; an overestimate by up to 2x on small simulated images).

Options common to the three methods (:data:`COMMON_OPTIONS`): ``maps`` ("espirit"|"true"), ``prior`` (a
:class:`~bayesmri.priors.score.ScorePrior`, a network with ``score``, the name of a score prior of
:mod:`bayesmri.priors.registry` such as ``score_native`` or ``pogmdm``, a weights path, or ``None`` for the
shipped weights), ``weights`` (name or path of safetensors weights, the same as a ``prior`` name), ``scale`` (``"auto"`` or a float),
``noise_sigma``, ``chunk_size``, ``max_time`` (seconds; stop early and keep the chains), ``phase``,
``phase_width`` and ``phase_degree`` (below), ``tiling`` / ``tile_patch`` / ``tile_margin`` (how the network
meets the image size: :func:`bayesmri.priors.patch.prior_for_size`; ``"auto"`` tiles a prior trained on crops
with random offsets, PaDIS, and pads any other network to a multiple of its down-sampling factor),
``virtual_coils`` (``None``, off, or ``V`` / an energy fraction: SVD coil compression before the coil maps,
:func:`bayesmri.methods.maps.prepare`; the chains' memory and the likelihood's cost scale with the coils), plus each
sampler's own parameters (:data:`DEFAULTS`).

**Phase.** The network models magnitude-like (real, non-negative) images, while MR images carry a
smooth phase; applied to the real and imaginary parts of ``m exp(i phi)`` (Chung & Ye Alg. 3) it sees
signed images it never saw. The sampler therefore runs on the demodulated image ``x' = conj(p) x``
under ``A diag(p)`` (:class:`~bayesmri.physics.phase.PhaseModulated`) and returns ``x = p x'``; exact for
any unit-modulus ``p`` (a change of variables), it only changes which variable the prior is applied to.
``phase="fit"`` (default since session 7) takes ``p`` from a magnitude-weighted polynomial fit to the
least-squares image ``A^+ y`` (:func:`~bayesmri.physics.phase.fit_smooth_phase`, total degree
``phase_degree``, :data:`PHASE_DEGREE`); ``phase="lowres"`` (the default until session 6) from the
low-pass filtered ``A^+ y`` (window ``phase_width`` x image size, :data:`PHASE_WIDTH`). The low-pass
phase is off by a few hundredths of a radian at the object's edges and random in the background, which
leaves a signed residual ``m sin(phi - phi_lr)`` on the imaginary axis that a magnitude prior cannot
describe: on one test slice (Gaussian 2-D R=8, Score-MRI, P = 4) the demodulated chains kept a
background rms of 0.0105 on the imaginary axis against 0.0036 on the real one, and the posterior mean's
SSIM was 0.890 with the low-pass phase, 0.930 with the fitted one and 0.937 with the true phase. On
``val`` (3 slices, P = 8, the ``"bench"`` preset; GRO R=4 / Poisson R=8, PSNR / SSIM), ``lowres`` -> ``fit``:
pULA 37.56 / 0.943 -> 38.17 / 0.965 and 37.39 / 0.949 -> 37.85 / 0.976; Score-MRI 37.64 / 0.938 ->
38.33 / 0.956 and 37.83 / 0.949 -> 38.30 / 0.970 (TV 31.92 / 0.926 and 35.10 / 0.938).
``phase="lowres-real"`` / ``"fit-real"`` also constrain ``x'`` to be real (phase-constrained
reconstruction, :class:`~bayesmri.physics.phase.RealInput`): the prior then sees only the real part,
and the model assumes the phase is exactly the estimated one (an approximation; on 3 ``val`` slices,
64x64, pULA 80 levels, ``lowres-real`` was WORSE than ``"lowres"``: GRO R=4 33.08 dB / 0.881 vs
35.89 / 0.936, Poisson R=8 34.62 / 0.842 vs 35.60 / 0.945; ``fit-real`` was not measured; neither is
the default).
``phase="none"`` is Alg. 3 as published.
Score-MRI's ``ssos``/``hybrid`` modes sample coil images and ignore it. ``final_denoise`` (default on)
replaces the last chains by their Tweedie estimate at ``sigma_min``
(:attr:`~bayesmri.samplers.base.Sampler.final_denoise`). The defaults (:data:`DEFAULTS`) are the settings
validated on ``val`` for ``benchmarks/bench_diffusion.py`` (NFE 80-480); ``bayesmri demo`` runs cheaper ones
(the ``"demo"`` preset of :data:`PRESETS`, NFE 10-60); the tuning history is in ``docs/tuning.md``.
"""
from __future__ import annotations

import math
import time

import torch

from ..physics.phase import PhaseModulated, RealInput, fit_smooth_phase, lowres_phase
from ..priors.patch import prior_for_size
from ..priors.score import DEFAULT_SCORE_WEIGHTS, ScorePrior, default_score_weights
from ..samplers.base import Measurement, SamplerResult
from ..samplers.learned import data_scale, least_squares_image
from .maps import prepare
from .registry import check_method_options, register_method

__all__ = ["DEFAULTS", "PRESETS", "COMMON_OPTIONS", "estimate_noise_sigma", "resolve_prior", "run_sampler"]


#: Low-resolution phase window, as a fraction of the image size (64x64: the central 26x26 frequencies);
#: 0.2 was best of {0.1, 0.2, 0.3} on 4 val slices at 64x64 (docs/samplers.md).
PHASE_WIDTH = 0.2
#: ``phase`` options (module doc) and the default; ``phase_degree``: total degree of the fitted phase.
PHASE_MODES = ("lowres", "lowres-real", "fit", "fit-real", "none")
PHASE = "fit"
PHASE_DEGREE = 8

#: The options common to the three methods, with their defaults (module doc); ``prior=None`` and
#: ``weights=None``: the shipped score weights for the image size (:func:`default_score_weights`).
COMMON_OPTIONS: dict = {"maps": "espirit", "prior": None, "weights": None, "scale": "auto", "noise_sigma": None,
                        "chunk_size": None, "max_time": None, "phase": PHASE, "phase_width": PHASE_WIDTH,
                        "phase_degree": PHASE_DEGREE, "tiling": "auto", "tile_patch": None, "tile_margin": 0,
                        "virtual_coils": None}

#: pULA's CG iterations per step for ``cg_iter="auto"``: the paper's 10 for Cartesian operators; 40 for
#: non-Cartesian ones, whose normal operator (no density compensation, ||A||^2 = 13 for 64x64 radial R=4)
#: 10 iterations leave at 42 % of the step's residual (4.9 % at 40; Cartesian GRO R=4: 13 % at 10), a noise
#: floor in the samples (val radial R=4, 3 slices: 36.67 dB / 0.842 at 10, 39.04 / 0.963 at 40).
CG_ITER_CARTESIAN, CG_ITER_NONCARTESIAN = 10, 40

#: Default sampler parameters per method (noise levels in training-image units, see module doc): the
#: settings validated on ``val`` (``docs/tuning.md``), used by ``recon``, the benchmarks
#: and, with the cheaper ``"demo"`` preset (:data:`PRESETS`) on top, the demo.
DEFAULTS: dict[str, dict] = {
    "pula": dict(n_levels=80, n_steps=1, sigma_max=1.0, sigma_min="auto", step=0.5, cg_iter="auto", cg_tol=1e-6,
                 final_denoise=True),
    "ula-annealed": dict(n_levels=480, n_steps=1, sigma_max=1.0, sigma_min="auto", gamma=1.5, init="noise",
                         final_denoise=True, likelihood_schedule="geometric"),
    "score-mri": dict(n_levels=200, n_corrector=3, sigma_max=30.0, sigma_min="auto", snr=0.45, t0=0.3,
                      mode="complex", lam=1.0, hybrid_every=1, final_denoise=True, noisy_data=False,
                      dc_cg_iter=5, likelihood="project", lik_cap=0.5),
}
# likelihood_schedule="additive" (annealed ULA) and likelihood="annealed" (Score-MRI) are the variants that
# pass simulation-based calibration on an exact prior (docs/uncertainty.md); the published ones stay the
# defaults until their PSNR/SSIM on val is measured.

#: ``sigma_min="auto"`` (every diffusion method): the value validated for this method with the prior in use,
#: read from the prior's weights config (``"sampling": {"pula": {"sigma_min": ...}}``,
#: :func:`prior_sampling_default`); this fallback where the config has none (the value chosen for
#: ``score_small64`` at 64 x 64).
SIGMA_MIN_FALLBACK = 0.03

#: Named presets over :data:`DEFAULTS` (:func:`bayesmri.methods.preset_options`). ``"demo"``: reduced settings
#: for ``bayesmri demo`` (5-minute budget on 2 CPU cores at 128 x 128): fewer levels than the validated
#: settings, Score-MRI without the extra correctors and the proximal data consistency (the measured cost of
#: each choice: docs/realsize.md, "The demo at 128"; the demo keeps the ``sigma_min`` its few levels were
#: tuned with). ``"bench"``: pULA with the one CG setting for every
#: operator that ``benchmarks/`` keep (``cg_iter="auto"`` is 10 on Cartesian data; docs/tuning.md).
#: ``"calibrated"``: the settings that pass simulation-based calibration on the shipped 64 x 64 prior
#: (``benchmarks/results/calibration.md`` section 5: 90 % coverage 0.85-0.95, P-gain within 0.5 dB of
#: theory): the chains stop at the prior's lowest training level (0.01) and return their last state, with
#: no Tweedie step (whose output is a mean, too narrow where the posterior spread is below sigma_min);
#: Score-MRI with the annealed likelihood from sigma 0.96 (t0 = 0.57 of 100 levels 30 -> 0.01). Not the
#: defaults, because they cost PSNR/SSIM on val (2 slices, P = 8, same section): Score-MRI GRO R = 4 31.03 /
#: 0.882 vs the default's 35.27 / 0.970; pULA GRO 35.48 / 0.888 vs 34.81 / 0.971, Poisson R = 8 36.74 / 0.886
#: vs 35.64 / 0.972 (the SSIM loss is the sigma_min noise the samples keep).
PRESETS: dict[str, dict] = {
    "pula": {"demo": dict(n_levels=10, sigma_min=0.03), "bench": dict(cg_iter=40),
             "calibrated": dict(sigma_min=0.01, final_denoise=False)},
    "ula-annealed": {"demo": dict(n_levels=40, gamma=1.0, sigma_min=0.03)},
    "score-mri": {"demo": dict(n_levels=30, t0=0.3, n_corrector=1, snr=0.16, dc_cg_iter=0, sigma_min=0.03),
                  "calibrated": dict(n_levels=100, t0=0.57, n_corrector=1, snr=0.16, dc_cg_iter=0, sigma_min=0.01,
                                     likelihood="annealed", final_denoise=False)},
}


def estimate_noise_sigma(y: torch.Tensor, frac: float = 0.02) -> float:
    """Noise std per complex sample from the outer ``frac`` of the *sampled* k-space (by index radius).

    For complex Gaussian noise with ``E|e|^2 = nu^2`` the median of ``|e|`` is ``nu sqrt(ln 2)``; the
    outer k-space of an image is dominated by noise, and the median is robust to the rest. Cartesian
    ``y (..., C, H, W)`` (zeros off-mask are ignored) or non-Cartesian ``(..., C, K)`` (the last
    ``frac`` of each readout is not known here: all samples are used, an overestimate).
    """
    v = y.detach()
    if v.ndim >= 3 and v.shape[-1] > 1 and v.shape[-2] > 1 and (v == 0).any():
        H, W = v.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij")
        r = torch.sqrt(yy.double() ** 2 / (H / 2) ** 2 + xx.double() ** 2 / (W / 2) ** 2).to(v.device)
        r = r.expand(v.shape)
        vals, rr = v[v != 0], r[v != 0]
        if vals.numel() == 0:
            return 1.0
        thr = torch.quantile(rr.double().cpu(), 1 - frac).item()
        vals = vals[rr >= thr]
    else:
        vals = v.reshape(-1)
    med = float(vals.abs().double().median())
    return med / math.sqrt(math.log(2)) if med > 0 else 1.0


def resolve_prior(prior=None, weights: str | None = None, device="cpu", chunk_size=None, shape=None) -> ScorePrior:
    """A :class:`ScorePrior` (scale 1) from a ScorePrior, a network with ``score``, a prior name or weights path
    (:func:`bayesmri.priors.registry.load_prior`, for images of ``shape``), or the shipped weights."""
    from ..priors.registry import load_prior

    if prior is None:
        prior = weights or DEFAULT_SCORE_WEIGHTS
    if isinstance(prior, ScorePrior):
        return prior
    if isinstance(prior, str):
        return ScorePrior(load_prior(prior, shape, device), chunk_size=chunk_size)
    if hasattr(prior, "score"):
        return ScorePrior(prior, chunk_size=chunk_size)
    raise TypeError(f"prior must be a ScorePrior, a network with score(x, sigma), a prior name or None, "
                    f"got {type(prior).__name__}")


def prior_sampling_default(model, method: str, key: str, fallback):
    """The setting ``key`` of ``method`` recommended in a prior's weights config, else ``fallback``.

    A network loaded from shipped or exported weights carries its JSON as ``model.meta``; the optional
    ``"sampling"`` entry holds, per method, the sampler settings chosen on ``val`` for that prior (e.g.
    ``score_native``'s ``sigma_min = 0.01`` for pULA, ``docs/realsize.md``). The floor of the noise levels
    belongs with the prior: it depends on how low the network was trained and on the detail it resolves.
    """
    entry = (getattr(model, "meta", None) or {}).get("sampling", {}).get(method, {})
    value = entry.get(key)
    return fallback if value is None else value


def _build(name: str, p: dict, a: float):
    from ..samplers.pula import PULA
    from ..samplers.score_mri import ScoreMRI
    from ..samplers.ula import AnnealedULA

    smax, smin = float(p.pop("sigma_max")) * a, float(p.pop("sigma_min")) * a
    if name == "pula":
        return PULA(sigma_max=smax, sigma_min=smin, **p)
    if name == "ula-annealed":
        return AnnealedULA(sigma_max=smax, sigma_min=smin, **p)
    return ScoreMRI(sigma_max=smax, sigma_min=smin, split_complex=True, **p)


def _tiling_seed(generator) -> int:
    """Seed of the tiling offsets, from the run's generator or seed without drawing from it."""
    if isinstance(generator, torch.Generator):
        return int(generator.initial_seed() % (2**63))
    return int(generator) if isinstance(generator, int) else 0


def run_sampler(name: str, sample, *, n_samples=1, generator=None, device="cpu", progress=False, **options):
    """Run the diffusion method ``name`` on one :class:`~bayesmri.data.MRISample`.

    Returns a :class:`~bayesmri.samplers.SamplerResult` with ``samples (P, H, W)`` complex (magnitude
    for Score-MRI's ``ssos``/``hybrid`` modes), ``mean``, ``std``, ``nfe`` (score-network calls per
    chain; a real/imaginary pair is one call) and ``wall_time`` (scale estimation and sampling; coil-map
    estimation excluded). ``diagnostics`` adds ``scale``, ``noise_sigma`` and the sampler settings.
    """
    if name not in DEFAULTS:
        raise ValueError(f"unknown diffusion method {name!r}; choose one of {sorted(DEFAULTS)}")
    check_method_options(name, options, set(COMMON_OPTIONS) | set(DEFAULTS[name]))
    p = dict(DEFAULTS[name])
    p.update({k: v for k, v in options.items() if k in DEFAULTS[name]})
    maps = options.get("maps", "espirit")
    vc = options.get("virtual_coils")
    sample_d, op, y = prepare(sample, device, maps, vc)  # coil maps: shared by all methods, not timed
    if p.get("cg_iter") == "auto":  # pULA's CG: the radial normal operator is far worse conditioned
        from ..physics.nufft import NonCartesianMRI

        p["cg_iter"] = CG_ITER_NONCARTESIAN if isinstance(op, NonCartesianMRI) else CG_ITER_CARTESIAN
    H, W = op.domain_shape[-2:]
    weights = options.get("weights") or (None if options.get("prior") is not None else default_score_weights((H, W)))
    if options.get("prior") is not None and options.get("weights"):
        raise ValueError(f"method {name!r}: give prior or weights, not both (both name a score prior)")
    prior = resolve_prior(options.get("prior"), weights, device, options.get("chunk_size"), (H, W))
    if p.get("sigma_min") in (None, "auto"):
        p["sigma_min"] = float(prior_sampling_default(prior.model, name, "sigma_min", SIGMA_MIN_FALLBACK))
    if not (isinstance(p.get("sigma_min"), (int, float)) and 0 < float(p["sigma_min"]) < float(p["sigma_max"])):
        raise ValueError(f"method {name!r}: sigma_min must be 'auto' or a number in (0, sigma_max = "
                         f"{p['sigma_max']}), got {p.get('sigma_min')!r}")
    tiling = options.get("tiling", "auto")
    net = prior_for_size(prior.model, (H, W), tiling, options.get("tile_patch"), int(options.get("tile_margin", 0)),
                         seed=_tiling_seed(generator))
    if net is not prior.model:
        prior = ScorePrior(net, chunk_size=prior.chunk_size, sigma_range=prior.sigma_range,
                           image_mean_quantiles=prior.image_mean_quantiles)
    phase = options.get("phase", PHASE)
    if phase not in PHASE_MODES:
        raise ValueError(f"phase must be one of {', '.join(map(repr, PHASE_MODES))}, got {phase!r}")
    width = float(options.get("phase_width", PHASE_WIDTH))
    if not 0 < width <= 0.5:
        raise ValueError(f"phase_width must be in (0, 0.5] (fraction of the image size), got {width!r}")
    degree = options.get("phase_degree", PHASE_DEGREE)
    if not isinstance(degree, int) or isinstance(degree, bool) or not 0 <= degree <= 30:
        raise ValueError(f"phase_degree must be an integer in [0, 30], got {degree!r}")
    if p.get("mode") in ("ssos", "hybrid"):
        phase = "none"  # these modes sample coil images: each has its own phase
    t0 = time.perf_counter()
    scale = options.get("scale", "auto")
    auto = scale in (None, "auto")
    x_ls = least_squares_image(op, y) if auto or phase != "none" else None  # shared by both estimates
    a = data_scale(op, y, x_ls=x_ls) if auto else float(scale)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"scale must be 'auto' or a positive number, got {scale!r}")
    ph = None
    if phase != "none":
        if phase.startswith("fit"):
            ph = fit_smooth_phase(x_ls.reshape(-1, H, W), degree).reshape(x_ls.shape)
        else:
            w = max(1, int(round(width * min(H, W))))
            ph = lowres_phase(x_ls.reshape(-1, H, W), w).reshape(x_ls.shape)
        op = PhaseModulated(op, ph)
        if phase.endswith("-real"):  # phase-constrained: the demodulated image is real
            op = RealInput(op)
    nu = options.get("noise_sigma")
    nu = float(sample.noise_sigma) if nu is None else float(nu)
    if not nu > 0:
        nu = estimate_noise_sigma(y)
    sigma_min = float(p["sigma_min"])  # resolved (training-image units), reported in the settings
    sampler = _build(name, p, a)
    meas = Measurement(y, op, nu)
    res = sampler.sample(meas, prior.with_scale(a), n_samples=int(n_samples), generator=generator,
                         progress=progress, max_time=options.get("max_time"))
    samples = res.samples.reshape(res.samples.shape[0], *res.samples.shape[-2:])
    if ph is not None:  # back from the demodulated variable (|ph| = 1: the std map is the same up to rounding)
        ph2 = ph.reshape(H, W)
        samples = ph2 * samples.to(ph2.dtype)
    # the summaries of the returned samples (the one definition), wall time: sampling plus the scale estimate
    res = SamplerResult.from_samples(samples, nfe=res.nfe, wall_time=time.perf_counter() - t0,
                                     score_time=res.score_time, diagnostics=res.diagnostics)
    if vc is not None:  # which compression ran: "coils", "virtual_coils", "energy_kept", ...
        res.diagnostics["coil_compression"] = dict(sample_d.metadata["coil_compression"])
    settings = dict(DEFAULTS[name], **{k: v for k, v in options.items() if k in DEFAULTS[name]})
    settings["sigma_min"] = sigma_min  # "auto" resolved
    res.diagnostics.update(scale=a, noise_sigma=nu, phase=phase, settings=settings)
    res.diagnostics.pop("coil_samples", None)
    return res


def _register(name: str, description: str):
    def method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, **options):
        return run_sampler(name, sample, n_samples=n_samples, generator=generator, device=device,
                           progress=progress, **options)

    method.__name__ = method.__qualname__ = name.replace("-", "_") + "_method"
    method.__doc__ = (f"Registered method {name!r}: see :func:`run_sampler`. Options: "
                      + ", ".join(f"{k}={v!r}" for k, v in DEFAULTS[name].items())
                      + "; common: " + ", ".join(COMMON_OPTIONS) + ".")
    return register_method(name, description, stochastic=True, options={**COMMON_OPTIONS, **DEFAULTS[name]},
                           presets=PRESETS.get(name))(method)


pula_method = _register("pula", "diffusion prior, exact likelihood, preconditioned ULA (Holliber, Uecker et al.)")
ula_annealed_method = _register("ula-annealed", "diffusion prior, annealed likelihood, ULA (Jalal et al.)")
score_mri_method = _register("score-mri",
                             "diffusion prior, Score-MRI predictor-corrector with data consistency (Chung & Ye)")
