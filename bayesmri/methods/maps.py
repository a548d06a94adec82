"""Coil-map sources of the methods: where the sensitivities ``S`` of the SENSE model come from.

``maps=`` of every method (and ``bayesmri recon --maps``) is one of

- ``"espirit"``: estimated from the data's calibration region (ESPIRiT; maps of 1 for single-coil data), the
  default and the only choice for real data; explicit maps read from a file (``recon --maps PATH``) take this
  slot on the sample (``sample.maps_source == "file"``);
- ``"true"``: the simulation's own maps, only where the input carries them (``sample.maps_true``);
- ``"joint"``: estimated jointly with the image by the sampler, only for the methods that do
  (``pogmdm-joint``; :attr:`~bayesmri.methods.registry.MethodInfo.maps`).

:func:`check_maps` gives the one-line error for a source a method or an input does not have, before any
compute; :func:`prepare` builds the SENSE operator with the chosen maps.
"""
from __future__ import annotations

import torch

__all__ = ["check_maps", "prepare"]


def check_maps(name: str, maps: str, sample=None) -> None:
    """``ValueError`` (one line) unless method ``name`` accepts coil-map source ``maps`` for ``sample``."""
    from .registry import MAP_SOURCES, available_methods, method_info

    if maps not in MAP_SOURCES:
        raise ValueError(f"maps must be one of {', '.join(MAP_SOURCES)} (or a file of maps for recon), got {maps!r}")
    info = method_info(name)
    if maps not in info.maps:
        joint = [m for m in available_methods() if "joint" in method_info(m).maps]
        extra = f"; maps 'joint' is for {', '.join(joint)}" if maps == "joint" else ""
        raise ValueError(f"method {name!r} takes maps {', '.join(info.maps)}, not {maps!r}{extra}")
    if maps == "true" and sample is not None and getattr(sample, "maps_true", None) is None:
        raise ValueError("maps 'true' needs simulated data with its coil maps; this input has none (use espirit)")


def prepare(sample, device="cpu", maps: str = "espirit", virtual_coils=None):
    """``(sample on device, its SENSE operator, y (1, C, ...))`` for a method to work with.

    ``maps`` picks the coil sensitivities: ``"espirit"`` (estimated from the data, or the file's maps; the
    default) or ``"true"`` (the simulation's). ESPIRiT maps are computed on the caller's sample first so
    that its cache serves every method run on it. ``virtual_coils`` (int ``V``, or an energy fraction in
    ``(0, 1)``; ``None``: off) first compresses the coils by SVD
    (:meth:`~bayesmri.data.MRISample.compress_coils`, cached on the sample), so the maps are estimated from
    (ESPIRiT) or compressed with (true maps) the virtual coils; ``C`` below is then ``V``.
    """
    if maps not in ("espirit", "true"):
        raise ValueError(f"maps must be 'espirit' or 'true' for this method, got {maps!r}")
    if virtual_coils is not None:
        sample = sample.compress_coils(virtual_coils)
    S = sample.maps(maps)  # computes and caches ESPIRiT maps on the original sample
    dev = torch.device(device)
    if sample.kspace.device != dev:
        sample = sample.to(dev)
        S = S.to(dev)
    return sample, sample.operator(S), sample.y
