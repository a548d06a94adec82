"""The method registry: what ``recon --method``, the demo and the benchmarks run, by name.

A *method* is a preset of (prior, sampler, coil-map source, options) behind one function

    fn(sample: MRISample, *, n_samples=1, generator=None, device="cpu", progress=False, **options)
        -> SamplerResult

for one slice (:class:`bayesmri.data.MRISample`, k-space ``(C, H, W)``), returning ``samples (P, H, W)``
complex, ``mean (H, W)``, ``std (H, W)`` (``None`` for deterministic methods; for sampling methods
:meth:`~bayesmri.samplers.SamplerResult.from_samples`' definition), the number of network evaluations
``nfe`` per sample and ``wall_time`` in seconds (coil-map estimation excluded: it is shared by all methods
and cached on the sample). Images are in the normalised units of ``sample.kspace``.

Each method has ONE set of defaults, its registered ``options`` (with the keyword defaults of its
signature: :func:`bayesmri.options.method_options`), used by ``recon``, the demo and the benchmarks alike.
Named ``presets`` (e.g. ``"demo"``: fewer levels for the demo's time budget) are option sets a caller asks
for by name (:func:`preset_options`). ``maps`` lists the coil-map sources the method accepts
(:mod:`bayesmri.methods.maps`).

Register a method with the decorator::

    @register_method("mymethod", "one-line description", stochastic=True, options={...}, presets={"demo": {...}})
    def mymethod(sample, *, n_samples=1, generator=None, device="cpu", progress=False, **options):
        ...

The family modules in :data:`METHOD_MODULES` (and any ``bayesmri.methods`` entry point) are imported the
first time the registry is queried.
"""
from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["MethodInfo", "register_method", "get_method", "method_info", "available_methods", "preset_options",
           "check_method_options", "METHOD_MODULES", "MAP_SOURCES"]

#: The coil-map sources a method may accept (:mod:`bayesmri.methods.maps`); ``"file"`` stands for explicit
#: maps read from a file (``recon --maps PATH``), which arrive on the sample as its ``"espirit"`` maps.
MAP_SOURCES = ("espirit", "true", "joint")


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name, function, one-line description and whether it samples."""

    name: str
    fn: Callable
    description: str = ""
    stochastic: bool = False
    #: Defaults of the options the method takes through ``**options`` (those named in its signature are
    #: read from it): :func:`bayesmri.options.method_options` joins both.
    options: dict = field(default_factory=dict)
    #: Named option sets over the defaults, e.g. ``"demo"``: cheaper settings for ``bayesmri demo``.
    presets: dict = field(default_factory=dict)
    #: The coil-map sources (``maps=``) it accepts, the first the default.
    maps: tuple = ("espirit", "true")

    @property
    def demo_options(self) -> dict:
        """The ``"demo"`` preset (empty when the method has none)."""
        return dict(self.presets.get("demo", {}))


_REGISTRY: dict[str, MethodInfo] = {}

#: Modules imported on the first registry query; each registers its methods on import (one per family).
METHOD_MODULES: list[str] = [
    "bayesmri.methods.classical",
    "bayesmri.methods.diffusion",
    "bayesmri.methods.cnf",
    "bayesmri.methods.cinn",
    "bayesmri.methods.pogmdm",
]
_discovered = False


def register_method(name: str, description: str = "", *, stochastic: bool = False, options: dict | None = None,
                    presets: dict | None = None, maps=("espirit", "true")):
    """Decorator registering ``fn`` under ``name`` (letters, digits, ``-``, ``_``).

    ``options``: ``{key: default}`` of the options ``fn`` takes through ``**options`` (or whose signature
    default, such as ``None``, stands for another value), what ``recon --list`` shows and ``recon --opt``
    accepts (:mod:`bayesmri.options`). ``presets``: ``{preset name: {key: value}}`` over those defaults.
    ``maps``: the coil-map sources it accepts (:data:`MAP_SOURCES`), the first its default.
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"method name must be a non-empty identifier of [a-z0-9_-], got {name!r}")
    bad = [m for m in maps if m not in MAP_SOURCES]
    if not maps or bad:
        raise ValueError(f"method {name!r}: maps must be a non-empty subset of {MAP_SOURCES}, got {maps!r}")

    def deco(fn: Callable) -> Callable:
        old = _REGISTRY.get(name)
        if old is not None and old.fn is not fn and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"method {name!r} is already registered by {old.fn.__module__}")
        _REGISTRY[name] = MethodInfo(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0], stochastic,
                                     dict(options or {}), {k: dict(v) for k, v in (presets or {}).items()},
                                     tuple(maps))
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
            importlib.import_module(mod)
        except Exception as exc:  # a broken plug-in method must not take the others down
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


def preset_options(name: str, preset: str | None = None) -> dict:
    """The options to pass to method ``name`` for ``preset`` (``None``: none, the defaults apply).

    A method without that preset runs its defaults (``{}``)."""
    return {} if preset is None else dict(method_info(name).presets.get(preset, {}))


def check_method_options(name: str, options: dict, allowed) -> None:
    """``ValueError`` naming the unknown keys of ``options`` and the ``allowed`` ones."""
    bad = set(options) - set(allowed)
    if bad:
        raise ValueError(f"method {name!r} got unknown option(s) {', '.join(sorted(bad))}; allowed: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
