"""The CNF family: ``cnf``, posterior samples of a conditional normalising flow (Wen, Ahmad & Schniter 2023).

The model and its sampler are :mod:`bayesmri.flows.cnf`; this module makes them a registered method (coil
combination, coil maps, matrix sizes).
"""
from __future__ import annotations

import time

import torch

from ..flows.cnf import ConditionalNF, _cnf_at_size, _sync, cnf_sample, load_cnf
from ..flows.sizes import resize_centre, resize_mask, size_plan
from ..physics.cartesian import as_mask4d
from ..physics.fft import fft2c, ifft2c
from ..samplers.base import SamplerResult
from .registry import register_method

__all__ = ["cnf_method"]


def _sample_field(sample, *names):
    for n in names:
        v = getattr(sample, n, None)
        if v is not None:
            return v
    return None


def _resolve_maps(sample, maps):
    """Coil maps ``(C, H, W)`` for ``S^H``: a tensor, or ``"espirit"``/``"true"`` from an ``MRISample``."""
    if isinstance(maps, torch.Tensor):
        return maps
    getter = getattr(sample, "maps", None)
    if callable(getter):  # bayesmri.data.MRISample.maps(kind)
        return getter(maps)
    if isinstance(getter, torch.Tensor):
        return getter
    return _sample_field(sample, "maps_espirit" if maps == "espirit" else "maps_true")


@register_method("cnf", "conditional normalising flow with nullspace learning (Wen et al.)", stochastic=True)
def cnf_method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, weights="cnf64",
                chunk=32, combine="sense", maps="espirit", data_consistency=True, size_policy="kspace"):
    """Posterior samples by the CNF (Wen et al.), coil-combined by ``S^H`` (``combine="sense"``) or RSS.

    ``sample``: a Cartesian :class:`bayesmri.data.MRISample` (``kspace (C, H, W)``, ``mask``), whose coil
    count must match the weights'. ``maps``: ``"espirit"``, ``"true"`` or a ``(C, H, W)`` tensor
    (used by ``combine="sense"``). Returns a ``SamplerResult`` (through ``SamplerResult.from_samples``)
    with ``samples (P, H, W)`` complex (RSS: real magnitudes stored as complex), ``diagnostics["redrawn"]`` the number of
    redrawn samples.

    Any ``H x W``: where it differs from the weights' matrix (64 x 64 for ``cnf64``), ``size_policy``
    decides (:mod:`bayesmri.flows.sizes`). ``"kspace"`` (default): the CNF runs at its own matrix on the
    centre-cropped (or zero-padded) k-space and mask, the same field of view at the model's resolution,
    and its coil images go back to ``H x W`` by zero-padding (cropping) their k-space, with the measured
    samples of the full k-space restored (``data_consistency``): +2.2 dB over the fully convolutional run
    at 128 x 128 and +3.3 dB at 224 x 224 (mean of 8 simulated GRO R = 4 test slices; ``docs/flows_sizes.md``).
    ``"native"``: the same weights at ``H x W`` (multiples of 8). What was done is the one-line
    ``diagnostics["size_policy"]["message"]`` (``bayesmri recon`` prints it and records it in
    ``metrics.json`` settings).
    """
    if combine not in ("sense", "rss"):
        raise ValueError(f"combine must be 'sense' (S^H with coil maps) or 'rss', got {combine!r}")
    model = weights if isinstance(weights, ConditionalNF) else load_cnf(weights, device=device)
    model = model.to(device)
    k = _sample_field(sample, "kspace")
    mask = _sample_field(sample, "mask")
    if k is None or mask is None:
        raise ValueError("cnf needs a Cartesian sample with .kspace (C, H, W) and .mask")
    if k.ndim != 3:
        raise ValueError(f"cnf: kspace must have shape (C, H, W) (one slice), got {tuple(k.shape)}")
    k = k.to(device).unsqueeze(0)
    mask = mask.to(device)
    H, W = k.shape[-2:]
    plan = size_plan("cnf", model.img_size, (H, W), size_policy, bool(data_consistency))
    t0 = time.perf_counter()
    if plan is None:
        xs, info = cnf_sample(model, k, mask, int(n_samples), generator=generator, chunk=chunk,
                              data_consistency=data_consistency, progress=progress)
    else:
        if size_policy == "native":
            model = _cnf_at_size(model, (H, W))
        h, w = plan["recon_size"]
        xs, info = cnf_sample(model, resize_centre(k, (h, w)), resize_mask(mask, (H, W), (h, w)), int(n_samples),
                              generator=generator, chunk=chunk, data_consistency=data_consistency,
                              progress=progress)
        kx = resize_centre(fft2c(xs), (H, W))
        if data_consistency:  # the measured samples the crop left out, at the data's resolution
            m = as_mask4d(mask, H, W)
            kx = (1 - m) * kx + m * k
        xs = ifft2c(kx)
    S = _resolve_maps(sample, maps) if combine == "sense" else None
    if combine == "sense" and S is None:
        raise ValueError("combine='sense' needs coil maps: pass maps= or use combine='rss'")
    if S is not None:
        maps = S.to(device)
        maps = maps.unsqueeze(0) if maps.ndim == 3 else maps
        imgs = (maps.conj().unsqueeze(0) * xs).sum(2)
    else:
        imgs = torch.sqrt((xs.real**2 + xs.imag**2).sum(2)).to(xs.dtype)
    _sync(device)
    return SamplerResult.from_samples(imgs[:, 0], nfe=int(imgs.shape[0]) + 1, wall_time=time.perf_counter() - t0,
                                      diagnostics={"redrawn": info["redrawn"], "cond_time": info["cond_time"],
                                                   "flow_time": info["flow_time"], "combine": combine,
                                                   "interrupted": info["interrupted"],
                                                   **({"size_policy": plan} if plan is not None else {})})
