"""Registry of reconstruction / posterior-sampling methods that the CLI (``recon``, ``demo``) runs.

A *method* is a function

    fn(sample: MRISample, *, n_samples=1, generator=None, device="cpu", progress=False, **options)
        -> SamplerResult

for one slice (:class:`bayesmri.data.MRISample`, k-space ``(C, H, W)``), returning
``samples (P, H, W)`` complex, their ``mean (H, W)``, ``std (H, W)`` (``None`` for deterministic
methods), the number of network evaluations ``nfe`` per sample and ``wall_time`` in seconds
(coil-map estimation excluded: it is shared by all methods and cached on the sample). Images are in
the normalised units of ``sample.kspace``, those of ``sample.target``.

Every method accepts the option ``maps="espirit"|"true"`` (coil maps estimated from the data, the
default, or the simulation's own) and refuses options it does not know with a ``ValueError``. The
methods that build the SENSE operator here (the baselines below and the diffusion samplers) also take
``virtual_coils`` (``None``: off; an int ``V`` or an energy fraction: SVD coil compression before the
coil maps, :func:`prepare`).

Register a method with the decorator::

    @register_method("mymethod", "one-line description", stochastic=True)
    def mymethod(sample, *, n_samples=1, generator=None, device="cpu", progress=False, **options):
        ...

Modules listed in :data:`METHOD_MODULES` (and any ``bayesmri.methods`` entry point) are imported
the first time the registry is queried, so that their methods appear in ``--help`` and the demo.

The classical baselines registered here are deterministic (``n_samples`` is ignored beyond 1):
``zf`` (zero-filled, ``A^H y`` with the coil maps; gridding ``A^H W y`` for non-Cartesian data),
``sense`` (CG-SENSE, Tikhonov ``lam``, 30 CG iterations), ``tv`` (isotropic total variation, ADMM, 80 iterations) and ``l1wav`` (l1-wavelet,
MFISTA, 80 iterations). ``lam`` is relative to ``||A||^2``: for non-Cartesian operators it is
multiplied by ``||A||^2`` (power iteration); for Cartesian SENSE by ``g^2`` (``sense``) or ``g`` (``tv``,
``l1wav``), ``g^2`` the peak of ``sum_c |S_c|^2``: 1 for normalised maps, while explicit maps (``recon --maps
FILE``, whitened with the data) need not be, and the images keep their scale. Their default weights :data:`DEFAULT_LAMBDAS` maximise the mean magnitude
PSNR on 4 slices of the built-in ``val`` split (128x128, 8 coils, SNR 30 dB, true coil maps, images
normalised so that the 95th percentile of the zero-filled RSS magnitude is 1), for both GRO R=4 and
Poisson R=8 (samples from ``bayesmri.commands.simulate.simulate_builtin("val", 4, pattern, R, 8,
30.0, 0, 128)``, each method run with ``maps="true"``); mean PSNR in dB, GRO-R4 / Poisson-R8:

======  ==========================================================================
zf      21.29 / 23.78
sense   3e-3: 30.09 / 30.08;  1e-2: 29.11 / 29.43
tv      1e-3: 35.67 / 38.05;  2e-3: 36.20 / 38.21;  4e-3: 35.36 / 36.68
l1wav   5e-4: 35.66 / 37.62;  1e-3: 35.76 / 37.76;  2e-3: 34.73 / 36.99
======  ==========================================================================
"""
from __future__ import annotations

import importlib
import importlib.util
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = [
    "MethodInfo",
    "SamplerResult",
    "register_method",
    "get_method",
    "method_info",
    "available_methods",
    "DEFAULT_LAMBDAS",
    "METHOD_MODULES",
]

try:  # the samplers package defines the one result type
    from .samplers.base import SamplerResult
except ImportError:  # pragma: no cover - only while bayesmri.samplers is being written

    @dataclass
    class SamplerResult:  # type: ignore[no-redef]
        """Output of a method: ``samples (P, ...)``, ``mean``, ``std`` (or None), ``nfe``, ``wall_time``."""

        samples: torch.Tensor
        mean: torch.Tensor
        std: torch.Tensor | None = None
        nfe: int = 0
        wall_time: float = 0.0
        score_time: float = 0.0
        diagnostics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name, function, one-line description and whether it samples."""

    name: str
    fn: Callable
    description: str = ""
    stochastic: bool = False
    #: Cheaper settings that ``bayesmri demo`` passes so that its defaults fit the 5-minute budget.
    demo_options: dict = field(default_factory=dict)
    #: Defaults of the options the method takes through ``**options`` (those named in its signature are
    #: read from it): :func:`bayesmri.options.method_options` joins both.
    options: dict = field(default_factory=dict)


_REGISTRY: dict[str, MethodInfo] = {}

#: Modules imported on the first registry query; each registers its methods on import. A module
#: that does not exist (yet) is skipped silently; one that fails to import gives a warning.
METHOD_MODULES: list[str] = [
    "bayesmri.samplers.registered",
    "bayesmri.flows.cnf",
    "bayesmri.flows.cinn",
    "bayesmri.samplers.pogmdm_joint",
]
_discovered = False


def register_method(name: str, description: str = "", *, stochastic: bool = False,
                    demo_options: dict | None = None, options: dict | None = None):
    """Decorator registering ``fn`` under ``name`` (lower-case letters, digits, ``-``, ``_``).

    ``demo_options`` are keyword options that ``bayesmri demo`` passes to the method (reduced step
    counts for the demo's time budget); ``recon`` and the benchmarks use the method's own defaults.
    ``options``: ``{key: default}`` of the options ``fn`` takes through ``**options`` (or whose signature
    default, such as ``None``, stands for another value), what ``recon --list`` shows and ``recon --opt``
    accepts (:mod:`bayesmri.options`).
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"method name must be a non-empty identifier of [a-z0-9_-], got {name!r}")
    if "," in name:  # the CLI splits --methods on commas
        raise ValueError(f"method name must not contain ',', got {name!r}")

    def deco(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and old.fn is not fn and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"method {name!r} is already registered by {old.fn.__module__}")
        _REGISTRY[name] = MethodInfo(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], stochastic,
                                     dict(demo_options or {}), dict(options or {}))
        return fn

    return deco


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    mods = list(METHOD_MODULES)
    try:
        from importlib.metadata import entry_points

        mods += [ep.value for ep in entry_points(group="bayesmri.methods")]
    except Exception:  # pragma: no cover - metadata problems must not break the CLI
        pass
    for mod in mods:
        try:
            if importlib.util.find_spec(mod) is None:
                continue
            importlib.import_module(mod)
        except Exception as exc:  # a broken optional method must not take the others down
            warnings.warn(f"could not import method module {mod}: {exc}", RuntimeWarning, stacklevel=2)


