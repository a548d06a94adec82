"""Joint image / coil-sensitivity posterior sampling with a PoGMDM prior (Nagler, Zach, Pock 2025, Alg. 1).

Model (Nagler eqs. 7-9): ``z_c = F(S_c x) + e`` with one per-coil Fourier operator ``F`` (a
:class:`~bayesmri.physics.coil_fourier.CoilFourier`): the masked centred FFT ``M fft2c`` (Cartesian) or the NUFFT
``(1/sqrt(HW)) F_nu`` at a trajectory (:class:`bayesmri.physics.nufft.NonCartesianMRI`, finufft), with
optional density weights ``W`` in the data term (``weighting="dcf"``). Gaussian likelihood
``exp(-1/2 ||W^{1/2} (A(x, S) - z)||^2)``,
PoGMDM prior on the real and imaginary parts of ``x``, smoothness prior
``s(S) = 1/2 sum_c ||D Re S_c||^2 + ||D Im S_c||^2`` (Dirichlet finite differences) on the maps.
One iteration ``i`` (``zeta_{i+1} -> zeta_i``, geometric schedule ``zeta_min (zeta_max/zeta_min)^t``):

1. reverse-diffusion predictor on Re and Im:
   ``x <- x + (zeta_{i+1}^2 - zeta_i^2) s(x, zeta_{i+1}) + sqrt(zeta_{i+1}^2 - zeta_i^2) xi``;
2. likelihood step (eq. 10): ``x <- x - (lam / L) sum_c conj(S_c) F^H W (F(S_c x) - z_c)`` with
   ``L = ||F^H W F||`` (1 for a Cartesian mask; power iteration once per trajectory for the NUFFT);
3. ``n_corrector`` Langevin corrector steps ``x <- x + eps s(x, zeta_i) + sqrt(2 eps) xi`` (Song et al.,
   ``eps = 2 (r ||xi|| / ||s||)^2``), each followed by the likelihood step;
4. coil maps: gradient step on the data term (eq. 12; with ``conj(x)``, the Wirtinger gradient), then the
   prox of the smoothness prior (eq. 11):
   ``S <- (I + smooth D^T D)^{-1} (S - (mu / L) conj(x) F^H W (F(S x) - z))``
   with ``D^T D`` the Dirichlet Laplacian, diagonalised by the 2-D DST-I (eigenvalues
   ``4 sin^2(pi k / (2 (n + 1)))`` per axis). The paper writes ``Q_mu(x) = S^*(S(mu x) / (tau + mu))``,
   i.e. ``smooth = 1 / mu``; both are options here.

Maps start as the zero-filled (Cartesian) or density-compensated adjoint (non-Cartesian: gridded)
coil images over their RSS; the image starts (CCDF, Chung et al. 2022,
"vanilla" initialisation) at ``zeta_start`` from the zero-filled coil combination plus noise. The MMSE
estimate is the mean of ``n_samples`` chains (pixel-wise std beside it); the MAP estimate refines the
MMSE by ``map_steps`` Nesterov steps on ``1/2 ||A(x, S) - z||^2 + beta (E(Re x) + E(Im x))`` at
``zeta_min`` with the chains' mean maps. Images are rescaled internally so that the zero-filled RSS
has its 99.5th percentile at 1 (``pogmdm_mri`` was trained on slices with max 1, ``pogmdm_native`` on crops
in these units) and scaled back on output.

The sampler has one code path; only :class:`CoilFourier` knows the sampling (Cartesian 1-D / 2-D mask
or non-Cartesian trajectory in ``[-0.5, 0.5]``).
"""
from __future__ import annotations

import math
import time

import torch

from .._validate import as_generator, check_trajectory
from ..physics.coil_fourier import CartesianCoilFourier, CoilFourier, NonCartesianCoilFourier
from ..physics.intensity import intensity_scale
from .base import ChainLoop, SamplerResult, ScoreCounter, white_noise

__all__ = ["CoilFourier", "CartesianCoilFourier", "NonCartesianCoilFourier", "dst1", "dirichlet_eigenvalues", "smoothness_prox", "JointPoGMDM", "coil_nullspace_residual"]


