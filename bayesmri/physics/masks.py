"""Cartesian sampling patterns with exact acceleration, centred ACS and explicit seeds.

Conventions (GUIDE section 1):

- k-space is centred: DC sits at index ``(H // 2, W // 2)`` (``bayesmri.physics.fft2c``), so every
  calibration (ACS) region is centred there. A block of ``a`` lines covers indices
  ``c - a // 2, ..., c - a // 2 + a - 1`` with ``c = W // 2`` (the fastMRI layout for even sizes).
- 1-D patterns undersample the phase-encoding direction = the **last axis** (columns) and return a
  ``(W,)`` float32 0/1 tensor; 2-D patterns return ``(H, W)``. Both broadcast against ``(B, C, H, W)``.
- The acceleration is exact: a 1-D pattern samples ``round(W / R)`` lines and a 2-D pattern
  ``round(H * W / R)`` points, so ``H * W / n_sampled`` is the request to within one line
  (``acceleration_of`` measures it).
- Randomness comes from an explicit ``torch.Generator`` or an int seed (``None`` uses torch's global
  generator, except for the deterministic ``gro`` and ``equispaced`` patterns where ``None`` selects the
  canonical pattern). ``seed_from_name`` gives fastMRI-style per-file, per-slice seeds.

Patterns (``MASK_PATTERNS``): ``gro`` (golden-ratio offset, Joshi et al. 2022, as used by Wen et al.
2023 sec. 4), ``uniform1d`` (fastMRI ``RandomMaskFunc``), ``gaussian1d``, ``gaussian2d`` (Score-MRI's
variable-density patterns, Chung & Ye 2022), ``poisson`` (variable-density Poisson disc, as sigpy's and
BART's ``poisson``), ``equispaced`` (fastMRI ``EquispacedMaskFunc``).
"""
from __future__ import annotations

import hashlib
import math
import os
from typing import Sequence

import numpy as np
import torch

from .._validate import as_generator

__all__ = [
    "MASK_PATTERNS",
    "gro_mask",
    "uniform_mask_1d",
    "gaussian_mask_1d",
    "equispaced_mask_1d",
    "gaussian_mask_2d",
    "poisson_disc_mask",
    "make_mask",
    "apply_mask",
    "acceleration_of",
    "seed_from_name",
    "acs_slice",
    "TWO_D_NOTE",
]

_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def _check_size(n, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return int(n)


def _check_shape(shape, name: str = "shape") -> tuple[int, int]:
    if isinstance(shape, (int, np.integer)) or len(shape) != 2:
        raise ValueError(f"{name} must be (H, W), got {shape!r}")
    return _check_size(shape[0], f"{name}[0] (H)"), _check_size(shape[1], f"{name}[1] (W)")


def _check_accel(acceleration) -> float:
    try:
        R = float(acceleration)
    except (TypeError, ValueError):
        raise TypeError(f"acceleration must be a number, got {type(acceleration).__name__}") from None
    if not math.isfinite(R) or R < 1.0:
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration!r}")
    return R


def _target_count(n_total: int, R: float, what: str) -> int:
    """Number of samples that makes ``n_total / count`` the requested ``R`` to within one sample."""
    m = int(round(n_total / R))
    if m < 1:
        raise ValueError(f"acceleration {R:g} leaves no sampled {what} out of {n_total}")
    return m


def acs_slice(n: int, num_acs: int) -> slice:
    """Indices of ``num_acs`` calibration lines centred on ``n // 2`` (the DC of the centred FFT)."""
    start = n // 2 - num_acs // 2
    return slice(start, start + num_acs)


def _check_acs_1d(num_acs, width: int, target: int, R: float) -> int:
    num_acs = int(num_acs)
    if num_acs < 0:
        raise ValueError(f"num_acs must be >= 0, got {num_acs}")
    if num_acs > width:
        raise ValueError(f"num_acs={num_acs} exceeds the number of phase-encoding lines W={width}")
    if num_acs > target:
        raise ValueError(
            f"num_acs={num_acs} ACS lines exceed the {target} lines that acceleration R={R:g} allows "
            f"for W={width}; lower num_acs or the acceleration"
        )
    return num_acs


