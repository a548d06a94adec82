"""Time-conditional score UNet for the VE-SDE prior (NCSN++ spirit; Chung & Ye 2022, appendix).

The network ``F_theta(x, log sigma)`` sees a real single-channel image (a magnitude image, or the real
or imaginary part of a complex image: the samplers apply it to both parts separately, Chung & Ye Alg. 3)
and returns an image of the same shape. Parametrisation (NCSN++ ``scale_by_sigma``)::

    score(x, sigma)   = F_theta(c_in(sigma) x, log sigma) / sigma           ~ grad_x log p_sigma(x)
    denoise(x, sigma) = x + sigma^2 score(x, sigma) = x + sigma F_theta(...)  (Tweedie)

with ``c_in(sigma) = 1 / sqrt(sigma_data^2 + sigma^2)`` (EDM-style input scaling; it keeps the
network's input at unit scale over the whole VE range sigma in [0.01, sigma_max ~ 100], which matters
for a network trained for minutes on a CPU; ``input_scaling=False`` gives plain NCSN++). With this
parametrisation the denoising score-matching loss with lambda(sigma) = sigma^2 (Chung & Ye eq. 17)
is ``E || F_theta + z ||^2``: a unit-scale regression target at every noise level.

Architecture: 3x3 input conv, ``len(channel_mult)`` resolution levels of BigGAN-style residual blocks
(GroupNorm, SiLU, time embedding added per block, skip connections scaled by 1/sqrt(2)), BigGAN
residual down/up-sampling blocks between levels, self-attention at the lowest resolution (optional),
U-Net skip concatenation, GroupNorm + SiLU + 3x3 output conv (zero-initialised, so the score starts
at 0). Noise level enters via Gaussian Fourier features of log sigma (scale 16, fixed random weights)
and a 2-layer MLP. Fully convolutional: any ``H, W`` divisible by ``2**(len(channel_mult) - 1)``.

Patch position input (PaDIS, Hu et al. NeurIPS 2024 sec. 3.2): with ``position_channels=2`` the first
convolution also sees the coordinates ``(y, x)`` of every pixel in the frame of the whole field of view,
normalised so the image spans ``[-1, 1]`` (pixel centres at ``(i + 1/2 - H/2) / (H/2)``; padding outside
the image has ``|y| > 1`` or ``|x| > 1``). A network trained on crops then knows where in the field of view
a crop lies (background near the edges, brain in the middle). ``pos`` defaults to the coordinates of the
input itself, i.e. the input is taken to be the whole field of view; :class:`bayesmri.priors.patch.PatchScore`
passes the tile's coordinates. ``position_channels=0`` (the default) is the position-free network.

Named configurations (``CONFIGS``):

- ``small64``  : 64x64 images, trains on a CPU in under an hour.
- ``default128``: 128x128 images, GPU-intended (trainable on a CPU, slowly).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ["ScoreUNet", "CONFIGS", "build_score_unet", "count_parameters", "image_coordinates"]

MODEL_TYPE = "score_unet"

CONFIGS: dict[str, dict] = {
    "small64": dict(
        base_channels=16,
        channel_mult=(1, 2, 4, 4),
        num_res_blocks=1,
        attention=True,
        embed_dim=64,
        dropout=0.0,
        fourier_scale=16.0,
        sigma_data=0.5,
        input_scaling=True,
    ),
    "default128": dict(
        base_channels=64,
        channel_mult=(1, 1, 2, 2, 2),
        num_res_blocks=2,
        attention=True,
        embed_dim=128,
        dropout=0.1,
        fourier_scale=16.0,
        sigma_data=0.5,
        input_scaling=True,
    ),
}


def _groups(ch: int) -> int:
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class GaussianFourierProjection(nn.Module):
    """``[sin(2 pi w a), cos(2 pi w a)]`` with fixed ``w ~ N(0, scale^2)`` (Chung & Ye appendix, GFP)."""

    def __init__(self, dim: int, scale: float = 16.0):
        super().__init__()
        # Fixed random features: a buffer, so that the optimiser never touches them but they are saved.
        self.register_buffer("W", torch.randn(dim // 2) * scale)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        proj = a[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ResBlock(nn.Module):
    """BigGAN residual block with time conditioning; ``up``/``down`` resample both branches."""

    def __init__(self, in_ch, out_ch, temb_dim, dropout=0.0, up=False, down=False):
        super().__init__()
        self.up, self.down = up, down
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (skip path only)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resample(self, h):
        if self.up:
            return F.interpolate(h, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(h, 2)
        return h

    def forward(self, x, temb):
        h = F.silu(self.norm1(x))
        h = self._resample(h)
        x = self._resample(x)
        h = self.conv1(h)
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels, residual, scaled by 1/sqrt(2)."""

    def __init__(self, ch):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj(h.transpose(1, 2).reshape(B, C, H, W))
        return (x + h) / math.sqrt(2.0)