# ------------------------------------------------------------------------------------------ DST prox
def dst1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DST-I along ``dim`` (its own inverse): ``X_k = sqrt(2/(n+1)) sum_j x_j sin(pi j k/(n+1))``.

    Computed by an FFT of the odd extension ``[0, x, 0, -reverse(x)]`` (length ``2(n+1)``), whose
    transform is ``-2i`` times the DST. Real or complex input (the transform is real-linear).
    """
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    z = torch.zeros(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    ext = torch.cat([z, x, z, -x.flip(-1)], -1)
    Y = torch.fft.fft(ext, dim=-1)[..., 1:n + 1]
    out = (0.5j * Y) * math.sqrt(2.0 / (n + 1))
    if not x.is_complex():
        out = out.real
    return out.to(x.dtype).movedim(-1, dim)


def dirichlet_eigenvalues(H: int, W: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Eigenvalues ``tau (H, W)`` of the 2-D Dirichlet Laplacian ``D^T D`` in the DST-I basis."""
    a = 4 * torch.sin(math.pi * torch.arange(1, H + 1, device=device, dtype=torch.float64) / (2 * (H + 1))) ** 2
    b = 4 * torch.sin(math.pi * torch.arange(1, W + 1, device=device, dtype=torch.float64) / (2 * (W + 1))) ** 2
    return (a[:, None] + b[None, :]).to(dtype)


def smoothness_prox(maps: torch.Tensor, weight: float) -> torch.Tensor:
    """``prox_{weight s}(maps) = (I + weight L)^{-1} maps`` over the last two axes (Nagler eq. 11).

    ``s(S) = 1/2 ||D Re S||^2 + 1/2 ||D Im S||^2`` with forward differences and zero (Dirichlet) values
    outside the grid, ``L = D^T D`` = the 5-point Laplacian with Dirichlet boundary; the orthonormal
    2-D DST-I diagonalises it, so the prox is ``S^* (S(maps) / (1 + weight tau))``.
    """
    if weight < 0:
        raise ValueError(f"prox weight must be >= 0, got {weight}")
    H, W = maps.shape[-2:]
    tau = dirichlet_eigenvalues(H, W, maps.device, maps.real.dtype)
    c = dst1(dst1(maps, -1), -2)
    return dst1(dst1(c / (1 + weight * tau), -1), -2)


def coil_nullspace_residual(maps: torch.Tensor, coil_images: torch.Tensor, support: torch.Tensor | None = None,
                            eps: float = 1e-12) -> torch.Tensor:
    """Relative residual of the true coil images outside the span of the maps (Nagler Fig. 3).

    ``r = || X - S (S^H X) / ||S||^2 ||^2 / ||X||^2`` with ``X (B, C, H, W)`` the fully sampled coil images
    and the pixel-wise projection onto ``S(r)``; restricted to ``support (B|1, H, W)`` if given. Zero
    when the maps explain the coil images exactly, up to one complex factor per pixel (i.e. the
    image). Returns ``(B,)``.
    """
    n2 = (maps.abs() ** 2).sum(-3, keepdim=True).clamp_min(eps)
    proj = maps * ((maps.conj() * coil_images).sum(-3, keepdim=True) / n2)
    r = (coil_images - proj).abs() ** 2
    x2 = coil_images.abs() ** 2
    if support is not None:
        s = support.to(r.dtype)
        s = s[:, None] if s.ndim == 3 else s
        r, x2 = r * s, x2 * s
    return r.flatten(1).sum(1) / x2.flatten(1).sum(1).clamp_min(eps)


