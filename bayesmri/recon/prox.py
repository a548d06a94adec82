"""Proximal operators, finite differences and an orthogonal wavelet transform for complex images.

Everything acts on native complex tensors, batched over the leading axis:

- images ``x``: ``(B, H, W)`` complex;
- image gradients ``g = D x``: ``(B, 2, H, W)`` complex (axis 1 = vertical, horizontal difference).

The finite differences are forward differences with a Neumann boundary (the last difference along
each axis is zero), so ``D^H = -div`` exactly and ``||D||^2 <= 8``.

The wavelet transform is ptwt's *boundary-wavelet* matrix transform (``ptwt.MatrixWavedec2``):
unlike padded ("reflect", "zero") modes it is orthogonal, ``W^T W = W W^T = I`` for image sides
divisible by ``2**level``, so the prox of ``lam ||W x||_1`` is exactly ``W^T soft(W x, lam)``. It is
separable per level (``A_H X A_W^T`` on the current approximation band, ``A_n`` the one-level
``n x n`` analysis matrix): ptwt's matrices are taken once and applied as dense matrix products, which
on CPU beat ptwt's sparse products and any banded (strided-filter) scheme up to at least 320 px per
side (docs/speed.md); the coefficients are ptwt's to float round-off. A complex image is transformed as ``W(Re x) + i W(Im x)`` (``W`` is real, so
this is the complex-linear extension) and thresholded on the complex magnitude.
"""
from __future__ import annotations

import warnings

import torch

from .._validate import check_complex

__all__ = [
    "soft_threshold",
    "group_soft_threshold",
    "project_l2_ball",
    "finite_difference",
    "finite_difference_adjoint",
    "finite_difference_normal",
    "tv_norm",
    "WaveletTransform",
]


def soft_threshold(x: torch.Tensor, thresh) -> torch.Tensor:
    """Complex soft-thresholding ``x * max(0, 1 - t / |x|)``: the prox of ``t |x|`` (entrywise).

    Parameters
    ----------
    x : Tensor, real or complex, any shape
    thresh : float or Tensor broadcasting against ``x``, >= 0

    Returns
    -------
    Tensor shaped like ``x``.
    """
    mag = x.abs()
    scale = torch.clamp(1.0 - thresh / mag.clamp_min(torch.finfo(mag.dtype).tiny), min=0.0)
    return x * scale


def group_soft_threshold(g: torch.Tensor, thresh, dim: int = 1) -> torch.Tensor:
    """Prox of ``t sum_pixels ||g_pixel||_2`` where a group is the slice along ``dim``.

    For isotropic TV, ``g = D x`` of shape ``(B, 2, H, W)`` and the group of a pixel is its complex
    gradient vector (2 complex = 4 real numbers): ``g * max(0, 1 - t / ||g||)``.
    """
    norm = torch.sqrt((g.abs() ** 2).sum(dim=dim, keepdim=True))
    scale = torch.clamp(1.0 - thresh / norm.clamp_min(torch.finfo(norm.dtype).tiny), min=0.0)
    return g * scale


def project_l2_ball(g: torch.Tensor, radius, dim: int = 1) -> torch.Tensor:
    """Project each group (slice along ``dim``) onto the l2 ball of ``radius``.

    This is the prox of the convex conjugate of ``radius * ||.||_{2,1}``; with
    :func:`group_soft_threshold` it satisfies Moreau's identity
    ``prox_{t||.||}(v) + proj_{||.|| <= t}(v) = v``.
    """
    norm = torch.sqrt((g.abs() ** 2).sum(dim=dim, keepdim=True))
    return g / torch.clamp(norm / radius, min=1.0)


