"""Extra invertible blocks of the cINN (Denker et al. 2021, sec. 2.6-2.8), beside ``flows.layers``.

Same interface as :mod:`bayesmri.flows.layers`: ``forward(x, cond) -> (y, logdet (B,))`` (data to latent)
and ``inverse(y, cond) -> x``.

* Invertible downsampling ``(B, C, H, W) -> (B, 4C, H/2, W/2)``, all orthogonal (``logdet = 0``):
  :class:`CheckerboardDownsampling` (space-to-depth, the i-RevNet / "checkerboard" pattern),
  :class:`HaarDownsampling` (one level of the orthonormal 2-D Haar transform per channel) and
  :class:`LearnedOrthogonalDownsampling` (space-to-depth followed by a learned orthogonal ``4C x 4C``
  mixing ``W = exp(S - S^T)``, orthogonal by construction, so exactly invertible by ``W^T``).
* :class:`GlowCoupling`: the two-sided conditional affine coupling of GLOW / FrEIA's ``GLOWCouplingBlock``
  (both halves are transformed, each conditioned on the other half and on the condition), with the soft
  clamp ``c tanh(s / c)`` on log-scales.
* :class:`FCCoupling`: the same two-sided affine coupling on flat vectors ``(B, D)`` with an MLP, for the
  fully connected last part of the multi-scale cINN.
* :class:`FixedPermutation`: a fixed random permutation of flat vectors.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import InvertibleModule, Squeeze, coupling_subnet, soft_clamp

__all__ = [
    "CheckerboardDownsampling",
    "HaarDownsampling",
    "LearnedOrthogonalDownsampling",
    "make_downsampling",
    "GlowCoupling",
    "FCCoupling",
    "FixedPermutation",
]


def _zeros(x):
    return x.new_zeros(x.shape[0])


class CheckerboardDownsampling(Squeeze):
    """Space-to-depth by 2 (each 2x2 block becomes 4 channels); a permutation, ``logdet = 0``."""


class HaarDownsampling(InvertibleModule):
    """Orthonormal 2-D Haar analysis per channel: ``(B, C, H, W) -> (B, 4C, H/2, W/2)``.

    Output channels are ordered ``[all averages, all horizontal, all vertical, all diagonal details]`` so
    that a following channel split keeps the low-pass part together (as FrEIA's ``HaarDownsampling``).
    """

    def __init__(self):
        super().__init__()
        h = 0.5 * torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=torch.float32)
        self.register_buffer("haar", h)  # rows: filters over the 4 pixels (00, 01, 10, 11) of a block

    def forward(self, x, cond=None):
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"HaarDownsampling needs even H and W, got {tuple(x.shape[2:])}")
        B, C, H, W = x.shape
        p = F.pixel_unshuffle(x, 2).reshape(B, C, 4, H // 2, W // 2)
        y = torch.einsum("fk,bckhw->bfchw", self.haar.to(x.dtype), p)
        return y.reshape(B, 4 * C, H // 2, W // 2), _zeros(x)

    def inverse(self, y, cond=None):
        B, C4, h, w = y.shape
        C = C4 // 4
        q = y.reshape(B, 4, C, h, w)
        p = torch.einsum("fk,bfchw->bckhw", self.haar.to(y.dtype), q)
        return F.pixel_shuffle(p.reshape(B, 4 * C, h, w), 2)


class LearnedOrthogonalDownsampling(InvertibleModule):
    """Space-to-depth, then a learned orthogonal channel mixing ``W = matrix_exp(S - S^T)`` (``logdet = 0``).

    ``S`` starts at zero (``W = I``): at initialisation this is the checkerboard downsampling.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.skew = nn.Parameter(torch.zeros(4 * channels, 4 * channels))

    def weight(self) -> torch.Tensor:
        return torch.linalg.matrix_exp(self.skew - self.skew.T)

    def forward(self, x, cond=None):
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"LearnedOrthogonalDownsampling needs even H and W, got {tuple(x.shape[2:])}")
        y = F.pixel_unshuffle(x, 2)
        return torch.einsum("ij,bjhw->bihw", self.weight().to(x.dtype), y), _zeros(x)

    def inverse(self, y, cond=None):
        x = torch.einsum("ji,bjhw->bihw", self.weight().to(y.dtype), y)
        return F.pixel_shuffle(x, 2)


def make_downsampling(kind: str, channels: int) -> InvertibleModule:
    """``"checkerboard"``, ``"haar"`` or ``"learned"`` (learned orthogonal) downsampling."""
    if kind == "checkerboard":
        return CheckerboardDownsampling()
    if kind == "haar":
        return HaarDownsampling()
    if kind == "learned":
        return LearnedOrthogonalDownsampling(channels)
    raise ValueError(f"unknown downsampling {kind!r}; choose 'checkerboard', 'haar' or 'learned'")