def _default_acs_1d(width: int, target: int) -> int:
    # fastMRI/Denker: 8 % of the lines, but never more than half of what R allows.
    return min(int(round(0.08 * width)), target // 2)


def _acs_2d(num_acs, H: int, W: int, target: int, R: float) -> tuple[int, int]:
    if num_acs is None:
        a = max(int(round(0.08 * min(H, W))), 0)
        ah, aw = a, a
        while ah * aw > target // 2 and ah > 0:
            ah, aw = ah - 1, aw - 1
        return ah, aw
    if isinstance(num_acs, (int, np.integer)):
        ah, aw = int(num_acs), int(num_acs)
    else:
        if len(num_acs) != 2:
            raise ValueError(f"num_acs must be an int or a pair (ah, aw), got {num_acs!r}")
        ah, aw = int(num_acs[0]), int(num_acs[1])
    if ah < 0 or aw < 0:
        raise ValueError(f"num_acs must be >= 0, got {num_acs!r}")
    if ah > H or aw > W:
        raise ValueError(f"calibration region {ah}x{aw} does not fit in the {H}x{W} grid")
    if ah * aw > target:
        raise ValueError(
            f"calibration region {ah}x{aw} = {ah * aw} points exceeds the {target} points that "
            f"acceleration R={R:g} allows for a {H}x{W} grid; lower num_acs or the acceleration"
        )
    return ah, aw


def _choose_without_replacement(weights: torch.Tensor, k: int, generator) -> torch.Tensor:
    """``k`` distinct indices drawn with probability proportional to ``weights`` (float64 1-D)."""
    if k <= 0:
        return torch.zeros(0, dtype=torch.long)
    positive = int((weights > 0).sum())
    if k > positive:
        raise ValueError(f"cannot draw {k} distinct samples from {positive} candidates")
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def _gen_or_none(seed):
    if seed is not None and not isinstance(seed, (torch.Generator, int, np.integer)):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    return as_generator(int(seed) if isinstance(seed, np.integer) else seed)


# ----------------------------------------------------------------------------------------------------
# 1-D patterns (last axis)
# ----------------------------------------------------------------------------------------------------
def _gro_lines(width: int, n: int, s: float, alpha: float, frame: float) -> np.ndarray:
    """Sorted unique 0-based line indices of one GRO frame with ``n`` readouts on ``width`` lines.

    The ``n`` lines start uniformly spaced on a shrunk grid of ``Ns = ceil(width / s)`` points, are
    shifted by ``frame`` golden-ratio steps (frame-to-frame increment of the GRO scheme), and are then
    stretched outwards by the power-law displacement ``d(u) = k sign(u) |u|^alpha`` (``u`` measured from
    the grid centre, ``k`` chosen so the shrunk grid's edge lands on the full grid's edge). The
    stretching leaves the spacing ``Ns / n`` at the centre and widens it towards the edges.
    """
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ns = math.ceil(width / s)
    step = ns / n
    k = (width / 2 - ns / 2) / ((ns / 2) ** alpha)
    # 1-based positions in [0.5, ns + 0.5), as in the GRO definition.
    v = np.arange(n) * step + 0.5 + 1e-10
    v = np.remainder(v + frame * step / _GOLDEN - 1.0, ns) + 1.0
    v = v - ns * (v >= ns + 0.5)
    u = ns / 2 + 0.5 - v
    pos = v - k * np.sign(u) * np.abs(u) ** alpha + (width - ns) / 2
    if width % 2 == 0:  # even grids: half-pixel shift keeps the pattern symmetric about W // 2
        pos = pos + 0.5
        pos = pos - width * (pos >= width + 0.5)
    idx = np.where(pos >= 0, np.floor(pos + 0.5), np.ceil(pos - 0.5)).astype(np.int64) - 1
    return np.unique(np.clip(idx, 0, width - 1))


def gro_mask(
    width: int,
    acceleration: float,
    num_acs: int | None = None,
    seed=None,
    *,
    s: float | None = None,
    alpha: float = 3.0,
) -> torch.Tensor:
    """Golden-ratio offset (GRO) 1-D Cartesian pattern (Joshi et al. 2022; Wen et al. 2023 sec. 4).

    One frame of the GRO k-t scheme: lines uniformly spaced on a grid shrunk by ``s``, stretched
    outwards by a power law of exponent ``alpha`` (variable density, full sampling at the centre when
    ``s = R``), united with ``num_acs`` centred ACS lines. The number of GRO readouts is the largest
    that, after the union, gives exactly ``round(W / R)`` lines (lines nearest the centre fill any
    remaining gap caused by rounding collisions).

    With ``s = R = 4`` (the default ``s = R``) and ``W = 320``, ``num_acs = 13`` this reproduces the
    knee mask of Wen et al.'s released code line for line; ``W = 384, num_acs = 32, s = 2.05`` gives
    their brain mask.

    Parameters
    ----------
    width : int
        Number of phase-encoding lines ``W``.
    acceleration : float
        ``R >= 1``; ``round(W / R)`` lines are sampled.
    num_acs : int, optional
        Central lines that are always sampled (default 0: GRO is already dense at the centre).
    seed : int, torch.Generator or None
        GRO is deterministic: an int selects the frame (golden-ratio shift) of the k-t pattern,
        ``None`` the frame 0 used in the paper, a generator draws a random frame.
    s : float, optional
        Shrink factor ``>= 1`` (larger = denser centre); default ``max(1, R)``.
    alpha : float
        Power-law exponent ``>= 1`` (larger = flatter dense core).

    Returns
    -------
    Tensor ``(W,)`` float32 0/1.
    """
    width = _check_size(width, "width")
    R = _check_accel(acceleration)
    target = _target_count(width, R, "lines")
    num_acs = _check_acs_1d(0 if num_acs is None else num_acs, width, target, R)
    s = max(1.0, R) if s is None else float(s)
    if not s >= 1.0:
        raise ValueError(f"GRO shrink factor s must be >= 1, got {s}")
    if not alpha >= 1.0:
        raise ValueError(f"GRO exponent alpha must be >= 1, got {alpha}")
    if isinstance(seed, torch.Generator):
        frame = float(torch.randint(0, 2**31 - 1, (1,), generator=seed).item())
    elif seed is None:
        frame = 0.0
    elif isinstance(seed, (int, np.integer)):
        # Large seeds (e.g. 63-bit derived seeds) would lose their low bits as a float frame index
        # and collapse the lines; reduce them first so every seed gives a proper GRO frame.
        frame = float(int(seed) % (2**31 - 1))
    else:
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")

    acs = np.zeros(width, dtype=bool)
    acs[acs_slice(width, num_acs)] = True
    best = acs.copy()
    for n in range(target, 0, -1):
        m = acs.copy()
        m[_gro_lines(width, n, s, alpha, frame)] = True
        if m.sum() <= target:
            best = m
            break
    missing = target - int(best.sum())
    if missing > 0:  # rounding collisions: fill with the unsampled lines nearest the centre
        order = np.argsort(np.abs(np.arange(width) - width // 2), kind="stable")
        fill = [i for i in order if not best[i]][:missing]
        best[fill] = True
    return torch.from_numpy(best.astype(np.float32))


def uniform_mask_1d(width: int, acceleration: float, num_acs: int | None = None, seed=None) -> torch.Tensor:
    """Uniform random 1-D pattern (fastMRI ``RandomMaskFunc`` with an exact line count).

    ``num_acs`` centred lines (default 8 % of ``W``, at most half the budget) plus lines drawn
    uniformly without replacement from the rest, ``round(W / R)`` in all. Returns ``(W,)`` float32.
    """
    width = _check_size(width, "width")
    R = _check_accel(acceleration)
    target = _target_count(width, R, "lines")
    num_acs = _check_acs_1d(_default_acs_1d(width, target) if num_acs is None else num_acs, width, target, R)
    weights = torch.ones(width, dtype=torch.float64)
    return _weighted_1d(width, target, num_acs, weights, _gen_or_none(seed))


def gaussian_mask_1d(
    width: int, acceleration: float, num_acs: int | None = None, seed=None, *, sigma: float | None = None
) -> torch.Tensor:
    """Gaussian-density 1-D pattern (Score-MRI's ``gaussian1d`` with an exact line count).

    Non-ACS lines are drawn without replacement with probability proportional to
    ``exp(-(k - W//2)^2 / (2 sigma^2))``; default ``sigma = 15/128 W`` as in Chung & Ye's code.
    Returns ``(W,)`` float32.
    """
    width = _check_size(width, "width")
    R = _check_accel(acceleration)
    target = _target_count(width, R, "lines")
    num_acs = _check_acs_1d(_default_acs_1d(width, target) if num_acs is None else num_acs, width, target, R)
    sigma = 15.0 / 128.0 * width if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = torch.arange(width, dtype=torch.float64) - width // 2
    # floor keeps far lines drawable when the budget exceeds the Gaussian's effective support
    weights = torch.exp(-0.5 * (k / sigma) ** 2).clamp_min(1e-12)
    return _weighted_1d(width, target, num_acs, weights, _gen_or_none(seed))


def _weighted_1d(width, target, num_acs, weights, generator) -> torch.Tensor:
    mask = torch.zeros(width, dtype=torch.float32)
    mask[acs_slice(width, num_acs)] = 1.0
    w = weights.clone()
    w[mask > 0] = 0.0
    idx = _choose_without_replacement(w, target - num_acs, generator)
    mask[idx] = 1.0
    return mask


def equispaced_mask_1d(
    width: int, acceleration: float, num_acs: int | None = None, seed=None
) -> torch.Tensor:
    """Equispaced 1-D pattern (fastMRI ``EquispacedMaskFunc`` with an exact line count).

    Lines at ``round(offset + j * step)`` united with ``num_acs`` centred lines; ``step`` is chosen so
    that the union has exactly ``round(W / R)`` lines (fastMRI's adjusted acceleration, solved exactly).
    ``seed=None`` gives offset 0; an int or generator draws the offset uniformly in ``[0, step)``.
    Returns ``(W,)`` float32.
    """
    width = _check_size(width, "width")
    R = _check_accel(acceleration)
    target = _target_count(width, R, "lines")
    num_acs = _check_acs_1d(_default_acs_1d(width, target) if num_acs is None else num_acs, width, target, R)
    g = _gen_or_none(seed)
    u = 0.0 if seed is None else float(torch.rand(1, generator=g, dtype=torch.float64).item())
    acs = np.zeros(width, dtype=bool)
    acs[acs_slice(width, num_acs)] = True

    def build(step):
        m = acs.copy()
        pos = np.arange(u * step, width - 1e-9, step)
        m[np.clip(np.round(pos).astype(np.int64), 0, width - 1)] = True
        return m

    # Count is non-increasing in the step: bisect for the smallest step with count <= target.
    lo, hi = 1.0, float(width) + 1.0
    best = build(hi)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        m = build(mid)
        if m.sum() <= target:
            hi, best = mid, m
        else:
            lo = mid
    missing = target - int(best.sum())
    if missing > 0:  # rounding of the grid can jump by two: add the most isolated lines
        for _ in range(missing):
            sampled = np.flatnonzero(best)
            dist = np.min(np.abs(np.arange(width)[:, None] - sampled[None, :]), axis=1)
            best[int(np.argmax(dist))] = True
    return torch.from_numpy(best.astype(np.float32))


# ----------------------------------------------------------------------------------------------------
# 2-D patterns
# ----------------------------------------------------------------------------------------------------
def _calib_box(H, W, ah, aw) -> tuple[slice, slice]:
    return acs_slice(H, ah), acs_slice(W, aw)


def gaussian_mask_2d(
    shape: Sequence[int],
    acceleration: float,
    num_acs=None,
    seed=None,
    *,
    sigma: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Variable-density 2-D Gaussian pattern (Score-MRI's ``gaussian2d`` with an exact point count).

    A centred ``ah x aw`` calibration block (``num_acs`` int or pair; default 8 % of ``min(H, W)``)
    plus points drawn without replacement with probability proportional to a centred Gaussian of
    standard deviations ``sigma = (sigma_y, sigma_x)`` pixels (default ``sqrt(1.5/128) * (H, W)``, the
    covariance of Chung & Ye's code). ``round(H W / R)`` points in all. Returns ``(H, W)`` float32.
    """
    H, W = _check_shape(shape)
    R = _check_accel(acceleration)
    target = _target_count(H * W, R, "points")
    ah, aw = _acs_2d(num_acs, H, W, target, R)
    if sigma is None:
        sy, sx = math.sqrt(1.5 / 128.0) * H, math.sqrt(1.5 / 128.0) * W
    elif isinstance(sigma, (int, float)):
        sy = sx = float(sigma)
    else:
        sy, sx = float(sigma[0]), float(sigma[1])
    if not (sy > 0 and sx > 0):
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    ky = (torch.arange(H, dtype=torch.float64) - H // 2)[:, None] / sy
    kx = (torch.arange(W, dtype=torch.float64) - W // 2)[None, :] / sx
    weights = torch.exp(-0.5 * (ky**2 + kx**2)).clamp_min(1e-12)
    mask = torch.zeros(H, W, dtype=torch.float32)
    mask[_calib_box(H, W, ah, aw)] = 1.0
    weights[mask > 0] = 0.0
    idx = _choose_without_replacement(weights.reshape(-1), target - ah * aw, _gen_or_none(seed))
    mask.view(-1)[idx] = 1.0
    return mask


def _poisson_pass_py(order: np.ndarray, allowed: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """Random sequential Poisson-disc selection on the grid with a variable elliptical radius.

    Candidates are visited in ``order``; an accepted point ``p`` forbids every grid point ``q`` with
    ``((q_y - p_y) / ry_p)^2 + ((q_x - p_x) / rx_p)^2 < 1``. Any two accepted points therefore lie at
    least one radius (of the earlier one) apart. Pure Python reference of :func:`_poisson_pass`
    (same result bit for bit; ~0.2 s per pass at 320x320 against ~1 ms compiled).
    """
    H, W = allowed.shape
    forbidden = ~allowed
    flat_forbidden = forbidden.reshape(-1)
    mask = np.zeros((H, W), dtype=bool)
    for idx in order:
        if flat_forbidden[idx]:
            continue
        y, x = divmod(int(idx), W)
        mask[y, x] = True
        ryp, rxp = ry[y, x], rx[y, x]
        dy, dx = int(math.ceil(ryp)), int(math.ceil(rxp))
        y0, y1, x0, x1 = max(0, y - dy), min(H, y + dy + 1), max(0, x - dx), min(W, x + dx + 1)
        yy = ((np.arange(y0, y1) - y) / ryp)[:, None] ** 2
        xx = ((np.arange(x0, x1) - x) / rxp)[None, :] ** 2
        forbidden[y0:y1, x0:x1] |= (yy + xx) < 1.0
    return mask


def _poisson_pass_loop(order, allowed, ry, rx):  # compiled by numba in _poisson_pass
    H, W = allowed.shape
    forbidden = ~allowed
    mask = np.zeros((H, W), dtype=np.bool_)
    for i in range(order.shape[0]):
        idx = order[i]
        y = idx // W
        x = idx - y * W
        if forbidden[y, x]:
            continue
        mask[y, x] = True
        ryp = ry[y, x]
        rxp = rx[y, x]
        dy = int(math.ceil(ryp))
        dx = int(math.ceil(rxp))
        for q in range(max(0, y - dy), min(H, y + dy + 1)):
            a = ((q - y) / ryp) ** 2
            for r in range(max(0, x - dx), min(W, x + dx + 1)):
                if a + ((r - x) / rxp) ** 2 < 1.0:
                    forbidden[q, r] = True
    return mask


_COMPILED_PASS = None


def _poisson_pass(order: np.ndarray, allowed: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """:func:`_poisson_pass_py` compiled with numba (cached on disk after the first call).

    Falls back to the pure Python pass when numba is not importable (same output, ~100x slower).
    """
    global _COMPILED_PASS
    if _COMPILED_PASS is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba is a dependency; keep masks usable without it
            _COMPILED_PASS = _poisson_pass_py
        else:
            _COMPILED_PASS = numba.njit(cache=True, nogil=True)(_poisson_pass_loop)
    return _COMPILED_PASS(
        np.ascontiguousarray(order, dtype=np.int64), np.ascontiguousarray(allowed, dtype=np.bool_),
        np.ascontiguousarray(ry, dtype=np.float64), np.ascontiguousarray(rx, dtype=np.float64),
    )


def poisson_disc_mask(
    shape: Sequence[int],
    acceleration: float,
    num_acs=None,
    seed=None,
    *,
    crop_corner: bool = True,
    max_iter: int = 30,
) -> torch.Tensor:
    """Variable-density Poisson-disc 2-D pattern (as sigpy's ``mri.poisson`` and BART's ``poisson``).

    The disc radius grows linearly with the distance from the calibration region,
    ``r(k) = 1 + slope * rho(k)`` with ``rho`` the normalised radius (0 at the calibration edge, 1 at
    the k-space edge), elliptical in proportion to ``(H, W) / max(H, W)`` and at least one pixel. A
    random sequential pass over the grid accepts a point when no earlier point's disc covers it; the
    slope is bisected until the pattern holds at least ``round(H W / R)`` points, and the surplus is
    removed at random (removal keeps the minimum-distance property), so the count is exact.
    ``crop_corner`` leaves ``rho >= 1`` unsampled (sigpy's default); then ``R >= 4/pi`` is needed.

    Parameters
    ----------
    shape : (H, W)
    acceleration : float
    num_acs : int or (ah, aw), optional
        Fully sampled centred calibration block (default 8 % of ``min(H, W)``).
    seed : int, torch.Generator or None
    crop_corner : bool
    max_iter : int
        Maximum number of safeguarded secant (regula falsi, Illinois) steps on the slope.

    Returns
    -------
    Tensor ``(H, W)`` float32 0/1.
    """
    H, W = _check_shape(shape)
    R = _check_accel(acceleration)
    target = _target_count(H * W, R, "points")
    ah, aw = _acs_2d(num_acs, H, W, target, R)
    g = _gen_or_none(seed)

    cy, cx = H // 2, W // 2
    ys = np.maximum(np.abs(np.arange(H) - cy) - ah / 2, 0.0)
    xs = np.maximum(np.abs(np.arange(W) - cx) - aw / 2, 0.0)
    ys = ys / max(ys.max(), 1e-12)
    xs = xs / max(xs.max(), 1e-12)
    rho = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)

    calib = np.zeros((H, W), dtype=bool)
    calib[_calib_box(H, W, ah, aw)] = True
    allowed = ~calib
    if crop_corner:
        allowed &= rho < 1.0
    budget = target - int(calib.sum())
    if int(allowed.sum()) < budget:
        raise ValueError(
            f"acceleration R={R:g} needs {target} points but only {int(allowed.sum() + calib.sum())} "
            f"can be sampled{' with crop_corner=True (needs R >= 4/pi)' if crop_corner else ''}"
        )
    if budget <= 0:  # the calibration block alone holds every sample R allows
        return torch.from_numpy(calib.astype(np.float32))
    order = torch.randperm(H * W, generator=g).numpy()
    big = max(H, W)

    def run(slope):
        radius = 1.0 + slope * rho
        ry = np.maximum(radius * H / big, 1.0)
        rx = np.maximum(radius * W / big, 1.0)
        return _poisson_pass(order, allowed, ry, rx)

    # The same visiting order for every slope keeps the count (nearly) monotone in the slope. The count
    # falls roughly like 1 / radius^2, so 1/sqrt(count) is close to linear in the slope: a safeguarded
    # secant step on it (bisection when it leaves the bracket) needs ~4-6 passes instead of ~15.
    tol = max(1, budget // 500)
    lo, hi = 0.0, float(big)
    best = run(lo)
    c_lo = int(best.sum())
    if c_lo < budget:
        raise ValueError(f"cannot reach acceleration R={R:g} on a {H}x{W} grid with a Poisson disc")
    def gap(c):  # < 0 above the budget
        return 1.0 / math.sqrt(max(c, 1)) - 1.0 / math.sqrt(budget)

    g_lo, g_hi, last = gap(c_lo), None, None
    for it in range(int(max_iter)):
        if c_lo - budget <= tol:
            break
        if g_hi is None:
            # First step: the slope that would scale the mean radius by sqrt(c_lo / budget).
            mid = (math.sqrt(c_lo / budget) - 1.0) / max(float(rho[allowed].mean()), 1e-3)
        else:
            mid = lo - g_lo * (hi - lo) / (g_hi - g_lo)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        m = run(mid)
        c = int(m.sum())
        if c >= budget:
            lo, g_lo, c_lo = mid, gap(c), c
            if c < int(best.sum()):
                best = m
            if last == "lo" and g_hi is not None:  # Illinois: stop one end from sticking
                g_hi *= 0.5
            last = "lo"
        else:
            hi, g_hi = mid, gap(c)
            if last == "hi":
                g_lo *= 0.5
            last = "hi"
    surplus = int(best.sum()) - budget
    if surplus > 0:
        pts = np.flatnonzero(best.reshape(-1))
        drop = torch.randperm(len(pts), generator=g)[:surplus].numpy()
        best.reshape(-1)[pts[drop]] = False
    return torch.from_numpy((best | calib).astype(np.float32))


# ----------------------------------------------------------------------------------------------------
# factory, measurement, seeds
# ----------------------------------------------------------------------------------------------------
MASK_PATTERNS = {
    "gro": gro_mask,
    "uniform1d": uniform_mask_1d,
    "gaussian1d": gaussian_mask_1d,
    "equispaced": equispaced_mask_1d,
    "gaussian2d": gaussian_mask_2d,
    "poisson": poisson_disc_mask,
}
_ONE_D = {"gro", "uniform1d", "gaussian1d", "equispaced"}

#: Said wherever a 2-D pattern undersamples a 2-D slice (``recon``'s mask line, the report): such data
#: cannot be acquired, so results on them are a compressed-sensing benchmark, not a scan protocol.
TWO_D_NOTE = ("a 2-D mask on a 2-D slice is not realisable in 2-D Cartesian imaging (each phase-encode line is "
              "read out whole); it stands for the two phase-encode directions of a 3-D acquisition")


def make_mask(pattern: str, shape: Sequence[int], acceleration: float, num_acs=None, seed=None, **kw) -> torch.Tensor:
    """Build a sampling pattern by name.

    Parameters
    ----------
    pattern : str
        One of ``MASK_PATTERNS``: ``gro``, ``uniform1d``, ``gaussian1d``, ``equispaced`` (1-D, last
        axis) or ``gaussian2d``, ``poisson`` (2-D).
    shape : (H, W)
        Image / k-space grid; 1-D patterns use ``W`` only.
    acceleration : float
        ``R = H W / n_sampled`` (exact to within one line).
    num_acs : int or (ah, aw), optional
        Central calibration lines (1-D) or block (2-D); pattern-specific default.
    seed : int, torch.Generator or None
    **kw
        Pattern options (``s``, ``alpha`` for GRO; ``sigma`` for Gaussian; ``crop_corner`` for Poisson).

    Returns
    -------
    Tensor ``(W,)`` for 1-D patterns, ``(H, W)`` for 2-D, float32 0/1.
    """
    if not isinstance(pattern, str) or pattern.lower() not in MASK_PATTERNS:
        raise ValueError(f"unknown mask pattern {pattern!r}; valid patterns: {', '.join(MASK_PATTERNS)}")
    pattern = pattern.lower()
    H, W = _check_shape(shape)
    fn = MASK_PATTERNS[pattern]
    if pattern in _ONE_D:
        return fn(W, acceleration, num_acs, seed, **kw)
    return fn((H, W), acceleration, num_acs, seed, **kw)


def apply_mask(kspace: torch.Tensor, mask) -> torch.Tensor:
    """Measured k-space of a Cartesian acquisition: ``kspace`` with zeros off ``mask``.

    The one place a mask is applied to full k-space: the simulator (``bayesmri simulate``), the fastMRI
    preprocessing and the retrospective undersampling of ``bayesmri recon --mask`` all call it, so a
    file written undersampled and a fully sampled file undersampled on reading give the same data.

    Parameters
    ----------
    kspace : Tensor ``(..., H, W)``, complex
    mask : Tensor or array ``(W,)`` (1-D, last axis) or ``(H, W)``, 0/1

    Returns
    -------
    Tensor of the shape and dtype of ``kspace``.

    Raises
    ------
    ValueError
        If the mask does not fit the last two axes of ``kspace``.
    """
    H, W = kspace.shape[-2:]
    m = torch.as_tensor(mask).to(device=kspace.device, dtype=torch.float32)
    if m.ndim not in (1, 2) or m.shape[-1] != W or (m.ndim == 2 and m.shape[0] != H):
        raise ValueError(f"mask must have shape ({W},) or ({H}, {W}), got {tuple(m.shape)}")
    return kspace * (m.reshape(1, W) if m.ndim == 1 else m)


def acceleration_of(mask, shape: Sequence[int]):
    """Measured acceleration ``R = H W / n_sampled`` of a mask on an ``(H, W)`` grid.

    ``mask`` may be ``(W,)`` (1-D, last axis), ``(H, W)`` or ``(..., H|1, W|1)`` broadcasting to the
    grid; leading axes give one value each (a tensor), otherwise a float is returned.
    """
    H, W = _check_shape(shape)
    m = torch.as_tensor(mask)
    if m.is_complex():
        raise TypeError("mask must be real (0/1)")
    if m.ndim == 0:
        raise ValueError("mask must have at least one dimension")
    if m.ndim == 1:
        m = m.reshape(1, -1)
    if m.shape[-1] not in (1, W) or m.shape[-2] not in (1, H):
        raise ValueError(f"mask of shape {tuple(m.shape)} does not broadcast to the {H}x{W} grid")
    full = torch.broadcast_to(m != 0, (*m.shape[:-2], H, W))
    count = full.reshape(*m.shape[:-2], -1).sum(-1).to(torch.float64)
    if bool((count == 0).any()):
        raise ValueError("mask has no sampled points")
    R = (H * W) / count
    return float(R) if R.ndim == 0 else R


def seed_from_name(fname, slice_idx: int = 0) -> int:
    """Deterministic seed from a file name and slice index (fastMRI-style per-slice masks).

    Uses the file's base name (not its directory) and SHA-256, so the seed is the same in every
    process and on every machine (Python's ``hash`` is salted per process). Returns an int in
    ``[0, 2**63)``.
    """
    if isinstance(slice_idx, bool) or not isinstance(slice_idx, (int, np.integer)):
        raise TypeError(f"slice_idx must be an int, got {type(slice_idx).__name__}")
    name = os.path.basename(os.fspath(fname))
    if not name:
        raise ValueError(f"fname {fname!r} has no file name")
    digest = hashlib.sha256(f"{name}\x00{int(slice_idx)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def pattern_name(pattern: str, acceleration: float) -> str:
    """``("gro", 4)`` -> ``"gro-r4"``; non-integer accelerations keep their decimals."""
    a = float(acceleration)
    return f"{pattern}-r{int(a) if a.is_integer() else a:g}"
