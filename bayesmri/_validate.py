"""Input checks shared by every public entry point.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument and the problem,
so that bad input never surfaces as a traceback from deep inside an FFT or a CG loop.
"""
from __future__ import annotations

import os

import torch

__all__ = [
    "check_complex",
    "check_finite",
    "check_kspace",
    "check_mask",
    "check_trajectory",
    "check_coil_maps",
    "as_generator",
]


def check_complex(x, name: str) -> torch.Tensor:
    """Require a complex torch tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(
            f"{name} must be a complex tensor (complex64/complex128), got dtype {x.dtype}; "
            "convert real/imag channel layouts with torch.view_as_complex first"
        )
    return x


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Require no NaN or Inf entries."""
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf)")
    return x


def check_kspace(y, name: str = "kspace", ndim_min: int = 2) -> torch.Tensor:
    """Require complex, finite k-space with at least ``ndim_min`` dimensions."""
    check_complex(y, name)
    if y.ndim < ndim_min:
        raise ValueError(f"{name} must have at least {ndim_min} dimensions, got shape {tuple(y.shape)}")
    return check_finite(y, name)


def check_mask(mask, name: str = "mask") -> torch.Tensor:
    """Require a real 0/1 mask with at least one sample."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_complex():
        raise TypeError(f"{name} must be real (0/1), got complex dtype {mask.dtype}")
    check_finite(mask, name)
    if not bool((mask != 0).any()):
        raise ValueError(f"{name} has no sampled points (all zeros)")
    return mask


def check_trajectory(traj, name: str = "trajectory") -> torch.Tensor:
    """Require a real ``(..., K, 2)`` trajectory inside [-0.5, 0.5] cycles/pixel."""
    if not isinstance(traj, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(traj).__name__}")
    if traj.is_complex() or not traj.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor, got dtype {traj.dtype}")
    if traj.ndim < 2 or traj.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (..., K, 2), got {tuple(traj.shape)}")
    check_finite(traj, name)
    lo, hi = float(traj.min()), float(traj.max())
    if lo < -0.5 - 1e-6 or hi > 0.5 + 1e-6:
        raise ValueError(
            f"{name} must lie in [-0.5, 0.5] cycles/pixel, got values in [{lo:.4g}, {hi:.4g}]"
        )
    return traj


def check_coil_maps(maps, name: str = "coil maps") -> torch.Tensor:
    """Require complex, finite ``(B, C, H, W)`` coil maps."""
    check_complex(maps, name)
    if maps.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(maps.shape)}")
    return check_finite(maps, name)


def as_generator(seed=None, device=None) -> torch.Generator | None:
    """Turn an int seed into a ``torch.Generator``; pass generators and ``None`` through."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=device if device is not None else "cpu")
    g.manual_seed(int(seed))
    return g


def resolve_device(device: str) -> torch.device:
    """``torch.device`` for ``device``; ``ValueError`` if it is unknown or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    return dev


def check_threads(threads: int) -> int:
    """``threads`` if it is between 1 and the number of CPU cores, else a ``ValueError``.

    More threads than cores makes torch's thread pool fight itself (a 3 s job took 162 s with 10000).
    """
    cores = os.cpu_count() or 1
    if not 1 <= threads <= cores:
        raise ValueError(f"--threads must be between 1 and the {cores} CPU core(s) of this machine, got {threads}")
    return threads


def check_seed(seed: int) -> int:
    """``seed`` if torch can seed a generator with it (and with ``seed + slice``), else a ``ValueError``."""
    if not 0 <= seed < 2**63 - 2**20:
        raise ValueError(f"--seed must be between 0 and 2**63 - 2**20, got {seed}")
    return seed
