"""Conditional invertible neural networks (cINN) for inverse problems (Denker et al. 2021).

A cINN is a bijection ``T_theta(., c): x -> z`` conditioned on ``c = C_theta(H(y))``, the features that a
CNN ``C_theta`` computes from a model-based inversion ``H(y)`` of the measurement (zero-filled IFFT, FBP,
pseudo-inverse; :mod:`bayesmri.flows.conditioning`). Trained by maximum likelihood (eq. 8)::

    -ln p(x | y) = -ln p_Z(T(x, c)) - ln |det dT/dx (x, c)|,

optionally plus ``alpha MSE(H_theta(y), x)`` (conditional loss, eq. 20) and with training noise
``x + N(0, 0.005)`` on the targets (sec. 4.2.3). Sampling: ``x = T^{-1}(z, c)``, ``z ~ p_Z``; the posterior
is summarised by the conditional mean and the pixel-wise variance of ``N`` samples (eq. 4).
Base ``p_Z``: standard Gaussian or the radial Gaussian of eq. 16 (:mod:`bayesmri.flows.base`).

Models (both map ``x: (B, 1, H, W)`` real to a flat ``z: (B, H W)``):

* :class:`MultiScaleCINN` (sec. 2.7): per level [GLOW couplings (if >= 2 channels), invertible
  downsampling (checkerboard / Haar / learned orthogonal), GLOW couplings, split off half the channels],
  then a fully connected part (affine couplings on the flattened rest, conditioned on a feature vector).
  Conditioner: :class:`~bayesmri.flows.conditioning.ResNetConditioner`.
* :class:`~bayesmri.flows.iunet.ConditionalIUNet` (sec. 2.8): invertible UNet with additive (default) or
  affine couplings; conditioner: a UNet.

Functions: :func:`conditional_mean_std` (eq. 4), :func:`refine_sample` (eq. 22),
:func:`save_cinn` / :func:`load_cinn` (safetensors + JSON).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from .._validate import as_generator
from ..physics.intensity import intensity_scale
from .base import make_base
from .cinn_layers import FCCoupling, FixedPermutation, GlowCoupling, make_downsampling
from .conditioning import ResNetConditioner
from .layers import FixedOrthogonal1x1, InvertibleSequential

__all__ = [
    "ConditionalINN",
    "MultiScaleCINN",
    "build_cinn",
    "conditional_mean_std",
    "refine_sample",
    "save_cinn",
    "load_cinn",
    "TRAINING_NOISE_STD",
]

#: Denker et al. sec. 4.2.3: Gaussian noise of variance 0.005 added to training targets.
TRAINING_NOISE_STD = math.sqrt(0.005)


def _check_x(x, shape, name="x"):
    if not isinstance(x, torch.Tensor) or x.is_complex():
        raise TypeError(f"{name} must be a real torch.Tensor")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


class ConditionalINN(nn.Module):
    """Shared interface of the cINN models (subclasses implement ``_forward``/``_inverse``).

    ``forward(x, c) -> (z (B, n), logdet (B,))`` (``c`` the inversion image ``(B, cond_in, H, W)``);
    ``inverse(z, c) -> x``; ``log_prob(x, c) -> (B,)``; ``sample(c, n_samples, generator) -> (P, B, 1, H, W)``.
    ``conditioning(c)`` runs the conditioner once; pass its result as ``cond=`` to reuse it for many
    samples.
    """

    model_type = "cinn"

    def _setup_base(self, base: str):
        self.base_name = base
        self.base = make_base(base)

    @property
    def n_dims(self) -> int:
        return self.img_shape[0] * self.img_shape[1]

    def conditioning(self, c):
        _check_x(c, (self.cond_in, *self.img_shape), "c")
        return self.conditioner(c)

    def forward(self, x, c=None, cond=None):
        _check_x(x, (1, *self.img_shape))
        cond = self.conditioning(c) if cond is None else cond
        return self._forward(x, cond)

    def inverse(self, z, c=None, cond=None):
        if z.ndim != 2 or z.shape[1] != self.n_dims:
            raise ValueError(f"z must have shape (B, {self.n_dims}), got {tuple(z.shape)}")
        cond = self.conditioning(c) if cond is None else cond
        return self._inverse(z, cond)

    def log_prob(self, x, c=None, cond=None):
        """``ln p(x | y)`` per item ``(B,)`` in nats (change of variables, eq. 8)."""
        z, logdet = self.forward(x, c, cond)
        return self.base.log_prob(z) + logdet

    def image_estimate(self, c=None, cond=None):
        """The conditioner's image ``H_theta(y)`` ``(B, 1, H, W)`` (target of the conditional loss, eq. 20)."""
        cond = self.conditioning(c) if cond is None else cond
        return cond[2]

    @torch.no_grad()
    def sample(self, c, n_samples: int = 1, generator=None, cond=None, temperature: float = 1.0, *,
               chunk: int | None = None, progress: bool = False, max_time: float | None = None):
        """``n_samples`` posterior samples per item, ``(P, B, 1, H, W)``; one conditioning pass for all.

        The base samples of all ``P`` are drawn first (so ``chunk`` does not change which samples a seed
        gives), then inverted ``chunk`` samples at a time (default all at once) in the samplers' loop
        (:class:`bayesmri.samplers.base.ChainLoop`, one step per chunk): its progress bar, and a Ctrl-C or
        ``max_time`` stop that returns the samples finished so far (``P' < P``; a stop before the first
        chunk re-raises ``KeyboardInterrupt``).
        """
        from ..samplers.base import ChainLoop

        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if chunk is not None and not (isinstance(chunk, int) and chunk >= 1):
            raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
        cond = self.conditioning(c) if cond is None else cond
        B = cond[0][0].shape[0]
        g = as_generator(generator)
        z = self.base.sample(n_samples * B, self.n_dims, generator=g, device=cond[0][0].device) * temperature
        chunk = n_samples if chunk is None else chunk
        out, done = None, 0
        with ChainLoop("cinn", progress, max_time, total=math.ceil(n_samples / chunk)) as loop:
            for p0 in range(0, n_samples, chunk):
                n = min(chunk, n_samples - p0)
                x = self._inverse(z[p0 * B:(p0 + n) * B], _repeat_cond(cond, n))
                if out is None:
                    out = x.new_empty((n_samples * B, *x.shape[1:]))
                out[p0 * B:(p0 + n) * B] = x
                done = p0 + n
                loop.step()
        if done == 0:
            raise KeyboardInterrupt("cinn was interrupted before its first sample existed")
        return out[:done * B].reshape(done, B, 1, *self.img_shape)


