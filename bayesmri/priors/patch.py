"""Whole-image scores from a network trained on patches (Hu, Song, Xu, Shen, Fessler, NeurIPS 2024).

A score network trained on ``P x P`` crops of native-resolution slices (``bayesmri train score --data
native``) is a prior for images of any size. :class:`PatchScore` evaluates it on a whole image in one of
two ways:

``mode="tiled"`` (PaDIS, Hu et al. sec. 3): the image is embedded in a canvas padded on every side, cut
into non-overlapping tiles of ``P - 2 m`` pixels placed with a **random offset drawn at every call**
(one per image of the batch, so a sampler's chains never share their seams),
each tile is evaluated with a halo of ``m`` pixels on each side (a ``P x P`` network input) and only its
centre is kept. Averaged over the sampler's iterations the random offsets move the seams, so no tile
boundary stays at one place (Hu et al.'s argument for the random shift); with a halo ``m`` at least the
network's effective receptive radius the tiled score equals the whole-image score exactly. Memory and the
network's input statistics stay those of training whatever the matrix size.

Networks with a patch position input (``position_channels = 2``, PaDIS sec. 3.2) get each tile's
coordinates in the frame of the whole image (:func:`bayesmri.priors.score_unet.image_coordinates`: the
image spans ``[-1, 1]``, the padding lies outside), in both modes.

``mode="whole"``: the fully convolutional network on the whole image at once (padded to a multiple of
the network's down-sampling factor).

Padding: the canvas outside the image is filled with fresh Gaussian noise of standard deviation
``sigma`` (per real component), i.e. the zero background of an MR image seen at the current diffusion
noise level, so border tiles see the input distribution the network was trained on. The offsets and the
padding noise come from the wrapper's own generator (``seed``), so runs are reproducible.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PatchScore", "TILING_MODES", "prior_for_size"]

TILING_MODES = ("tiled", "whole")


class PatchScore(nn.Module):
    """Score ``s(x, sigma)`` of whole real images from a score network trained on patches.

    Parameters
    ----------
    model : nn.Module
        Has ``score(x, sigma)`` for real ``(N, H, W)`` (e.g. :class:`~bayesmri.priors.score_unet.ScoreUNet`).
    patch : int
        Network input size in ``"tiled"`` mode (the training crop, e.g. 64).
    mode : {"tiled", "whole"}
    margin : int
        Halo ``m`` kept around each tile in ``"tiled"`` mode and discarded (``0 <= 2 m < patch``).
        0 is PaDIS (seams averaged out by the random offsets only).
    multiple : int, optional
        Input sizes must be multiples of this (default: ``2 ** (num_levels - 1)`` of a ScoreUNet, else 1).
    chunk_size : int
        Most network inputs evaluated at once in ``"tiled"`` mode.
    channels_last : bool, optional
        Run the network in channels-last memory format (the wrapped module is converted in place at
        the first call). Default: on for CPU inputs, where oneDNN's convolutions are ~14% faster in it
        (score_native, 64 tiles of 64x64, one thread: 0.97 -> 0.83 s; docs/speed.md); the outputs
        agree to float round-off.
    seed : int
        Seed of the generator for the offsets and the padding noise.

    Notes
    -----
    ``score`` takes real ``(N, H, W)`` or ``(N, 1, H, W)`` with any ``H, W >= 1`` and a scalar or ``(N,)``
    ``sigma``; it returns the shape of ``x``. ``meta`` and ``parameters()`` are the network's, so
    :class:`bayesmri.priors.score.ScorePrior` accepts the wrapper in place of the network.
    """

    def __init__(self, model: nn.Module, patch: int = 64, mode: str = "tiled", margin: int = 0,
                 multiple: int | None = None, chunk_size: int = 64, seed: int = 0,
                 channels_last: bool | None = None):
        super().__init__()
        if not callable(getattr(model, "score", None)):
            raise TypeError(f"model must have score(x, sigma), got {type(model).__name__}")
        if mode not in TILING_MODES:
            raise ValueError(f"mode must be one of {TILING_MODES}, got {mode!r}")
        patch, margin, chunk_size = int(patch), int(margin), int(chunk_size)
        if multiple is None:
            multiple = 2 ** (int(getattr(model, "num_levels", 1)) - 1)
        multiple = int(multiple)
        if patch < 1 or multiple < 1 or patch % multiple:
            raise ValueError(f"patch must be a positive multiple of {multiple}, got {patch}")
        if margin < 0 or 2 * margin >= patch:
            raise ValueError(f"margin must satisfy 0 <= 2 margin < patch ({patch}), got {margin}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.model = model
        self.patch, self.margin, self.mode, self.multiple = patch, margin, mode, multiple
        self.chunk_size = chunk_size
        self.channels_last = channels_last
        self._format = None  # memory format the model was last put in by _net_score
        self.generator = torch.Generator().manual_seed(int(seed))
        self.meta = getattr(model, "meta", None)
        self.uses_position = bool(getattr(model, "position_channels", 0))

    # ------------------------------------------------------------------ helpers
    def _noise(self, shape, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        return z.to(device=like.device, dtype=like.dtype) * sigma.reshape(-1, *([1] * (len(shape) - 1)))

    def _canvas(self, x, sigma, top, left, Hc, Wc):
        """``x (N, H, W)`` placed at ``(top, left)`` in an ``(N, Hc, Wc)`` canvas of noise of std sigma."""
        N, H, W = x.shape
        canvas = self._noise((N, Hc, Wc), sigma, x)
        canvas[:, top:top + H, left:left + W] = x
        return canvas

    def _coords(self, Hc, Wc, top, left, H, W, like):
        """Coordinates ``(2, Hc, Wc)`` of a canvas holding an ``H x W`` image at ``(top, left)``."""
        from bayesmri.priors.score_unet import image_coordinates

        return image_coordinates(Hc, Wc, top=-top, left=-left, height=H, width=W, dtype=like.dtype,
                                 device=like.device)

    def _net_score(self, x, sigma, pos):
        """The wrapped network's score, in the memory format chosen for ``x``'s device."""
        want_cl = self.channels_last if self.channels_last is not None else x.device.type == "cpu"
        fmt = torch.channels_last if want_cl else torch.contiguous_format
        if self._format is not fmt:
            self.model.to(memory_format=fmt)
            self._format = fmt
        return self.model.score(x, sigma, pos=pos) if self.uses_position else self.model.score(x, sigma)

    def _whole(self, x, sigma):
        N, H, W = x.shape
        k = self.multiple
        Hc, Wc = -(-H // k) * k, -(-W // k) * k
        top, left = (Hc - H) // 2, (Wc - W) // 2
        pos = self._coords(Hc, Wc, top, left, H, W, x)[None] if self.uses_position else None
        if (Hc, Wc) == (H, W):
            return self._net_score(x, sigma, pos)
        s = self._net_score(self._canvas(x, sigma, top, left, Hc, Wc), sigma, pos)
        return s[:, top:top + H, left:left + W]

    def _tiles(self, img, sigma):
        """The ``P x P`` network inputs of one image ``(H, W)`` at an offset drawn for it, their coordinates
        (``(ny nx, 2, P, P)``, or None for a network without position input), and how to put their kept
        centres back: ``(tiles (ny nx, P, P), pos, (oy, ox, ny, nx))``."""
        H, W = img.shape
        P, m = self.patch, self.margin
        S = P - 2 * m  # stride = kept centre
        oy, ox = (int(v) for v in torch.randint(S, (2,), generator=self.generator))
        ny, nx = -(-(H + oy) // S), -(-(W + ox) // S)
        # canvas row r <-> image row r - (oy + m); tile (i, j) covers canvas rows i S .. i S + P
        Hc, Wc = ny * S + 2 * m, nx * S + 2 * m
        canvas = self._canvas(img[None], sigma[None], oy + m, ox + m, Hc, Wc)[0]
        tiles = canvas.unfold(0, P, S).unfold(1, P, S).reshape(ny * nx, P, P)
        pos = None
        if self.uses_position:
            c = self._coords(Hc, Wc, oy + m, ox + m, H, W, img)
            pos = c.unfold(1, P, S).unfold(2, P, S).permute(1, 2, 0, 3, 4).reshape(ny * nx, 2, P, P)
        return tiles, pos, (oy, ox, ny, nx)

    def _tiled(self, x, sigma):
        # Each image gets its own offset, so the chains of a sampler (one batch) never share their seams
        # at a step: the seams of the last steps then do not line up across samples in the mean and std.
        N, H, W = x.shape
        m, S = self.margin, self.patch - 2 * self.margin
        parts = [self._tiles(x[n], sigma[n]) for n in range(N)]
        tiles = torch.cat([t for t, _, _ in parts], 0)
        pos = torch.cat([p for _, p, _ in parts], 0) if self.uses_position else None
        sig_t = torch.cat([sigma[n].expand(t.shape[0]) for n, (t, _, _) in enumerate(parts)])
        c = self.chunk_size
        outs = [self._net_score(tiles[i:i + c], sig_t[i:i + c], None if pos is None else pos[i:i + c])
                for i in range(0, tiles.shape[0], c)]
        kept = torch.cat(outs, 0)[:, m:m + S, m:m + S]
        out, start = [], 0
        for _, _, (oy, ox, ny, nx) in parts:
            s = kept[start:start + ny * nx].reshape(ny, nx, S, S).permute(0, 2, 1, 3).reshape(ny * S, nx * S)
            out.append(s[oy:oy + H, ox:ox + W])
            start += ny * nx
        return torch.stack(out, 0)

    # ------------------------------------------------------------------ public
    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """``grad_x log p_sigma(x)`` of the whole image; the shape of ``x``."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a real floating torch.Tensor (apply the prior to real and imaginary parts)")
        squeeze = x.ndim == 4
        if squeeze:
            if x.shape[1] != 1:
                raise ValueError(f"x must have shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
            x = x[:, 0]
        if x.ndim != 3:
            raise ValueError(f"x must have shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if sigma.shape[0] != x.shape[0] or not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
            raise ValueError("sigma must be positive and finite, a scalar or one per image")
        out = self._tiled(x, sigma) if self.mode == "tiled" else self._whole(x, sigma)
        return out[:, None] if squeeze else out

    def forward(self, x, sigma):
        """``sigma * score`` (the network's raw-output convention)."""
        s = self.score(x, sigma)
        sig = torch.as_tensor(sigma, dtype=s.dtype, device=s.device).reshape(-1, *([1] * (s.ndim - 1)))
        return sig * s

    def denoise(self, x, sigma):
        """Tweedie denoiser ``x + sigma^2 score``."""
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))
        return x + sig**2 * self.score(x, sigma)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, patch={self.patch}, margin={self.margin}, multiple={self.multiple}"

    @staticmethod
    def overhead(H: int, W: int, patch: int, margin: int) -> float:
        """Expected network pixels per image pixel in ``"tiled"`` mode (1 = no overhead)."""
        S = patch - 2 * margin
        ny, nx = (H + (S - 1) / 2) / S, (W + (S - 1) / 2) / S
        return math.ceil(ny) * math.ceil(nx) * patch**2 / (H * W)


