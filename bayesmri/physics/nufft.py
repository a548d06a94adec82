"""Non-Cartesian (multi-coil) MRI forward model ``A x = (1/sqrt(H W)) F_nu (S x)`` via finufft.

``F_nu`` is the 2-D non-uniform DFT at trajectory points ``k_j`` in cycles/pixel,
``(F_nu z)_j = sum_r z[r] exp(-2 pi i k_j . (r - c))`` with ``c = (H//2, W//2)`` (so at Cartesian
points it reproduces :func:`bayesmri.physics.fft2c` exactly, see ``docs/nufft.md``). It is computed by
finufft type 2 (``A``) and type 1 (``A^H``) at tolerance ``eps``.

Scaling: the factor ``1/sqrt(H W)`` is the orthonormal FFT's, so on a Cartesian grid the operator
*is* ``P F S`` and ``A^H A = S^H S``. For a general trajectory ``A^H A`` is a convolution whose
kernel peak is the number of samples per Cartesian cell: ``||A||^2`` equals the largest local
sampling density (about 1 for Nyquist-density trajectories, larger where radial spokes crowd the
centre). Density-compensation weights ``w`` in cells per sample (:mod:`.trajectories`) make
``A^H W A ~ I``: :meth:`NonCartesianMRI.gridding` returns ``A^H (w * y)``.

Backend: finufft (CPU). torchkbnufft and mri-nufft were compared; see ``docs/nufft.md``. finufft is
not autograd-aware, so the two transforms are wrapped in :class:`torch.autograd.Function` whose
backward pass is the other transform (the adjoint), and coil-map products stay in torch (so
gradients flow to ``x`` and, if they require grad, to the maps). Tensors on a GPU are moved to the
CPU for the transform and back.
"""
from __future__ import annotations

import math
import threading

import finufft
import numpy as np
import torch

from .._validate import check_coil_maps, check_complex, check_finite, check_trajectory
from .linop import LinearOperator

__all__ = ["NonCartesianMRI"]

_DEFAULT_EPS = {torch.complex64: 1e-6, torch.complex128: 1e-12}


class _PlanCache:
    """finufft plans keyed by (type, batch index, n_trans): sorting points and FFTW planning happen once."""

    def __init__(self, omega: np.ndarray, shape, eps, dtype, opts):
        self.omega = omega  # (Bt, 2, K) radians, float32/64 C-contiguous
        self.shape = shape
        self.eps = eps
        self.dtype = dtype
        self.opts = opts
        self._plans = {}
        self._lock = threading.Lock()

    def get(self, nufft_type: int, b: int, n_trans: int):
        key = (nufft_type, b, n_trans)
        with self._lock:
            plan = self._plans.get(key)
            if plan is None:
                if len(self._plans) > 16:  # keep memory bounded when batch sizes vary
                    self._plans.clear()
                plan = finufft.Plan(
                    nufft_type, self.shape, n_trans=n_trans, eps=self.eps,
                    isign=-1 if nufft_type == 2 else 1, dtype=self.dtype, **self.opts,
                )
                plan.setpts(self.omega[b, 0], self.omega[b, 1])
                self._plans[key] = plan
            return plan


def _nufft_type2(cache: _PlanCache, z: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C, K)``; per-batch points if the cache holds several trajectories."""
    dev = z.device
    zn = z.detach().cpu().numpy()
    B, C = zn.shape[:2]
    K = cache.omega.shape[-1]
    if cache.omega.shape[0] == 1:
        plan = cache.get(2, 0, B * C)
        out = plan.execute(np.ascontiguousarray(zn.reshape(B * C, *zn.shape[2:]))).reshape(B, C, K)
    else:
        out = np.empty((B, C, K), dtype=zn.dtype)
        for b in range(B):
            out[b] = cache.get(2, b, C).execute(np.ascontiguousarray(zn[b])).reshape(C, K)
    out *= scale
    return torch.from_numpy(out).to(dev)


def _nufft_type1(cache: _PlanCache, y: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, C, K) -> (B, C, H, W)``, the exact adjoint of :func:`_nufft_type2`."""
    dev = y.device
    yn = y.detach().cpu().numpy()
    B, C, K = yn.shape
    H, W = cache.shape
    if cache.omega.shape[0] == 1:
        plan = cache.get(1, 0, B * C)
        out = plan.execute(np.ascontiguousarray(yn.reshape(B * C, K))).reshape(B, C, H, W)
    else:
        out = np.empty((B, C, H, W), dtype=yn.dtype)
        for b in range(B):
            out[b] = cache.get(1, b, C).execute(np.ascontiguousarray(yn[b])).reshape(C, H, W)
    out *= scale
    return torch.from_numpy(out).to(dev)


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, cache, scale):
        ctx.cache, ctx.scale = cache, scale
        return _nufft_type2(cache, z, scale)

    @staticmethod
    def backward(ctx, g):
        # y = A z is C-linear: the vector-Jacobian product is A^H g.
        return _Adjoint.apply(g, ctx.cache, ctx.scale), None, None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, cache, scale):
        ctx.cache, ctx.scale = cache, scale
        return _nufft_type1(cache, y, scale)

    @staticmethod
    def backward(ctx, g):
        return _Forward.apply(g, ctx.cache, ctx.scale), None, None


