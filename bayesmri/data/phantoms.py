"""Procedural CT-like phantoms: random ellipses inside a body ellipse (LoDoPaB / Adler & Oektem style).

``random_ellipse_phantoms(n, size, seed)`` returns ``(n, size, size)`` float32 attenuation images in
``[0, 1]``: a large "body" ellipse of soft-tissue value, a few darker/brighter organ-like ellipses and
small bright "bone/vessel" ellipses, all additive and clipped. Deterministic for a given ``seed``.
"""
from __future__ import annotations

import math

import torch

from .._validate import as_generator

__all__ = ["ellipse_image", "random_ellipse_phantoms"]


def ellipse_image(size: int, ellipses) -> torch.Tensor:
    """Sum of indicator functions ``(size, size)``.

    ``ellipses``: rows ``(value, a, b, x0, y0, angle)`` in normalised coordinates ``[-1, 1]``
    (Shepp-Logan convention: semi-axes ``a, b``, centre ``x0, y0``, rotation ``angle`` in radians).
    """
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an integer >= 2, got {size!r}")
    ax = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) / (size / 2)
    yy, xx = torch.meshgrid(-ax, ax, indexing="ij")
    img = torch.zeros(size, size, dtype=torch.float64)
    for v, a, b, x0, y0, phi in ellipses:
        c, s = math.cos(phi), math.sin(phi)
        u = (xx - x0) * c + (yy - y0) * s
        w = -(xx - x0) * s + (yy - y0) * c
        img += v * (((u / a) ** 2 + (w / b) ** 2) <= 1).double()
    return img.float()


def random_ellipse_phantoms(n: int, size: int = 64, seed=0) -> torch.Tensor:
    """``n`` random phantoms ``(n, size, size)`` float32 in ``[0, 1]`` (see the module docstring)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    g = as_generator(seed)

    def U(lo, hi):
        return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))

    out = torch.empty(n, size, size)
    for i in range(n):
        a, b = U(0.6, 0.9), U(0.5, 0.85)
        ell = [(0.5, a, b, U(-0.05, 0.05), U(-0.05, 0.05), U(-0.3, 0.3))]
        for _ in range(int(torch.randint(3, 7, (), generator=g))):  # organs
            r = math.sqrt(U(0, 0.5))
            t = U(0, 2 * math.pi)
            ell.append((U(-0.3, 0.3), U(0.08, 0.3), U(0.08, 0.3), r * a * math.cos(t), r * b * math.sin(t), U(0, math.pi)))
        for _ in range(int(torch.randint(2, 6, (), generator=g))):  # bones / vessels
            r = math.sqrt(U(0, 0.7))
            t = U(0, 2 * math.pi)
            ell.append((U(0.2, 0.5), U(0.02, 0.08), U(0.02, 0.08), r * a * math.cos(t), r * b * math.sin(t), U(0, math.pi)))
        out[i] = ellipse_image(size, ell).clamp(0, 1)
    return out