def _repeat_cond(cond, P):
    feats, vec, img = cond

    def r(t):
        return None if t is None else t.repeat(P, *([1] * (t.ndim - 1)))

    return [r(f) for f in feats], r(vec), r(img)


class MultiScaleCINN(ConditionalINN):
    """Multi-scale cINN (Denker et al. sec. 2.7; see the module docstring).

    Parameters
    ----------
    img_size : int
        Square images ``(B, 1, img_size, img_size)``; divisible by ``2^n_levels``.
    cond_in : int
        Channels of the inversion image (2 for zero-filled MRI ``[re, im]``, 1 for FBP / CS).
    n_levels : int
        Number of downsampling levels.
    couplings : int
        GLOW couplings before and after each downsampling.
    hidden : int
        Hidden channels of the coupling subnetworks.
    downsampling : {"haar", "checkerboard", "learned"}
    cond_channels : int
        Feature channels of the ResNet conditioner at full resolution (doubling per scale, at most 4x).
    fc_couplings, fc_hidden, cond_vec : int
        The fully connected part: couplings, MLP width, length of the conditioning vector.
    clamp : float
        Soft clamp of the log-scales.
    base : {"radial", "gaussian"}
    """

    def __init__(self, img_size: int, cond_in: int = 1, n_levels: int = 2, couplings: int = 2, hidden: int = 32,
                 downsampling: str = "haar", cond_channels: int = 16, fc_couplings: int = 2, fc_hidden: int = 256,
                 cond_vec: int = 64, clamp: float = 1.5, base: str = "radial"):
        super().__init__()
        if not isinstance(img_size, int) or img_size < 2 or img_size % (2**n_levels):
            raise ValueError(f"img_size must be a positive integer divisible by 2^n_levels={2**n_levels}, got {img_size!r}")
        self.config = dict(img_size=img_size, cond_in=cond_in, n_levels=n_levels, couplings=couplings, hidden=hidden,
                           downsampling=downsampling, cond_channels=cond_channels, fc_couplings=fc_couplings,
                           fc_hidden=fc_hidden, cond_vec=cond_vec, clamp=clamp, base=base)
        self.model_type = "cinn_multiscale"
        self.img_shape = (img_size, img_size)
        self.cond_in = cond_in
        self._setup_base(base)
        cch = [min(cond_channels * 2**s, 4 * cond_channels) for s in range(n_levels + 1)]
        self.conditioner = ResNetConditioner(cond_in, cch, vec_dim=cond_vec if fc_couplings else 0)
        ch, seed = 1, 0
        self.pre, self.down, self.post = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.split_channels = []
        for lev in range(n_levels):
            self.pre.append(self._couplings(ch, cch[lev], couplings, hidden, clamp, seed) if ch >= 2 else InvertibleSequential())
            seed += couplings
            self.down.append(make_downsampling(downsampling, ch))
            ch *= 4
            self.post.append(self._couplings(ch, cch[lev + 1], couplings, hidden, clamp, seed))
            seed += couplings
            self.split_channels.append(ch // 2)
            ch -= ch // 2
        self.final_shape = (ch, img_size // 2**n_levels, img_size // 2**n_levels)
        d = ch * self.final_shape[1] * self.final_shape[2]
        fc = []
        for k in range(fc_couplings):
            fc += [FixedPermutation(d, seed=1000 + k), FCCoupling(d, cond_vec, fc_hidden, clamp)]
        self.fc = InvertibleSequential(*fc)

    @staticmethod
    def _couplings(ch, cond_ch, k, hidden, clamp, seed):
        mods = []
        for i in range(k):
            mods += [FixedOrthogonal1x1(ch, seed=seed + i), GlowCoupling(ch, cond_ch, hidden, clamp)]
        return InvertibleSequential(*mods)

    def _forward(self, x, cond):
        feats, vec, _ = cond
        logdet = x.new_zeros(x.shape[0])
        zs = []
        h = x
        for lev in range(len(self.down)):
            h, ld = self.pre[lev](h, feats[lev]); logdet = logdet + ld
            h, ld = self.down[lev](h); logdet = logdet + ld
            h, ld = self.post[lev](h, feats[lev + 1]); logdet = logdet + ld
            k = self.split_channels[lev]
            zs.append(h[:, :k].flatten(1))
            h = h[:, k:]
        h, ld = self.fc(h.flatten(1), vec); logdet = logdet + ld
        zs.append(h)
        return torch.cat(zs, 1), logdet

    def _inverse(self, z, cond):
        feats, vec, _ = cond
        B = z.shape[0]
        sizes, shapes = [], []
        ch, s = 1, self.img_shape[0]
        for lev in range(len(self.down)):
            ch, s = ch * 4, s // 2
            k = self.split_channels[lev]
            shapes.append((k, s, s))
            sizes.append(k * s * s)
            ch -= k
        sizes.append(z.shape[1] - sum(sizes))
        parts = list(torch.split(z, sizes, dim=1))
        h = self.fc.inverse(parts[-1], vec).reshape(B, *self.final_shape)
        for lev in reversed(range(len(self.down))):
            h = torch.cat([parts[lev].reshape(B, *shapes[lev]), h], 1)
            h = self.post[lev].inverse(h, feats[lev + 1])
            h = self.down[lev].inverse(h)
            h = self.pre[lev].inverse(h, feats[lev])
        return h


def build_cinn(model_type: str, config: dict) -> ConditionalINN:
    """Rebuild a cINN from ``model_type`` (``cinn_multiscale`` / ``cinn_iunet``) and its config dict."""
    if model_type == "cinn_multiscale":
        return MultiScaleCINN(**config)
    if model_type == "cinn_iunet":
        from .iunet import ConditionalIUNet

        return ConditionalIUNet(**config)
    raise ValueError(f"unknown cINN model_type {model_type!r}; expected 'cinn_multiscale' or 'cinn_iunet'")


@torch.no_grad()
def conditional_mean_std(model: ConditionalINN, c: torch.Tensor, n_samples: int = 100, generator=None,
                         chunk: int = 25, return_samples: bool = False):
    """Conditional mean and pixel-wise standard deviation of ``n_samples`` samples (eq. 4).

    ``c``: inversion images ``(B, cond_in, H, W)``. Returns ``mean, std`` ``(B, 1, H, W)`` (and the
    samples ``(P, B, 1, H, W)`` if asked). Samples are drawn ``chunk`` at a time with one conditioning
    pass for all of them.
    """
    g = as_generator(generator)
    cond = model.conditioning(c)
    out, done = [], 0
    while done < n_samples:
        p = min(chunk, n_samples - done)
        out.append(model.sample(c, p, generator=g, cond=cond))
        done += p
    xs = torch.cat(out, 0)
    mean = xs.mean(0)
    std = xs.std(0, unbiased=True) if n_samples > 1 else torch.zeros_like(mean)
    return (mean, std, xs) if return_samples else (mean, std)


def refine_sample(model: ConditionalINN, forward_op, y: torch.Tensor, c: torch.Tensor, x0: torch.Tensor,
                  lam: float = 1.0, steps: int = 100, lr: float = 1e-3) -> torch.Tensor:
    """Sample refinement (eq. 22): ``min_x ||A x - y||^2 - lam ln p(x | y)`` by Adam from ``x0``.

    ``forward_op(x (B, 1, H, W)) -> measurements shaped like y`` (real or complex). The paper runs 100
    Adam steps with learning rate 1e-4 on LoDoPaB; ``lr`` here is in the units of our images.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    with torch.no_grad():
        cond = model.conditioning(c)
    cond = tuple([f.detach() for f in cond[0]]), (None if cond[1] is None else cond[1].detach()), cond[2].detach()
    x = x0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(int(steps)):
            opt.zero_grad()
            r = forward_op(x) - y
            data = (r.abs() ** 2).flatten(1).sum(1)
            obj = data - lam * model.log_prob(x, cond=cond) if lam else data
            obj.sum().backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return x.detach()


def save_cinn(model: ConditionalINN, stem, metadata: dict | None = None) -> Path:
    """Write ``stem.safetensors`` + ``stem.json`` atomically (:func:`bayesmri.io.atomic_path`)."""
    from safetensors.torch import save_file

    from ..io import atomic_path, atomic_write

    stem = Path(stem)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    text = json.dumps({"model_type": model.model_type, "config": model.config, **(metadata or {})}, indent=2)
    with atomic_path(str(stem) + ".safetensors") as tmp:
        save_file(sd, str(tmp))
    atomic_write(str(stem) + ".json", text)
    return stem.with_suffix(".safetensors")


def load_cinn(stem, device="cpu") -> tuple[ConditionalINN, dict]:
    """Load a cINN saved by :func:`save_cinn` (or exported by the trainer). Returns ``(model, json)``."""
    from safetensors.torch import load_file

    stem = Path(str(stem).removesuffix(".safetensors").removesuffix(".json"))
    meta_path, w_path = Path(str(stem) + ".json"), Path(str(stem) + ".safetensors")
    if not meta_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"no cINN weights at {stem}(.json|.safetensors)")
    meta = json.loads(meta_path.read_text())
    model = build_cinn(meta["model_type"], meta["config"])
    model.load_state_dict(load_file(str(w_path), device=str(device)))
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------- method
_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Single-coil MRI cINN (64 x 64, magnitude images, one fixed uniform random-column mask R = 4, 8 % ACS).
SINGLE_COIL_WEIGHTS = _WEIGHTS_DIR / "cinn_mri64"
#: Multi-coil MRI cINN trained on the demo's acquisitions (8 coils, GRO R = 4 and Poisson R = 8).
MULTICOIL_WEIGHTS = _WEIGHTS_DIR / "cinn_mri64_mc"


def default_weights() -> Path:
    """The weights the ``cinn`` method uses by default: the multi-coil model if installed, else single-coil."""
    return MULTICOIL_WEIGHTS if Path(str(MULTICOIL_WEIGHTS) + ".safetensors").is_file() else SINGLE_COIL_WEIGHTS


DEFAULT_WEIGHTS = default_weights()


def mri_training_mask(size: int, seed: int = 0) -> torch.Tensor:
    """The mask of the single-coil MRI cINN's training data (Denker et al.): uniform 1-D, R = 4, 8 % ACS lines."""
    from ..physics.masks import make_mask

    return make_mask("uniform1d", (size, size), 4, num_acs=max(1, round(0.08 * size)), seed=seed)


def mri_condition(zf: torch.Tensor, img_shape: tuple[int, int]):
    """Inversion image of the MRI cINN from the adjoint ``A^H y`` ``(B, H, W)`` complex.

    The low-resolution phase is removed (:func:`~bayesmri.flows.conditioning.remove_lowres_phase`:
    the models predict real, non-negative images and were conditioned on ``[re, im]`` of an image on
    the real axis), the pair is resampled to ``img_shape`` if needed and divided by its 95th-percentile
    magnitude, as in training. Returns ``(c (B, 2, h, w), scale (B, 1, 1, 1), phase (B, H, W))``.
    """
    import torch.nn.functional as F

    from .conditioning import lowres_phase

    ph = lowres_phase(zf)
    zr = zf * ph.conj()
    c = torch.stack([zr.real, zr.imag], 1).float()
    if tuple(zf.shape[-2:]) != tuple(img_shape):
        c = F.interpolate(c, size=tuple(img_shape), mode="bilinear", antialias=True, align_corners=False)
    scale = intensity_scale(c.norm(dim=1), 0.95, per_item=True)[:, None, None, None]
    return c / scale, scale, ph


def _cinn_at_size(model: ConditionalINN, meta: dict, size) -> ConditionalINN:
    """The same weights in a cINN built for ``size`` (``size_policy="native"``; square, fully convolutional
    models only)."""
    H, W = (int(size[0]), int(size[1]))
    f = 2 ** model.config.get("scales", model.config.get("n_levels", 0))
    if meta["model_type"] != "cinn_iunet" or H != W or H % f:
        raise ValueError(f"cinn: size_policy='native' needs a fully convolutional model (cinn_iunet) and a square "
                         f"size divisible by {f}, got {meta['model_type']} at {H}x{W}; use size_policy='kspace'")
    m = build_cinn(meta["model_type"], {**model.config, "img_size": H})
    m.load_state_dict(model.state_dict())
    return m.to(next(model.parameters()).device).eval()
