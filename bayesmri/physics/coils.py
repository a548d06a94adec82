"""Receive-coil handling: simulated sensitivities, coil combination, SVD coil compression and noise
prewhitening.

Shapes (complex64 unless stated; the coil axis is always ``-3``):

- coil images / coil k-space: ``(B, C, H, W)`` (most functions also take unbatched ``(C, H, W)``)
- coil maps ``S``: ``(B, C, H, W)`` or ``(C, H, W)``, ``sum_c |S_c|^2 = 1`` inside the object
- noise samples: ``(C, N)`` (or batched ``(..., C, N)``)

Forward model of a coil image: ``x_c = S_c x + n_c`` with coil noise ``n ~ CN(0, Psi)``, ``Psi`` the
``C x C`` noise covariance. Prewhitening with ``L^{-1}`` (``Psi = L L^H``) turns the noise into
``CN(0, I)``: after it the noise standard deviation is 1 per complex sample, as BART assumes.
"""
from __future__ import annotations

import math
import numbers

import torch

from .._validate import check_complex, check_finite, check_kspace

__all__ = [
    "birdcage_maps",
    "normalize_maps",
    "rss",
    "coil_combine",
    "svd_coil_compression",
    "coil_energy_profile",
    "noise_covariance",
    "whitening_matrix",
    "prewhiten",
]


def birdcage_maps(shape, r: float = 1.5, nzz: int = 8, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Simulated birdcage-like coil sensitivities (the model of sigpy's ``birdcage_maps``).

    Coil ``c`` sits on a circle of radius ``r`` (in units of half the field of view) at angle
    ``2 pi c / C``; its sensitivity at a pixel is ``exp(i phi) / d`` with ``d`` the distance to the coil
    and ``phi`` the azimuth of the pixel seen from the coil, rotated by the coil angle (the circularly
    polarised field of a loop). The maps are then normalised so that ``sum_c |S_c|^2 = 1`` everywhere.
    For 3-D shapes the coils form rings of ``nzz`` coils stacked along ``z``.

    Parameters
    ----------
    shape : tuple of int
        ``(C, H, W)`` or ``(C, D, H, W)``.
    r : float
        Coil radius relative to half the field of view (> 1 puts the coils outside the image).
    nzz : int
        Coils per ring (3-D only).
    dtype : torch.dtype
        Complex output dtype.

    Returns
    -------
    Tensor ``shape``, complex, smooth, ``sum_c |S_c|^2 = 1``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"shape must be (C, H, W) or (C, D, H, W) with positive sizes, got {shape}")
    if not dtype.is_complex:
        raise TypeError(f"dtype must be complex, got {dtype}")
    if r <= 0:
        raise ValueError(f"r must be positive, got {r}")
    real = torch.float64
    nc = shape[0]
    c = torch.arange(nc, dtype=real)
    if len(shape) == 3:
        _, ny, nx = shape
        ang = c * (2 * math.pi / nc)
        coil_phs = -ang
        cz = None
    else:
        if nzz < 1:
            raise ValueError(f"nzz must be >= 1, got {nzz}")
        _, nz, ny, nx = shape
        ring = torch.floor(c / nzz)
        ang = c * (2 * math.pi / nzz)
        coil_phs = -(c + ring) * (2 * math.pi / nzz)
        cz = ring - 0.5 * (math.ceil(nc / nzz) - 1)
    # Pixel coordinates in units of half the FOV, centre at index n/2 (the centred-FFT origin).
    y = (torch.arange(ny, dtype=real) - ny / 2.0) / (ny / 2.0)
    x = (torch.arange(nx, dtype=real) - nx / 2.0) / (nx / 2.0)
    if cz is None:
        xc = x.view(1, 1, nx) - (r * torch.cos(ang)).view(nc, 1, 1)
        yc = y.view(1, ny, 1) - (r * torch.sin(ang)).view(nc, 1, 1)
        dist2 = xc**2 + yc**2
        phs = coil_phs.view(nc, 1, 1)
    else:
        z = (torch.arange(nz, dtype=real) - nz / 2.0) / (nz / 2.0)
        xc = x.view(1, 1, 1, nx) - (r * torch.cos(ang)).view(nc, 1, 1, 1)
        yc = y.view(1, 1, ny, 1) - (r * torch.sin(ang)).view(nc, 1, 1, 1)
        zc = z.view(1, nz, 1, 1) - cz.view(nc, 1, 1, 1)
        dist2 = xc**2 + yc**2 + zc**2
        phs = coil_phs.view(nc, 1, 1, 1)
    phi = torch.atan2(xc, -yc) + phs
    maps = torch.polar(1.0 / torch.sqrt(dist2.clamp_min(1e-12)), phi.expand_as(dist2))
    # dist2 > 0 everywhere for r > 1 (coils outside the FOV); normalise over the coil axis 0.
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(dim=0, keepdim=True)).clamp_min(1e-30)
    return maps.to(dtype)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale coil maps pixelwise so that ``sum_c |S_c|^2 = 1``; pixels with ``rss(S) <= eps`` become 0.

    Parameters
    ----------
    maps : Tensor ``(..., C, H, W)`` complex
    eps : float
        Pixels whose root-sum-of-squares is at most ``eps`` are set to zero (outside the object).
    """
    check_complex(maps, "maps")
    check_finite(maps, "maps")
    if maps.ndim < 3:
        raise ValueError(f"maps must have shape (..., C, H, W), got {tuple(maps.shape)}")
    norm = rss(maps, dim=-3).unsqueeze(-3)
    keep = norm > eps
    return torch.where(keep, maps / torch.where(keep, norm, torch.ones_like(norm)), torch.zeros_like(maps))


def rss(coil_images: torch.Tensor, dim: int = -3) -> torch.Tensor:
    """Root sum of squares ``sqrt(sum_c |x_c|^2)`` over the coil axis ``dim`` (real output)."""
    check_complex(coil_images, "coil_images")
    return torch.sqrt((coil_images.real**2 + coil_images.imag**2).sum(dim=dim))


def _check_same_coils(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape[-3] != b.shape[-3]:
        raise ValueError(f"{na} has {a.shape[-3]} coils but {nb} has {b.shape[-3]} (coil axis is -3)")


def coil_combine(coil_images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Adjoint of the coil expansion: ``S^H x = sum_c conj(S_c) x_c``.

    With normalised maps (``sum_c |S_c|^2 = 1``) this inverts ``x -> S x`` exactly inside the object.

    Parameters
    ----------
    coil_images : Tensor ``(B, C, H, W)`` or ``(C, H, W)`` complex
    maps : Tensor broadcasting against ``coil_images`` (e.g. ``(1, C, H, W)``), complex

    Returns
    -------
    Tensor ``(B, H, W)`` (or ``(H, W)``), complex.
    """
    check_complex(coil_images, "coil_images")
    check_complex(maps, "maps")
    if coil_images.ndim < 3 or maps.ndim < 3:
        raise ValueError(
            f"coil_images and maps need a coil axis at -3, got shapes {tuple(coil_images.shape)} "
            f"and {tuple(maps.shape)}"
        )
    _check_same_coils(coil_images, maps, "coil_images", "maps")
    return (maps.conj() * coil_images).sum(dim=-3)