def available_methods() -> list[str]:
    """Names of the registered methods, in registration order."""
    _discover()
    return list(_REGISTRY)


def method_info(name: str) -> MethodInfo:
    """The :class:`MethodInfo` of ``name``; ``ValueError`` listing the available names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def get_method(name: str) -> Callable:
    """The function registered as ``name``; ``ValueError`` listing the available names otherwise."""
    return method_info(name).fn


# --------------------------------------------------------------------------------------------------
# classical, deterministic baselines
# --------------------------------------------------------------------------------------------------
#: Default regularisation weights for the built-in data normalisation (see module docstring).
DEFAULT_LAMBDAS = {"sense": 3e-3, "tv": 2e-3, "l1wav": 1e-3}
DEFAULT_ITERS = {"sense": 30, "tv": 80, "l1wav": 80}


def prepare(sample, device="cpu", maps: str = "espirit", virtual_coils=None):
    """``(sample on device, its SENSE operator, y (1, C, ...))`` for a method to work with.

    ``maps`` picks the coil sensitivities: ``"espirit"`` (estimated from the data; the default,
    the only choice for real data) or ``"true"`` (the simulation's). ESPIRiT maps are computed on
    the caller's sample first so that its cache serves every method run on it.
    ``virtual_coils`` (int ``V``, or an energy fraction in ``(0, 1)``; ``None``: off) first compresses the
    coils by SVD (:meth:`~bayesmri.data.MRISample.compress_coils`, cached on the sample), so the maps are
    estimated from (ESPIRiT) or compressed with (true maps) the virtual coils; ``C`` below is then ``V``.
    """
    if maps not in ("espirit", "true"):
        raise ValueError(f"maps must be 'espirit' or 'true', got {maps!r}")
    if virtual_coils is not None:
        sample = sample.compress_coils(virtual_coils)
    S = sample.maps(maps)  # computes and caches ESPIRiT maps on the original sample
    dev = torch.device(device)
    if sample.kspace.device != dev:
        sample = sample.to(dev)
        S = S.to(dev)
    return sample, sample.operator(S), sample.y


def _deterministic(sample, device, maps, call, virtual_coils=None) -> SamplerResult:
    sample, op, y = prepare(sample, device, maps, virtual_coils)  # coil-map estimation is shared, not timed
    t0 = time.perf_counter()
    with torch.no_grad():
        x = call(op, y)[0]  # (H, W): one slice
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    wall = time.perf_counter() - t0
    return SamplerResult(samples=x.unsqueeze(0), mean=x, std=None, nfe=0, wall_time=wall)


def _check_options(name: str, options: dict, allowed: set[str]) -> None:
    bad = set(options) - allowed
    if bad:
        raise ValueError(
            f"method {name!r} got unknown option(s) {', '.join(sorted(bad))}; allowed: {', '.join(sorted(allowed)) or 'none'}"
        )


@register_method("zf", "zero-filled: coil-combined adjoint A^H y (deterministic)")
def zero_filled_method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, maps="espirit",
                       virtual_coils=None, **options):
    from .recon import zero_filled

    _check_options("zf", options, set())
    return _deterministic(sample, device, maps, lambda op, y: zero_filled(op, y), virtual_coils)


def _regularised(name: str, recon_name: str, extra_options: frozenset = frozenset(), degree: int = 1):
    """A classical method ``name`` calling ``bayesmri.recon.<recon_name>(op, y, lam, max_iter, ...)``
    with the tuned :data:`DEFAULT_LAMBDAS` / :data:`DEFAULT_ITERS` unless given. ``degree``: the
    regulariser's homogeneity (2 for Tikhonov, 1 for TV and l1), which sets how ``lam`` follows the gain
    of un-normalised coil maps."""

    def method(sample, *, n_samples=1, generator=None, device="cpu", progress=False, maps="espirit",
               lam=None, max_iter=None, virtual_coils=None, **options):
        from . import recon

        _check_options(name, options, set(extra_options))
        lam_ = DEFAULT_LAMBDAS[name] if lam is None else float(lam)
        it = DEFAULT_ITERS[name] if max_iter is None else int(max_iter)
        fn = getattr(recon, recon_name)

        def call(op, y):
            # lam is relative to ||A||^2 (1 for SENSE with normalised maps; K/N-like for a NUFFT; the peak of
            # sum_c |S_c|^2 for explicit or prewhitened maps, which are not normalised)
            from .physics.nufft import NonCartesianMRI

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

    from . import recon

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
                                     "l1_wavelet_recon", frozenset({"wavelet", "level"}))