def finite_difference(x: torch.Tensor) -> torch.Tensor:
    """Forward differences ``D x`` with Neumann boundary: ``(B, H, W) -> (B, 2, H, W)``."""
    g = x.new_zeros((x.shape[0], 2, *x.shape[-2:]))
    g[:, 0, :-1, :] = x[:, 1:, :] - x[:, :-1, :]
    g[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    return g


def finite_difference_adjoint(g: torch.Tensor) -> torch.Tensor:
    """``D^H g`` (= minus the divergence), the exact adjoint of :func:`finite_difference`."""
    gv, gh = g[:, 0], g[:, 1]
    out = torch.zeros_like(gv)
    out[:, :-1, :] -= gv[:, :-1, :]
    out[:, 1:, :] += gv[:, :-1, :]
    out[:, :, :-1] -= gh[:, :, :-1]
    out[:, :, 1:] += gh[:, :, :-1]
    return out


def finite_difference_normal(x: torch.Tensor) -> torch.Tensor:
    """``D^H D x`` (the Neumann Laplacian, negated) without forming ``D x``: ``(B, H, W) -> (B, H, W)``."""
    dv = x[:, 1:, :] - x[:, :-1, :]
    dh = x[:, :, 1:] - x[:, :, :-1]
    out = torch.zeros_like(x)
    out[:, :-1, :] -= dv
    out[:, 1:, :] += dv
    out[:, :, :-1] -= dh
    out[:, :, 1:] += dh
    return out


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """Isotropic complex total variation ``sum_pixels sqrt(|D_v x|^2 + |D_h x|^2)``, per batch entry ``(B,)``."""
    g = finite_difference(x)
    return torch.sqrt((g.abs() ** 2).sum(1)).flatten(1).sum(-1)


def _max_level(H: int, W: int, filt_len: int) -> int:
    """Deepest level with both sides divisible by ``2**level`` (orthogonality) and the coarsest band
    at least one filter long (ptwt's boundary wavelets need that many samples)."""
    level = 0
    h, w = H, W
    while h % 2 == 0 and w % 2 == 0 and h // 2 >= filt_len and w // 2 >= filt_len:
        h, w = h // 2, w // 2
        level += 1
    return level


def _analysis_matrix(wavelet: str, n: int) -> torch.Tensor:
    """ptwt's one-level boundary-wavelet analysis matrix for length ``n`` (float64, orthogonal)."""
    import ptwt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ptwt's sparse-tensor beta notices
        c = ptwt.MatrixWavedec(wavelet, level=1)(torch.eye(n, dtype=torch.float64))
    return torch.cat([c[0], c[1]], -1).T.contiguous()


class WaveletTransform:
    """Orthogonal 2-D wavelet transform of complex ``(B, H, W)`` images (ptwt boundary wavelets).

    Parameters
    ----------
    img_shape : (H, W)
    wavelet : str
        Any orthogonal PyWavelets name (``"haar"``, ``"db4"``, ``"sym8"``, ...).
    level : int, optional
        Decomposition depth; by default the deepest level for which the transform is orthogonal
        (sides divisible by ``2**level``) and the coarsest band is at least one filter long.

    Notes
    -----
    Coefficients are returned as ptwt's nested list ``[approx, (H, V, D), ...]`` with complex
    tensors (coarsest level first), equal to ``ptwt.MatrixWavedec2``'s. :meth:`forward_packed` /
    :meth:`inverse_packed` work on the packed (Mallat) layout instead: one ``(B, H, W)`` tensor with
    the approximation in the top-left ``H / 2**level x W / 2**level`` block. Everything is
    differentiable and runs on whatever device the input is on.
    """

    def __init__(self, img_shape: tuple[int, int], wavelet: str = "db4", level: int | None = None):
        try:
            import ptwt  # noqa: F401
            import pywt
        except ImportError as exc:  # pragma: no cover - dependency message
            raise ImportError("l1-wavelet reconstruction needs 'ptwt' (pip install ptwt)") from exc
        H, W = int(img_shape[0]), int(img_shape[1])
        try:
            wav = pywt.Wavelet(wavelet)
        except ValueError as exc:
            raise ValueError(f"wavelet {wavelet!r} is not a PyWavelets wavelet name") from exc
        if not wav.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal; use e.g. 'haar', 'db4', 'sym8'")
        max_level = _max_level(H, W, wav.dec_len)
        if level is None:
            level = max_level
        if not isinstance(level, int) or level < 1:
            raise ValueError(
                f"level must be a positive int, got {level!r}"
                + (f" (image {H}x{W} is too small/odd for {wavelet!r})" if max_level < 1 else "")
            )
        if level > max_level:
            raise ValueError(
                f"level={level} is too deep for a {H}x{W} image with {wavelet!r}: the transform is only "
                f"orthogonal up to level {max_level} (sides divisible by 2**level, coarsest band >= "
                f"{wav.dec_len} samples)"
            )
        self.img_shape = (H, W)
        self.wavelet = wavelet
        self.level = level
        mats = {n: _analysis_matrix(wavelet, n) for n in {H >> j for j in range(level)} | {W >> j for j in range(level)}}
        self._mats64 = [(mats[H >> j], mats[W >> j]) for j in range(level)]
        self._mats_cache: dict = {}
        detail = torch.ones(H, W, dtype=torch.bool)
        detail[: H >> level, : W >> level] = False
        self._detail = detail

    def _check(self, x: torch.Tensor) -> None:
        check_complex(x, "image")
        if x.ndim != 3 or tuple(x.shape[-2:]) != self.img_shape:
            raise ValueError(f"image must have shape (B, {self.img_shape[0]}, {self.img_shape[1]}), got {tuple(x.shape)}")

    def _mats(self, dtype, device):
        key = (dtype, device)
        if key not in self._mats_cache:
            self._mats_cache[key] = [(ah.to(device, dtype), aw.to(device, dtype)) for ah, aw in self._mats64]
        return self._mats_cache[key]

    def _packed_real(self, r: torch.Tensor) -> torch.Tensor:
        """Multi-level analysis of real ``(N, H, W)`` into the packed layout."""
        H, W = self.img_shape
        mats = self._mats(r.dtype, r.device)
        out = mats[0][0] @ r @ mats[0][1].T
        for j in range(1, self.level):
            ah, aw = mats[j]
            h, w = H >> j, W >> j
            out[:, :h, :w] = ah @ out[:, :h, :w] @ aw.T
        return out

    def _unpacked_real(self, c: torch.Tensor) -> torch.Tensor:
        H, W = self.img_shape
        mats = self._mats(c.dtype, c.device)
        out = c.clone() if self.level > 1 else c
        for j in reversed(range(1, self.level)):
            ah, aw = mats[j]
            h, w = H >> j, W >> j
            out[:, :h, :w] = ah.T @ out[:, :h, :w] @ aw
        return mats[0][0].T @ out @ mats[0][1]

    def forward_packed(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` of complex ``x: (B, H, W)`` in the packed (Mallat) layout, complex ``(B, H, W)``."""
        self._check(x)
        B = x.shape[0]
        c = self._packed_real(torch.cat([x.real, x.imag], 0))
        return torch.complex(c[:B], c[B:])

    def inverse_packed(self, c: torch.Tensor) -> torch.Tensor:
        """``W^T c`` for packed coefficients ``c: (B, H, W)`` (complex): the image ``(B, H, W)``."""
        self._check(c)
        B = c.shape[0]
        r = self._unpacked_real(torch.cat([c.real, c.imag], 0))
        return torch.complex(r[:B], r[B:])

    def forward(self, x: torch.Tensor) -> list:
        """``W x`` for complex ``x: (B, H, W)``: list ``[approx, (H, V, D), ...]`` of complex tensors."""
        c = self.forward_packed(x)
        H, W = self.img_shape
        out = [c[:, : H >> self.level, : W >> self.level]]
        for j in reversed(range(self.level)):
            h, w = H >> (j + 1), W >> (j + 1)
            out.append((c[:, :h, w:2 * w], c[:, h:2 * h, :w], c[:, h:2 * h, w:2 * w]))
        return out

    def inverse(self, coeffs: list) -> torch.Tensor:
        """``W^T c`` (= ``W^{-1} c``): complex image ``(B, H, W)``."""
        H, W = self.img_shape
        a = coeffs[0]
        c = a.new_zeros((a.shape[0], H, W))
        c[:, : H >> self.level, : W >> self.level] = a
        for j, det in zip(reversed(range(self.level)), coeffs[1:]):
            h, w = H >> (j + 1), W >> (j + 1)
            c[:, :h, w:2 * w], c[:, h:2 * h, :w], c[:, h:2 * h, w:2 * w] = det
        return self.inverse_packed(c)

    def detail_l1(self, x: torch.Tensor) -> torch.Tensor:
        """``sum |detail coefficients|`` of ``W x`` per batch entry ``(B,)`` (approximation excluded)."""
        c = self.forward_packed(x)
        return (c.abs() * self._detail.to(c.device)).flatten(1).sum(-1)

    def prox_l1(self, x: torch.Tensor, thresh, return_l1: bool = False):
        """Prox of ``thresh * ||detail(W x)||_1``: ``W^T soft(W x)`` leaving the coarsest band alone.

        Exact because ``W`` is orthogonal (see the module notes). With ``return_l1`` also the l1 norm
        of the thresholded detail coefficients, per batch entry (free here, ``W`` being orthogonal).
        """
        c = self.forward_packed(x)
        detail = self._detail.to(c.device)
        c = soft_threshold(c, detail * thresh)
        out = self.inverse_packed(c)
        if return_l1:
            return out, (c.abs() * detail).flatten(1).sum(-1)
        return out
