"""Product of Gaussian-mixture diffusion model (PoGMDM) on a learned shearlet system.

Zach, Pock, Kobler, Narnhofer, "Product of Gaussian Mixture Diffusion Models", JMIV 2024; used as the
image prior of Nagler, Zach, Pock (2025), sec. 3.2. The density of an image ``x: (H, W)`` at diffusion
noise level ``sigma`` (per real component: ``p_sigma = p * N(0, sigma^2 I)``, the convention of
``bayesmri.samplers.base``) is modelled as

    p(x, sigma) ~ prod_{k=1}^{o} prod_{ij} psi_k((K_k x)_ij, w_k, sigma),                     (Nagler eq. 1)
    psi_k(z, w_k, sigma) = sum_{l=1}^{L} w_{kl} N(z; mu_l, sigma_k^2(sigma)),
    sigma_k^2(sigma)     = sigma_0^2 + (gamma_k eta_k)^2 sigma^2,

with ``L = 125`` equally spaced means ``mu_l`` on ``[-r, r]``, ``sigma_0`` their spacing, weights
``w_k`` on the unit simplex and symmetric (``w_{k,l} = w_{k,L+1-l}``: 63 free values per expert),
``K_k = gamma_k Kt_k`` (``gamma_k >= 0`` learned) and ``eta_k = max_omega |FT(Kt_k)(omega)|`` the peak
frequency response of the unweighted filter (GUIDE sec. 4): white noise of variance ``sigma^2`` seen
through ``K_k`` has at most ``(gamma_k eta_k)^2 sigma^2`` variance per frequency, which is what the
Gaussian-mixture convolution adds to each component (exact diffusion for filters with disjoint,
flat spectra; Zach et al. sec. 3).

Energy and score (analytic, at any image size; convolutions by FFT with periodic boundary)::

    E(x, sigma) = -log p = sum_k sum_ij f_k((K_k x)_ij),   f_k = -log psi_k,
    score(x, sigma) = -grad E = -sum_k K_k^T f_k'(K_k x),
    f_k'(z) = (z - sum_l r_l(z) mu_l) / sigma_k^2,   r_l = softmax_l(log w_l - (z - mu_l)^2 / (2 sigma_k^2)).

Shearlet system (``o = 20`` filters + low-pass), built differentiably in the frequency domain from a
learned 9-tap 1-D low-pass ``h`` (``sum h = 1``) and a learned 17x17 directional (fan) high-pass ``P``
(``||P||_1 = 1``). With ``h^`` / ``P^`` their DTFTs and ``g^(u) = h^(u + pi)`` the mirrored high-pass,
the filter of scale ``j``, shear ``s in {-2..2}`` in the vertical cone (principal axis = rows) is

    Kt^_{j,s}(w1, w2) = b_j(w1) h^_0(v) P^(w1, 4 v),   v = w2 + s w1 / 2,
    b_1(u) = g^(u),  b_0(u) = g^(2u) h^(u),  h^_0(v) = h^(v) h^(2v),

(fine scale ``j = 1``, coarse ``j = 0``): ``P^(a, 4 b)`` is ``P`` upsampled by 4 along the second axis
(a narrow fan: the ShearLab construction with shear level 1), the low-pass ``h^_0`` along that axis
removes the fan's aliased copies, and ``v`` is the shear by ``s / 2`` acting on the frequencies. The
spectra are symmetrised (``K(-w) = conj K(w)``) so that every kernel is real at every image size.
The horizontal cone swaps ``w1`` and ``w2``. The low-pass
``h^_0(w1) h^_0(w2)`` (``h^_0(u) = h^(u) h^(2u)``) completes the system but carries no expert.

Parameters: ``9 + 17^2 + o * ceil(L / 2) + o = 9 + 289 + 1260 + 20 = 1578`` (Nagler sec. 3.2) with
``lowpass_expert=False``; the default also gives the low-pass an expert and a weight:
``9 + 289 + 21 * 63 + 21 = 1642``, the other parameter count in the paper's Table.
This is our construction (written from the papers), not a port of the reference code; it follows
the same principle (ShearLab 2-D non-separable digital shearlets from ``h`` and ``P``).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["PoGMDM", "load_pogmdm", "project_simplex", "DEFAULT_WEIGHTS", "REALSIZE_WEIGHTS", "default_pogmdm_weights"]

DEFAULT_WEIGHTS = "pogmdm_mri"
#: Weights for real matrix sizes: trained on 64x64 crops of 1 mm MNI slices at 0.6-2.0 mm per pixel
#: (``docs/pogmdm_native.md``); ``pogmdm_mri`` learned whole 64x64 slices (about 3.4 mm per pixel).
REALSIZE_WEIGHTS = "pogmdm_native"
#: Images whose smaller side is at least this many pixels get :data:`REALSIZE_WEIGHTS` by default
#: (the rule of :func:`bayesmri.priors.score.default_score_weights`).
REALSIZE_MIN_PIXELS = 96


def default_pogmdm_weights(shape) -> str:
    """The shipped PoGMDM weights for an image of ``shape = (..., H, W)`` when the user names none."""
    return REALSIZE_WEIGHTS if min(int(shape[-2]), int(shape[-1])) >= REALSIZE_MIN_PIXELS else DEFAULT_WEIGHTS


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v (..., n)`` onto the unit simplex (sort-based, exact)."""
    n = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1.0
    k = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    cond = u - css / k > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


