"""2-D parallel-beam Radon transform and filtered back-projection (FBP) in pure torch.

Forward model (Denker et al. 2021, sec. 4.1, LoDoPaB-CT geometry reduced to small images)::

    (A x)(theta_i, s_j) = integral over t of x(s_j cos theta - t sin theta, s_j sin theta + t cos theta) dt

for a real image ``x: (B, H, W)`` (pixel units, pixel centres at ``k - (N - 1)/2``) and a sinogram
``(B, n_angles, n_detectors)``, angles ``theta_i = i pi / n_angles`` and detectors ``s_j`` 1 pixel apart,
centred on the rotation axis. The integral is a Riemann sum over ``oversample`` points per pixel with
bilinear interpolation of the image, assembled once into a sparse matrix, so ``A_adjoint`` is its exact
transpose (adjointness to float rounding; the back-projection of a matched pair, which is what iterative
methods and the cINN's sample refinement need).

Why our own: astra-toolbox needs a GPU for its fast paths and is not on PyPI, ODL pulls astra or
scikit-image as its back-end and scikit-image's ``radon``/``iradon`` are unmatched (``iradon`` is not the
adjoint of ``radon``), numpy-only and per image. A 64 x 64 sparse system matrix applies to a batch in a
few milliseconds on one core.

FBP: ``x_fbp = pi / n_angles * A^T (h * sinogram)`` with ``h`` the band-limited ramp filter of Kak &
Slaney (eq. 61 of ch. 3: ``h[0] = 1/4``, ``h[n] = -1/(pi n)^2`` for odd ``n``, 0 otherwise), optionally
apodised by a Hann window, applied by zero-padded FFT along the detector axis.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import as_generator
from .linop import LinearOperator

import warnings

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

__all__ = ["ParallelBeamRadon", "ramp_filter", "poisson_log_noise", "LODOPAB_PHOTONS"]

#: LoDoPaB-CT's mean photon count per detector pixel before attenuation (Leuschner et al. 2021).
LODOPAB_PHOTONS = 4096


def _check_pos_int(v, name):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def ramp_filter(n_det: int, window: str = "ramlak", dtype=torch.float32) -> torch.Tensor:
    """Frequency response ``(n_pad,)`` (real) of the spatial-domain ramp filter, ``n_pad = 2^ceil(log2(2 n_det))``."""
    n_det = _check_pos_int(n_det, "n_det")
    if window not in ("ramlak", "hann"):
        raise ValueError(f"window must be 'ramlak' or 'hann', got {window!r}")
    n_pad = max(64, 2 ** int(math.ceil(math.log2(2 * n_det))))
    n = np.concatenate([np.arange(0, n_pad // 2 + 1), np.arange(-n_pad // 2 + 1, 0)])
    h = np.zeros(n_pad)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    H = np.real(np.fft.fft(h))  # ~ |f| (cycles/pixel) without the DC error of a sampled ramp
    if window == "hann":
        f = np.fft.fftfreq(n_pad)
        H = H * (0.5 + 0.5 * np.cos(2 * np.pi * f))
    return torch.as_tensor(H, dtype=dtype)


class ParallelBeamRadon(LinearOperator):
    """Parallel-beam Radon transform as a real :class:`LinearOperator` (see the module docstring).

    Parameters
    ----------
    img_size : int
        Images are ``(B, img_size, img_size)`` real.
    n_angles : int
        Angles ``i pi / n_angles``, ``i = 0..n_angles-1``.
    n_detectors : int, optional
        Default ``ceil(sqrt(2) img_size)`` (odd-rounded so the central ray hits the centre).
    oversample : int
        Integration points per pixel of ray length (default 2).
    dtype : torch.float32 or torch.float64

    Shapes: ``A: (B, N, N) -> (B, n_angles, n_detectors)``; ``A_adjoint`` the transpose (back-projection).
    """

    def __init__(self, img_size: int, n_angles: int, n_detectors: int | None = None, oversample: int = 2,
                 dtype=torch.float32):
        N = _check_pos_int(img_size, "img_size")
        n_angles = _check_pos_int(n_angles, "n_angles")
        if n_detectors is None:
            n_detectors = int(math.ceil(math.sqrt(2) * N))
            n_detectors += 1 - n_detectors % 2
        n_det = _check_pos_int(n_detectors, "n_detectors")
        oversample = _check_pos_int(oversample, "oversample")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.img_size, self.n_angles, self.n_detectors, self.oversample = N, n_angles, n_det, oversample
        self.domain_shape = (N, N)
        self.range_shape = (n_angles, n_det)
        self.dtype = dtype
        self.device = torch.device("cpu")
        self.batch_size = 1
        self.angles = torch.arange(n_angles, dtype=torch.float64) * math.pi / n_angles
        self._build()

    def _build(self):
        N, n_det, os_ = self.img_size, self.n_detectors, self.oversample
        half_len = math.sqrt(2) * N / 2 + 1
        dt = 1.0 / os_
        t = np.arange(-half_len, half_len + dt / 2, dt)
        s = np.arange(n_det) - (n_det - 1) / 2
        c = (N - 1) / 2
        rows, cols, vals = [], [], []
        for i, th in enumerate(self.angles.numpy()):
            ct, st = math.cos(th), math.sin(th)
            # (det, t) sample points; image axis 1 (columns) = x, axis 0 (rows) = y
            px = s[:, None] * ct - t[None, :] * st + c
            py = s[:, None] * st + t[None, :] * ct + c
            ray = np.broadcast_to(i * n_det + np.arange(n_det)[:, None], px.shape)
            x0, y0 = np.floor(px), np.floor(py)
            fx, fy = px - x0, py - y0
            for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                xi, yi = x0 + dx, y0 + dy
                ok = (xi >= 0) & (xi < N) & (yi >= 0) & (yi < N) & (w > 0)
                rows.append(ray[ok])
                cols.append((yi[ok] * N + xi[ok]).astype(np.int64))
                vals.append(w[ok] * dt)
        rows = np.concatenate(rows).astype(np.int64)
        cols = np.concatenate(cols)
        vals = np.concatenate(vals)
        M, K = self.n_angles * n_det, N * N
        idx = torch.from_numpy(np.stack([rows, cols]))
        coo = torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (M, K), check_invariants=False)
        coo = coo.coalesce().to(self.dtype)
        self.matrix = coo.to_sparse_csr()
        self.matrix_t = coo.transpose(0, 1).coalesce().to_sparse_csr()

    def _check(self, v, shape, name):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        if v.is_complex():
            raise TypeError(f"{name} must be real (the Radon transform acts on real images), got {v.dtype}")
        if v.ndim != 3 or tuple(v.shape[1:]) != tuple(shape):
            raise ValueError(f"{name} must have shape (B, {shape[0]}, {shape[1]}), got {tuple(v.shape)}")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Sinogram ``(B, n_angles, n_detectors)`` of real images ``(B, N, N)``."""
        self._check(x, self.domain_shape, "x")
        flat = x.reshape(x.shape[0], -1).to(self.dtype).T
        return (self.matrix @ flat).T.reshape(x.shape[0], *self.range_shape).to(x.dtype)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Back-projection ``A^T y``: ``(B, n_angles, n_detectors) -> (B, N, N)``."""
        self._check(y, self.range_shape, "y")
        flat = y.reshape(y.shape[0], -1).to(self.dtype).T
        return (self.matrix_t @ flat).T.reshape(y.shape[0], *self.domain_shape).to(y.dtype)

    def filter_sinogram(self, y: torch.Tensor, window: str = "ramlak") -> torch.Tensor:
        """Ramp-filter each projection (zero-padded FFT along the detector axis)."""
        self._check(y, self.range_shape, "y")
        H = ramp_filter(self.n_detectors, window, dtype=y.dtype).to(y.device)
        n_pad = H.shape[0]
        Y = torch.fft.fft(y, n=n_pad, dim=-1)
        return torch.fft.ifft(Y * H, dim=-1).real[..., : self.n_detectors]

    def fbp(self, y: torch.Tensor, window: str = "ramlak") -> torch.Tensor:
        """Filtered back-projection ``pi / n_angles * A^T (h * y)`` -> ``(B, N, N)`` real."""
        return math.pi / self.n_angles * self.A_adjoint(self.filter_sinogram(y, window))

    def to(self, device):
        device = torch.device(device)
        self.matrix = self.matrix.to(device)
        self.matrix_t = self.matrix_t.to(device)
        self.device = device
        return self


def poisson_log_noise(line_integrals: torch.Tensor, photons: float = LODOPAB_PHOTONS, mu: float = 1.0,
                      generator=None) -> torch.Tensor:
    """Low-dose CT noise as in LoDoPaB-CT: post-log Poisson data.

    ``counts ~ Poisson(photons exp(-mu p))`` for line integrals ``p`` (in image units), then
    ``y = -ln(max(counts, 0.1) / photons) / mu``. ``mu`` converts image units to attenuation (LoDoPaB:
    ``mu_max`` times the pixel size); the ``0.1`` floor keeps fully absorbed rays finite, as LoDoPaB does.
    """
    if not isinstance(line_integrals, torch.Tensor) or line_integrals.is_complex():
        raise TypeError("line_integrals must be a real torch.Tensor")
    if not photons > 0 or not mu > 0:
        raise ValueError(f"photons and mu must be > 0, got {photons}, {mu}")
    g = as_generator(generator)
    rate = photons * torch.exp(-mu * line_integrals.double())
    counts = torch.poisson(rate.cpu(), generator=g).to(line_integrals.device)
    return (-torch.log(counts.clamp_min(0.1) / photons) / mu).to(line_integrals.dtype)