def _center_slices(shape_hw, size_hw):
    out = []
    for n, s in zip(shape_hw, size_hw):
        s = min(int(s), n)
        start = n // 2 - s // 2
        out.append(slice(start, start + s))
    return tuple(out)


def _as_batch_calib(kspace: torch.Tensor, calib):
    """``(k (B, C, H, W), cal (B', C, N) complex128, unbatched)`` for the SVD compression functions."""
    check_kspace(kspace, "kspace", ndim_min=3)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace must have shape (B, C, H, W) or (C, H, W), got {tuple(kspace.shape)}")
    unbatched = kspace.ndim == 3
    k = kspace.unsqueeze(0) if unbatched else kspace
    B, C = k.shape[:2]
    if k[0, 0].numel() == 0:
        raise ValueError(f"kspace has no samples per coil, got shape {tuple(kspace.shape)}")
    if calib is None:
        cal = k
    elif isinstance(calib, torch.Tensor):
        check_kspace(calib, "calib", ndim_min=2)
        cal = calib
        if cal.ndim == k.ndim - 1:
            cal = cal.unsqueeze(0)
        if cal.shape[1] != C:
            raise ValueError(f"calib has {cal.shape[1]} coils but kspace has {C} (coil axis is 1 after batch)")
        if cal.shape[0] not in (1, B):
            raise ValueError(f"calib batch {cal.shape[0]} does not match kspace batch {B}")
    else:
        size = (calib, calib) if isinstance(calib, int) and not isinstance(calib, bool) else calib
        try:
            size = tuple(int(v) for v in size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"calib must be None, a positive int, (h, w) or a tensor, got {calib!r}")
        cal = k[(Ellipsis, *_center_slices(k.shape[-2:], size))]
    cal = cal.reshape(cal.shape[0], C, -1).to(torch.complex128)
    return k, cal, unbatched


