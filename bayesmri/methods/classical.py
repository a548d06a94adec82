"""Classical, deterministic baselines (``n_samples`` is ignored beyond 1).

``zf`` (zero-filled, ``A^H y`` with the coil maps; gridding ``A^H W y`` for non-Cartesian data),
``sense`` (CG-SENSE, Tikhonov ``lam``, 30 CG iterations), ``tv`` (isotropic total variation, ADMM, 80 iterations) and ``l1wav`` (l1-wavelet,
MFISTA, 80 iterations). ``lam`` is relative to ``||A||^2``: for non-Cartesian operators it is
multiplied by ``||A||^2`` (power iteration); for Cartesian SENSE by ``g^2`` (``sense``) or ``g`` (``tv``,
``l1wav``), ``g^2`` the peak of ``sum_c |S_c|^2``: 1 for normalised maps, while explicit maps (``recon --maps
FILE``, whitened with the data) need not be, and the images keep their scale. Their default weights :data:`DEFAULT_LAMBDAS` were tuned on the built-in ``val`` split
(``docs/tuning.md``).
"""
from __future__ import annotations

import time

import torch

from ..samplers.base import SamplerResult
from .maps import prepare
from .registry import check_method_options, register_method

__all__ = ["DEFAULT_LAMBDAS", "DEFAULT_ITERS", "zero_filled_method", "sense_method", "tv_method", "l1wav_method"]


# --------------------------------------------------------------------------------------------------
# classical, deterministic baselines
# --------------------------------------------------------------------------------------------------
#: Default regularisation weights for the built-in data normalisation (see module docstring).
DEFAULT_LAMBDAS = {"sense": 3e-3, "tv": 2e-3, "l1wav": 1e-3}
DEFAULT_ITERS = {"sense": 30, "tv": 80, "l1wav": 80}


def _deterministic(sample, device, maps, call, virtual_coils=None) -> SamplerResult:
    sample, op, y = prepare(sample, device, maps, virtual_coils)  # coil-map estimation is shared, not timed
    t0 = time.perf_counter()
    with torch.no_grad():
        x = call(op, y)[0]  # (H, W): one slice
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    wall = time.perf_counter() - t0
    return SamplerResult(samples=x.unsqueeze(0), mean=x, std=None, nfe=0, wall_time=wall)


@register_method("zf", "zero-filled: coil-combined adjoint A^H y (deterministic)")
def zero_filled_method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, maps="espirit",
                       virtual_coils=None, **options):
    from ..recon import zero_filled

    check_method_options("zf", options, set())
    return _deterministic(sample, device, maps, lambda op, y: zero_filled(op, y), virtual_coils)


def _regularised(name: str, recon_name: str, extra_options: frozenset = frozenset(), degree: int = 1):
    """A classical method ``name`` calling ``bayesmri.recon.<recon_name>(op, y, lam, max_iter, ...)``
    with the tuned :data:`DEFAULT_LAMBDAS` / :data:`DEFAULT_ITERS` unless given. ``degree``: the
    regulariser's homogeneity (2 for Tikhonov, 1 for TV and l1), which sets how ``lam`` follows the gain
    of un-normalised coil maps."""

    def method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, maps="espirit",
               lam=None, max_iter=None, virtual_coils=None, **options):
        from .. import recon

        check_method_options(name, options, set(extra_options))
        lam_ = DEFAULT_LAMBDAS[name] if lam is None else float(lam)
        it = DEFAULT_ITERS[name] if max_iter is None else int(max_iter)
        fn = getattr(recon, recon_name)

        def call(op, y):
            # lam is relative to ||A||^2 (1 for SENSE with normalised maps; K/N-like for a NUFFT; the peak of
            # sum_c |S_c|^2 for explicit or prewhitened maps, which are not normalised)
            from ..physics.nufft import NonCartesianMRI

            if isinstance(op, NonCartesianMRI):
                scale = op.compute_norm(n_iter=30, generator=0)
            elif getattr(op, "maps", None) is not None:
                # maps of peak gain g: x' = g x solves the unit-gain problem with lam g^-degree
                gain2 = float(op.maps.abs().square().sum(-3).amax()) or 1.0
                scale = gain2 ** (degree / 2)
            else:
                scale = 1.0
            return fn(op, y, lam=lam_ * scale, max_iter=it, **options)

        return _deterministic(sample, device, maps, call, virtual_coils)

    method.__name__ = method.__qualname__ = f"{name}_method"
    return method


def _regularised_options(name: str, recon_name: str, extra_options: frozenset = frozenset()) -> dict:
    """``{option: default}`` of a :func:`_regularised` method: the tuned weight and iterations, and the
    defaults of the extra options in ``bayesmri.recon.<recon_name>``'s signature."""
    import inspect

    from .. import recon

    params = inspect.signature(getattr(recon, recon_name)).parameters
    return {"lam": DEFAULT_LAMBDAS[name], "max_iter": DEFAULT_ITERS[name],
            **{k: params[k].default for k in sorted(extra_options)}}


def _register_regularised(name, description, recon_name, extra_options=frozenset(), degree=1):
    return register_method(name, description, options=_regularised_options(name, recon_name, extra_options))(
        _regularised(name, recon_name, extra_options, degree))


sense_method = _register_regularised("sense", "CG-SENSE with Tikhonov weight lam (deterministic)", "cg_sense",
                                     degree=2)
tv_method = _register_regularised("tv", "total-variation regularised least squares (deterministic)", "tv_recon")
l1wav_method = _register_regularised("l1wav", "l1-wavelet regularised least squares (deterministic)",
                                     "l1_wavelet_recon", frozenset({"wavelet", "level", "average_last"}))
