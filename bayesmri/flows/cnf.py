"""Conditional normalising flow with nullspace learning (Wen, Ahmad & Schniter 2023).

Model
-----
Measurements: multi-coil k-space ``y = P F x + noise`` with ``x: (B, C, H, W)`` coil images. In the image
domain the paper's operator ``A = blkdiag(F^H P^T P F)`` (eq. 3, :class:`bayesmri.physics.CoilImageMRI`) is
an orthogonal projection, so ``A^+ = A`` and ``A^+ y = F^H (M k)`` is the zero-filled coil image ``x_zf``.

* Conditioning network ``g(y)``: a fastMRI UNet on ``x_zf`` (``2C`` real channels) whose output and last
  feature map feed a feature extractor with one output per flow level (strided convolutions, the level-l
  output at resolution ``H / 2^(l+1)``).
* Flow ``h(., g(y))``: multi-scale RealNVP with ``L`` levels; level ``l`` = squeeze -> transition (ActNorm,
  fixed orthogonal 1x1) -> ``B`` x [ActNorm, fixed orthogonal 1x1, one-sided affine coupling conditioned
  on the level's features] -> split half of the channels off to the latent (the last level keeps all).
* Nullspace learning (eqs. 13-18): the flow models ``u = (I - A^+ A) x`` and a sample is
  ``x = (I - A^+ A) h(z, y) + A^+ y`` (eq. 15), data consistent by construction. ``nullspace=False``
  trains on ``x`` itself (the ablation of Table 3), sampled with or without the data-consistency step.

Scale: every measurement is divided by ``s`` = the 95th percentile of the RSS of its zero-filled coil
images (Wen sec. 3.2; never the ground truth) and outputs are multiplied back.

Density: ``ln p(u | y) = ln p_Z(h^{-1}(u, y)) + ln |det dh^{-1}/du|`` (change of variables, in normalised
units); training minimises it in bits per dimension ``-ln p / (D ln 2)``, ``D = 2 C H W``.

MAP (eqs. 23-27): maximise ``ln p(u | y)`` over the unmeasured k-space coefficients ``c`` of
``u = F^H (1 - M) c`` (so the estimate stays data consistent), initialised at the posterior mean.

Importing this module registers the model type ``cnf`` in :mod:`bayesmri.priors.loading`; the method ``cnf``
is :mod:`bayesmri.methods.cnf`.
"""
from __future__ import annotations

import math
import time
import warnings

import torch
from torch import nn
import torch.nn.functional as F

from .._validate import as_generator, check_kspace
from ..physics.cartesian import as_mask4d
from ..physics.fft import fft2c, ifft2c
from ..physics.intensity import intensity_scale
from .base import make_base
from .layers import ActNorm, AffineCoupling, FixedOrthogonal1x1, InvertibleSequential, Squeeze
from .unet import UNet

__all__ = [
    "ConditionalNF",
    "complex_to_channels",
    "channels_to_complex",
    "zero_filled_and_scale",
    "cnf_sample",
    "cnf_log_posterior",
    "cnf_map",
    "load_cnf",
    "TRAINING_NOISE_STD",
]

#: Default std (per real channel, normalised units: 95th percentile of the zero-filled RSS = 1) of the
#: image-domain training noise added to ``x`` before the nullspace projection (``CNFLoss``). About twice
#: the acquisition noise of the simulated data at SNR 30 dB (0.0035-0.0048 per real channel) and half the
#: RMS of the pretrained UNet's nullspace residual (~0.02): it bounds the flow's stretch of the
#: exactly-zero background directions (to 1/0.01) without swamping the posterior spread it should learn.
TRAINING_NOISE_STD = 0.01