def _compression_basis(cal: torch.Tensor):
    """Coil energies (descending, ``(B', C)``) and left singular vectors ``U (B', C, C)`` of ``cal``."""
    # Left singular vectors of cal = eigenvectors of the C x C Gram matrix (cheap for N >> C, and a
    # full orthonormal basis even when there are fewer calibration samples than coils).
    evals, U = torch.linalg.eigh(cal @ cal.mH)
    evals = evals.flip(-1).clamp_min(0)  # descending energy
    if bool((evals.sum(-1) <= 0).any()):
        raise ValueError("the calibration data for coil compression are all zero (is the k-space centre sampled?)")
    return evals, U.flip(-1)


def coil_energy_profile(kspace: torch.Tensor, calib=None) -> torch.Tensor:
    """Fraction of the (calibration) energy that the first ``V`` SVD virtual coils keep, ``V = 1..C``.

    Entry ``V - 1`` is ``sum_{v <= V} s_v^2 / sum_v s_v^2`` with ``s_v`` the singular values of the
    ``C x N`` matrix of calibration samples: the energy :func:`svd_coil_compression` to ``V`` coils keeps
    of the data it was estimated from.

    Parameters
    ----------
    kspace, calib : as :func:`svd_coil_compression`.

    Returns
    -------
    Tensor ``(B, C)`` (or ``(C,)`` for unbatched input), float64, non-decreasing, last entry 1.
    """
    k, cal, unbatched = _as_batch_calib(kspace, calib)
    evals, _ = _compression_basis(cal)
    frac = evals.cumsum(-1) / evals.sum(-1, keepdim=True)
    frac = frac.expand(k.shape[0], frac.shape[-1])
    return frac[0] if unbatched else frac


def svd_coil_compression(kspace: torch.Tensor, num_virtual: int | None = None, calib=None, *,
                         energy: float | None = None):
    """SVD software coil compression to ``V`` virtual coils (Buehrer et al. 2007; Huang et al. 2008;
    BART ``cc -S``).

    Model: ``y_v = U^H y`` along the coil axis, where ``U (C, V)`` holds the ``V`` dominant left
    singular vectors of the ``C x N`` matrix of calibration samples (all sampled points or the central
    calibration region). ``U^H`` has orthonormal rows, so: compressing to ``V = C`` is a unitary change of
    coil basis (energy, RSS, SENSE/least-squares reconstructions unchanged); white coil noise stays white
    with the same variance; the SENSE model of the virtual coils is ``y_v = P F (U^H S) x + U^H n`` (compress
    the coil maps with the same matrix, or estimate maps from ``y_v``).

    Parameters
    ----------
    kspace : Tensor ``(B, C, H, W)`` or ``(C, H, W)`` complex
        Coil k-space (or coil images: the transform acts on the coil axis only). Zeros off the sampling
        mask add nothing to the estimate, so ``calib=None`` on undersampled data uses every sampled point.
    num_virtual : int, optional
        Number of virtual coils ``V``, ``1 <= V <= C``. Give exactly one of ``num_virtual`` and ``energy``.
    calib : None, int, (int, int) or Tensor, optional
        Data used for the SVD: ``None`` uses all of ``kspace``; an int or ``(h, w)`` uses the centred
        ``h x w`` region (ACS); a tensor ``(B?, C, ...)`` with the same coils is used as given.
    energy : float in (0, 1], optional
        Choose the smallest ``V`` whose virtual coils keep at least this fraction of the calibration
        energy (:func:`coil_energy_profile`; e.g. 0.95 or 0.99); for a batch, the largest ``V`` any item needs.

    Returns
    -------
    compressed : Tensor ``(B, V, H, W)`` (or ``(V, H, W)``)
    matrix : Tensor ``(B, V, C)`` (or ``(V, C)``): ``U^H``, orthonormal rows, ``compressed = matrix @ kspace``;
        virtual coil ``v`` is the ``v``-th most energetic.

    Raises
    ------
    ValueError
        ``num_virtual`` not an integer in ``[1, C]``, ``energy`` not in ``(0, 1]``, both or neither given,
        k-space not ``(B, C, H, W)``/``(C, H, W)`` or not finite, all-zero calibration data.
    TypeError
        Real-valued k-space.
    """
    k, cal, unbatched = _as_batch_calib(kspace, calib)
    B, C = k.shape[:2]
    if (num_virtual is None) == (energy is None):
        raise ValueError("give exactly one of num_virtual (number of virtual coils) and energy (fraction to keep)")
    if num_virtual is not None:
        if isinstance(num_virtual, bool) or not isinstance(num_virtual, numbers.Integral) \
                or not 1 <= int(num_virtual) <= C:
            raise ValueError(f"num_virtual must be an int in [1, {C}] (the number of coils), got {num_virtual!r}")
        num_virtual = int(num_virtual)
    else:
        if isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0 < float(energy) <= 1:
            raise ValueError(f"energy must be a fraction in (0, 1], e.g. 0.95 or 0.99, got {energy!r}")
    evals, U = _compression_basis(cal)
    if num_virtual is None:
        frac = evals.cumsum(-1) / evals.sum(-1, keepdim=True)
        # smallest V with frac[V - 1] >= energy (a hair of slack for the rounding of the cumulative sum)
        need = (frac < float(energy) - 1e-12).sum(-1) + 1
        num_virtual = int(need.clamp(max=C).max())
    matrix = U[..., :num_virtual].mH.expand(B, num_virtual, C).to(k.dtype).contiguous()
    out = torch.einsum("bvc,bc...->bv...", matrix, k)
    if unbatched:
        return out[0], matrix[0]
    return out, matrix