class ScoreUNet(nn.Module):
    """Noise-conditional score network ``s_theta(x, sigma)`` for real single-channel images.

    Parameters
    ----------
    base_channels : int
        Channels at full resolution.
    channel_mult : sequence of int
        Channel multiplier per resolution level; ``len(channel_mult) - 1`` down-samplings, so inputs need
        ``H, W`` divisible by ``2**(len(channel_mult) - 1)``.
    num_res_blocks : int
        Residual blocks per level (encoder; the decoder has one more per level, as NCSN++).
    attention : bool
        Self-attention at the lowest resolution.
    embed_dim : int
        Width of the Fourier features and the noise-level embedding.
    dropout : float
    fourier_scale : float
        Standard deviation of the fixed Fourier frequencies (16 in NCSN++ / Chung & Ye).
    sigma_data : float
        Data scale used by the input scaling ``c_in = 1/sqrt(sigma_data^2 + sigma^2)``.
    input_scaling : bool
        Apply ``c_in`` to the input (see the module docstring).
    position_channels : {0, 2}
        Extra input channels with the pixel coordinates (see the module docstring).

    Notes
    -----
    ``forward(x, sigma)`` returns ``F_theta = sigma * score`` (the quantity regressed onto ``-z`` by eq. 17);
    use :meth:`score` or :meth:`denoise` for the prior. ``x`` is ``(B, H, W)`` or ``(B, 1, H, W)`` real
    float; ``sigma`` a positive float or a ``(B,)`` tensor; ``pos`` (position networks only) ``(B, 2, H, W)``
    or ``(2, H, W)`` real coordinates, default :func:`image_coordinates`. Outputs have the shape of ``x``.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        base_channels: int = 32,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = True,
        embed_dim: int = 64,
        dropout: float = 0.0,
        fourier_scale: float = 16.0,
        sigma_data: float = 0.5,
        input_scaling: bool = True,
        position_channels: int = 0,
    ):
        super().__init__()
        if int(base_channels) < 1 or int(num_res_blocks) < 1 or len(channel_mult) < 1:
            raise ValueError("base_channels, num_res_blocks and len(channel_mult) must be >= 1")
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {embed_dim}")
        if int(position_channels) not in (0, 2):
            raise ValueError(f"position_channels must be 0 or 2, got {position_channels}")
        self.config = dict(
            base_channels=int(base_channels),
            channel_mult=[int(m) for m in channel_mult],
            num_res_blocks=int(num_res_blocks),
            attention=bool(attention),
            embed_dim=int(embed_dim),
            dropout=float(dropout),
            fourier_scale=float(fourier_scale),
            sigma_data=float(sigma_data),
            input_scaling=bool(input_scaling),
        )
        if position_channels:  # only stored when used, so position-free configs stay as exported before
            self.config["position_channels"] = int(position_channels)
        self.position_channels = int(position_channels)
        self.sigma_data = float(sigma_data)
        self.input_scaling = bool(input_scaling)
        self.num_levels = len(channel_mult)
        temb_dim = 4 * embed_dim
        self.fourier = GaussianFourierProjection(embed_dim, fourier_scale)
        self.temb_mlp = nn.Sequential(nn.Linear(embed_dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))

        chs = [base_channels * m for m in channel_mult]
        self.conv_in = nn.Conv2d(1 + self.position_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skip_chs = [base_channels]
        ch = base_channels
        for lvl, out_ch in enumerate(chs):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, out_ch, temb_dim, dropout))
                ch = out_ch
                skip_chs.append(ch)
            if lvl < self.num_levels - 1:
                self.down.append(ResBlock(ch, ch, temb_dim, dropout, down=True))
                skip_chs.append(ch)
        self.mid1 = ResBlock(ch, ch, temb_dim, dropout)
        self.mid_attn = AttnBlock(ch) if attention else nn.Identity()
        self.mid2 = ResBlock(ch, ch, temb_dim, dropout)
        self.up = nn.ModuleList()
        for lvl in reversed(range(self.num_levels)):
            out_ch = chs[lvl]
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skip_chs.pop(), out_ch, temb_dim, dropout))
                ch = out_ch
            if lvl > 0:
                self.up.append(ResBlock(ch, ch, temb_dim, dropout, up=True))
        assert not skip_chs
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    # ------------------------------------------------------------------ helpers
    def _prepare(self, x, sigma):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a real floating torch.Tensor (apply the prior to real and imaginary parts)")
        squeeze = x.ndim == 3
        if squeeze:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must have shape (B, H, W) or (B, 1, H, W), got {tuple(x.shape)}")
        f = 2 ** (self.num_levels - 1)
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {f} for this network")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        sigma = sigma.reshape(-1)
        if sigma.shape[0] != x.shape[0]:
            raise ValueError(f"sigma must be a scalar or have shape (B,)={x.shape[0]}, got {tuple(sigma.shape)}")
        if not bool((sigma > 0).all()):
            raise ValueError("sigma must be positive")
        return x, sigma, squeeze

    def _positions(self, x, pos):
        B, _, H, W = x.shape
        if pos is None:
            return image_coordinates(H, W, dtype=x.dtype, device=x.device).expand(B, 2, H, W)
        pos = torch.as_tensor(pos, dtype=x.dtype, device=x.device)
        if pos.ndim == 3:
            pos = pos[None]
        if pos.ndim != 4 or pos.shape[1] != 2 or tuple(pos.shape[-2:]) != (H, W) or pos.shape[0] not in (1, B):
            raise ValueError(f"pos must have shape (B, 2, H, W) = ({B}, 2, {H}, {W}), got {tuple(pos.shape)}")
        return pos.expand(B, 2, H, W)

    def _net(self, x, sigma, pos=None):
        temb = self.temb_mlp(self.fourier(torch.log(sigma)))
        if self.input_scaling:
            x = x / torch.sqrt(self.sigma_data**2 + sigma**2)[:, None, None, None]
        if self.position_channels:
            x = torch.cat([x, self._positions(x, pos)], 1)
        elif pos is not None:
            raise ValueError("this network has no position input (position_channels=0); do not pass pos")
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            h = blk(h, temb)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for blk in self.up:
            if blk.up:
                h = blk(h, temb)
            else:
                h = blk(torch.cat([h, hs.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))

    # ------------------------------------------------------------------ public
    def forward(self, x: torch.Tensor, sigma, pos=None) -> torch.Tensor:
        """Raw output ``F_theta = sigma * score(x, sigma)``; shape of ``x``."""
        x4, s, squeeze = self._prepare(x, sigma)
        out = self._net(x4, s, pos)
        return out[:, 0] if squeeze else out

    def score(self, x: torch.Tensor, sigma, pos=None) -> torch.Tensor:
        """``grad_x log p_sigma(x) ~ F_theta(x, sigma) / sigma``; shape of ``x``."""
        x4, s, squeeze = self._prepare(x, sigma)
        out = self._net(x4, s, pos) / s[:, None, None, None]
        return out[:, 0] if squeeze else out

    def denoise(self, x: torch.Tensor, sigma, pos=None) -> torch.Tensor:
        """Tweedie denoiser ``E[x0 | x] = x + sigma^2 score = x + sigma F_theta``; shape of ``x``."""
        x4, s, squeeze = self._prepare(x, sigma)
        out = x4 + s[:, None, None, None] * self._net(x4, s, pos)
        return out[:, 0] if squeeze else out


def image_coordinates(H: int, W: int, top: float = 0.0, left: float = 0.0, height: int | None = None,
                      width: int | None = None, dtype=torch.float32, device=None) -> torch.Tensor:
    """``(2, H, W)`` normalised coordinates ``(y, x)`` of an ``H x W`` window of an image.

    The window's first pixel is pixel ``(top, left)`` of an image of ``height x width`` (default: the window
    is the image), whose pixel centres span ``[-1, 1]``: ``y_i = (top + i + 1/2 - height/2) / (height/2)``.
    Pixels outside the image (negative ``top``, or windows past its end) get ``|y| > 1``.
    """
    height, width = int(height or H), int(width or W)
    y = (torch.arange(H, dtype=torch.float64) + top + 0.5 - height / 2) / (height / 2)
    x = (torch.arange(W, dtype=torch.float64) + left + 0.5 - width / 2) / (width / 2)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([yy, xx]).to(dtype=dtype, device=device)


def build_score_unet(config: str | dict = "small64", **overrides) -> ScoreUNet:
    """Build a :class:`ScoreUNet` from a named configuration (``CONFIGS``) or a kwargs dict."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown score UNet config {config!r}; choose one of {sorted(CONFIGS)}")
        kwargs = dict(CONFIGS[config])
    elif isinstance(config, dict):
        kwargs = dict(config)
    else:
        raise TypeError(f"config must be a name or a dict, got {type(config).__name__}")
    kwargs.update(overrides)
    return ScoreUNet(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