def prior_for_size(model: nn.Module, shape, tiling: str = "auto", patch: int | None = None, margin: int = 0,
                   seed: int = 0) -> nn.Module:
    """The network, or a :class:`PatchScore` around it, ready for real images of ``shape = (H, W)``.

    ``tiling``: ``"tiled"`` / ``"whole"`` wrap the network in that mode; ``"none"`` returns it unchanged
    (it must accept ``(H, W)``); ``"auto"`` tiles a network trained on crops (its exported metadata has
    ``prior.training_crop``) with ``patch`` = the crop, evaluates any other network on the whole image, and
    pads only when ``H, W`` are not multiples of its down-sampling factor. ``patch`` defaults to the
    training crop (or 64).
    """
    if tiling not in ("auto", "none") + TILING_MODES:
        raise ValueError(f"tiling must be 'auto', 'none', 'tiled' or 'whole', got {tiling!r}")
    if tiling == "none" or isinstance(model, PatchScore):
        return model
    meta = getattr(model, "meta", None) or {}
    crop = (meta.get("prior") or {}).get("training_crop") if isinstance(meta, dict) else None
    patch = int(patch or (crop[0] if crop else 64))
    if tiling == "auto":
        if crop:
            tiling = "tiled"
        else:
            k = 2 ** (int(getattr(model, "num_levels", 1)) - 1)
            if all(int(n) % k == 0 for n in shape):
                return model
            tiling = "whole"
    return PatchScore(model, patch=patch, mode=tiling, margin=margin, seed=seed)
