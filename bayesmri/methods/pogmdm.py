"""The PoGMDM family: ``pogmdm-joint``, joint image / coil-map posterior sampling (Nagler Alg. 1).

The sampler is :class:`bayesmri.samplers.pogmdm_joint.JointPoGMDM`; this module makes it a registered method
(defaults, the ``"demo"`` preset, the prior and the coil-map source). Its prior is the PoGMDM by default;
any score prior of :mod:`bayesmri.priors.registry` (``prior="score_native"``, a weights path...) takes its
place, put into the sampler's intensity units (below).
"""
from __future__ import annotations

import inspect

import torch

from ..samplers.base import SamplerResult
from ..samplers.pogmdm_joint import JointPoGMDM
from .registry import register_method

__all__ = ["pogmdm_joint_method", "METHOD_DEFAULTS", "PRESETS", "joint_prior"]

_PRIOR_CACHE: dict = {}
#: Defaults of ``pogmdm-joint`` over :class:`JointPoGMDM`'s (CPU-friendly; the paper's: ``n_steps=1000``,
#: ``n_corrector=1``). 600 levels and the final Tweedie step were chosen on val slices at 224 px
#: (``docs/pogmdm_native.md``, "Sampler settings").
METHOD_DEFAULTS = {"n_steps": 600, "zeta_start": 0.3, "n_corrector": 0, "mu": 1.0, "map_steps": 250,
                   "final_denoise": True}
#: ``"demo"``: cheaper settings for ``bayesmri demo`` (its 5-minute budget on 2 CPU cores).
PRESETS = {"demo": {"n_steps": 60, "map_steps": 10}}


def _default_prior(device, shape=(64, 64)):
    """The shipped prior for images of ``shape`` (:func:`bayesmri.priors.pogmdm.default_pogmdm_weights`)."""
    from ..priors.pogmdm import default_pogmdm_weights, load_pogmdm

    name = default_pogmdm_weights(shape)
    key = (name, str(device))
    if key not in _PRIOR_CACHE:
        _PRIOR_CACHE[key] = load_pogmdm(name, device=device)
    return _PRIOR_CACHE[key]


def joint_prior(prior, shape, device):
    """The prior :class:`JointPoGMDM` runs for ``prior`` (a name of :mod:`bayesmri.priors.registry`, a weights
    path or a module with ``score``), in the sampler's units (the zero-filled RSS's 99.5th percentile is 1).

    A PoGMDM is used as it is (its energy then serves the MAP refinement). Any other score prior is in the
    score networks' units (95th percentile 1): with ``c`` = :data:`~bayesmri.priors.registry.POGMDM_INTENSITY_SCALE`
    (99.5th over 95th percentile) it becomes ``c s(c x, c sigma)``, a :class:`~bayesmri.priors.score.ScorePrior`
    at scale ``1 / c``."""
    from ..priors.pogmdm import PoGMDM
    from ..priors.registry import POGMDM_INTENSITY_SCALE, PoGMDMScore, load_prior
    from ..priors.score import ScorePrior

    model = load_prior(prior, tuple(shape), device) if isinstance(prior, str) else prior
    if isinstance(model, PoGMDMScore):
        model = model.model
    if isinstance(model, PoGMDM):
        return model
    if isinstance(model, ScorePrior):
        model = model.model
    if not callable(getattr(model, "score", None)):
        raise TypeError(f"prior must be a prior name, a weights path or have score(x, sigma), got {type(model).__name__}")
    return ScorePrior(model, scale=1.0 / POGMDM_INTENSITY_SCALE)


