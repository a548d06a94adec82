"""Non-Cartesian k-space trajectories and their density compensation.

Convention (mri-nufft's, GUIDE section 1): a trajectory is a real ``(K, 2)`` (or ``(B, K, 2)``)
float32 tensor in ``[-0.5, 0.5]`` cycles/pixel. Column 0 is the frequency along image axis ``-2``
(rows, H), column 1 along image axis ``-1`` (columns, W). The sample ``k`` of an image ``x`` is
``sum_r x[r] exp(-2 pi i k . (r - c))`` with ``c = (H//2, W//2)`` the centre pixel, so a trajectory
point ``(i - H//2) / H, (j - W//2) / W`` reproduces Cartesian k-space index ``(i, j)`` of ``fft2c``.

Density compensation weights are in units of *Cartesian cells per sample*: a fully sampled Cartesian
grid has weight 1 everywhere, and ``NonCartesianMRI.gridding(y) = A^H (w * y)`` then approximates
the image (``A^H W A ~ I`` on the sampled region) with the operator's ``1/sqrt(H W)`` scaling.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import check_trajectory

__all__ = [
    "GOLDEN_ANGLE_DEG",
    "radial_trajectory",
    "spiral_trajectory",
    "density_compensation",
]

#: The golden angle for radial spokes through the centre, ``180 deg / phi`` (Winkelmann et al. 2007).
GOLDEN_ANGLE_DEG = 180.0 * (math.sqrt(5.0) - 1.0) / 2.0  # 111.246...


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def radial_trajectory(
    n_spokes: int, n_readout: int, golden: bool = True, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Radial spokes through the k-space centre.

    Spoke ``s`` has angle ``s * 111.246 deg`` (golden angle) or ``s * 180 deg / n_spokes`` (equally
    spaced); readout sample ``i`` lies at radius ``(i - n_readout // 2) / n_readout`` so every spoke
    contains the centre and the readout spacing is one Cartesian cell for ``n_readout = N``.

    Parameters
    ----------
    n_spokes, n_readout : int
        Number of spokes and samples per spoke. Full Nyquist coverage of an ``N x N`` image needs
        ``n_readout = N`` and about ``pi/2 * N`` spokes.
    golden : bool
        Golden-angle ordering (any prefix of spokes covers k-space nearly uniformly) or equal spacing.

    Returns
    -------
    Tensor ``(n_spokes * n_readout, 2)``, spoke-major, in ``[-0.5, 0.5]``.
    """
    n_spokes = _positive_int(n_spokes, "n_spokes")
    n_readout = _positive_int(n_readout, "n_readout")
    s = np.arange(n_spokes, dtype=np.float64)
    if golden:
        theta = np.deg2rad(GOLDEN_ANGLE_DEG) * s
    else:
        theta = np.pi * s / n_spokes
    r = (np.arange(n_readout, dtype=np.float64) - n_readout // 2) / n_readout
    k = np.stack(
        [r[None, :] * np.cos(theta)[:, None], r[None, :] * np.sin(theta)[:, None]], axis=-1
    ).reshape(-1, 2)
    return torch.from_numpy(np.clip(k, -0.5, 0.5)).to(dtype)


def spiral_trajectory(
    n_interleaves: int,
    matrix_size: int,
    n_samples: int | None = None,
    centre_radius: float = 0.1,
    decay: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Interleaved variable-density Archimedean spiral.

    Each interleave follows ``k(theta) = r(theta) exp(i theta)`` with
    ``dr/dtheta = n_interleaves / (2 pi N) * max(1, r / centre_radius) ** decay``: inside
    ``centre_radius`` the turns of all interleaves are one Cartesian cell apart (Nyquist for an
    ``N x N`` image), outside they spread, so the sampling density falls off towards the edge.
    Interleave ``l`` is rotated by ``2 pi l / n_interleaves``; samples are equally spaced in arc length
    (constant gradient amplitude; slew limits are not modelled).

    Parameters
    ----------
    n_interleaves : int
        Number of interleaves (shots).
    matrix_size : int
        ``N``, the image size that sets the Nyquist spacing ``1/N``.
    n_samples : int, optional
        Samples per interleave; by default one per Cartesian cell of arc length.
    centre_radius : float
        Radius (cycles/pixel, in ``(0, 0.5]``) of the fully sampled centre.
    decay : float
        Exponent of the spacing growth outside the centre; 0 gives a uniform Archimedean spiral.

    Returns
    -------
    Tensor ``(n_interleaves * n_samples, 2)``, interleave-major, in ``[-0.5, 0.5]``.
    """
    n_interleaves = _positive_int(n_interleaves, "n_interleaves")
    N = _positive_int(matrix_size, "matrix_size")
    if not 0 < centre_radius <= 0.5:
        raise ValueError(f"centre_radius must be in (0, 0.5], got {centre_radius}")
    if decay < 0:
        raise ValueError(f"decay must be >= 0, got {decay}")
    c = n_interleaves / (2 * np.pi * N)
    # Integrate r(theta) on a fine grid (RK2); ~64 steps per turn resolve the curve to << 1 cell.
    dtheta = 2 * np.pi / 256
    thetas, rs = [0.0], [0.0]
    r, th = 0.0, 0.0
    while r < 0.5:
        f = lambda rr: c * max(1.0, rr / centre_radius) ** decay  # noqa: E731
        r_mid = r + 0.5 * dtheta * f(r)
        r = r + dtheta * f(r_mid)
        th += dtheta
        thetas.append(th)
        rs.append(min(r, 0.5))
        if len(rs) > 50_000_000:  # pragma: no cover - guards absurd parameters
            raise ValueError("spiral parameters need too many turns")
    thetas, rs = np.asarray(thetas), np.asarray(rs)
    xy = np.stack([rs * np.cos(thetas), rs * np.sin(thetas)], -1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    if n_samples is None:
        n_samples = int(np.ceil(arc[-1] * N)) + 1
    n_samples = _positive_int(n_samples, "n_samples")
    s = np.linspace(0.0, arc[-1], n_samples)
    th_s = np.interp(s, arc, thetas)
    r_s = np.interp(s, arc, rs)
    rot = 2 * np.pi * np.arange(n_interleaves) / n_interleaves
    ang = th_s[None, :] + rot[:, None]
    k = np.stack([r_s[None, :] * np.cos(ang), r_s[None, :] * np.sin(ang)], -1).reshape(-1, 2)
    return torch.from_numpy(np.clip(k, -0.5, 0.5)).to(dtype)


# --------------------------------------------------------------------------------------------------
# Density compensation
# --------------------------------------------------------------------------------------------------
def density_compensation(
    traj: torch.Tensor,
    img_shape: tuple[int, int],
    method: str = "pipe",
    n_iter: int = 20,
    kernel_width: float = 0.6,
    **kwargs,
) -> torch.Tensor:
    """Density compensation weights for a trajectory, in Cartesian cells per sample.

    Parameters
    ----------
    traj : Tensor ``(K, 2)`` or ``(B, K, 2)`` in ``[-0.5, 0.5]``
    img_shape : (H, W)
    method : {"pipe", "ramp", "voronoi"}
        ``"pipe"`` (default): Pipe & Menon's fixed point ``w <- w / (C w)`` (MRM 1999), with ``C`` the
        convolution by a positive Gaussian kernel (std ``kernel_width`` cells) of unit Cartesian mass, via the
        NUFFT (``C = A G A^H`` with a Gaussian image window ``G`` on a 2x field of view), so the
        fixed point ``C w = 1`` already carries the right scale. Works for any trajectory.
        ``"ramp"``: the analytic radial weight ``pi |k| dk / n_spokes`` scaled to cells (radial
        trajectories from :func:`radial_trajectory` only; the centre sample gets its disc area).
        ``"voronoi"``: area of each sample's Voronoi cell (duplicates share their cell); a ring of
        guard points just outside the sampled disc bounds the outer cells.
    n_iter : int
        Pipe-Menon iterations.
    kernel_width : float
        Standard deviation, in Cartesian cells, of the Pipe-Menon kernel; it must exceed the
        largest gap between samples (widen it for strongly undersampled trajectories).
    **kwargs
        ``"ramp"`` needs ``n_spokes`` (or infers it from ``traj``'s centre samples).

    Returns
    -------
    Tensor ``(K,)`` or ``(B, K)`` float32.
    """
    check_trajectory(traj)
    if len(img_shape) != 2:
        raise ValueError(f"img_shape must be (H, W), got {img_shape}")
    H, W = (int(v) for v in img_shape)
    if traj.ndim == 3:
        return torch.stack(
            [density_compensation(t, img_shape, method, n_iter, kernel_width, **kwargs) for t in traj]
        )
    if traj.ndim != 2:
        raise ValueError(f"trajectory must be (K, 2) or (B, K, 2), got {tuple(traj.shape)}")
    if method == "pipe":
        w = _pipe_menon(traj, H, W, n_iter, kernel_width)
    elif method == "ramp":
        w = _ramp(traj, H, W, kwargs.get("n_spokes"))
    elif method == "voronoi":
        w = _voronoi(traj.detach().cpu().double().numpy(), H, W)
    else:
        raise ValueError(f"unknown density compensation method {method!r}; use 'pipe', 'ramp' or 'voronoi'")
    return torch.as_tensor(w, dtype=torch.float32)


def _pipe_menon(traj: torch.Tensor, H: int, W: int, n_iter: int, width: float) -> np.ndarray:
    from .nufft import NonCartesianMRI

    # Kernel C(dk) = (1/HW) sum_r g(r) exp(-2 pi i dk . r) with a Gaussian window g, g(0) = 1, so
    # the integral of C is 1/(HW) (one Cartesian cell) and C > 0. r runs over a half-integer lattice
    # of a 2x field of view, which makes C 2-periodic: samples at k = +-0.5 do not wrap onto each
    # other. Implemented as a NUFFT of k/2 on a (4H, 4W) grid.
    H4, W4 = 4 * H, 4 * W
    op = NonCartesianMRI(traj.double() / 2, (H4, W4), eps=1e-9)
    sig_h, sig_w = H / (2 * np.pi * width), W / (2 * np.pi * width)
    yy = (torch.arange(H4, dtype=torch.float64) - H4 // 2) / 2
    xx = (torch.arange(W4, dtype=torch.float64) - W4 // 2) / 2
    g = torch.exp(-0.5 * (yy[:, None] / sig_h) ** 2 - 0.5 * (xx[None, :] / sig_w) ** 2)

    def conv(w):
        # op is scaled by 1/sqrt(16 HW) and the half-integer lattice is 4x denser: C = 4 op g op^H.
        return 4.0 * op.A(g * op.A_adjoint(w.to(torch.complex128)[None, None]))[0, 0].real

    w = torch.ones(traj.shape[0], dtype=torch.float64)
    for _ in range(n_iter):
        w = w / conv(w).clamp_min(1e-12)
    return w.numpy()


def _ramp(traj: torch.Tensor, H: int, W: int, n_spokes=None) -> np.ndarray:
    k = traj.detach().cpu().double().numpy()
    r = np.linalg.norm(k, axis=1)
    n_centre = int(np.sum(r < 1e-12))
    if n_spokes is None:
        if n_centre == 0:
            raise ValueError("ramp DCF needs n_spokes= for a radial trajectory without centre samples")
        n_spokes = n_centre
    n_spokes = _positive_int(n_spokes, "n_spokes")
    if k.shape[0] % n_spokes:
        raise ValueError(f"{k.shape[0]} samples do not split into {n_spokes} spokes")
    n_readout = k.shape[0] // n_spokes
    dk = 1.0 / n_readout
    # Full-diameter spokes: 2 n_spokes samples share each annulus of radius r and width dk.
    area = np.pi * r * dk / n_spokes
    area[r < 1e-12] = np.pi * (dk / 2) ** 2 / n_spokes
    return area * H * W


def _voronoi(k: np.ndarray, H: int, W: int) -> np.ndarray:
    from scipy.spatial import Voronoi

    K = k.shape[0]
    # Scale axes to Cartesian cells so the geometry is isotropic for non-square images.
    pts = k * np.array([H, W])
    uniq, inv, counts = np.unique(np.round(pts, 9), axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    r_max = float(np.linalg.norm(uniq, axis=1).max())
    r_guard = r_max + 1.0
    n_guard = max(16, int(np.ceil(2 * np.pi * r_guard)))
    phi = 2 * np.pi * np.arange(n_guard) / n_guard
    guard = r_guard * np.stack([np.cos(phi), np.sin(phi)], -1)
    vor = Voronoi(np.concatenate([uniq, guard]))
    area = np.empty(len(uniq))
    for i in range(len(uniq)):
        reg = vor.regions[vor.point_region[i]]
        if -1 in reg or len(reg) < 3:  # pragma: no cover - guards make every real cell bounded
            area[i] = np.nan
            continue
        v = vor.vertices[reg]
        c = v.mean(0)
        v = v[np.argsort(np.arctan2(v[:, 1] - c[1], v[:, 0] - c[0]))]
        area[i] = 0.5 * abs(np.dot(v[:, 0], np.roll(v[:, 1], 1)) - np.dot(v[:, 1], np.roll(v[:, 0], 1)))
    if np.isnan(area).any():  # pragma: no cover
        area[np.isnan(area)] = np.nanmedian(area)
    # Area is already in cells (axes scaled by H, W); duplicates share their cell.
    return (area / counts)[inv].reshape(K)
