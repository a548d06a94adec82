"""Conditional invertible UNet (iUNet; Etmann et al. 2020, as used by Denker et al. 2021 sec. 2.8).

``x: (B, 1, H, W) -> z: (B, H W)`` through an invertible UNet:

* Haar downsampling to ``(4, H/2, W/2)`` (scale 1);
* down path, scales ``s = 1..L-1``: couplings conditioned on the scale-``s`` features, then the channels
  are split: half is kept for the skip, half is Haar-downsampled to scale ``s+1``;
* bottom (scale ``L``): couplings;
* up path, ``s = L-1..1``: inverse Haar of the lower scale, concatenated with the kept skip, couplings;
* inverse Haar back to ``(1, H, W)``; ``z`` is the flattened result.

Every step is invertible (Haar is orthogonal), so ``logdet`` is the couplings' sum: zero for the default
additive couplings (volume preserving), non-zero for ``coupling="affine"`` (GLOW, soft-clamped). Denker
et al. (sec. 5.1) observed "exploding inverses" with affine couplings in the iUNet and recommend
additive ones; :mod:`benchmarks.bench_cinn` measures both.
Conditioner: a fastMRI UNet on the inversion image (:class:`~bayesmri.flows.conditioning.UNetConditioner`),
whose output image is ``H_theta(y)`` for the conditional loss (eq. 20).
"""
from __future__ import annotations

import torch
from torch import nn

from .cinn import ConditionalINN
from .cinn_layers import GlowCoupling, HaarDownsampling
from .conditioning import UNetConditioner
from .layers import AdditiveCoupling, FixedOrthogonal1x1, InvertibleSequential

__all__ = ["ConditionalIUNet"]


class ConditionalIUNet(ConditionalINN):
    """Conditional iUNet (see the module docstring).

    Parameters
    ----------
    img_size : int
        Square images, divisible by ``2^scales``.
    cond_in : int
        Channels of the inversion image.
    scales : int
        Number of Haar levels ``L`` (>= 1).
    couplings : int
        Couplings per block.
    hidden : int
        Hidden channels of the coupling subnetworks.
    coupling : {"additive", "affine"}
    clamp : float
        Soft clamp of affine log-scales.
    unet_chans, unet_pools, feat_ch : int
        Size of the UNet conditioner and of its per-scale feature heads.
    base : {"radial", "gaussian"}
    """

    def __init__(self, img_size: int, cond_in: int = 1, scales: int = 3, couplings: int = 2, hidden: int = 32,
                 coupling: str = "additive", clamp: float = 1.5, unet_chans: int = 16, unet_pools: int = 3,
                 feat_ch: int = 16, base: str = "radial"):
        super().__init__()
        if not isinstance(scales, int) or scales < 1:
            raise ValueError(f"scales must be a positive integer, got {scales!r}")
        if not isinstance(img_size, int) or img_size % (2**scales):
            raise ValueError(f"img_size must be divisible by 2^scales={2**scales}, got {img_size!r}")
        if coupling not in ("additive", "affine"):
            raise ValueError(f"coupling must be 'additive' or 'affine', got {coupling!r}")
        self.config = dict(img_size=img_size, cond_in=cond_in, scales=scales, couplings=couplings, hidden=hidden,
                           coupling=coupling, clamp=clamp, unet_chans=unet_chans, unet_pools=unet_pools,
                           feat_ch=feat_ch, base=base)
        self.model_type = "cinn_iunet"
        self.img_shape = (img_size, img_size)
        self.cond_in = cond_in
        self._setup_base(base)
        self.conditioner = UNetConditioner(cond_in, scales + 1, unet_chans, unet_pools, feat_ch)
        self.haar = HaarDownsampling()
        self.scales = scales
        ch = [0, 4]  # channels at scale s
        for s in range(2, scales + 1):
            ch.append(2 * ch[-1])  # half of ch[s-1] is Haar-downsampled: 4 * ch/2
        self.ch = ch
        seed = [0]

        def block(c):
            mods = []
            for _ in range(couplings):
                mods.append(FixedOrthogonal1x1(c, seed=seed[0]))
                seed[0] += 1
                if coupling == "additive":
                    mods.append(AdditiveCoupling(c, feat_ch, hidden))
                else:
                    mods.append(GlowCoupling(c, feat_ch, hidden, clamp))
            return InvertibleSequential(*mods)

        self.down_blocks = nn.ModuleList([block(ch[s]) for s in range(1, scales)])
        self.bottom = block(ch[scales])
        self.up_blocks = nn.ModuleList([block(ch[s]) for s in range(1, scales)])

    def _forward(self, x, cond):
        feats = cond[0]
        logdet = x.new_zeros(x.shape[0])
        h, _ = self.haar(x)
        skips = []
        for s in range(1, self.scales):
            h, ld = self.down_blocks[s - 1](h, feats[s]); logdet = logdet + ld
            k = self.ch[s] // 2
            skips.append(h[:, :k])
            h, _ = self.haar(h[:, k:])
        h, ld = self.bottom(h, feats[self.scales]); logdet = logdet + ld
        for s in reversed(range(1, self.scales)):
            h = torch.cat([skips.pop(), self.haar.inverse(h)], 1)
            h, ld = self.up_blocks[s - 1](h, feats[s]); logdet = logdet + ld
        return self.haar.inverse(h).flatten(1), logdet

    def _inverse(self, z, cond):
        feats = cond[0]
        h, _ = self.haar(z.reshape(z.shape[0], 1, *self.img_shape))
        skips = []
        for s in range(1, self.scales):
            h = self.up_blocks[s - 1].inverse(h, feats[s])
            k = self.ch[s] // 2
            skips.append(h[:, :k])
            h, _ = self.haar(h[:, k:])
        h = self.bottom.inverse(h, feats[self.scales])
        for s in reversed(range(1, self.scales)):
            h = torch.cat([skips.pop(), self.haar.inverse(h)], 1)
            h = self.down_blocks[s - 1].inverse(h, feats[s])
        return self.haar.inverse(h)