# ------------------------------------------------------------------------------------------ sampler
class JointPoGMDM:
    """Joint reconstruction of image and coil maps with a PoGMDM prior (Nagler Alg. 1; module docstring).

    Parameters
    ----------
    prior : PoGMDM (or anything with ``score(x, sigma)`` and ``energy(x, sigma)`` on real ``(B, H, W)``)
    n_steps : int
        ``N``: levels of the full schedule (1000 in the paper).
    zeta_max, zeta_min : float
        Schedule ends (10, 0.01).
    zeta_start : float or None
        CCDF start: begin at the first level ``<= zeta_start`` from the noised zero-filled image
        (``None``: full schedule from ``N(0, zeta_max^2)``).
    lam : float
        Likelihood step for the image (1).
    mu : float
        Gradient step for the coil maps (eq. 12).
    smooth : float or None
        Weight of the smoothness prox (eq. 11); ``None`` gives ``1 / mu`` as in the paper's ``Q_mu``.
    n_corrector : int
        Langevin corrector steps per level (``M``; 1 in the paper); ``snr`` its ``r``.
    map_steps : int
        Nesterov steps of the MAP refinement (250; 0 to skip); ``map_weight`` the prior weight ``beta``.
    update_maps : bool
        False keeps the given/initial maps fixed (plain PoGMDM prior with known maps).
    final_denoise : bool
        Replace the final chains by their Tweedie estimate ``x + zeta^2 s(x, zeta)`` at the last level
        (one more NFE), as the score samplers' ``final_denoise``
        (:attr:`bayesmri.samplers.base.Sampler.final_denoise`).
    """

    def __init__(self, prior, n_steps: int = 1000, zeta_max: float = 10.0, zeta_min: float = 0.01,
                 zeta_start: float | None = 0.3, lam: float = 1.0, mu: float = 1.0, smooth: float | None = None,
                 n_corrector: int = 1, snr: float = 0.16, map_steps: int = 250, map_weight: float = 1e-4,
                 update_maps: bool = True, final_denoise: bool = False):
        if not hasattr(prior, "score"):
            raise TypeError("prior must expose score(x, sigma)")
        if n_steps < 1 or not (0 < zeta_min < zeta_max):
            raise ValueError("need n_steps >= 1 and 0 < zeta_min < zeta_max")
        if lam <= 0 or mu < 0 or map_steps < 0 or n_corrector < 0:
            raise ValueError("lam must be > 0; mu, map_steps, n_corrector >= 0")
        self.prior = prior
        self.n_steps, self.zeta_max, self.zeta_min, self.zeta_start = int(n_steps), zeta_max, zeta_min, zeta_start
        self.lam, self.mu = float(lam), float(mu)
        self.smooth = (1.0 / mu if mu > 0 else 0.0) if smooth is None else float(smooth)
        self.n_corrector, self.snr = int(n_corrector), float(snr)
        self.map_steps, self.map_weight, self.update_maps = int(map_steps), float(map_weight), update_maps
        self.final_denoise = bool(final_denoise)

    # --- pieces -----------------------------------------------------------------------------------
    def _score(self, x, zeta, score=None):
        """Real/imaginary-split score of complex ``x`` (one call on ``[Re x; Im x]``), through ``score``
        (a :class:`~bayesmri.samplers.base.ScoreCounter`) when given."""
        n = x.shape[0]
        s = (score or self.prior.score)(torch.cat([x.real, x.imag], 0).contiguous(), float(zeta))
        return torch.complex(s[:n], s[n:])

    def schedule(self) -> torch.Tensor:
        """Levels ``zeta_N > ... > zeta_0`` actually visited (after the CCDF cut), float64."""
        t = torch.arange(self.n_steps, -1, -1, dtype=torch.float64) / self.n_steps
        z = self.zeta_min * (self.zeta_max / self.zeta_min) ** t
        if self.zeta_start is not None:
            z = z[z <= self.zeta_start * (1 + 1e-9)]
            if z.numel() < 2:
                raise ValueError(f"zeta_start={self.zeta_start} leaves fewer than 2 levels")
        return z

    # --- main -------------------------------------------------------------------------------------
    @staticmethod
    def fourier_operator(y: torch.Tensor, mask=None, trajectory=None, dcf=None, img_shape=None,
                         weighting: str = "dcf"):
        """The :class:`CoilFourier` for data ``y`` and its sampling, checking shapes.

        Cartesian: ``y (C, H, W)`` and ``mask`` ``(W,)`` or ``(H, W)``. Non-Cartesian: ``y (C, K)``,
        ``trajectory (K, 2)``, ``img_shape (H, W)``, ``dcf (K,)`` optional.
        """
        if (mask is None) == (trajectory is None):
            raise ValueError("pass exactly one of mask (Cartesian) or trajectory (non-Cartesian)")
        if mask is not None:
            if y.ndim != 3:
                raise ValueError(f"Cartesian k-space must have shape (C, H, W), got {tuple(y.shape)}")
            return CartesianCoilFourier(mask, tuple(y.shape[-2:]), device=y.device)
        if y.ndim != 2:
            raise ValueError(f"non-Cartesian k-space must have shape (C, K), got {tuple(y.shape)}")
        if img_shape is None:
            raise ValueError("img_shape (H, W) is required with a trajectory")
        check_trajectory(trajectory)
        if trajectory.ndim != 2 or trajectory.shape[0] != y.shape[-1]:
            raise ValueError(f"trajectory {tuple(trajectory.shape)} does not match k-space with K={y.shape[-1]} "
                             "samples (expected (K, 2))")
        return NonCartesianCoilFourier(trajectory, img_shape, dcf=dcf, weighting=weighting,
                                       dtype=y.dtype, device=y.device)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, mask: torch.Tensor | None = None, n_samples: int = 10, generator=None,
               coil_maps: torch.Tensor | None = None, progress: bool = False, *,
               trajectory: torch.Tensor | None = None, dcf: torch.Tensor | None = None,
               img_shape: tuple[int, int] | None = None, weighting: str = "dcf",
               fourier: CoilFourier | None = None, max_time: float | None = None) -> SamplerResult:
        """Run Alg. 1 on one slice.

        Parameters
        ----------
        y : Tensor complex
            Cartesian k-space ``(C, H, W)`` (zeros off the mask) or non-Cartesian samples ``(C, K)``;
            a leading batch axis of 1 is accepted.
        mask : Tensor ``(W,)`` or ``(H, W)``, 0/1 (Cartesian), or
        trajectory : Tensor ``(K, 2)`` in ``[-0.5, 0.5]`` with ``img_shape (H, W)``, ``dcf (K,)``
            (optional, Pipe-Menon by default) and ``weighting`` (see :class:`NonCartesianCoilFourier`).
        fourier : CoilFourier, optional
            A prebuilt operator (reuses its NUFFT plans and norm across calls) instead of the above.
        n_samples : int
            Chains ``P``. ``generator``: ``torch.Generator`` or int seed.
        coil_maps : Tensor ``(C, H, W)``, optional
            Replaces the RSS initialisation (and stays fixed if ``update_maps`` is False).
        progress, max_time
            A progress bar over the levels; stop after ``max_time`` seconds. Ctrl-C or the time budget keep
            the chains as they are (``diagnostics["interrupted"]``; :class:`~bayesmri.samplers.base.ChainLoop`).

        Returns
        -------
        :class:`SamplerResult` with ``samples (P, H, W)``, ``mean``/``std`` (MMSE and pixel-wise std),
        ``diagnostics["map"]`` (MAP estimate), ``["coil_maps"] (C, H, W)`` (chain mean),
        ``["coil_maps_samples"] (P, C, H, W)``, ``["zetas"]``, ``["scale"]``, ``["fourier_norm"]``.
        """
        if not isinstance(y, torch.Tensor) or not y.is_complex():
            raise TypeError("y must be complex k-space (C, H, W) or samples (C, K)")
        cartesian = isinstance(fourier, CartesianCoilFourier) if fourier is not None else trajectory is None
        if y.ndim == (4 if cartesian else 3):
            if y.shape[0] != 1:
                raise ValueError(f"one slice at a time: y has batch {y.shape[0]}, expected 1 or no batch axis")
            y = y[0]
        if fourier is None:
            fourier = self.fourier_operator(y, mask, trajectory, dcf, img_shape, weighting)
        elif not isinstance(fourier, CoilFourier):
            raise TypeError("fourier must be a CoilFourier")
        elif tuple(y.shape[1:]) != tuple(fourier.data_shape):
            raise ValueError(f"y has shape {tuple(y.shape)}, the operator expects (C, {fourier.data_shape})")
        C = y.shape[0]
        H, W = fourier.img_shape
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        g = as_generator(generator, device=y.device)
        t0 = time.perf_counter()
        P = n_samples
        step_x = self.lam / fourier.norm  # gradient steps scaled by the Lipschitz constant of the data term
        step_s = self.mu / fourier.norm
        zf = fourier.coil_images(y)
        rss = zf.abs().pow(2).sum(0).sqrt()
        scale = intensity_scale(rss, 0.995)
        yn = (y / scale)[None]
        zf = zf / scale
        rss = rss / scale
        if coil_maps is None:
            maps = zf / rss.clamp_min(1e-3 * float(rss.max()))
        else:
            if coil_maps.shape != (C, H, W):
                raise ValueError(f"coil_maps must have shape {(C, H, W)}, got {tuple(coil_maps.shape)}")
            maps = coil_maps.to(y.dtype)
        maps = maps[None].repeat(P, 1, 1, 1)
        x0 = (maps[:1].conj() * zf[None]).sum(1) / (maps[:1].abs() ** 2).sum(1).clamp_min(1e-6)
        zetas = self.schedule().tolist()
        if self.zeta_start is None:
            x = zetas[0] * white_noise((P, H, W), y.dtype, y.device, g)
        else:
            x = x0.expand(P, H, W) + zetas[0] * white_noise((P, H, W), y.dtype, y.device, g)

        def likelihood_step(x, maps):
            return x - step_x * (maps.conj() * fourier.adjoint_weighted(fourier.residual(x, maps, yn))).sum(1)

        score = ScoreCounter(self.prior)
        with ChainLoop("pogmdm-joint", progress, max_time, total=len(zetas) - 1) as loop:
            for i in range(len(zetas) - 1):
                z1, z0 = zetas[i], zetas[i + 1]
                s = self._score(x, z1, score)
                d2 = z1**2 - z0**2
                x = x + d2 * s + math.sqrt(d2) * white_noise(x.shape, x.dtype, x.device, g)
                x = likelihood_step(x, maps)
                for _ in range(self.n_corrector):
                    s = self._score(x, z0, score)
                    xi = white_noise(x.shape, x.dtype, x.device, g)
                    eps = 2 * (self.snr * xi.flatten(1).norm(dim=1) / s.flatten(1).norm(dim=1).clamp_min(1e-12)) ** 2
                    eps = eps.reshape(P, 1, 1)
                    x = x + eps * s + (2 * eps).sqrt() * xi
                    x = likelihood_step(x, maps)
                if self.update_maps and self.mu > 0:
                    grad = x.conj()[:, None] * fourier.adjoint_weighted(fourier.residual(x, maps, yn))
                    maps = smoothness_prox(maps - step_s * grad, self.smooth)
                loop.step(sigma=z0)
        if self.final_denoise and loop.levels_done > 0:
            # Tweedie at the last level reached (one more NFE): removes the N(0, zeta^2) noise the chains
            # carry at the end (as the score samplers' final_denoise).
            z_last = zetas[loop.levels_done]
            x = x + z_last**2 * self._score(x, z_last, score)
        # A(x, S) = A(a x, S / a) for any pixel-wise a != 0: report the representative with
        # sum_c |S_c|^2 = 1 (the ESPIRiT normalisation), i.e. x * ||S(r)|| and S / ||S(r)||.
        nrm = (maps.abs() ** 2).sum(1).sqrt()
        x = x * nrm
        maps = maps / nrm[:, None].clamp_min(1e-12)
        maps_mean = maps.mean(0)
        maps_mean = maps_mean / (maps_mean.abs() ** 2).sum(0, keepdim=True).sqrt().clamp_min(1e-12)
        mmse = x.mean(0, keepdim=True)
        x_map = self._map(mmse, maps_mean[None], yn, fourier) if self.map_steps > 0 else mmse
        wall = time.perf_counter() - t0
        res = SamplerResult.from_samples(x * scale, nfe=score.nfe, wall_time=wall, score_time=score.time)
        res.diagnostics.update({
            "map": x_map[0] * scale, "coil_maps": maps_mean, "coil_maps_samples": maps, "zetas": zetas,
            "scale": scale, "interrupted": loop.interrupted, "levels_done": loop.levels_done,
            "fourier_norm": fourier.norm,
        })
        return res

    def _map(self, x, maps, y, fourier: CoilFourier):
        """Nesterov's accelerated gradient on ``1/2 ||W^{1/2}(A(x,S) - z)||^2 + beta (E(Re x) + E(Im x))`` at zeta_min."""
        beta = self.map_weight
        lip_data = fourier.norm * float((maps.abs() ** 2).sum(1).max())
        lip_prior = 0.0
        if hasattr(self.prior, "expert_variances") and hasattr(self.prior, "_spectra"):
            with torch.no_grad():
                Khat, eta = self.prior._spectra(*x.shape[-2:])
                var = self.prior.expert_variances(self.zeta_min, eta)
                lip_prior = float(((Khat.abs() ** 2) / var[:, None, None]).sum(0).max())
        step = 1.0 / (lip_data + beta * lip_prior)
        x_prev = x
        v = x
        for k in range(self.map_steps):
            grad = (maps.conj() * fourier.adjoint_weighted(fourier.residual(v, maps, y))).sum(1) \
                - beta * self._score(v, self.zeta_min)
            x_new = v - step * grad
            v = x_new + (k / (k + 3)) * (x_new - x_prev)
            x_prev = x_new
        return x_prev