class GlowCoupling(InvertibleModule):
    """Two-sided conditional affine coupling (GLOW), soft-clamped log-scales.

    ``y2 = x2 exp(s1) + t1`` with ``(s1, t1) = NN1([x1, c])``; ``y1 = x1 exp(s2) + t2`` with
    ``(s2, t2) = NN2([y2, c])``; ``logdet = sum s1 + sum s2``. Zero-initialised last layers make it the
    identity at initialisation.
    """

    def __init__(self, channels: int, cond_channels: int = 0, hidden: int = 64, clamp: float = 1.5):
        super().__init__()
        if channels < 2:
            raise ValueError(f"GlowCoupling needs at least 2 channels, got {channels}")
        self.c1, self.c2 = channels // 2, channels - channels // 2
        self.cond_channels = cond_channels
        self.clamp = float(clamp)
        self.net1 = coupling_subnet(self.c1 + cond_channels, 2 * self.c2, hidden)
        self.net2 = coupling_subnet(self.c2 + cond_channels, 2 * self.c1, hidden)

    def _st(self, net, h, cond):
        if self.cond_channels:
            h = torch.cat([h, cond.expand(h.shape[0], *cond.shape[1:])], dim=1)
        s, t = net(h).chunk(2, dim=1)
        return soft_clamp(s, self.clamp), t

    def forward(self, x, cond=None):
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]
        s1, t1 = self._st(self.net1, x1, cond)
        y2 = x2 * torch.exp(s1) + t1
        s2, t2 = self._st(self.net2, y2, cond)
        y1 = x1 * torch.exp(s2) + t2
        return torch.cat([y1, y2], 1), s1.flatten(1).sum(1) + s2.flatten(1).sum(1)

    def inverse(self, y, cond=None):
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        s2, t2 = self._st(self.net2, y2, cond)
        x1 = (y1 - t2) * torch.exp(-s2)
        s1, t1 = self._st(self.net1, x1, cond)
        x2 = (y2 - t1) * torch.exp(-s1)
        return torch.cat([x1, x2], 1)


def _mlp(d_in, d_out, hidden):
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class FCCoupling(InvertibleModule):
    """Two-sided conditional affine coupling on flat vectors ``(B, D)``, conditioned on ``(B, cond_dim)``."""

    def __init__(self, dim: int, cond_dim: int = 0, hidden: int = 256, clamp: float = 1.5):
        super().__init__()
        if dim < 2:
            raise ValueError(f"FCCoupling needs dim >= 2, got {dim}")
        self.d1, self.d2 = dim // 2, dim - dim // 2
        self.cond_dim = cond_dim
        self.clamp = float(clamp)
        self.net1 = _mlp(self.d1 + cond_dim, 2 * self.d2, hidden)
        self.net2 = _mlp(self.d2 + cond_dim, 2 * self.d1, hidden)

    def _st(self, net, h, cond):
        if self.cond_dim:
            h = torch.cat([h, cond.expand(h.shape[0], -1)], 1)
        s, t = net(h).chunk(2, dim=1)
        return soft_clamp(s, self.clamp), t

    def forward(self, x, cond=None):
        x1, x2 = x[:, : self.d1], x[:, self.d1 :]
        s1, t1 = self._st(self.net1, x1, cond)
        y2 = x2 * torch.exp(s1) + t1
        s2, t2 = self._st(self.net2, y2, cond)
        y1 = x1 * torch.exp(s2) + t2
        return torch.cat([y1, y2], 1), s1.sum(1) + s2.sum(1)

    def inverse(self, y, cond=None):
        y1, y2 = y[:, : self.d1], y[:, self.d1 :]
        s2, t2 = self._st(self.net2, y2, cond)
        x1 = (y1 - t2) * torch.exp(-s2)
        s1, t1 = self._st(self.net1, x1, cond)
        return torch.cat([x1, (y2 - t1) * torch.exp(-s1)], 1)


class FixedPermutation(InvertibleModule):
    """A fixed random permutation of the features of ``(B, D)`` vectors (seeded, stored as a buffer)."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(dim, generator=g)
        self.register_buffer("perm", perm)
        self.register_buffer("inv", torch.argsort(perm))

    def forward(self, x, cond=None):
        return x[:, self.perm], _zeros(x)

    def inverse(self, y, cond=None):
        return y[:, self.inv]
