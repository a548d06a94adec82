"""Cartesian MRI forward models: single-coil ``P F``, multi-coil SENSE ``P F S``, and the CNF paper's
coil-image operator ``blkdiag(F^H P^T P F)`` (Wen et al., eq. 3).

Shapes (all complex64 unless stated):

- image ``x``: ``(B, H, W)``
- coil images / coil k-space ``y``: ``(B, C, H, W)``; k-space keeps the full grid, zeros where the
  mask is 0 (the fastMRI convention), so ``A^H A`` is a projection for unit-norm maps.
- mask: real 0/1, any shape that broadcasts to ``(B, C, H, W)``; ``(W,)`` means 1-D phase-encode
  undersampling along the last axis, ``(H, W)`` a 2-D pattern.
- coil maps ``S``: ``(B, C, H, W)``, ``sum_c |S_c|^2 = 1`` inside the object.

Operators broadcast over the batch: maps with ``B = 1`` serve ``P`` chains ``x: (P, H, W)``.
"""
from __future__ import annotations

import torch

from .._validate import check_coil_maps, check_complex, check_mask
from .fft import fft2c, ifft2c
from .linop import LinearOperator

__all__ = ["as_mask4d", "SingleCoilMRI", "MultiCoilMRI", "CoilImageMRI"]