def noise_covariance(noise: torch.Tensor) -> torch.Tensor:
    """Coil noise covariance ``Psi = n n^H / N`` from noise-only samples (zero-mean noise assumed).

    Parameters
    ----------
    noise : Tensor ``(C, N)`` or ``(..., C, N)`` complex, ``N >= C`` samples per coil.

    Returns
    -------
    Tensor ``(..., C, C)`` Hermitian.
    """
    check_kspace(noise, "noise", ndim_min=2)
    C, N = noise.shape[-2:]
    if N < C:
        raise ValueError(
            f"noise must have shape (C, N) with at least N >= C samples per coil; got {tuple(noise.shape)} "
            "(did you pass (N, C)?)"
        )
    cov = noise @ noise.mH / N
    return 0.5 * (cov + cov.mH)


def whitening_matrix(cov: torch.Tensor) -> torch.Tensor:
    """Inverse Cholesky factor ``L^{-1}`` of ``Psi = L L^H``, so that ``L^{-1} n ~ CN(0, I)``.

    Parameters
    ----------
    cov : Tensor ``(..., C, C)`` complex Hermitian positive definite.

    Returns
    -------
    Tensor ``(..., C, C)`` lower triangular.
    """
    check_complex(cov, "cov")
    check_finite(cov, "cov")
    if cov.ndim < 2 or cov.shape[-1] != cov.shape[-2]:
        raise ValueError(f"cov must be a square (..., C, C) matrix, got {tuple(cov.shape)}")
    scale = cov.diagonal(dim1=-2, dim2=-1).real.abs().amax().clamp_min(1e-30)
    if float((cov - cov.mH).abs().amax()) > 1e-5 * float(scale):
        raise ValueError("cov must be Hermitian")
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError("cov is not positive definite (Cholesky failed); need more noise samples than coils")
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
    return torch.linalg.solve_triangular(L, eye, upper=False)


def prewhiten(kspace: torch.Tensor, cov: torch.Tensor | None = None, matrix: torch.Tensor | None = None):
    """Apply a whitening matrix along the coil axis (-3): ``k_w = L^{-1} k``.

    Whiten both the data and the coil maps (``S_w = L^{-1} S``) so that the SENSE model
    ``k_w = P F S_w x + n_w`` holds with ``n_w ~ CN(0, I)``.

    Parameters
    ----------
    kspace : Tensor ``(B, C, H, W)`` or ``(C, H, W)`` complex (k-space, coil images or maps)
    cov : Tensor ``(C, C)``, optional
        Noise covariance; the whitening matrix is computed from it.
    matrix : Tensor ``(C, C)`` or ``(B, C, C)``, optional
        A precomputed whitening matrix. Give exactly one of ``cov`` and ``matrix``.
    """
    check_kspace(kspace, "kspace", ndim_min=3)
    if (cov is None) == (matrix is None):
        raise ValueError("give exactly one of cov and matrix")
    M = whitening_matrix(cov) if matrix is None else matrix
    check_complex(M, "matrix")
    check_finite(M, "matrix")
    C = kspace.shape[-3]
    if M.ndim not in (2, 3) or M.shape[-2:] != (C, C):
        raise ValueError(f"whitening matrix must be ({C}, {C}) to match {C} coils, got {tuple(M.shape)}")
    if M.ndim == 3:
        if kspace.ndim != 4 or M.shape[0] not in (1, kspace.shape[0]):
            raise ValueError(f"batched matrix {tuple(M.shape)} does not match kspace {tuple(kspace.shape)}")
        return torch.einsum("bdc,bc...->bd...", M.to(kspace.dtype), kspace)
    return torch.einsum("dc,...chw->...dhw", M.to(kspace.dtype), kspace)
