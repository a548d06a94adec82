"""ESPIRiT coil-sensitivity calibration (Uecker et al., MRM 71:990-1001, 2014).

Model. Every ``k x k`` multi-coil patch of fully sampled k-space lies in the row space of the
calibration matrix ``A`` (one patch per row, ``A = U Sigma V^H``; sec. "Theory", eqs. 6-9). Projecting
onto the kept right singular vectors ``V_par`` and averaging over the ``k^2`` patches that contain a
k-space point gives an operator ``W = (1/k^2) sum_patches R^H V_par V_par^H R`` (eq. 10) with
``W y = y`` for consistent data. It is a convolution in k-space, so in image space it is a pointwise
``C x C`` Hermitian matrix

    ``W(r)_{c c'} = (1/k^2) sum_i G_{i,c}(r) conj(G_{i,c'}(r))``,  ``G_i = IDFT(conj(v_i))``  (eq. 15)

whose eigenvector with eigenvalue 1 at each pixel is the coil-sensitivity vector ``S(r)`` (eq. 16),
defined up to a per-pixel phase. Pixels whose top eigenvalue is below ``crop`` get zero maps.

Implementation notes (ours; BART ``calib.c`` and sigpy ``EspiritCalib`` were read for understanding):

- ``W`` is a trigonometric polynomial of degree ``k - 1`` (products of kernels of width ``k``), so it
  is computed exactly on a small ``2k x 2k`` grid, its Fourier coefficients are zero-padded to
  ``H x W`` and transformed once: cost ``O(C^2 H W log(H W))`` instead of ``O(n_kernels C H W)``
  memory for full-size image kernels.
- The pointwise eigen-decomposition is ``torch.linalg.eigh`` batched over pixels.
- Phase reference: as BART (without ``-P``), each pixel's vector is rotated so that its projection on
  the first principal component of the calibration data (the "virtual body coil") is real positive;
  this gives smooth maps whose phase is that of a virtual coil, not of the object.
- ``max_iter=30`` replaces ``eigh`` by BART 0.8's 30 power iterations from the first coil and then
  reproduces ``bart ecalib -m1`` to float precision (BART's ``-t t`` is our ``threshold=sqrt(t)``);
  those iterations have not converged where the eigengap is small, so the default stays ``eigh``.
- Conventions: k-space is centred (DC at ``(H//2, W//2)``) as produced by :func:`fft2c`; image
  positions of the maps follow :func:`ifft2c`. Maps are invariant to the k-space scale.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .._validate import check_kspace

__all__ = ["espirit_maps", "calibration_region"]


def _as_pair(v, name):
    if isinstance(v, int):
        v = (v, v)
    try:
        v = tuple(int(a) for a in v)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}") from None
    if len(v) != 2 or min(v) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return v


def calibration_region(kspace: torch.Tensor, num_acs=24):
    """Slices of a maximal fully sampled centred rectangle, at most ``num_acs`` in size.

    A k-space location counts as sampled if any coil of any batch element is nonzero there. Starting
    from the centre ``(H//2, W//2)``, the rectangle grows by one line at a time in round-robin order
    (top, bottom, left, right; the lower side first, as ``fftshift`` puts one more line below DC); a
    line joins only if it is sampled across the current extent of the other axis, and a side stops for
    good once it fails (the other extent only grows, so it cannot succeed later). Growing both axes
    together finds the calibration block of 2-D patterns (Poisson disc, 2-D Gaussian) instead of a
    ``1 x n`` strip through isolated samples, and the ``H x a`` band of 1-D patterns with ``a`` ACS lines.
    Zero-filled lines never enter the calibration matrix.

    Parameters
    ----------
    kspace : Tensor ``(B, C, H, W)`` complex, centred.
    num_acs : int or (int, int)
        Maximum calibration size ``(h, w)``.

    Returns
    -------
    (slice, slice) selecting rows and columns.
    """
    h_max, w_max = _as_pair(num_acs, "num_acs")
    H, W = kspace.shape[-2:]
    sampled = (kspace.abs() > 0).reshape(-1, H, W).any(dim=0)
    ch, cw = H // 2, W // 2
    if not bool(sampled[ch, cw]):
        raise ValueError("k-space centre is not sampled: cannot calibrate ESPIRiT maps (is k-space centred?)")
    lo, hi = [ch, cw], [ch + 1, cw + 1]  # half-open extents per axis
    limit, size = (h_max, w_max), (H, W)
    open_sides = {(ax, side) for ax in (0, 1) for side in (0, 1)}
    while open_sides:
        for ax, side in [(0, 0), (0, 1), (1, 0), (1, 1)]:
            if (ax, side) not in open_sides:
                continue
            if hi[ax] - lo[ax] >= limit[ax]:
                open_sides -= {(ax, 0), (ax, 1)}
                continue
            cand = lo[ax] - 1 if side == 0 else hi[ax]
            other = slice(lo[1 - ax], hi[1 - ax])
            inside = 0 <= cand < size[ax]
            if inside and bool((sampled[cand, other] if ax == 0 else sampled[other, cand]).all()):
                if side == 0:
                    lo[ax] = cand
                else:
                    hi[ax] = cand + 1
            else:
                open_sides.discard((ax, side))
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def _image_space_operator(kernels: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Pointwise ``C x C`` matrices ``W(r)`` of eq. 15, on the centred ``H x W`` image grid.

    ``kernels``: ``(n, C, kh, kw)`` rows of ``V^H`` (i.e. ``conj(v_i)``). Returns ``(H, W, C, C)``.
    """
    n, C, kh, kw = kernels.shape
    Mh, Mw = 2 * kh, 2 * kw  # >= 2k - 1: holds all frequencies of W without aliasing
    if H < Mh - 1 or W < Mw - 1:
        raise ValueError(f"image {H}x{W} too small for kernel_size {(kh, kw)}")
    small = kernels.new_zeros((n, C, Mh, Mw))
    small[..., :kh, :kw] = kernels
    # Unnormalised inverse DFT: G(r) = sum_d h(d) exp(+2 pi i r d / M)
    G = torch.fft.ifft2(small, norm="forward")
    Wsmall = torch.einsum("icxy,idxy->cdxy", G, G.conj()) / (kh * kw)
    coef = torch.fft.fft2(Wsmall, norm="forward")  # frequencies -(k-1)..k-1, circular; index k is 0
    big = coef.new_zeros((C, C, H, W))
    dev = coef.device

    def idx(k, N):
        src = torch.cat([torch.arange(k, device=dev), torch.arange(k + 1, 2 * k, device=dev)])
        freq = torch.cat([torch.arange(k, device=dev), torch.arange(-(k - 1), 0, device=dev)])
        # Shift the image origin to N//2 as ifft2c does: W(r - s) <-> K(m) exp(-2 pi i s m / N).
        return src, freq, torch.exp(-2j * torch.pi * (N // 2) * freq.double() / N)

    (rs, fr, ph_r), (cs, fc, ph_c) = idx(kh, H), idx(kw, W)
    vals = coef[..., rs[:, None], cs[None, :]] * (ph_r[:, None] * ph_c[None, :]).to(coef.dtype)
    big[..., (fr % H)[:, None], (fc % W)[None, :]] = vals
    return torch.fft.ifft2(big, norm="forward").permute(2, 3, 0, 1)


def _fit_kernel(h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
    """Kernel size actually used on an ``h x w`` calibration region: at most half the region per axis.

    The calibration matrix has ``(h - kh + 1)(w - kw + 1)`` rows. When the region is not much wider
    than the kernel these few patches span only part of the signal subspace, the eigenvalues of
    ``W(r)`` drop well below 1 inside the object and the ``crop`` zeroes the maps (8 ACS lines with a
    6-wide kernel: 3 patches across, median eigenvalue ~0.9; 6 lines: 1 patch, ~0.5). Capping the
    kernel at ``size // 2`` keeps at least ``size/2 + 1`` patches per axis; on 5-10 ACS lines this
    restores eigenvalues ~0.999 and maps that match the true ones to ``|<S, S_true>| > 0.999``.
    """
    if min(h, w) < 4:
        raise ValueError(
            f"fully sampled calibration region is {h}x{w}: ESPIRiT needs at least 4 fully sampled lines "
            f"along each axis (the kernel, here {(kh, kw)}, shrinks to at most half the region)"
        )
    return min(kh, h // 2), min(kw, w // 2)


def _power_iteration(Wr: torch.Tensor, n_iter: int):
    """Top eigenpair of ``(..., C, C)`` Hermitian PSD matrices by ``n_iter`` power steps from ``e_0``."""
    if n_iter < 1:
        raise ValueError(f"max_iter must be a positive int or None, got {n_iter}")
    v = torch.zeros(Wr.shape[:-1], dtype=Wr.dtype, device=Wr.device)
    v[..., 0] = 1
    for _ in range(n_iter):
        v = (Wr @ v.unsqueeze(-1)).squeeze(-1)
        v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-30)
    lam = (v.conj().unsqueeze(-2) @ Wr @ v.unsqueeze(-1)).real[..., 0, 0]
    return v, lam


def espirit_maps(
    kspace: torch.Tensor,
    num_acs=24,
    kernel_size: int = 6,
    threshold: float = 0.02,
    crop: float = 0.95,
    phase_reference: bool = True,
    max_iter: int | None = None,
    return_eigenvalues: bool = False,
    progress: bool = False,
):
    """ESPIRiT coil sensitivities from the centred calibration (ACS) region of multi-coil k-space.

    Steps (Uecker et al. 2014): calibration matrix of all ``k x k`` patches of the ACS region (rows)
    -> SVD -> keep right singular vectors with ``sigma_i > threshold * sigma_max`` -> image-space
    operator ``W(r)`` (eq. 15) -> pointwise eigen-decomposition; the top eigenvector is ``S(r)`` where
    its eigenvalue exceeds ``crop``, zero elsewhere.

    Parameters
    ----------
    kspace : Tensor ``(B, C, H, W)`` (or ``(C, H, W)``) complex, centred as :func:`fft2c`; may be
        undersampled outside a fully sampled central region.
    num_acs : int or (int, int)
        Maximum calibration size; the largest fully sampled centred region up to this size is used.
    kernel_size : int or (int, int)
        ESPIRiT kernel size ``(kh, kw)`` (``k x k`` patches for an int). Along an axis where the
        calibration region has fewer than ``2 k`` lines the kernel shrinks to half the region
        (see :func:`_fit_kernel`); a region with fewer than 4 lines raises ValueError.
    threshold : float
        Relative singular-value threshold defining the signal subspace, in ``(0, 1)``.
    crop : float
        Eigenvalue threshold in ``[0, 1)``; maps are zero where the top eigenvalue is below it.
    phase_reference : bool
        Rotate each pixel's vector so that its inner product with the first principal component of the
        calibration data is real positive (BART's default); otherwise the phase is eigh's.
    max_iter : int, optional
        ``None`` (default): exact pointwise eigen-decomposition (``torch.linalg.eigh``). An int: that
        many power iterations per pixel started from the first coil's unit vector, with the Rayleigh
        quotient as eigenvalue; ``max_iter=30`` reproduces BART 0.8 ``ecalib -m1`` (orthogonal
        iteration, 30 steps), which is unconverged where the eigengap is small.
    return_eigenvalues : bool
        Also return the top eigenvalue map ``(B, H, W)`` (real).
    progress : bool
        Show a tqdm bar over the batch (each element is calibrated separately).

    Returns
    -------
    maps : Tensor ``(B, C, H, W)`` (``(C, H, W)`` for unbatched input), same complex dtype as
        ``kspace``, ``sum_c |S_c|^2 = 1`` where the eigenvalue exceeds ``crop`` and 0 elsewhere.
    eigenvalues : Tensor ``(B, H, W)``, only if ``return_eigenvalues``.
    """
    check_kspace(kspace, "kspace", ndim_min=3)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace must have shape (B, C, H, W) or (C, H, W), got {tuple(kspace.shape)}")
    kh0, kw0 = _as_pair(kernel_size, "kernel_size")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if not 0.0 <= float(crop) < 1.0:
        raise ValueError(f"crop must lie in [0, 1), got {crop}")
    unbatched = kspace.ndim == 3
    k4 = kspace.unsqueeze(0) if unbatched else kspace
    B, C, H, W = k4.shape
    if C < 2:
        raise ValueError(f"ESPIRiT needs at least 2 coils, got {C}")
    if H < 2 * kh0 - 1 or W < 2 * kw0 - 1:
        raise ValueError(f"image {H}x{W} too small for kernel_size {kernel_size}")
    # Calibrate in double precision: the singular values span a wide range; the output keeps the input dtype.
    work = torch.complex128
    out_dtype = torch.complex128 if kspace.dtype == torch.complex128 else torch.complex64
    maps = torch.zeros((B, C, H, W), dtype=out_dtype, device=k4.device)
    evals = torch.zeros((B, H, W), dtype=out_dtype.to_real(), device=k4.device)
    for b in tqdm(range(B), desc="ESPIRiT", disable=not progress or B == 1):
        rows, cols = calibration_region(k4[b], num_acs)
        acs = k4[b, :, rows, cols].to(work)
        h, w = acs.shape[-2:]
        kh, kw = _fit_kernel(h, w, kh0, kw0)
        # Calibration matrix: one row per kh x kw patch, columns ordered (coil, ky, kx).
        patches = acs.unfold(1, kh, 1).unfold(2, kw, 1)  # (C, h', w', kh, kw)
        A = patches.permute(1, 2, 0, 3, 4).reshape(-1, C * kh * kw)
        _, s, Vh = torch.linalg.svd(A, full_matrices=False)
        if float(s[0]) == 0.0:
            raise ValueError("calibration region is all zeros")
        keep = s > threshold * s[0]
        # The full-size image-space part runs in the input precision (eigh reads one triangle only).
        kernels = Vh[keep].reshape(-1, C, kh, kw).to(out_dtype)
        Wr = _image_space_operator(kernels, H, W)
        if max_iter is None:
            lam, vec = torch.linalg.eigh(Wr)  # ascending eigenvalues
            top = vec[..., -1]  # (H, W, C)
            lam_top = lam[..., -1]
        else:
            top, lam_top = _power_iteration(Wr, int(max_iter))
        if phase_reference:
            # First principal component of the ACS coil data (virtual body coil).
            u = torch.linalg.svd(acs.reshape(C, -1), full_matrices=False)[0][:, 0].to(out_dtype)
            p = top @ u.conj()
            ph = torch.where(p.abs() > 0, p.conj() / p.abs().clamp_min(1e-30), torch.ones_like(p))
            top = top * ph.unsqueeze(-1)
        top = torch.where((lam_top > crop).unsqueeze(-1), top, torch.zeros_like(top))
        maps[b] = top.permute(2, 0, 1)
        evals[b] = lam_top
    maps = maps.to(kspace.dtype)
    if unbatched:
        maps, evals = maps[0], evals[0]
    return (maps, evals) if return_eigenvalues else maps