# ----------------------------------------------------------------------------------------- helpers
def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` complex -> ``(B, 2C, H, W)`` real, channels ``[re_0, im_0, re_1, im_1, ...]``."""
    B, C, H, W = x.shape
    return torch.view_as_real(x).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, H, W)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`complex_to_channels`."""
    B, C2, H, W = x.shape
    return torch.view_as_complex(x.reshape(B, C2 // 2, 2, H, W).permute(0, 1, 3, 4, 2).contiguous())


def zero_filled_and_scale(kspace: torch.Tensor, mask: torch.Tensor, percentile: float = 0.95):
    """Zero-filled coil images ``A^+ y = F^H (M k)`` and the normalisation ``s`` (per item).

    Parameters
    ----------
    kspace : ``(B, C, H, W)`` complex multi-coil k-space (values off the mask are ignored).
    mask : 0/1 mask broadcasting to ``(B, C, H, W)`` (``(W,)``, ``(H, W)``, ``(B, 1, H, W)``, ...).

    Returns
    -------
    zf : ``(B, C, H, W)`` complex, ``A^+ y`` in the scale of ``kspace``.
    scale : ``(B,)`` real, the 95th percentile of ``RSS(zf)`` (Wen sec. 3.2).
    mask4d : ``(B or 1, 1, H or 1, W)`` float mask.
    """
    check_kspace(kspace, "kspace", ndim_min=4)
    if kspace.ndim != 4:
        raise ValueError(f"kspace must have shape (B, C, H, W), got {tuple(kspace.shape)}")
    H, W = kspace.shape[-2:]
    m = as_mask4d(mask.to(kspace.device), H, W)
    zf = ifft2c(m * kspace)
    mag = torch.sqrt((zf.real**2 + zf.imag**2).sum(1)).flatten(1)
    scale = intensity_scale(mag, percentile, per_item=True)
    return zf, scale, m


def _project_null(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``(I - A^+ A) x = F^H (1 - M) F x`` (eqs. 16-17)."""
    return ifft2c((1.0 - m) * fft2c(x))


# ----------------------------------------------------------------------------------------- model
class ConditionalNF(nn.Module):
    """The CNF of Wen et al. (see the module docstring).

    Parameters
    ----------
    ncoils : int
        Number of coils ``C``; the flow works on ``2C`` real channels.
    img_size : (H, W)
        Both divisible by ``2^num_levels``.
    num_levels, num_blocks : int
        ``L`` and ``B`` (paper: 3 and 20).
    unet_chans, unet_pools : int
        UNet width of the first level and number of pools (paper / fastMRI: 4 pools).
    cond_chans : int
        Channels of each level's conditioning features.
    hidden : int
        Width of the coupling subnetworks.
    clamp : float
        Soft clamp of the coupling log-scales.
    base : "gaussian" | "radial"
        Base distribution over the concatenated latent (:mod:`bayesmri.flows.base`).
    nullspace : bool
        Model ``u = (I - A^+A) x`` (True, the paper) or ``x`` itself (ablation).
    mean_shift : bool
        Put a conditional translation in front of the flow: it models ``u - mu(y)`` with ``mu`` the UNet
        output (projected onto the nullspace for a nullspace model). Invertible with ``logdet = 0``; the
        MSE-pretrained UNet then gives the posterior mean from the first joint step, where the paper's
        flow has to learn it through the couplings (slow on a CPU budget). False is the paper's model.
    seed : int
        Seed of the fixed orthogonal 1x1 convolutions.
    """

    model_type = "cnf"

    def __init__(
        self,
        ncoils: int = 8,
        img_size=(64, 64),
        num_levels: int = 3,
        num_blocks: int = 20,
        unet_chans: int = 32,
        unet_pools: int = 4,
        cond_chans: int = 32,
        hidden: int = 64,
        clamp: float = 2.0,
        base: str = "gaussian",
        nullspace: bool = True,
        seed: int = 0,
        mean_shift: bool = False,
    ):
        super().__init__()
        H, W = (int(img_size[0]), int(img_size[1]))
        for name, v in (("ncoils", ncoils), ("num_levels", num_levels), ("num_blocks", num_blocks),
                        ("cond_chans", cond_chans), ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if H % 2**num_levels or W % 2**num_levels:
            raise ValueError(f"img_size {(H, W)} must be divisible by 2^num_levels = {2**num_levels}")
        self.config = dict(ncoils=ncoils, img_size=[H, W], num_levels=num_levels, num_blocks=num_blocks,
                           unet_chans=unet_chans, unet_pools=unet_pools, cond_chans=cond_chans, hidden=hidden,
                           clamp=float(clamp), base=base, nullspace=bool(nullspace), seed=int(seed),
                           mean_shift=bool(mean_shift))
        self.ncoils, self.img_size, self.num_levels = ncoils, (H, W), num_levels
        self.nullspace = bool(nullspace)
        self.mean_shift = bool(mean_shift)
        self.base = make_base(base)
        c0 = 2 * ncoils
        self.unet = UNet(c0, c0, chans=unet_chans, num_pools=unet_pools, zero_out=True)
        # feature extractor: one stride-2 stage per level, each output feeding the next stage
        stages, c_in = [], c0 + unet_chans
        for _ in range(num_levels):
            stages.append(nn.Sequential(
                nn.Conv2d(c_in, cond_chans, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(cond_chans, cond_chans, 3, padding=1), nn.LeakyReLU(0.2),
            ))
            c_in = cond_chans
        self.extractor = nn.ModuleList(stages)
        levels, self.z_shapes = [], []
        c, h, w = c0, H, W
        for lvl in range(num_levels):
            c, h, w = 4 * c, h // 2, w // 2
            layers = [Squeeze(), ActNorm(c), FixedOrthogonal1x1(c, seed=seed * 1000 + lvl * 100)]
            for b in range(num_blocks):
                layers += [ActNorm(c), FixedOrthogonal1x1(c, seed=seed * 1000 + lvl * 100 + b + 1),
                           AffineCoupling(c, cond_chans, hidden, clamp)]
            levels.append(InvertibleSequential(*layers))
            if lvl < num_levels - 1:
                self.z_shapes.append((c - c // 2, h, w))
                c = c // 2
            else:
                self.z_shapes.append((c, h, w))
        self.levels = nn.ModuleList(levels)
        self.dim = 2 * ncoils * H * W

    # ------------------------------------------------------------------ conditioning
    def conditioning(self, zf_real: torch.Tensor, mask: torch.Tensor | None = None):
        """``g(y)``: UNet output ``(B, 2C, H, W)`` and the conditions: a list of the L level features,
        followed (``mean_shift=True``) by the shift ``mu(y)`` (needs ``mask`` for a nullspace model)."""
        out, feat = self.unet.forward_features(zf_real)
        h, conds = torch.cat([out, feat], dim=1), []
        for stage in self.extractor:
            h = stage(h)
            conds.append(h)
        if self.mean_shift:
            if self.nullspace:
                if mask is None:
                    raise ValueError("a nullspace model with mean_shift needs the mask in conditioning()")
                conds.append(complex_to_channels(_project_null(channels_to_complex(out), mask.to(out.dtype))))
            else:
                conds.append(out)
        return out, conds

    # ------------------------------------------------------------------ flow
    def encode(self, u: torch.Tensor, conds):
        """Normalising direction ``z = h^{-1}(u, y)``: ``u (B, 2C, H, W)`` -> ``z (B, D)``, ``logdet (B,)``."""
        zs, logdet, x = [], u.new_zeros(u.shape[0]), u
        if self.mean_shift:
            x = u - conds[self.num_levels]
        for lvl, (flow, cond) in enumerate(zip(self.levels, conds)):
            x, ld = flow(x, cond)
            logdet = logdet + ld
            if lvl < self.num_levels - 1:
                k = x.shape[1] // 2
                zs.append(x[:, k:].flatten(1))
                x = x[:, :k]
            else:
                zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), logdet

    def decode(self, z: torch.Tensor, conds) -> torch.Tensor:
        """Generative direction ``u = h(z, y)``: ``z (B, D)`` -> ``(B, 2C, H, W)``."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"z must have shape (B, {self.dim}), got {tuple(z.shape)}")
        sizes = [c * h * w for c, h, w in self.z_shapes]
        parts = list(torch.split(z, sizes, dim=1))
        x = None
        for lvl in reversed(range(self.num_levels)):
            zl = parts[lvl].reshape(z.shape[0], *self.z_shapes[lvl])
            x = zl if x is None else torch.cat([x, zl], dim=1)
            x = self.levels[lvl].inverse(x, conds[lvl])
        if self.mean_shift:
            x = x + conds[self.num_levels]
        return x

    def log_prob(self, u: torch.Tensor, conds) -> torch.Tensor:
        """``ln p(u | y)`` in normalised units, ``(B,)``."""
        z, logdet = self.encode(u, conds)
        return self.base.log_prob(z) + logdet

    # ------------------------------------------------------------------ training losses
    def target(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Flow target: ``(I - A^+A) x`` with nullspace learning, else ``x`` (complex in, complex out)."""
        return _project_null(x, m) if self.nullspace else x

    def forward(self, x: torch.Tensor, zf: torch.Tensor, mask: torch.Tensor, mode: str = "nll",
                noise: torch.Tensor | None = None):
        """Training loss on a normalised batch (the :class:`bayesmri.train.Trainer` calls this).

        ``x``, ``zf``: ``(B, C, H, W)`` complex ground-truth and zero-filled coil images, already divided
        by the scale; ``mask`` broadcasting to them. ``mode="mse"``: UNet MSE on the flow target (the
        pretraining); ``mode="nll"``: negative log-likelihood in bits per dimension of the flow target
        of ``x + noise``.

        ``noise``: an optional complex ``(B, C, H, W)`` image-domain perturbation of ``x`` (training noise,
        :data:`TRAINING_NOISE_STD`). It is added *before* the nullspace projection, so the perturbed target
        ``(I - A^+A)(x + noise)`` stays in the nullspace, as every sample of eq. 15 does. Without it the
        target is exactly zero on image rows outside the head (a row of zeros stays zero under the 1-D
        column projection), directions along which the NLL of a volume-changing flow is unbounded below.
        The MSE of ``mode="mse"`` is always taken on the clean target. Returns ``(loss, logs)``.
        """
        m = mask.to(x.real.dtype)
        zf_r = complex_to_channels(zf)
        if mode == "mse":
            t = complex_to_channels(self.target(x, m))
            out = self.unet(zf_r)
            mse = F.mse_loss(out, t)
            return mse, {"mse": mse.detach()}
        if mode != "nll":
            raise ValueError(f"mode must be 'nll' or 'mse', got {mode!r}")
        if noise is not None and (not noise.is_complex() or noise.shape != x.shape):
            raise ValueError(f"noise must be complex with the shape of x {tuple(x.shape)}, got "
                             f"{noise.dtype} {tuple(noise.shape)}")
        t = complex_to_channels(self.target(x, m))
        tn = t if noise is None else complex_to_channels(self.target(x + noise, m))
        out, conds = self.conditioning(zf_r, m)
        logp = self.log_prob(tn, conds)
        bpd = -logp.mean() / (self.dim * math.log(2.0))
        with torch.no_grad():
            mse = F.mse_loss(out, t)
        return bpd, {"bpd": bpd.detach(), "unet_mse": mse}


# ----------------------------------------------------------------------------------------- inference
def _prepare(model: ConditionalNF, kspace, mask):
    zf, scale, m = zero_filled_and_scale(kspace, mask)
    C, (H, W) = model.ncoils, model.img_size
    if kspace.shape[1:] != (C, H, W):
        raise ValueError(f"kspace has shape {tuple(kspace.shape)} but the model expects (B, {C}, {H}, {W})")
    return zf, scale, m


@torch.no_grad()
def cnf_sample(model: ConditionalNF, kspace: torch.Tensor, mask: torch.Tensor, n_samples: int = 1, *,
               generator=None, chunk: int = 32, data_consistency: bool = True, blowup: float = 1e3,
               max_redraws: int = 10, progress: bool = False, max_time: float | None = None):
    """Draw posterior samples of the coil images (eq. 15).

    The conditioning network runs once per measurement; its features are broadcast to the ``P`` samples,
    which go through the flow in chunks of ``chunk``. A sample is *blown up* if it is not finite or if
    ``max |h(z)|`` exceeds ``blowup`` (normalised units, where the 95th percentile of the zero-filled RSS is
    1); such samples are redrawn (at most ``max_redraws`` rounds) and counted.

    The chunks run in the samplers' loop (:class:`bayesmri.samplers.base.ChainLoop`, one step per chunk): its
    progress bar, and a Ctrl-C or ``max_time`` stop that keeps the samples finished for every item of the
    batch (``info["interrupted"]``; a stop before the first chunk re-raises ``KeyboardInterrupt``).

    Parameters
    ----------
    kspace : ``(B, C, H, W)`` complex; mask : 0/1 broadcasting to it.

    Returns
    -------
    samples : ``(P, B, C, H, W)`` complex coil images in the scale of ``kspace`` (fewer than ``P`` when stopped).
    info : dict with ``redrawn`` (number of redrawn samples), ``scale`` ``(B,)``, ``cond_time`` and
    ``flow_time`` (seconds), ``interrupted``.
    """
    from ..samplers.base import ChainLoop

    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    model.eval()
    dev = next(model.parameters()).device
    kspace = kspace.to(dev)
    gen = as_generator(generator, device=dev)
    zf, scale, m = _prepare(model, kspace, mask)
    zf_n = zf / scale.view(-1, 1, 1, 1)
    t0 = time.perf_counter()
    _, conds = model.conditioning(complex_to_channels(zf_n), m)
    _sync(dev)
    t_cond = time.perf_counter() - t0
    Bm = kspace.shape[0]
    out = torch.empty((n_samples, Bm, *kspace.shape[1:]), dtype=zf.dtype, device=dev)
    redrawn = 0
    done = 0  # samples finished for every item of the batch
    with ChainLoop("cnf", progress, max_time, total=Bm * math.ceil(n_samples / chunk)) as loop:
        for b in range(Bm):
            cb = [c[b : b + 1] for c in conds]
            mb = m if m.shape[0] == 1 else m[b : b + 1]
            for p0 in range(0, n_samples, chunk):
                n = min(chunk, n_samples - p0)
                cexp = [c.expand(n, *c.shape[1:]) for c in cb]
                u = model.decode(model.base.sample(n, model.dim, generator=gen, device=dev), cexp)
                for _ in range(max_redraws):
                    bad = ~torch.isfinite(u).flatten(1).all(1) | (u.abs().flatten(1).nan_to_num(float("inf")).amax(1) > blowup)
                    nb = int(bad.sum())
                    if nb == 0:
                        break
                    redrawn += nb
                    u[bad] = model.decode(model.base.sample(nb, model.dim, generator=gen, device=dev),
                                          [c[:nb] for c in cexp])
                else:
                    warnings.warn(f"cnf: samples still blown up after {max_redraws} redraw rounds", RuntimeWarning)
                x = channels_to_complex(u)
                if data_consistency:
                    x = _project_null(x, mb) + zf_n[b : b + 1]
                out[p0 : p0 + n, b] = x * scale[b]
                done = p0 + n if b == Bm - 1 else 0
                loop.step()
        _sync(dev)  # inside the loop, so that its wall time includes the queued GPU work
    if loop.interrupted:
        if done == 0:
            raise KeyboardInterrupt("cnf was interrupted before its first sample existed")
        out = out[:done]
    return out, {"redrawn": redrawn, "scale": scale, "cond_time": t_cond, "flow_time": loop.wall_time,
                 "interrupted": loop.interrupted}


def _sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize(dev)


def cnf_log_posterior(model: ConditionalNF, x: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor,
                      conds=None) -> torch.Tensor:
    """``ln p(u | y)`` of a hypothesis ``x: (B, C, H, W)`` coil images (scale of ``kspace``), ``(B,)``.

    ``u = (I - A^+A) x / s`` for a nullspace model, ``x / s`` otherwise; the value is in normalised units,
    i.e. up to the constant ``-D ln s`` that is the same for every hypothesis of one measurement.
    """
    model.eval()
    zf, scale, m = _prepare(model, kspace, mask)
    if conds is None:
        with torch.no_grad():
            _, conds = model.conditioning(complex_to_channels(zf / scale.view(-1, 1, 1, 1)), m)
    xs = x / scale.view(-1, 1, 1, 1)
    u = model.target(xs, m)
    return model.log_prob(complex_to_channels(u), conds)


def cnf_map(model: ConditionalNF, kspace: torch.Tensor, mask: torch.Tensor, init: torch.Tensor, *,
            steps: int = 200, lr: float = 1e-2, progress: bool = False):
    """MAP over the unmeasured k-space (eqs. 23-27): ``max_c ln p(u(c) | y)``, ``u = F^H (1 - M) c``.

    ``init``: ``(B, C, H, W)`` coil images (e.g. the posterior mean), scale of ``kspace``. Returns the
    data-consistent estimate ``x = A^+ y + u`` (scale of ``kspace``) and the log-posterior trace.
    """
    model.eval()
    dev = next(model.parameters()).device
    zf, scale, m = _prepare(model, kspace.to(dev), mask)
    s = scale.view(-1, 1, 1, 1)
    zf_n = zf / s
    with torch.no_grad():
        _, conds = model.conditioning(complex_to_channels(zf_n), m)
    c = torch.view_as_real((1 - m) * fft2c(init.to(dev) / s)).clone().requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([c], lr=lr)
    trace = []
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="cnf map")
    try:
        for _ in it:
            u = ifft2c((1 - m) * torch.view_as_complex(c))
            x = u + zf_n
            t = model.target(x, m) if model.nullspace else x
            logp = model.log_prob(complex_to_channels(t), conds)
            opt.zero_grad()
            (-logp.sum()).backward()
            opt.step()
            trace.append(logp.detach())
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    with torch.no_grad():
        x = (ifft2c((1 - m) * torch.view_as_complex(c)) + zf_n) * s
    return x, torch.stack(trace) if trace else torch.empty(0)


# ----------------------------------------------------------------------------------------- loading + method
def load_cnf(name_or_path="cnf64", device="cpu") -> ConditionalNF:
    """Load shipped (``"cnf64"``) or saved CNF weights (safetensors + JSON)."""
    from ..priors.loading import load_model

    return load_model(name_or_path, device=device)


def _register_model_type():
    from ..priors.loading import register_model_type

    register_model_type("cnf", "bayesmri.flows.cnf:ConditionalNF")


_register_model_type()


def _cnf_at_size(model: ConditionalNF, size) -> ConditionalNF:
    """The same weights in a CNF built for ``size`` (every layer is convolutional or per channel)."""
    H, W = (int(size[0]), int(size[1]))
    f = 2**model.num_levels
    if H % f or W % f:
        raise ValueError(f"cnf: size_policy='native' needs H and W divisible by {f}, got {H}x{W}; "
                         "use size_policy='kspace'")
    m = ConditionalNF(**{**model.config, "img_size": [H, W]})
    m.load_state_dict(model.state_dict())
    return m.to(next(model.parameters()).device).eval()
