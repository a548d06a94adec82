"""Save and load model weights as ``safetensors`` + a JSON config (no pickles, no network).

File pair ``<stem>.safetensors`` / ``<stem>.json``; the JSON holds::

    {"format_version": 1, "model_type": "score_unet", "config": {constructor kwargs},
     "training": {...}, ...extra metadata (e.g. "prior": {"sigma_min": .., "sigma_max": ..})}

``load_model("score_small64")`` finds shipped weights in ``bayesmri/weights/``; any other argument is a
path to a ``.safetensors`` file, a ``.json`` file or their common stem.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_write


__all__ = ["MODEL_TYPES", "register_model_type", "save_model", "load_model", "read_config", "weights_dir", "resolve_weights"]

# model_type -> "module:attribute" of a class whose constructor takes the JSON "config" as kwargs.
MODEL_TYPES: dict[str, str] = {
    "score_unet": "bayesmri.priors.score_unet:ScoreUNet",
    "pogmdm": "bayesmri.priors.pogmdm:PoGMDM",
    "cnf": "bayesmri.flows.cnf:ConditionalNF",
}


def register_model_type(name: str, target: str) -> None:
    """Register ``name`` -> ``"package.module:Class"`` so that :func:`load_model` can rebuild it."""
    if ":" not in target:
        raise ValueError(f"target must look like 'package.module:Class', got {target!r}")
    MODEL_TYPES[name] = target


def weights_dir() -> Path:
    """The folder of weights shipped with the package."""
    return Path(__file__).resolve().parent.parent / "weights"


def save_model(weights, stem, *, model_type: str, config: dict, training: dict | None = None,
               metadata: dict | None = None, dtype: torch.dtype | None = None, keep_float32=()) -> Path:
    """Write ``stem.safetensors`` and ``stem.json`` atomically; returns the ``.safetensors`` path.

    Parameters
    ----------
    weights : dict of tensors or nn.Module
        State dict (e.g. EMA weights) to store.
    stem : path
        Output path without suffix (a ``.safetensors``/``.json`` suffix is stripped).
    model_type, config :
        Registry name and constructor kwargs that rebuild the model.
    dtype : torch.dtype, optional
        Cast floating tensors (e.g. ``torch.float16`` for small shipped files); loading casts back to the
        model's dtype.
    keep_float32 : collection of str
        Names never cast (e.g. fixed Fourier frequencies, whose rounding would shift phases).
    """
    from safetensors.torch import save

    if isinstance(weights, nn.Module):
        weights = weights.state_dict()
    stem = Path(stem)
    if stem.suffix in (".safetensors", ".json"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in weights.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point() and k not in keep_float32:
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # safetensors refuses shared storage
    meta = {"format_version": 1, "model_type": model_type, "config": config}
    if training:
        meta["training"] = training
    for k, v in (metadata or {}).items():
        meta.setdefault(k, v)
    text = json.dumps(meta, indent=2, sort_keys=False)  # fails before any file is touched if not JSON-able
    st_path = stem.with_suffix(".safetensors")
    atomic_write(st_path, save(tensors, metadata={"model_type": model_type}))
    atomic_write(stem.with_suffix(".json"), text + "\n")
    return st_path


def resolve_weights(name_or_path) -> tuple[Path, Path]:
    """``(safetensors, json)`` paths for a shipped name (``"score_small64"``) or a user path/stem."""
    p = Path(name_or_path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    candidates = [p]
    if not p.is_absolute() and len(p.parts) == 1:
        candidates.append(weights_dir() / p)
    for c in candidates:
        st, js = c.with_suffix(".safetensors"), c.with_suffix(".json")
        if st.is_file() and js.is_file():
            return st, js
    shipped = sorted(q.stem for q in weights_dir().glob("*.safetensors")) if weights_dir().is_dir() else []
    raise FileNotFoundError(
        f"no weights {name_or_path!r}: need both .safetensors and .json (shipped: {shipped or 'none'})"
    )


def read_config(name_or_path) -> dict:
    """The JSON config of a weights file pair."""
    _, js = resolve_weights(name_or_path)
    with open(js) as f:
        return json.load(f)


def load_model(name_or_path, device="cpu", dtype: torch.dtype = torch.float32, eval: bool = True) -> nn.Module:
    """Rebuild a model from its JSON config and load its safetensors weights (strictly, offline).

    The returned module carries the full JSON as ``model.meta`` (e.g. ``model.meta["prior"]["sigma_max"]``).
    """
    from safetensors.torch import load_file

    st, js = resolve_weights(name_or_path)
    try:
        with open(js) as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{js}: not a valid JSON model config ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{js}: the model config must be a JSON object, got {type(meta).__name__}")
    mtype = meta.get("model_type")
    if mtype not in MODEL_TYPES:
        raise ValueError(f"{js}: unknown model_type {mtype!r}; known: {sorted(MODEL_TYPES)}")
    mod_name, cls_name = MODEL_TYPES[mtype].split(":")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{js}: model_type {mtype!r} needs {MODEL_TYPES[mtype]}, which is not available: {exc}") from exc
    config = meta.get("config", {})
    if not isinstance(config, dict):
        raise ValueError(f"{js}: 'config' must be a JSON object of constructor arguments")
    try:
        model = cls(**config)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{js}: config does not build a {mtype} model ({exc})") from None
    try:
        state = load_file(str(st), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for truncated/corrupt files
        raise ValueError(f"{st}: truncated or corrupt safetensors file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    ref = model.state_dict()
    missing, unexpected = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
    shapes = [k for k in set(ref) & set(state) if tuple(ref[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{st}: weights do not match the {mtype} config in {js.name} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected, {len(shapes)} of another shape"
                         f", e.g. {(missing + unexpected + sorted(shapes))[0]})")
    state = {k: (v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    model.meta = meta
    model = model.to(device=device, dtype=dtype)
    return model.eval() if eval else model
