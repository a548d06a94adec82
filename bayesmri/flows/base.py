"""Base distributions of normalising flows: the standard Gaussian and the radial Gaussian.

A base distribution acts on flat latents ``z: (B, n)`` (real). ``log_prob(z)`` returns ``(B,)`` and
``sample(batch, n, generator)`` returns ``(B, n)``.

Radial Gaussian (Denker et al. 2021, eq. 16; Farquhar et al. 2020): a direction ``u/||u||`` uniform on the
sphere and a radius ``|r|``, ``r ~ N(0, 1)``, so that the norm of a sample does not concentrate around
``sqrt(n)`` as it does for an ``n``-dimensional Gaussian::

    ln p(z) = ln( sqrt(2/pi) / S_n ) - (n - 1) ln ||z|| - ||z||^2 / 2,
    S_n = 2 pi^(n/2) / Gamma(n/2)          (area of the unit sphere in R^n)
"""
from __future__ import annotations

import math

import torch

__all__ = ["BaseDistribution", "StandardGaussian", "RadialGaussian", "log_unit_sphere_area", "make_base"]


def log_unit_sphere_area(n: int) -> float:
    """``ln S_n = ln 2 + (n/2) ln pi - lgamma(n/2)``, the log area of the unit sphere in ``R^n``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"dimension n must be a positive integer, got {n!r}")
    return math.log(2.0) + 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n)


def _flat(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
    if z.is_complex() or not z.is_floating_point():
        raise TypeError(f"z must be a real floating tensor, got dtype {z.dtype}")
    if z.ndim < 2:
        raise ValueError(f"z must be batched, shape (B, ...), got {tuple(z.shape)}")
    return z.reshape(z.shape[0], -1)


class BaseDistribution:
    """Interface: ``log_prob(z) -> (B,)`` over all non-batch dims, ``sample(batch, n, generator)``."""

    name = "base"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, batch: int, n: int, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class StandardGaussian(BaseDistribution):
    """``z ~ N(0, I_n)``: ``ln p(z) = -n/2 ln(2 pi) - ||z||^2/2``."""

    name = "gaussian"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z = _flat(z)
        n = z.shape[1]
        return -0.5 * n * math.log(2 * math.pi) - 0.5 * (z * z).sum(dim=1)

    def sample(self, batch: int, n: int, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        return torch.randn(batch, n, generator=generator, device=device, dtype=dtype)


class RadialGaussian(BaseDistribution):
    """The radial Gaussian of Denker et al. eq. 16 (see the module docstring)."""

    name = "radial"

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z = _flat(z)
        n = z.shape[1]
        r2 = (z * z).sum(dim=1)
        # ln ||z|| = ln(r^2)/2; clamp keeps z = 0 finite (it has density +inf only for n > 1 in the limit)
        log_r = 0.5 * torch.log(r2.clamp_min(torch.finfo(z.dtype).tiny))
        const = 0.5 * math.log(2.0 / math.pi) - log_unit_sphere_area(n)
        return const - (n - 1) * log_r - 0.5 * r2

    def sample(self, batch: int, n: int, generator=None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        u = torch.randn(batch, n, generator=generator, device=device, dtype=dtype)
        r = torch.randn(batch, 1, generator=generator, device=device, dtype=dtype)
        return r.abs() * u / torch.linalg.vector_norm(u, dim=1, keepdim=True)


def make_base(name: str) -> BaseDistribution:
    """``"gaussian"`` -> :class:`StandardGaussian`, ``"radial"`` -> :class:`RadialGaussian`."""
    table = {"gaussian": StandardGaussian, "radial": RadialGaussian}
    if name not in table:
        raise ValueError(f"unknown base distribution {name!r}; choose one of {sorted(table)}")
    return table[name]()
