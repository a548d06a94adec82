"""fastMRI-style UNet (Ronneberger et al.; Zbontar et al. 2018), the conditioning network of the CNF.

Encoder: ``num_pools`` x [ConvBlock, 2x2 average pool]; bottleneck ConvBlock; decoder: ``num_pools`` x
[transpose conv (x2), concatenate the skip, ConvBlock]; a 1x1 convolution to ``out_chans``. ConvBlock =
2 x (conv3x3, instance norm, LeakyReLU 0.2, dropout). Channels double at every pool from ``chans``.
Odd sizes are handled by reflect-padding the upsampled map to the skip's size, as fastMRI does.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["UNet", "ConvBlock"]


class ConvBlock(nn.Sequential):
    """Two (conv3x3 -> InstanceNorm -> LeakyReLU(0.2) -> Dropout) layers."""

    def __init__(self, c_in: int, c_out: int, drop: float = 0.0):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.InstanceNorm2d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout2d(drop),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.InstanceNorm2d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Dropout2d(drop),
        )


class _Up(nn.Sequential):
    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False),
            nn.InstanceNorm2d(c_out),
            nn.LeakyReLU(0.2, inplace=True),
        )


class UNet(nn.Module):
    """UNet ``(B, in_chans, H, W) -> (B, out_chans, H, W)``.

    Parameters
    ----------
    in_chans, out_chans : int
    chans : int
        Channels of the first level (fastMRI: 32; doubles per pool).
    num_pools : int
        Number of down-sampling levels (fastMRI and Wen et al.: 4).
    drop : float
        Dropout probability.
    zero_out : bool
        Zero-initialise the final 1x1 convolution, so that the untrained network predicts 0 (useful when
        the target is a small residual such as the nullspace part of an image).

    ``forward_features(x)`` returns ``(out, feat)`` with ``feat: (B, chans, H, W)`` the last decoder feature
    map (what the CNF's feature extractor reads).
    """

    def __init__(self, in_chans: int, out_chans: int, chans: int = 32, num_pools: int = 4, drop: float = 0.0,
                 zero_out: bool = False):
        super().__init__()
        for name, v in (("in_chans", in_chans), ("out_chans", out_chans), ("chans", chans)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(num_pools, int) or num_pools < 0:
            raise ValueError(f"num_pools must be a non-negative integer, got {num_pools!r}")
        self.num_pools = num_pools
        self.down = nn.ModuleList([ConvBlock(in_chans, chans, drop)])
        ch = chans
        for _ in range(num_pools - 1):
            self.down.append(ConvBlock(ch, ch * 2, drop))
            ch *= 2
        self.bottom = ConvBlock(ch, ch * 2 if num_pools > 0 else ch, drop) if num_pools > 0 else None
        self.up_t = nn.ModuleList()
        self.up_c = nn.ModuleList()
        cb = ch * 2
        for _ in range(num_pools):
            self.up_t.append(_Up(cb, ch))
            self.up_c.append(ConvBlock(2 * ch, ch, drop))
            cb, ch = ch, ch // 2
        self.out = nn.Conv2d(chans, out_chans, 1)
        if zero_out:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.chans = chans

    def forward_features(self, x: torch.Tensor):
        skips = []
        h = x
        for i, blk in enumerate(self.down):
            h = blk(h)
            if i < self.num_pools:
                skips.append(h)
                h = F.avg_pool2d(h, 2)
        if self.num_pools == 0:
            return self.out(h), h
        h = self.bottom(h)
        for up_t, up_c in zip(self.up_t, self.up_c):
            skip = skips.pop()
            h = up_t(h)
            ph, pw = skip.shape[-2] - h.shape[-2], skip.shape[-1] - h.shape[-1]
            if ph or pw:
                h = F.pad(h, (0, pw, 0, ph), mode="reflect")
            h = up_c(torch.cat([h, skip], dim=1))
        return self.out(h), h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]
