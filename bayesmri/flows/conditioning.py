"""Conditioning of the cINN (Denker et al. 2021, sec. 2.9): model-based inversion layer, then a CNN.

Inversion layers ``H: y -> image`` (no trainable parameters; real ``(B, C_c, H, W)`` out):

* :class:`ZeroFilledInversion` (single-coil MRI): ``F^H P^T y`` as ``[re, im]`` channels.
* :class:`FBPInversion` (parallel-beam CT): filtered back-projection, 1 channel.
* :class:`MatrixInversion` (compressed sensing, ``y = A x + e`` with ``A`` dense ``(m, n)``): a fixed
  linear map ``R y``; :func:`pseudo_inverse_matrix` gives ``R = A^+`` and :func:`gradient_tikhonov_matrix`
  ``R = (A^T A + lam D^T D)^{-1} A^T`` with ``D`` the forward differences (the "TV-regularised"
  inversion of GUIDE sec. 3; quadratic, so ``R`` is precomputed once).

Conditioning networks, input the inversion image, output one feature map per resolution the flow uses:

* :class:`ResNetConditioner` (multi-scale cINN): stem, then per scale a residual block whose output is
  that scale's feature and a stride-2 convolution to the next; a pooled vector for the fully connected
  part; and a 1x1 image head ``H_theta(y)`` for the conditional loss (eq. 20).
* :class:`UNetConditioner` (iUNet): the fastMRI UNet of :mod:`bayesmri.flows.unet`; its output image is
  ``H_theta(y)`` and its last feature map, average-pooled, feeds one small conv head per scale.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..physics.cartesian import SingleCoilMRI
from ..physics.phase import lowres_phase, remove_lowres_phase  # noqa: F401 (re-exported)
from ..physics.radon import ParallelBeamRadon
from .unet import UNet

__all__ = [
    "ZeroFilledInversion",
    "lowres_phase",
    "remove_lowres_phase",
    "FBPInversion",
    "MatrixInversion",
    "pseudo_inverse_matrix",
    "gradient_tikhonov_matrix",
    "ResNetConditioner",
    "UNetConditioner",
]


class ZeroFilledInversion(nn.Module):
    """``y (B, H, W) complex k-space -> (B, 2, H, W)`` = ``[re, im]`` of ``F^H (mask * y)``."""

    channels = 2

    def __init__(self, mask: torch.Tensor, img_shape: tuple[int, int]):
        super().__init__()
        self.op = SingleCoilMRI(mask, img_shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not y.is_complex():
            raise TypeError(f"k-space must be complex, got {y.dtype}")
        x = self.op.A_adjoint(y)
        return torch.stack([x.real, x.imag], 1)


class FBPInversion(nn.Module):
    """``sinogram (B, n_angles, n_det) -> FBP image (B, 1, N, N)`` with a ramp (or Hann) filter."""

    channels = 1

    def __init__(self, radon: ParallelBeamRadon, window: str = "hann"):
        super().__init__()
        self.radon = radon
        self.window = window

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.radon.fbp(y, self.window)[:, None]


class MatrixInversion(nn.Module):
    """``y (B, m) -> (R y) (B, 1, H, W)`` for a fixed ``R: (H W, m)``."""

    channels = 1

    def __init__(self, matrix: torch.Tensor, img_shape: tuple[int, int]):
        super().__init__()
        if matrix.ndim != 2 or matrix.shape[0] != img_shape[0] * img_shape[1]:
            raise ValueError(f"matrix must be (H*W, m) = ({img_shape[0] * img_shape[1]}, m), got {tuple(matrix.shape)}")
        self.register_buffer("matrix", matrix.float())
        self.img_shape = tuple(img_shape)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 2 or y.shape[1] != self.matrix.shape[1]:
            raise ValueError(f"y must have shape (B, {self.matrix.shape[1]}), got {tuple(y.shape)}")
        return (y @ self.matrix.T).reshape(y.shape[0], 1, *self.img_shape)


def pseudo_inverse_matrix(A: torch.Tensor) -> torch.Tensor:
    """Moore-Penrose pseudo-inverse ``A^+ (n, m)`` (float64 SVD)."""
    return torch.linalg.pinv(A.double()).float()


def _difference_matrix(H: int, W: int) -> torch.Tensor:
    """Forward differences ``D: (2 H W, H W)`` (vertical and horizontal, zero at the last row/column)."""
    n = H * W
    idx = torch.arange(n).reshape(H, W)
    rows = []
    for a, b in ((idx[:-1, :], idx[1:, :]), (idx[:, :-1], idx[:, 1:])):
        Dm = torch.zeros(a.numel(), n, dtype=torch.float64)
        r = torch.arange(a.numel())
        Dm[r, a.reshape(-1)] = -1.0
        Dm[r, b.reshape(-1)] = 1.0
        rows.append(Dm)
    return torch.cat(rows, 0)


def gradient_tikhonov_matrix(A: torch.Tensor, lam: float, img_shape: tuple[int, int]) -> torch.Tensor:
    """``R = (A^T A + lam D^T D)^{-1} A^T`` ``(n, m)``, ``D`` forward differences on ``img_shape``."""
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    A = A.double()
    D = _difference_matrix(*img_shape)
    M = A.T @ A + lam * D.T @ D + 1e-10 * torch.eye(A.shape[1], dtype=torch.float64)
    return torch.linalg.solve(M, A.T).float()


class _ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x):
        return F.leaky_relu(x + self.body(x), 0.2)


class ResNetConditioner(nn.Module):
    """Multi-scale conditioning features.

    ``forward(c (B, in_ch, H, W))`` returns ``(feats, vec, image)``: ``feats[s]`` of shape
    ``(B, channels[s], H / 2^s, W / 2^s)`` for ``s = 0..n_scales-1``, ``vec (B, vec_dim)``, and the image
    estimate ``(B, 1, H, W)`` used by the conditional loss.
    """

    def __init__(self, in_ch: int, channels: list[int], vec_dim: int = 64):
        super().__init__()
        self.channels = list(channels)
        self.stem = nn.Sequential(nn.Conv2d(in_ch, channels[0], 3, padding=1), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList([_ResBlock(c) for c in channels])
        self.down = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(0.2))
             for i in range(len(channels) - 1)]
        )
        self.vec = nn.Linear(channels[-1], vec_dim) if vec_dim else None
        self.vec_dim = vec_dim
        self.image_head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, c):
        h = self.stem(c)
        feats = []
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            feats.append(h)
            if i < len(self.down):
                h = self.down[i](h)
        vec = self.vec(h.mean(dim=(2, 3))) if self.vec is not None else None
        return feats, vec, self.image_head(feats[0])


class UNetConditioner(nn.Module):
    """fastMRI UNet on the inversion image; features per scale from its last feature map.

    ``forward(c)`` returns ``(feats, None, image)`` with ``feats[s]: (B, feat_ch, H/2^s, W/2^s)``.
    """

    def __init__(self, in_ch: int, n_scales: int, chans: int = 16, num_pools: int = 3, feat_ch: int = 16):
        super().__init__()
        self.unet = UNet(in_ch, 1, chans=chans, num_pools=num_pools)
        self.heads = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(chans + 1, feat_ch, 3, padding=1), nn.LeakyReLU(0.2)) for _ in range(n_scales)]
        )
        self.channels = [feat_ch] * n_scales

    def forward(self, c):
        img, feat = self.unet.forward_features(c)
        h = torch.cat([feat, img], 1)
        feats = []
        for s, head in enumerate(self.heads):
            feats.append(head(h if s == 0 else F.avg_pool2d(h, 2**s)))
        return feats, None, img