def as_mask4d(mask: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Reshape a mask of shape ``(W,)``, ``(H, W)``, ``(B, H, W)`` or ``(B, C|1, H, W)`` to 4-D.

    Raises
    ------
    ValueError
        If the mask is empty or does not broadcast against an ``H x W`` grid.
    """
    check_mask(mask)
    if mask.ndim == 1:
        m = mask.reshape(1, 1, 1, -1)
    elif mask.ndim == 2:
        m = mask.reshape(1, 1, *mask.shape)
    elif mask.ndim == 3:
        m = mask.unsqueeze(1)
    elif mask.ndim == 4:
        m = mask
    else:
        raise ValueError(f"mask must have 1 to 4 dimensions, got shape {tuple(mask.shape)}")
    if m.shape[-2] not in (1, H) or m.shape[-1] not in (1, W):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to an image grid {H}x{W}")
    return m.to(torch.float32)


def _check_image(x: torch.Tensor, H: int, W: int, name: str = "image") -> None:
    check_complex(x, name)
    if x.ndim != 3 or x.shape[-2:] != (H, W):
        raise ValueError(f"{name} must have shape (B, {H}, {W}), got {tuple(x.shape)}")


def _check_coil_tensor(y: torch.Tensor, C: int, H: int, W: int, name: str) -> None:
    check_complex(y, name)
    if y.ndim != 4 or y.shape[-3:] != (C, H, W):
        raise ValueError(f"{name} must have shape (B, {C}, {H}, {W}), got {tuple(y.shape)}")


class SingleCoilMRI(LinearOperator):
    """Single-coil Cartesian MRI ``A x = P F x``.

    Parameters
    ----------
    mask : Tensor, real 0/1, broadcasting to ``(B, H, W)``
    img_shape : (H, W)
    """

    def __init__(self, mask: torch.Tensor, img_shape: tuple[int, int]):
        H, W = img_shape
        m = as_mask4d(mask, H, W)[:, 0]  # (B|1, H|1, W|1)
        self.mask = m
        self.batch_size = m.shape[0]
        self.domain_shape = (H, W)
        self.range_shape = (H, W)
        self.device = m.device

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, *self.domain_shape)
        return self.mask * fft2c(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_image(y, *self.range_shape, name="k-space")
        return ifft2c(self.mask * y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return ifft2c(self.mask * fft2c(x))

    def A_dagger(self, y, x0=None, lam=0.0, max_iter=50, tol=1e-6):
        # The normal operator is diagonal in k-space: solve exactly instead of by CG.
        _check_image(y, *self.range_shape, name="k-space")
        return ifft2c(self.mask * y / (self.mask + lam).clamp_min(1e-12))


class MultiCoilMRI(LinearOperator):
    """Multi-coil Cartesian SENSE ``A x = P F (S x)``.

    Parameters
    ----------
    coil_maps : Tensor ``(B, C, H, W)`` complex
        Sensitivities (ESPIRiT-normalised, ``sum_c |S_c|^2 = 1`` in the object).
    mask : Tensor, real 0/1
        Broadcasts to ``(B, C, H, W)``.
    """

    def __init__(self, coil_maps: torch.Tensor, mask: torch.Tensor):
        check_coil_maps(coil_maps)
        B, C, H, W = coil_maps.shape
        mask4 = as_mask4d(mask, H, W).to(coil_maps.device)
        if mask4.shape[0] not in (1, B):
            raise ValueError(
                f"mask batch {mask4.shape[0]} does not match coil-map batch {B}"
            )
        if mask4.shape[1] not in (1, C):
            raise ValueError(f"mask has {mask4.shape[1]} coils but coil maps have {C}")
        self.batch_size = B
        self.ncoils = C
        self.domain_shape = (H, W)
        self.range_shape = (C, H, W)
        self.dtype = coil_maps.dtype
        self.device = coil_maps.device
        self._maps = coil_maps
        self._mask = mask4
        self._prepare()

    # Speed (docs/speed.md): for even H, W the centring shifts equal a checkerboard modulation,
    # fft2c(z) = s C fft2(C z) with C[i, j] = (-1)^(i+j), s = (-1)^(H/2 + W/2). C is folded into
    # precomputed maps (C S), their conjugate (materialised: a lazily conjugated operand costs 2x in
    # the multiply) and the mask (s C M), so A costs one FFT, one multiply into a new tensor and one
    # in-place multiply. A 1-D column mask needs no FFT along H in the normal operator (F_H^H F_H = I).
    @property
    def maps(self) -> torch.Tensor:
        return self._maps

    @maps.setter
    def maps(self, value: torch.Tensor) -> None:
        self._maps = value
        self._prepare()

    @property
    def mask(self) -> torch.Tensor:
        return self._mask

    @mask.setter
    def mask(self, value: torch.Tensor) -> None:
        self._mask = value
        self._prepare()

    def _prepare(self) -> None:
        H, W = self.domain_shape
        self._even = H % 2 == 0 and W % 2 == 0
        self._mask_sq = self._mask * self._mask
        self._column_mask = self._mask.shape[-2] == 1
        if self._even:
            dev = self._maps.device
            i = torch.arange(H, device=dev).reshape(H, 1)
            j = torch.arange(W, device=dev).reshape(1, W)
            sign = -1.0 if (H // 2 + W // 2) % 2 else 1.0
            cb = 1.0 - 2.0 * ((i + j) % 2).to(self._mask.dtype)  # (-1)^(i+j)
            self._maps_mod = self._maps * cb.to(self._maps.dtype)
            self._mask_mod = self._mask * (sign * cb)
            self._maps_mod_conj = self._maps_mod.conj().resolve_conj()
        else:
            self._maps_conj = self._maps.conj().resolve_conj()

    def to(self, device) -> "MultiCoilMRI":
        super().to(device)
        self._prepare()
        return self

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, *self.domain_shape)
        if self._even:
            # The mask broadcasts into the FFT's output (checked in __init__): multiply in place.
            return torch.fft.fft2(self._maps_mod * x.unsqueeze(-3), norm="ortho").mul_(self._mask_mod)
        return fft2c(self.maps * x.unsqueeze(-3)).mul_(self.mask)

    def _coil_combine(self, k: torch.Tensor, maps_conj: torch.Tensor) -> torch.Tensor:
        """``sum_c conj(S_c) k_c``, multiplying in place when ``k`` (a fresh tensor) has the full shape."""
        if k.shape == torch.broadcast_shapes(k.shape, maps_conj.shape):
            return k.mul_(maps_conj).sum(-3)
        return (maps_conj * k).sum(-3)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        _check_coil_tensor(y, self.ncoils, *self.domain_shape, name="k-space")
        if self._even:
            return self._coil_combine(torch.fft.ifft2(self._mask_mod * y, norm="ortho"), self._maps_mod_conj)
        return self._coil_combine(ifft2c(self.mask * y), self._maps_conj)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        if self._even:
            z = self._maps_mod * x.unsqueeze(-3)
            if self._column_mask:
                k = torch.fft.fft(z, dim=-1, norm="ortho").mul_(self._mask_sq)
                k = torch.fft.ifft(k, dim=-1, norm="ortho")
            else:
                k = torch.fft.ifft2(torch.fft.fft2(z, norm="ortho").mul_(self._mask_sq), norm="ortho")
            return self._coil_combine(k, self._maps_mod_conj)
        return self._coil_combine(ifft2c(fft2c(self.maps * x.unsqueeze(-3)).mul_(self._mask_sq)), self._maps_conj)


class CoilImageMRI(LinearOperator):
    """The CNF paper's coil-image operator ``A = blkdiag(F^H P^T P F)`` (Wen et al., eq. 3).

    Acts on coil images ``(B, C, H, W)`` and returns the zero-filled coil images of their masked
    k-space. ``A`` is an orthogonal projection, so ``A^+ = A`` (eq. 17-18): the measured part of
    ``x`` is ``A x`` and its nullspace part is ``(I - A^+ A) x = x - A x``.
    """

    def __init__(self, mask: torch.Tensor, img_shape: tuple[int, int], ncoils: int):
        H, W = img_shape
        self.mask = as_mask4d(mask, H, W)
        self.batch_size = self.mask.shape[0]
        self.ncoils = ncoils
        self.domain_shape = (ncoils, H, W)
        self.range_shape = (ncoils, H, W)
        self.device = self.mask.device

    def A(self, x: torch.Tensor) -> torch.Tensor:
        _check_coil_tensor(x, self.ncoils, *self.domain_shape[1:], name="coil images")
        return ifft2c(self.mask * fft2c(x))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.A(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def A_dagger(self, y, x0=None, lam=0.0, max_iter=50, tol=1e-6):
        """``A^+ y``; ``A`` is a projection so this is ``A y / (1 + lam)``."""
        return self.A(y) / (1.0 + lam)

    def measured_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``A^+ A x``: the part of ``x`` that the measurement sees."""
        return self.A(x)

    def nullspace_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``(I - A^+ A) x`` (Wen eqs. 14, 16-17): the part of ``x`` the measurement cannot see."""
        return x - self.A(x)
