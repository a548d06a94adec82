"""The options of the registered methods, read and checked in one place (``recon --opt/--prior/--list``).

A method's options and their defaults (:func:`method_options`) come from the method itself: the keyword
parameters of its function (``inspect.signature``) and, for the options it takes through ``**options``,
the defaults it was registered with (``register_method(..., options=...)``: the samplers'
``DEFAULTS``/``COMMON_OPTIONS``, PoGMDM-joint's ``METHOD_DEFAULTS``, the tuned ``lam``/``max_iter`` of the
classical methods). Nothing here keeps its own list.

``--opt KEY=VALUE`` values are parsed as bool (``true``/``false``), ``none``, int, float, else a string
(:func:`parse_value`) and checked against the default's type (:func:`check_options`): a bool default takes
a bool, an int default an int, a float default a number, a string default a string (or a number where the
default is ``"auto"``, e.g. ``cg_iter``, ``scale``), a ``None`` default anything. Whether a value is in range
is the method's own check.
"""
from __future__ import annotations

import inspect
import math

__all__ = ["OptionError", "method_options", "parse_value", "parse_opts", "check_options", "recon_options",
           "format_method_list"]

#: The parameters of the method protocol (:mod:`bayesmri.methods`), set by the caller, not options.
CALL_PARAMETERS = frozenset({"sample", "n_samples", "generator", "device", "progress"})


class OptionError(ValueError):
    """A bad ``--opt``/``--prior``: one line that names the method, the key and the accepted keys."""

    #: the CLI prints the whole line (the list of accepted keys may pass its usual 400 characters)
    full_line = True


def method_options(name: str) -> dict:
    """``{option: default}`` of registered method ``name`` (signature keywords, then its registered options)."""
    from .methods import method_info

    info = method_info(name)
    out = {}
    for p in inspect.signature(info.fn).parameters.values():
        if p.name in CALL_PARAMETERS or p.default is p.empty or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        out[p.name] = p.default
    out.update(info.options)
    return out


def parse_value(text: str):
    """``--opt`` value: ``true``/``false`` -> bool, ``none`` -> None, int, finite float, else the string."""
    t = str(text).strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return t
    return v if math.isfinite(v) else t


def _accepted(name: str, opts: dict) -> str:
    return f"accepted (default): {', '.join(f'{k}={v!r}' for k, v in opts.items())}"


def parse_opts(name: str, items) -> dict:
    """``["KEY=VALUE", ...]`` -> ``{key: parsed value}``; a malformed or repeated item is an :class:`OptionError`."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"method {name!r}: --opt needs KEY=VALUE, got {item!r}; {_accepted(name, method_options(name))}")
        if key in out:
            raise OptionError(f"method {name!r}: --opt {key} given twice")
        out[key] = parse_value(value)
    return out


def _type_ok(value, default) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str) or (default == "auto" and isinstance(value, (int, float))
                                          and not isinstance(value, bool))
    return True


def check_options(name: str, options: dict) -> dict:
    """``options`` checked against method ``name``'s (:func:`method_options`); ints given for float options
    become floats. An unknown key or a value of the wrong type is an :class:`OptionError`."""
    known = method_options(name)
    out = {}
    for key, value in options.items():
        if key not in known:
            raise OptionError(f"method {name!r} has no option {key!r}; {_accepted(name, known)}")
        default = known[key]
        if not _type_ok(value, default):
            raise OptionError(f"method {name!r}: option {key}={value!r} should be {type(default).__name__} like its "
                              f"default {default!r}; {_accepted(name, known)}")
        out[key] = float(value) if isinstance(default, float) and isinstance(value, int) else value
    return out


def recon_options(name: str, *, weights=None, prior=None, opts=(), preset: str | None = None) -> dict | None:
    """The keyword options ``recon`` passes to method ``name`` for ``--preset``, ``--weights``, ``--prior`` and ``--opt``.

    ``--preset``: a named option set of the method (``register_method(..., presets=...)``, e.g. ``"calibrated"``),
    under which ``--opt`` overrides single keys; a preset the method lacks is an :class:`OptionError` listing
    its presets. Checked before any compute: ``--prior`` only for a method that takes ``prior`` (the score samplers) and
    only a known prior (:func:`bayesmri.priors.registry.check_prior`); ``--prior``/``--weights`` and the
    same key in ``--opt`` must not both be given. ``None`` when there is nothing to pass."""
    out = {**_preset(name, preset), **parse_opts(name, opts)}
    for flag, key, value in (("--weights", "weights", weights), ("--prior", "prior", prior)):
        if value is None:
            continue
        if key in out:
            raise OptionError(f"method {name!r}: {flag} and --opt {key}=... both given")
        out[key] = str(value)
    known = method_options(name)
    if out.get("prior") is not None and out.get("weights") is not None:
        raise OptionError(f"method {name!r}: give --prior or --weights, not both (both name the prior)")
    if "prior" in out and "prior" not in known:
        from .methods import available_methods

        takes = [m for m in available_methods() if "prior" in method_options(m)]
        raise OptionError(f"method {name!r} has no prior choice; --prior is for {', '.join(takes)}")
    if isinstance(out.get("prior"), str):
        from .priors.registry import check_prior

        try:
            check_prior(out["prior"])
        except ValueError as exc:
            raise OptionError(f"method {name!r}: {exc}") from None
    out = check_options(name, out)
    return out or None


def _preset(name: str, preset: str | None) -> dict:
    """The options of ``preset`` for method ``name`` (``{}`` for ``None``)."""
    from .methods import method_info

    if preset is None:
        return {}
    presets = method_info(name).presets
    if preset not in presets:
        raise OptionError(f"method {name!r} has no preset {preset!r}; its presets: {', '.join(sorted(presets)) or 'none'}")
    return dict(presets[preset])


def format_method_list() -> str:
    """``recon --list``: the methods, the score priors, and each method's options with their defaults."""
    from .methods import available_methods, method_info
    from .priors.registry import available_priors

    lines = ["methods (--method NAME; options: --opt KEY=VALUE):"]
    for m in available_methods():
        info = method_info(m)
        kind = "samples" if info.stochastic else "deterministic"
        presets = f"; presets: {', '.join(info.presets)}" if info.presets else ""
        lines.append(f"  {m}  [{kind}]  {info.description}  (maps: {', '.join(info.maps)}{presets})")
        opts = method_options(m)
        lines.append("      " + (", ".join(f"{k}={v!r}" for k, v in opts.items()) if opts else "(no options)"))
    takes = [m for m in available_methods() if "prior" in method_options(m)]
    lines.append(f"score priors (--prior NAME, or a .safetensors path; for {', '.join(takes)}):")
    lines.append("  " + ", ".join(available_priors()))
    return "\n".join(lines)
