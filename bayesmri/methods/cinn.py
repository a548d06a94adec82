"""The cINN family: ``cinn``, posterior samples of a conditional invertible network (Denker et al.).

The models are :mod:`bayesmri.flows.cinn`; this module makes them a registered method (inversion image,
coil maps, matrix sizes, data consistency).
"""
from __future__ import annotations

import math
import time

import torch

from .._validate import as_generator
from ..flows.cinn import _cinn_at_size, default_weights, load_cinn, mri_condition, mri_training_mask
from ..flows.sizes import check_size_policy, resize_centre, size_plan
from ..physics.fft import fft2c, ifft2c
from ..samplers.base import SamplerResult
from .maps import prepare
from .registry import check_method_options, register_method

__all__ = ["cinn_method"]


@register_method("cinn", "conditional invertible network (Denker et al.): mean of P flow samples", stochastic=True)
def cinn_method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, weights=None,
                maps="espirit", temperature=1.0, size_policy="kspace", data_consistency=None, chunk=None, **options):
    """Posterior samples from an MRI cINN, conditioned on the adjoint image ``A^H y``.

    Inversion layer: the sample's own adjoint (coil-combined zero-filled image ``S^H F^H P^T y`` for
    multi-coil data, ``F^H P^T y`` for single-coil) with its low-resolution phase removed, scaled
    by its 95th-percentile magnitude (:func:`mri_condition`). The network predicts a real magnitude
    image; samples are returned as complex64 ``magnitude * exp(i phase_lr)`` (the data's smooth
    phase put back), in the scale of ``sample.kspace``, shaped ``(P, H, W)`` with ``mean``/``std``
    ``(H, W)`` from ``SamplerResult.from_samples`` (the complex std; ``std_magnitude`` is the std of
    the magnitudes, which this method reported as ``std`` before).

    Sizes: the shipped models are 64 x 64; other ``H x W`` follow ``size_policy``
    (:mod:`bayesmri.flows.sizes`). ``"kspace"`` (default): the adjoint image is resampled to 64 x 64
    by centre-cropping (zero-padding) its k-space, the same field of view at the model's resolution,
    and the samples go back to ``H x W`` by zero-padding (cropping) theirs. ``"native"``: the fully
    convolutional weights run at ``H x W`` (square, a multiple of 8), the temperature multiplied by
    ``sqrt(H W / 64^2)`` so the radial base's per-pixel spread is the training one. Either way
    ``data_consistency`` (default: only at sizes other than the model's) then restores the measured
    samples, ``x + A^H (y - A x)`` with the method's coil maps: without it a resampled sample loses
    every measured frequency beyond the model's band and is no better than zero-filled at 224 x 224
    (with it 3-4 dB better; ``docs/flows_sizes.md``); ``"kspace"`` beats ``"native"`` by 1.5 dB at
    128 x 128 and 2.2 dB at 224 x 224 (8 simulated test slices). The one-line
    ``diagnostics["size_policy"]["message"]`` says what was done (``bayesmri recon`` prints it and
    records it in ``metrics.json`` settings); ``diagnostics["resampled_from"]`` is the data's size.

    ``temperature`` scales the base samples (default 1, Denker et al.). The shipped models have additive
    (volume-preserving) couplings and the radial base, whose samples have norm ``|r|``, ``r ~ N(0, 1)``,
    in any dimension, while the flow encodes test truths at norm ~3.3: the samples are ~5x too narrow
    (P-gain 0.15 dB at P = 8 where 2.50 is exact); ``temperature=3.3`` gives 1.3-1.4 dB
    (``benchmarks/bench_cinn_spread.py``, ``docs/uncertainty.md``).

    Weights (``weights=``, default :func:`default_weights`): ``cinn_mri64_mc`` was trained on the
    demo's acquisitions (8 coils, GRO R = 4 / Poisson R = 8); ``cinn_mri64`` on single-coil
    magnitude images with ONE fixed random-column mask, so it is only in-distribution for that
    acquisition (``diagnostics["in_training_family"]``).

    ``chunk``: invert at most this many samples at once (default all; the same samples, less memory). The
    chunks run in the samplers' loop (progress, Ctrl-C: ``diagnostics["interrupted"]``).
    """
    check_method_options("cinn", options, ())
    check_size_policy(size_policy)
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not sample.is_cartesian:
        raise ValueError("method 'cinn' needs Cartesian data (its models were trained on Cartesian masks)")
    sample, op, y = prepare(sample, device, maps)
    t0 = time.perf_counter()
    wpath = weights or default_weights()
    model, meta = load_cinn(wpath, device=device)
    kind = meta.get("cinn", {}).get("conditioning", "single_coil_zero_filled")
    with torch.no_grad():
        zf = op.A_adjoint(y)  # (1, H, W) complex
        H, W = zf.shape[-2:]
        dc = ((H, W) != tuple(model.img_shape)) if data_consistency is None else bool(data_consistency)
        plan = size_plan("cinn", model.img_shape, (H, W), size_policy, dc)
        net, temp = model, float(temperature)
        if plan is not None and size_policy == "native":
            net = _cinn_at_size(model, meta, (H, W))
            temp *= math.sqrt(net.n_dims / model.n_dims)
        elif plan is not None:
            zf = ifft2c(resize_centre(fft2c(zf), model.img_shape))
        c, scale, ph = mri_condition(zf, net.img_shape)
        diag = {"weights": str(wpath), "conditioning": kind,
                "in_training_family": _in_training_family(sample, kind)}
        if plan is not None:
            diag["resampled_from"] = [int(H), int(W)]
            diag["size_policy"] = plan
        g = as_generator(generator)
        xs = net.sample(c.to(device), n_samples, generator=g, temperature=temp, chunk=chunk, progress=progress) * scale
        P, B = xs.shape[:2]
        diag["interrupted"] = P < n_samples
        xs = xs[:, :, 0].to(torch.complex64) * ph.to(torch.complex64)  # (P, B, h, w)
        if tuple(xs.shape[-2:]) != (H, W):
            xs = ifft2c(resize_centre(fft2c(xs), (H, W)))
        if dc:
            flat = xs.reshape(P * B, H, W)
            xs = (flat + op.A_adjoint(y - op.A(flat))).reshape(P, B, H, W)
    return SamplerResult.from_samples(xs[:, 0], nfe=P, wall_time=time.perf_counter() - t0, diagnostics=diag)


def _in_training_family(sample, kind: str) -> bool:
    """Whether ``sample``'s acquisition is of the family the weights were trained on."""
    if kind == "multicoil_sense_adjoint_phase_normalised":
        return sample.metadata.get("pattern") in ("gro", "poisson") and sample.ncoils > 1
    H, W = sample.img_shape
    m = sample.mask
    if sample.ncoils != 1 or m is None or m.ndim != 1 or H != W:
        return False
    return bool(torch.equal(m.float().cpu().reshape(-1), mri_training_mask(W).float().reshape(-1)))
