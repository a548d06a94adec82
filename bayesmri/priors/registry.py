"""Score priors by name: what ``recon --prior NAME`` (and the option ``prior=`` of the score samplers) loads.

A *score prior* is a module with ``score(x, sigma)`` on real images ``x: (B, H, W)``, ``sigma`` the
diffusion noise std per real component (``p_sigma = p * N(0, sigma^2 I)``), in the units of the score
networks' training images: each image divided by its 95th percentile magnitude. The samplers
(:class:`bayesmri.priors.score.ScorePrior`; every score-based sampler, PoGMDM-joint included) put it at the data's intensity scale.

Names (:func:`available_priors`):

- shipped score networks: ``score_native``, ``score_small64`` (``bayesmri/weights``);
- ``pogmdm`` (``pogmdm_native`` for images of at least 96 px a side, else ``pogmdm_mri``, as
  ``pogmdm-joint`` picks), ``pogmdm_mri``, ``pogmdm_native``: the PoGMDM prior
  (:class:`~bayesmri.priors.pogmdm.PoGMDM`), whose analytic score needs no network, through
  :class:`PoGMDMScore` (its training images were scaled to a peak of about 1, not a 95th percentile of 1);
- a path to a ``.safetensors``/``.json`` pair (or their stem) of either model type;
- any name added with :func:`register_prior`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

__all__ = ["PoGMDMScore", "register_prior", "available_priors", "check_prior", "load_prior", "POGMDM_INTENSITY_SCALE"]

#: 99.5th over 95th percentile magnitude of the training slices (median; ``pogmdm_native.json``
#: ``prior.intensity_scale``): a PoGMDM image unit is this many 95th-percentile units. ``pogmdm_mri``
#: (each slice divided by its maximum) gets the same ratio: ``pogmdm-joint`` scales the data of both by
#: the 99.5th percentile.
POGMDM_INTENSITY_SCALE = 1.156089425086975


class PoGMDMScore(nn.Module):
    """A :class:`~bayesmri.priors.pogmdm.PoGMDM` with the score networks' intensity convention.

    With ``c`` the PoGMDM unit in 95th-percentile units, ``p_net(x) = p(x / c) / c^n`` gives
    ``score(x, sigma) = s_pogmdm(x / c, sigma / c) / c`` (the same change of variables as
    :class:`~bayesmri.priors.score.ScorePrior`'s intensity scale). ``meta["prior"]`` reports the
    trained noise range in these units; no ``training_crop``: the PoGMDM is evaluated on the whole image
    at any size (FFT convolutions), never tiled.
    """

    def __init__(self, model: nn.Module, intensity_scale: float | None = None):
        super().__init__()
        self.model = model
        meta = getattr(model, "meta", None) or {}
        pr = meta.get("prior", {}) if isinstance(meta, dict) else {}
        pr = pr if isinstance(pr, dict) else {}
        self.c = float(intensity_scale or pr.get("intensity_scale") or POGMDM_INTENSITY_SCALE)
        self.meta = {"prior": {"kind": "pogmdm", "sigma_min": 1e-3 * self.c,
                               "sigma_max": float(pr.get("sigma_max", 0.4)) * self.c}}

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.model.score(x / self.c, sigma / self.c) / self.c

    def lipschitz_factor(self, sigma: float, shape=(64, 64)) -> float:
        """``kappa(sigma)``: the score's Lipschitz constant is at most ``kappa / sigma^2``.

        A diffused density has ``kappa <= 1`` (what the ULA step sizes assume); a product of experts whose
        filters overlap in frequency does not: each expert's ``-log`` mixture has curvature at most
        ``1 / sigma_k^2(sigma)``, so the Hessian is bounded by ``max_w sum_k |K^_k(w)|^2 / sigma_k^2(sigma)``
        (exact, computed here): 1.4 at ``sigma`` = 0.03, 2.5 at 1 and up to 5.9 for large ``sigma``
        (``pogmdm_native``), where annealed ULA's default steps diverge (480 levels, gamma 1.5)."""
        s = float(sigma) / self.c
        key = (round(s, 12), tuple(shape))
        cache = self.__dict__.setdefault("_kappa", {})
        if key not in cache:
            with torch.no_grad():
                Khat, eta = self.model._spectra(*shape)
                var = self.model.expert_variances(s, eta)
                cache[key] = float(s**2 * ((Khat.abs() ** 2) / var[:, None, None]).sum(0).amax())
        return cache[key]

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.score(x, sigma)


#: name -> factory(shape=(H, W) or None, device) returning a module with ``score(x, sigma)``.
_PRIORS: dict[str, Callable] = {}
_CACHE: dict = {}


def register_prior(name: str, factory: Callable) -> None:
    """Make ``factory(shape, device)`` loadable as ``recon --prior name`` / ``prior="name"``.

    ``factory`` returns a module (or any object) with ``score(x, sigma)`` in the convention of the module
    docstring; ``shape`` is the image size ``(H, W)`` (``None`` when unknown), for a prior that picks
    weights by size. Re-registering a name replaces it."""
    if not isinstance(name, str) or not name or "/" in name or name.endswith((".safetensors", ".json")):
        raise ValueError(f"prior name must be a non-empty name without '/' or a weights suffix, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    _PRIORS[name] = factory
    for key in [k for k in _CACHE if k[0] == name]:  # a replaced factory must not serve the old model
        del _CACHE[key]


def _wrap(model: nn.Module) -> nn.Module:
    from .pogmdm import PoGMDM

    return PoGMDMScore(model) if isinstance(model, PoGMDM) else model


def _load_weights(name_or_path: str, device) -> nn.Module:
    from .loading import load_model

    model = _wrap(load_model(name_or_path, device=device))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _shipped(name: str) -> Callable:
    return lambda shape, device: _load_weights(name, device)


def _pogmdm_by_size(shape, device):
    from .pogmdm import DEFAULT_WEIGHTS, default_pogmdm_weights

    return _load_weights(DEFAULT_WEIGHTS if shape is None else default_pogmdm_weights(shape), device)


_SHIPPED = ("score_native", "score_small64", "pogmdm_mri", "pogmdm_native")
for _n in _SHIPPED:
    register_prior(_n, _shipped(_n))
register_prior("pogmdm", _pogmdm_by_size)


def available_priors() -> list[str]:
    """The registered prior names (shipped weights first)."""
    return list(_PRIORS)


def check_prior(name: str) -> None:
    """``ValueError`` unless ``name`` is a registered prior or an existing weights pair (nothing is loaded)."""
    if name in _PRIORS:
        return
    from .loading import resolve_weights

    try:
        resolve_weights(name)
    except (FileNotFoundError, ValueError):
        raise ValueError(f"unknown prior {name!r}: neither a registered prior ({', '.join(_PRIORS)}) nor a "
                         ".safetensors/.json weights pair") from None


def load_prior(name: str, shape=None, device="cpu") -> nn.Module:
    """The score prior ``name`` (a registered name or a weights path) for images of ``shape``, on ``device``.

    Cached per ``(name, shape, device)`` (per weights for the shipped ones); ``ValueError`` lists the
    names when ``name`` is neither registered nor an existing weights pair."""
    dev = str(torch.device(device))
    if name == "pogmdm":  # the weights pogmdm-joint picks for this size
        from .pogmdm import DEFAULT_WEIGHTS, default_pogmdm_weights

        name = DEFAULT_WEIGHTS if shape is None else default_pogmdm_weights(shape)
    if name in _PRIORS:
        key = (name, None if name in _SHIPPED else tuple(shape or ()), dev)
        make = _PRIORS[name]
    else:
        from .loading import resolve_weights

        check_prior(name)
        st, _ = resolve_weights(name)
        key, make = (str(st.resolve()), None, dev), _shipped(name)
    if key not in _CACHE:
        _CACHE[key] = make(shape, dev)
    return _CACHE[key]