class NonCartesianMRI(LinearOperator):
    """Non-Cartesian (SENSE) MRI ``A x = (1/sqrt(HW)) F_nu (S x)``.

    Parameters
    ----------
    traj : Tensor ``(K, 2)`` shared, or ``(B, K, 2)`` one trajectory per batch entry
        Real, in ``[-0.5, 0.5]`` cycles/pixel; column 0 pairs with image axis ``-2`` (H).
    img_shape : (H, W)
    coil_maps : Tensor ``(B, C, H, W)`` complex, optional
        Sensitivities; without maps the operator is single-coil (``C = 1``).
    dcf : Tensor ``(K,)`` or ``(B, K)``, optional
        Density compensation (Cartesian cells per sample) used by :meth:`gridding`.
    eps : float, optional
        finufft tolerance; default 1e-6 for complex64, 1e-12 for complex128 (the dtype follows the
        coil maps, else the trajectory: float64 traj -> complex128).
    nthreads : int, optional
        Threads for finufft (default: finufft's choice, all cores).
    upsampfac : float
        finufft oversampling (2.0: the same kernel for type 1 and 2 so that ``A^H`` is the exact
        adjoint of ``A`` to rounding; 1.25 is faster but slightly less accurate).

    Shapes
    ------
    image ``x``: ``(B, H, W)`` complex -> samples ``(B, C, K)``. The batch broadcasts: maps or a
    trajectory with batch 1 serve ``P`` chains ``x: (P, H, W)``.
    """

    def __init__(
        self,
        traj: torch.Tensor,
        img_shape: tuple[int, int],
        coil_maps: torch.Tensor | None = None,
        dcf: torch.Tensor | None = None,
        eps: float | None = None,
        nthreads: int | None = None,
        upsampfac: float = 2.0,
    ):
        check_trajectory(traj)
        if traj.ndim not in (2, 3):
            raise ValueError(f"trajectory must be (K, 2) or (B, K, 2), got {tuple(traj.shape)}")
        if len(img_shape) != 2 or min(img_shape) < 1:
            raise ValueError(f"img_shape must be (H, W) with positive sizes, got {img_shape}")
        H, W = (int(v) for v in img_shape)
        traj3 = traj if traj.ndim == 3 else traj.unsqueeze(0)
        Bt, K = traj3.shape[:2]

        if coil_maps is not None:
            check_coil_maps(coil_maps)
            Bm, C = coil_maps.shape[:2]
            if tuple(coil_maps.shape[-2:]) != (H, W):
                raise ValueError(
                    f"coil maps of shape {tuple(coil_maps.shape)} do not match img_shape {(H, W)}"
                )
            if Bm not in (1, Bt) and Bt != 1:
                raise ValueError(f"coil-map batch {Bm} does not match trajectory batch {Bt}")
            dtype = coil_maps.dtype
            device = coil_maps.device
        else:
            Bm, C = 1, 1
            dtype = torch.complex128 if traj.dtype == torch.float64 else torch.complex64
            device = traj.device
        if dtype not in _DEFAULT_EPS:
            raise TypeError(f"coil maps must be complex64 or complex128, got {dtype}")

        if dcf is not None:
            if not isinstance(dcf, torch.Tensor) or dcf.is_complex():
                raise TypeError("dcf must be a real torch.Tensor")
            check_finite(dcf, "dcf")
            if dcf.shape[-1] != K or dcf.ndim not in (1, 2) or (dcf.ndim == 2 and dcf.shape[0] not in (1, Bt)):
                raise ValueError(f"dcf must have shape ({K},) or ({Bt}, {K}), got {tuple(dcf.shape)}")
            if bool((dcf < 0).any()):
                raise ValueError("dcf must be non-negative")
            dcf = dcf.reshape(-1, 1, K).to(device=device, dtype=dtype.to_real())
        self.dcf = dcf

        self.traj = traj
        self.img_shape = (H, W)
        self.maps = coil_maps
        self.ncoils = C
        self.nsamples = K
        self.batch_size = max(Bt, Bm)
        self.domain_shape = (H, W)
        self.range_shape = (C, K)
        self.dtype = dtype
        self.device = device
        self.eps = float(eps) if eps is not None else _DEFAULT_EPS[dtype]
        self.scale = 1.0 / math.sqrt(H * W)
        opts = {"upsampfac": float(upsampfac)}
        if nthreads is not None:
            opts["nthreads"] = int(nthreads)
        np_real = np.float64 if dtype == torch.complex128 else np.float32
        omega = (2 * np.pi) * traj3.detach().cpu().double().numpy()
        # finufft python: first coordinate pairs with axis 0 of the (H, W) mode array.
        omega = np.ascontiguousarray(np.transpose(omega, (0, 2, 1)), dtype=np_real)  # (Bt, 2, K)
        np_complex = "complex128" if dtype == torch.complex128 else "complex64"
        self._cache = _PlanCache(omega, (H, W), self.eps, np_complex, opts)

    # ------------------------------------------------------------------------------------------
    def _check_image(self, x: torch.Tensor) -> None:
        check_complex(x, "image")
        if x.ndim != 3 or tuple(x.shape[-2:]) != self.img_shape:
            raise ValueError(f"image must have shape (B, {self.img_shape[0]}, {self.img_shape[1]}), got {tuple(x.shape)}")
        self._check_batch(x.shape[0], "image")

    def _check_samples(self, y: torch.Tensor) -> None:
        check_complex(y, "samples")
        if y.ndim != 3 or tuple(y.shape[1:]) != (self.ncoils, self.nsamples):
            raise ValueError(
                f"samples must have shape (B, {self.ncoils}, {self.nsamples}) "
                f"(coils={self.ncoils}, K={self.nsamples}), got {tuple(y.shape)}"
            )
        self._check_batch(y.shape[0], "samples")

    def _check_batch(self, b: int, name: str) -> None:
        if self.batch_size != 1 and b not in (1, self.batch_size):
            raise ValueError(f"{name} batch {b} does not match the operator batch {self.batch_size}")

    def _traj_batch(self, b: int) -> int:
        Bt = self._cache.omega.shape[0]
        return b if Bt == 1 else Bt

    # ------------------------------------------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Samples ``(B, C, K)`` of the image ``x: (B, H, W)``."""
        self._check_image(x)
        x = x.to(self.dtype)
        z = x.unsqueeze(1) if self.maps is None else self.maps * x.unsqueeze(1)  # (B, C, H, W)
        Bt = self._cache.omega.shape[0]
        if Bt > 1 and z.shape[0] == 1:
            z = z.expand(Bt, *z.shape[1:])
        return _Forward.apply(z.contiguous(), self._cache, self.scale)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Image ``(B, H, W)`` ``A^H y`` of samples ``y: (B, C, K)``."""
        self._check_samples(y)
        y = y.to(self.dtype)
        Bt = self._cache.omega.shape[0]
        if Bt > 1 and y.shape[0] == 1:
            y = y.expand(Bt, *y.shape[1:])
        z = _Adjoint.apply(y.contiguous(), self._cache, self.scale)  # (B, C, H, W)
        if self.maps is None:
            return z[:, 0]
        return (self.maps.conj() * z).sum(1)

    def gridding(self, y: torch.Tensor, dcf: torch.Tensor | None = None) -> torch.Tensor:
        """Density-compensated adjoint ``A^H (w * y)``: the gridding reconstruction.

        Uses ``dcf`` if given, else the operator's; weights in Cartesian cells per sample.
        """
        w = self.dcf if dcf is None else dcf.reshape(-1, 1, self.nsamples).to(self.device, self.dtype.to_real())
        if w is None:
            raise ValueError("gridding needs density compensation: pass dcf= here or to the operator")
        return self.A_adjoint(w * y)

    A_adjoint_dcf = gridding

    def to(self, device) -> "NonCartesianMRI":
        super().to(device)
        return self