def _default_fan(size: int = 17, grid: int = 256) -> torch.Tensor:
    """Initial directional high-pass: the windowed ideal fan ``|b| < |a|`` (passes the vertical cone)."""
    w = 2 * math.pi * torch.fft.fftfreq(grid, dtype=torch.float64)
    a, b = torch.meshgrid(w, w, indexing="ij")
    ideal = (b.abs() < a.abs()).double() + 0.5 * (b.abs() == a.abs()).double()
    ideal[0, 0] = 0.0
    kern = torch.fft.fftshift(torch.fft.ifft2(ideal).real)
    c, r = grid // 2, size // 2
    kern = kern[c - r: c + r + 1, c - r: c + r + 1]
    win = torch.hann_window(size + 2, periodic=False, dtype=torch.float64)[1:-1]
    kern = kern * torch.outer(win, win)
    return (kern / kern.abs().sum()).float()


class PoGMDM(nn.Module):
    """PoGMDM prior with a learned 2-scale shearlet system (see the module docstring).

    Parameters
    ----------
    n_components : int
        ``L``, number of mixture components per expert (odd; default 125).
    mean_range : float
        Means are equally spaced on ``[-mean_range, mean_range]``; ``sigma_0`` is their spacing.
    h_taps, p_size : int
        Length of the 1-D low-pass ``h`` (9) and side of the directional filter ``P`` (17).
    n_shears : int
        Shears per cone and scale (5: ``s = -2..2``).
    lowpass_expert : bool
        Give the low-pass filter an expert too (``o + 1 = 21`` experts, 1642 parameters, the paper's
        second count). Without it (1578 parameters, the paper's main count) the prior says nothing
        about the coarse image content, and the reverse diffusion leaves the noise it adds there in
        every frequency that the data do not measure: 28 dB instead of TV's 38 dB in our first joint
        reconstructions. Default True.
    table_size : int
        Points of the tables of ``f, f', f''`` that the experts are interpolated from (cubic Hermite;
        ``fast=True``, the default, in training and inference). ``fast=False`` evaluates all ``L``
        components at every response (exact; used by the tests).

    Attributes
    ----------
    h : (9,), P : (17, 17), gamma : (o,), w_half : (o, ceil(L/2)) learned parameters.

    Notes
    -----
    Real images ``(B, H, W)`` (or ``(H, W)``) float; for complex images use
    ``bayesmri.samplers.ComplexSplitScore(prior)`` (real and imaginary parts separately, Chung & Ye
    Alg. 3; Nagler Alg. 1). Images are expected in the training scale: magnitude slices scaled to max 1.
    """

    model_type = "pogmdm"

    def __init__(self, n_components: int = 125, mean_range: float = 1.0, h_taps: int = 9, p_size: int = 17,
                 n_shears: int = 5, table_size: int = 1025, lowpass_expert: bool = True):
        super().__init__()
        if n_components < 3 or n_components % 2 == 0:
            raise ValueError(f"n_components must be odd and >= 3, got {n_components}")
        if h_taps % 2 == 0 or p_size % 2 == 0 or n_shears % 2 == 0:
            raise ValueError("h_taps, p_size and n_shears must be odd")
        if not mean_range > 0:
            raise ValueError(f"mean_range must be positive, got {mean_range}")
        self.config = dict(n_components=n_components, mean_range=mean_range, h_taps=h_taps, p_size=p_size,
                           n_shears=n_shears, table_size=table_size, lowpass_expert=bool(lowpass_expert))
        self.lowpass_expert = bool(lowpass_expert)
        # 2 scales x 2 cones x n_shears directional filters (+ the low-pass as expert o + 1)
        self.n_filters = 2 * 2 * n_shears + int(self.lowpass_expert)
        L = n_components
        self.register_buffer("mu", torch.linspace(-mean_range, mean_range, L), persistent=False)
        self.sigma0 = 2.0 * mean_range / (L - 1)
        # half-band low-pass (Hann-windowed sinc, cut-off pi/2): the dyadic bands then tile the
        # spectrum (a binomial h leaves a third of the frequencies nearly uncovered by any filter)
        n = torch.arange(h_taps, dtype=torch.float64) - h_taps // 2
        h0 = torch.sinc(n / 2) * torch.hann_window(h_taps + 2, periodic=False, dtype=torch.float64)[1:-1]
        self.h = nn.Parameter((h0 / h0.sum()).float())
        self.P = nn.Parameter(_default_fan(p_size))
        self.gamma = nn.Parameter(torch.ones(self.n_filters))
        half = (L + 1) // 2
        w0 = torch.exp(-torch.linspace(0, mean_range, half) / (0.05 * mean_range))
        w0 = w0 / (w0[0] + 2 * w0[1:].sum())
        self.w_half = nn.Parameter(w0.repeat(self.n_filters, 1))
        self._spec_cache: dict = {}
        self._table_cache: dict = {}
        with torch.no_grad():  # start with unit peak response per filter: gamma_k eta_k = 1
            self.gamma.copy_(1.0 / self.filter_spectra(64, 64).abs().flatten(1).amax(1).float())

    # ------------------------------------------------------------------ parameters
    def weights(self) -> torch.Tensor:
        """Full symmetric mixture weights ``(o, L)``: ``[flip(w_half[:, 1:]), w_half]``."""
        return torch.cat([self.w_half[:, 1:].flip(-1), self.w_half], dim=-1)

    @torch.no_grad()
    def project(self) -> None:
        """Projections of projected AdaBelief (Zach et al.): ``w`` onto the simplex (as the full symmetric
        vector, which stays symmetric since the projection is permutation-equivariant), ``h`` onto
        ``sum h = 1``, ``P`` onto ``||P||_1 = 1`` (by scaling), ``gamma >= 0``."""
        self.w_half.copy_(project_simplex(self.weights())[:, self.w_half.shape[1] - 1:])
        self.h.sub_((self.h.sum() - 1.0) / self.h.numel())
        self.P.div_(self.P.abs().sum().clamp_min(1e-12))
        self.gamma.clamp_(min=0.0)
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget cached filter spectra and lookup tables (call after changing parameters in place)."""
        self._spec_cache.clear()
        self._table_cache.clear()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ filters
    def _dtft1(self, taps: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        n = torch.arange(taps.numel(), device=u.device, dtype=u.dtype) - taps.numel() // 2
        return (taps.to(u.dtype)[None, :] * torch.exp(-1j * u[..., None] * n)).sum(-1)

    def _fan(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``P^(a, b)`` for ``a (H,)`` and ``b (H, W)`` (``b`` varies with ``a``): separable in ``a``."""
        P = self.P.to(a.dtype)
        n = torch.arange(P.shape[0], device=a.device, dtype=a.dtype) - P.shape[0] // 2
        Ea = torch.exp(-1j * a[:, None] * n[None, :])                  # (H, p)
        Q = Ea @ P.to(Ea.dtype)                                        # (H, p): sum over first index
        Eb = torch.exp(-1j * b[..., None] * n)                         # (H, W, p)
        return (Eb * Q[:, None, :]).sum(-1)

    def _cone(self, u: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        """Filters of one cone on the grid ``u (H,)`` x ``v (W,)``, principal axis ``u``: 2 scales x shears."""
        hu, h2u = self._dtft1(self.h, u), self._dtft1(self.h, 2 * u)
        g, g2 = self._dtft1(self.h, u + math.pi), self._dtft1(self.h, 2 * u + math.pi)
        bands = [g2 * hu, g]  # coarse, fine
        ns = self.config["n_shears"] // 2
        out = []
        for band in bands:
            for s in range(-ns, ns + 1):
                vs = v[None, :] + 0.5 * s * u[:, None]          # sheared second frequency
                # the low-pass along the sheared axis removes the aliased copies of the upsampled fan
                lp = self._dtft1(self.h, vs) * self._dtft1(self.h, 2 * vs)
                out.append(band[:, None] * lp * self._fan(u, 4 * vs))
        del h2u
        return out

    def filter_spectra(self, H: int, W: int, with_lowpass: bool = False) -> torch.Tensor:
        """Unweighted filter spectra ``Kt^_k`` on the unshifted DFT grid: complex ``(o [+1], H, W)``.

        Order: vertical cone (coarse s=-2..2, fine s=-2..2), then horizontal cone (same order); the
        low-pass last (if it has an expert, or with ``with_lowpass``).
        """
        dev = self.P.device
        w1 = 2 * math.pi * torch.fft.fftfreq(H, device=dev, dtype=torch.float64)
        w2 = 2 * math.pi * torch.fft.fftfreq(W, device=dev, dtype=torch.float64)
        vert = self._cone(w1, w2)
        horz = [f.transpose(0, 1) for f in self._cone(w2, w1)]
        filt = vert + horz
        # exact Hermitian symmetry K(-w) = conj K(w) (real kernels) also on the Nyquist row/column,
        # where a half-integer shear breaks the 2 pi periodicity
        ih = (-torch.arange(H, device=dev)) % H
        iw = (-torch.arange(W, device=dev)) % W
        filt = [0.5 * (f + f[ih][:, iw].conj()) for f in filt]
        if with_lowpass or self.lowpass_expert:
            h0a = self._dtft1(self.h, w1) * self._dtft1(self.h, 2 * w1)
            h0b = self._dtft1(self.h, w2) * self._dtft1(self.h, 2 * w2)
            filt.append(h0a[:, None] * h0b[None, :])
        return torch.stack(filt).to(torch.complex64)

    def filters_spatial(self, H: int = 33, W: int = 33) -> torch.Tensor:
        """Kernels ``gamma_k Kt_k`` (and the low-pass, last) in the image domain, centred: ``(o+1, H, W)``."""
        spec = self.filter_spectra(H, W, with_lowpass=True)
        g = self.gamma if self.lowpass_expert else torch.cat([self.gamma, torch.ones(1, device=self.gamma.device)])
        g = g.to(spec.real.dtype)
        k = torch.fft.fftshift(torch.fft.ifft2(spec).real, dim=(-2, -1))
        return k * g[:, None, None]

    def _spectra(self, H: int, W: int):
        """``(Khat (o,H,W) complex = gamma_k Kt^_k, eta (o,))``, cached when no gradient is needed."""
        key = (H, W, str(self.P.device))
        if not torch.is_grad_enabled() and key in self._spec_cache:
            return self._spec_cache[key]
        spec = self.filter_spectra(H, W)
        eta = spec.abs().flatten(1).amax(1)
        out = (spec * self.gamma.to(spec.real.dtype)[:, None, None], eta)
        if not torch.is_grad_enabled():
            self._spec_cache[key] = tuple(t.detach() for t in out)
        return out

    def expert_variances(self, sigma, eta: torch.Tensor | None = None) -> torch.Tensor:
        """``sigma_k^2(sigma) = sigma_0^2 + (gamma_k eta_k)^2 sigma^2``: ``(o,)`` (or ``(B, o)`` for a
        tensor ``sigma (B,)``)."""
        if eta is None:
            eta = self.filter_spectra(64, 64).abs().flatten(1).amax(1)
        ge2 = (self.gamma * eta.to(self.gamma.dtype)) ** 2
        sig = torch.as_tensor(sigma, dtype=ge2.dtype, device=ge2.device)
        if sig.ndim == 0:
            return self.sigma0**2 + ge2 * sig**2
        return self.sigma0**2 + ge2[None, :] * sig.reshape(-1, 1) ** 2

    # ------------------------------------------------------------------ experts
    def _expert_exact(self, z: torch.Tensor, var: torch.Tensor, logw: torch.Tensor):
        """``f_k(z)`` and ``f_k'(z)`` for responses ``z (B, o, N)``, variances ``var (B|1, o, 1)``,
        ``logw (o, L)``."""
        mu = self.mu.to(z.dtype)
        d = z[..., None] - mu                                               # (B, o, N, L)
        a = logw[None, :, None, :] - d**2 / (2 * var[..., None])
        lse = torch.logsumexp(a, dim=-1)
        r = torch.softmax(a, dim=-1)
        m = (r * mu).sum(-1)
        f = -lse + 0.5 * torch.log(2 * math.pi * var)
        fp = (z - m) / var
        return f, fp

    def _expert_chunked(self, z, var, logw):
        # one filter at a time keeps the (B, N, L) responsibilities of a single filter in memory;
        # checkpointing recomputes them in the backward pass instead of storing all o of them.
        fs, fps = [], []
        for k in range(z.shape[1]):
            args = (z[:, k:k + 1], var[:, k:k + 1], logw[k:k + 1])
            if torch.is_grad_enabled():
                f, fp = checkpoint(self._expert_exact, *args, use_reentrant=False)
            else:
                f, fp = self._expert_exact(*args)
            fs.append(f)
            fps.append(fp)
        return torch.cat(fs, 1), torch.cat(fps, 1)

    def _expert_exact2(self, z, var, logw):
        """``f, f', f''`` on a grid ``z (Bv, o, G)``: ``f'' = (1 - Var_r(mu) / var) / var``."""
        mu = self.mu.to(z.dtype)
        a = logw[None, :, None, :] - (z[..., None] - mu) ** 2 / (2 * var[..., None])
        lse = torch.logsumexp(a, dim=-1)
        r = torch.softmax(a, dim=-1)
        m = (r * mu).sum(-1)
        v = (r * mu**2).sum(-1) - m**2
        f = -lse + 0.5 * torch.log(2 * math.pi * var)
        return f, (z - m) / var, (1.0 - v / var) / var

    @torch.no_grad()
    def _expert_exact_nograd(self, z, var, logw):
        """``f, f'`` of :meth:`_expert_exact2` for the inference tables: one exp pass, in place
        (half the time of logsumexp + softmax; not differentiable)."""
        mu = self.mu.to(z.dtype)
        a = (z[..., None] - mu).square_().div_(-2 * var[..., None]).add_(logw[None, :, None, :])
        amax = a.amax(-1, keepdim=True)
        e = a.sub_(amax).exp_()
        tot = e.sum(-1)
        m = (e @ mu) / tot
        f = -(tot.log() + amax[..., 0]) + 0.5 * torch.log(2 * math.pi * var)
        return f, (z - m) / var

    def _tables(self, var: torch.Tensor):
        """Tables of ``f, f', f''`` on a uniform grid over ``[-lim, lim]`` for variances ``var (Bv, o, 1)``."""
        G = int(self.config["table_size"])
        lim = float(self.config["mean_range"] + 8 * var.detach().max().sqrt())
        grid = torch.linspace(-lim, lim, G, dtype=var.dtype, device=var.device)
        logw = torch.log(self.weights().to(var.dtype).clamp_min(1e-30))
        z = grid.expand(var.shape[0], self.n_filters, G)
        if torch.is_grad_enabled():  # (Bv, o, G, L) intermediates are recomputed in the backward pass
            tabs = checkpoint(self._expert_exact2, z, var, logw, use_reentrant=False)
        else:
            tabs = self._expert_exact2(z, var, logw)
        return tabs, lim, 2 * lim / (G - 1)

    def _expert_table(self, z: torch.Tensor, var: torch.Tensor, need_f: bool = True):
        """``f_k(z), f_k'(z)`` by cubic Hermite interpolation of exact tables (``f'`` with ``f''``; ``f``
        with ``f'``): C^1 in ``z`` and differentiable in every parameter. Outside the table the mixture is
        dominated by its outermost component, so ``f`` continues as a parabola of curvature ``1/var``."""
        B, o, N = z.shape
        if not torch.is_grad_enabled() and var.shape[0] == 1:
            return self._expert_linear(z, var, need_f)
        key = None
        if key is not None and key in self._table_cache:
            (f_t, fp_t, fpp_t), lim, step = self._table_cache[key]
        else:
            (f_t, fp_t, fpp_t), lim, step = self._tables(var)
            if key is not None:
                if len(self._table_cache) > 64:
                    self._table_cache.clear()
                self._table_cache[key] = ((f_t, fp_t, fpp_t), lim, step)
        G = f_t.shape[-1]
        zc = z.clamp(-lim, lim)
        pos = (zc + lim) / step
        i0 = pos.detach().floor().clamp(0, G - 2)
        t = pos - i0
        base = torch.arange(o, device=z.device).reshape(1, o, 1) * G
        if var.shape[0] > 1:
            base = base + torch.arange(B, device=z.device).reshape(B, 1, 1) * (o * G)
        idx = (i0.long() + base).reshape(-1)

        def at(tab, j):
            return tab.reshape(-1)[idx + j].reshape(B, o, N)

        t2, t3 = t * t, t * t * t
        h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2
        fp0, fp1 = at(fp_t, 0), at(fp_t, 1)
        fp = h00 * fp0 + h10 * step * at(fpp_t, 0) + h01 * fp1 + h11 * step * at(fpp_t, 1)
        excess = z - zc
        f = None
        if need_f:
            f = h00 * at(f_t, 0) + h10 * step * fp0 + h01 * at(f_t, 1) + h11 * step * fp1
            f = f + excess * fp + 0.5 * excess**2 / var
        fp = fp + excess / var
        return f, fp

    @torch.no_grad()
    def _expert_linear(self, z: torch.Tensor, var: torch.Tensor, need_f: bool):
        """Inference path: linear interpolation in 4x finer tables by one fused ``grid_sample`` call per
        table (the Hermite path costs ~30 elementwise passes over the responses)."""
        import torch.nn.functional as F

        B, o, N = z.shape
        key = (tuple(var.flatten().tolist()), str(z.device))
        if key not in self._table_cache:
            G = 4 * int(self.config["table_size"]) - 3
            lim = float(self.config["mean_range"] + 8 * var.max().sqrt())
            grid = torch.linspace(-lim, lim, G, dtype=torch.float64, device=z.device)
            logw = torch.log(self.weights().double().clamp_min(1e-30))
            f, fp = self._expert_exact_nograd(grid.expand(1, o, G), var.double(), logw)
            # the sampler's schedules revisit the same levels slice after slice: keep up to 256
            # levels (0.7 MB each), evicting the oldest
            while len(self._table_cache) >= 256:
                self._table_cache.pop(next(iter(self._table_cache)))
            self._table_cache[key] = (f[0].float().reshape(o, 1, 1, G), fp[0].float().reshape(o, 1, 1, G), lim)
        f_t, fp_t, lim = self._table_cache[key]
        zz = z.transpose(0, 1).reshape(o, 1, B * N)
        g = torch.stack([zz / lim, torch.zeros_like(zz)], -1)          # (o, 1, BN, 2), x = table axis
        v = var.reshape(o, 1, 1)

        def interp(tab):
            return F.grid_sample(tab, g, mode="bilinear", padding_mode="border", align_corners=True)[:, 0]

        excess = zz - zz.clamp(-lim, lim)
        fp = interp(fp_t)
        f = None
        if need_f:
            f = interp(f_t) + excess * fp + 0.5 * excess**2 / v
            f = f.reshape(o, B, N).transpose(0, 1)
        fp = (fp + excess / v).reshape(o, B, N).transpose(0, 1)
        return f, fp

    # ------------------------------------------------------------------ energy and score
    def _prepare(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex():
            raise TypeError("PoGMDM acts on real images; wrap it with bayesmri.samplers.ComplexSplitScore "
                            "for complex images (real and imaginary parts separately)")
        if x.ndim == 2:
            return x[None], True
        if x.ndim == 4 and x.shape[1] == 1:
            return x[:, 0], False
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, H, W), (B, 1, H, W) or (H, W); got {tuple(x.shape)}")
        return x, False

    def _sigma_var(self, sigma, B, eta, device):
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=device)
        if sig.ndim > 1 or (sig.ndim == 1 and sig.numel() not in (1, B)):
            raise ValueError(f"sigma must be a scalar or have shape (B,) = ({B},), got {tuple(sig.shape)}")
        if bool((sig < 0).any()) or not bool(torch.isfinite(sig).all()):
            raise ValueError("sigma must be finite and non-negative")
        var = self.expert_variances(sig.reshape(-1) if sig.ndim else sig, eta)
        return var.reshape(-1 if var.ndim == 2 else 1, self.n_filters, 1)

    def _core(self, x, sigma, fast: bool | None, need_f: bool = True):
        x3, squeeze = self._prepare(x)
        B, H, W = x3.shape
        Khat, eta = self._spectra(H, W)
        # real images and real kernels: half-spectrum FFTs (rfft2 / irfft2) halve the cost
        X = torch.fft.rfft2(x3.to(torch.float32))
        Kh = Khat[..., : W // 2 + 1]
        z = torch.fft.irfft2(X[:, None] * Kh[None], s=(H, W)).reshape(B, self.n_filters, H * W)
        var = self._sigma_var(sigma, B, eta, x3.device)
        if fast is None or fast:
            f, fp = self._expert_table(z, var, need_f)
        else:
            f, fp = self._expert_chunked(z, var, torch.log(self.weights().clamp_min(1e-30)))
        return x3, squeeze, Khat, f, fp

    def energy(self, x: torch.Tensor, sigma, fast: bool | None = None) -> torch.Tensor:
        """``-log p(x, sigma)`` up to the (image-independent) partition function: ``(B,)``.

        ``sigma``: scalar or ``(B,)`` noise std per real component. ``fast`` (default True) interpolates
        the experts from exact tables (cubic Hermite); ``False`` evaluates every component.
        """
        x3, squeeze, _, f, _ = self._core(x, sigma, fast)
        e = f.sum((1, 2))
        return e[0] if squeeze else e

    def score(self, x: torch.Tensor, sigma, fast: bool | None = None) -> torch.Tensor:
        """``grad_x log p(x, sigma) = -sum_k K_k^T f_k'(K_k x)``, same shape as ``x``."""
        x3, squeeze, Khat, _, fp = self._core(x, sigma, fast, need_f=False)
        B, H, W = x3.shape
        Fp = torch.fft.rfft2(fp.reshape(B, self.n_filters, H, W))
        s = -torch.fft.irfft2((Fp * Khat[..., : W // 2 + 1].conj()[None]).sum(1), s=(H, W))
        s = s.to(x.dtype)
        return s[0] if squeeze else s.reshape(x.shape)

    def denoise(self, x: torch.Tensor, sigma, fast: bool | None = None) -> torch.Tensor:
        """Tweedie / empirical-Bayes denoiser ``x + sigma^2 score(x, sigma)``."""
        s = self.score(x, sigma, fast=fast)
        sig = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sig.ndim == 1:
            sig = sig.reshape((-1,) + (1,) * (x.ndim - 1))
        return x + sig**2 * s

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The score (what the trainer differentiates through)."""
        return self.score(x, sigma, fast=True)

    def potentials(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        """``-log psi_k(z, sigma)`` for a grid ``z (N,)``: ``(o, N)`` (for plots, Nagler Fig. 1)."""
        eta = self._spectra(64, 64)[1]
        var = self.expert_variances(float(sigma), eta).reshape(1, -1, 1)
        zz = z.to(torch.float32).expand(self.n_filters, -1)[None]
        f, _ = self._expert_exact(zz, var, torch.log(self.weights().clamp_min(1e-30)))
        return f[0]


def load_pogmdm(name_or_path: str = DEFAULT_WEIGHTS, device="cpu") -> PoGMDM:
    """Load PoGMDM weights (safetensors + JSON) shipped in ``bayesmri/weights`` or from a path."""
    from .loading import load_model, register_model_type

    register_model_type("pogmdm", "bayesmri.priors.pogmdm:PoGMDM")
    model = load_model(name_or_path, device=device)
    if not isinstance(model, PoGMDM):
        raise ValueError(f"{name_or_path} holds a {type(model).__name__}, not a PoGMDM")
    for p in model.parameters():
        p.requires_grad_(False)
    return model
