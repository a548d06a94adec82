"""Invertible building blocks of conditional normalising flows (Wen et al. 2023; Denker et al. 2021).

Every layer acts on real feature maps ``x: (B, C, H, W)`` and implements

* ``forward(x, cond=None) -> (y, logdet)`` with ``logdet: (B,)`` = ``ln |det dy/dx|`` per sample,
* ``inverse(y, cond=None) -> x``.

``forward`` is the *normalising* direction (data -> latent), ``inverse`` the generative one. We write the
blocks ourselves rather than wrap FrEIA: they are a few lines each, the fixed orthogonal 1x1 convolution
and the one-sided soft-clamped coupling of Wen et al. are not FrEIA's defaults (its ``AllInOneBlock``
fuses ActNorm, a learned permutation and a two-sided coupling), and owning the log-determinants lets the
tests check each against a brute-force Jacobian with no extra dependency.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = [
    "InvertibleModule",
    "ActNorm",
    "FixedOrthogonal1x1",
    "Squeeze",
    "AffineCoupling",
    "AdditiveCoupling",
    "InvertibleSequential",
    "soft_clamp",
    "coupling_subnet",
]


def _zeros_logdet(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0])


class InvertibleModule(nn.Module):
    """Base class: ``forward(x, cond) -> (y, logdet)``, ``inverse(y, cond) -> x``."""

    def forward(self, x, cond=None):  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, y, cond=None):  # pragma: no cover - interface
        raise NotImplementedError


class ActNorm(InvertibleModule):
    """Per-channel affine ``y = (x + b) * exp(s)`` (Kingma & Dhariwal 2018).

    On the first forward pass in training mode ``b, s`` are set from the batch so that ``y`` has zero mean
    and unit variance per channel (data-dependent init). ``logdet = H W sum_c s_c``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def _init(self, x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(1)

    def forward(self, x, cond=None):
        if self.training and not bool(self.initialized):
            self._init(x)
        y = (x + self.bias) * torch.exp(self.log_scale)
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return y, logdet.expand(x.shape[0])

    def inverse(self, y, cond=None):
        return y * torch.exp(-self.log_scale) - self.bias


class FixedOrthogonal1x1(InvertibleModule):
    """A fixed random orthogonal 1x1 convolution (a channel mixing with ``|det| = 1``, ``logdet = 0``).

    The matrix is drawn once (QR of a Gaussian matrix, seeded) and stored as a buffer, so it travels with
    the weights but is never trained (Wen et al. sec. 3.1: "fixed 1x1 convolutions").
    """

    def __init__(self, channels: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(int(seed))
        q, r = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)  # unique, Haar-distributed
        self.register_buffer("weight", q)  # float64: orthogonal to 1e-16, cast to the input dtype on use

    def forward(self, x, cond=None):
        return torch.einsum("ij,bjhw->bihw", self.weight.to(x.dtype), x), _zeros_logdet(x)

    def inverse(self, y, cond=None):
        return torch.einsum("ji,bjhw->bihw", self.weight.to(y.dtype), y)


class Squeeze(InvertibleModule):
    """Space-to-depth ``(B, C, H, W) -> (B, 4C, H/2, W/2)`` (a permutation, ``logdet = 0``)."""

    def forward(self, x, cond=None):
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"Squeeze needs even H and W, got {tuple(x.shape[2:])}")
        return F.pixel_unshuffle(x, 2), _zeros_logdet(x)

    def inverse(self, y, cond=None):
        return F.pixel_shuffle(y, 2)


def soft_clamp(s: torch.Tensor, clamp: float) -> torch.Tensor:
    """``clamp * tanh(s / clamp)``: keeps log-scales in ``(-clamp, clamp)`` (GLOW/FrEIA soft clamp)."""
    return clamp * torch.tanh(s / clamp)


def coupling_subnet(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    """conv3x3 - ReLU - conv1x1 - ReLU - conv3x3, last layer zero-initialised (identity coupling at init)."""
    net = nn.Sequential(
        nn.Conv2d(c_in, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.ReLU(),
        nn.Conv2d(hidden, c_out, 3, padding=1),
    )
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class AffineCoupling(InvertibleModule):
    """One-sided conditional affine coupling (RealNVP; Wen et al. sec. 3.1).

    ``x = [x1, x2]`` split over channels; ``(s, t) = NN([x1, cond])``, ``s <- clamp tanh(s/clamp)``;
    ``y = [x1, x2 exp(s) + t]``; ``logdet = sum s``.
    """

    def __init__(self, channels: int, cond_channels: int = 0, hidden: int = 64, clamp: float = 2.0):
        super().__init__()
        if channels < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels, got {channels}")
        self.c1 = channels // 2
        self.c2 = channels - self.c1
        self.cond_channels = cond_channels
        self.clamp = float(clamp)
        self.net = coupling_subnet(self.c1 + cond_channels, 2 * self.c2, hidden)

    def _st(self, x1, cond):
        h = x1 if self.cond_channels == 0 else torch.cat([x1, cond.expand(x1.shape[0], *cond.shape[1:])], dim=1)
        s, t = self.net(h).chunk(2, dim=1)
        return soft_clamp(s, self.clamp), t

    def forward(self, x, cond=None):
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]
        s, t = self._st(x1, cond)
        return torch.cat([x1, x2 * torch.exp(s) + t], dim=1), s.flatten(1).sum(dim=1)

    def inverse(self, y, cond=None):
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        s, t = self._st(y1, cond)
        return torch.cat([y1, (y2 - t) * torch.exp(-s)], dim=1)


class AdditiveCoupling(InvertibleModule):
    """Volume-preserving coupling ``y = [x1, x2 + NN([x1, cond])]`` (NICE; Denker's iUNet), ``logdet = 0``."""

    def __init__(self, channels: int, cond_channels: int = 0, hidden: int = 64):
        super().__init__()
        if channels < 2:
            raise ValueError(f"AdditiveCoupling needs at least 2 channels, got {channels}")
        self.c1 = channels // 2
        self.cond_channels = cond_channels
        self.net = coupling_subnet(self.c1 + cond_channels, channels - self.c1, hidden)

    def _t(self, x1, cond):
        h = x1 if self.cond_channels == 0 else torch.cat([x1, cond.expand(x1.shape[0], *cond.shape[1:])], dim=1)
        return self.net(h)

    def forward(self, x, cond=None):
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]
        return torch.cat([x1, x2 + self._t(x1, cond)], dim=1), _zeros_logdet(x)

    def inverse(self, y, cond=None):
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        return torch.cat([y1, y2 - self._t(y1, cond)], dim=1)


class InvertibleSequential(InvertibleModule):
    """A chain of invertible modules sharing one condition; log-determinants add."""

    def __init__(self, *layers: InvertibleModule):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, cond=None):
        logdet = _zeros_logdet(x)
        for layer in self.layers:
            x, ld = layer(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y, cond=None):
        for layer in reversed(self.layers):
            y = layer.inverse(y, cond)
        return y