def _align_phase(x: torch.Tensor, est_maps: torch.Tensor, ref_maps: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` pixel-wise into the phase convention of ``ref_maps``.

    A joint estimate ``(x, S)`` is only defined up to ``(x e^{i phi}, S e^{-i phi})``. With
    ``rho = sum_c conj(S_ref_c) S_c`` the image ``x rho / |rho|`` is the one that ``S_ref`` would give;
    pixels where the maps vanish are left unchanged.
    """
    rho = (ref_maps.conj() * est_maps).sum(-3)
    mag = rho.abs()
    return torch.where(mag > 1e-3, x * rho / mag.clamp_min(1e-12), x)


def pogmdm_joint_method(sample, *, n_samples: int = 10, generator=None, device="cpu", progress: bool = False,
                        weights: str | None = None, prior=None, estimate: str = "mmse", maps: str = "joint",
                        fixed_maps: str | None = None, **options) -> SamplerResult:
    """``pogmdm-joint``: joint image / coil-map posterior sampling with the PoGMDM prior (Nagler Alg. 1).

    Cartesian samples use the masked FFT, non-Cartesian ones (``sample.trajectory``, ``sample.dcf``)
    the NUFFT; ``weighting`` ("none" or "dcf", non-Cartesian only) picks the data-term weights.
    ``weights``: a PoGMDM name or path; by default ``pogmdm_native`` for images of at least 96 pixels
    a side, else ``pogmdm_mri`` (:func:`bayesmri.priors.pogmdm.default_pogmdm_weights`). ``prior``: any
    score prior instead (:func:`joint_prior`; give ``prior`` or ``weights``, not both).
    Other ``options`` go to :class:`JointPoGMDM` (``n_steps``, ``zeta_start``, ``mu``, ``map_steps`` ...);
    ``estimate="map"`` returns the MAP refinement as ``mean`` (the MMSE stays in ``diagnostics["mmse"]``).
    The coil maps are estimated jointly (``maps="joint"``, the default, keeps the sampler's own phase);
    ``maps="espirit"`` or ``"true"`` also rotates the returned images into the phase convention of those
    maps (:func:`_align_phase`), so that they compare with a reference combined with them.
    ``fixed_maps`` (``"true"`` or ``"espirit"``) instead uses those maps and keeps them fixed
    (``update_maps=False``): the image posterior with known sensitivities, for comparison.
    """
    if estimate not in ("mmse", "map"):
        raise ValueError(f"estimate must be 'mmse' or 'map', got {estimate!r}")
    if maps not in ("joint", "espirit", "true"):
        raise ValueError(f"maps must be 'joint', 'espirit' or 'true', got {maps!r}")
    if prior is not None and weights is not None:
        raise ValueError("method 'pogmdm-joint': give prior or weights, not both (both name the prior)")
    if prior is not None:
        prior = joint_prior(prior, sample.img_shape, device)
    elif weights is None:
        prior = _default_prior(device, sample.img_shape)
    else:
        from ..priors.pogmdm import load_pogmdm

        prior = load_pogmdm(weights, device=device)
    for k, v in METHOD_DEFAULTS.items():
        options.setdefault(k, v)
    weighting = options.pop("weighting", "dcf")
    fixed = None
    if fixed_maps is not None:
        fixed = sample.maps("true" if fixed_maps is True else fixed_maps).to(device)
        options["update_maps"] = False
    sampler = JointPoGMDM(prior, **options)
    if sample.is_cartesian:
        res = sampler.sample(sample.kspace.to(device), sample.mask.to(device), n_samples=n_samples,
                             generator=generator, progress=progress, coil_maps=fixed)
    else:  # NUFFT forward model y_c = F_nu(S_c x) at the sample's trajectory
        dcf = None if sample.dcf is None else sample.dcf.to(device)
        res = sampler.sample(sample.kspace.to(device), n_samples=n_samples, generator=generator, progress=progress,
                             trajectory=sample.trajectory.to(device), dcf=dcf, img_shape=sample.img_shape,
                             weighting=weighting, coil_maps=fixed)
    if maps != "joint":
        ref = sample.maps(maps).to(device)
        est = res.diagnostics["coil_maps_samples"]
        x = _align_phase(res.samples, est, ref)  # a per-sample rotation: the summaries are recomputed
        res = SamplerResult.from_samples(x, nfe=res.nfe, wall_time=res.wall_time, score_time=res.score_time,
                                         diagnostics=res.diagnostics)
        res.diagnostics["map"] = _align_phase(res.diagnostics["map"], res.diagnostics["coil_maps"], ref)
    res.diagnostics["mmse"] = res.mean
    if estimate == "map":
        res.mean = res.diagnostics["map"]
    return res


# the **options go to JointPoGMDM: its keyword defaults, the method's own, and the data weighting
_SAMPLER_DEFAULTS = {k: p.default for k, p in inspect.signature(JointPoGMDM).parameters.items()
                     if k != "prior" and p.default is not p.empty}
register_method("pogmdm-joint", "PoGMDM prior, joint image + coil-map posterior sampling (Nagler Alg. 1)",
                stochastic=True, presets=PRESETS, maps=("joint", "espirit", "true"),
                options={**_SAMPLER_DEFAULTS, **METHOD_DEFAULTS, "weighting": "dcf"})(pogmdm_joint_method)
