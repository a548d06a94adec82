"""Centred orthonormal 2-D Fourier transforms over the last two axes.

``F = fftshift(fft2(ifftshift(x), norm="ortho"))``: DC at index ``(H//2, W//2)``, unitary, so that
``A^H A`` of a 0/1-mask operator is a projection (Chung & Ye, Prop. 1).
"""
from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c"]

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal FFT of a complex tensor ``(..., H, W)``."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse FFT of a complex tensor ``(..., H, W)``."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)
