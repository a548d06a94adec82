"""Acquisition simulator: a magnitude slice -> a multi-coil, noisy, undersampled :class:`MRISample`.

Steps (GUIDE section 2):

1. complex image ``x = m exp(i phi)``, ``m`` the magnitude, ``phi`` a smooth random phase (a low-pass
   Gaussian random field: random complex Fourier coefficients on the central ``(2r+1)^2`` frequencies
   with Gaussian weights, real part, scaled so that ``max |phi| = phase_max``);
2. coil sensitivities ``S`` (:func:`bayesmri.physics.coils.birdcage_maps`, normalised so
   ``sum_c |S_c|^2 = 1``), coil images ``S_c x``;
3. fully sampled k-space ``F (S_c x)`` (:func:`bayesmri.physics.fft2c`, centred, orthonormal) or
   non-Cartesian samples ``(1/sqrt(HW)) F_nu (S_c x)``;
4. complex Gaussian noise ``n ~ CN(0, sigma^2)`` per k-space sample (``E|n|^2 = sigma^2``);
5. the mask (zeros off-mask, full grid kept) or the trajectory;
6. normalisation by ``scale`` = 95th percentile of the RSS zero-filled magnitude of the *measured* data
   (Wen sec. 3.2); all outputs are divided by it.

**SNR definition.** ``snr_db = 10 log10(P / sigma^2)`` with ``P = mean_{c, pixels} |S_c x|^2`` the mean
signal power per coil pixel, which by Parseval equals the mean power per sample of the fully sampled
Cartesian coil k-space: it is the per-sample signal power over the per-sample noise power, in k-space
and in image space alike. The same ``sigma`` is used for non-Cartesian samples.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .._validate import as_generator, check_finite, check_mask, check_trajectory
from ..physics.coils import birdcage_maps, normalize_maps
from ..physics.fft import fft2c
from ..physics.masks import apply_mask
from ..physics.intensity import intensity_scale
from .sample import MRISample, zero_filled_magnitude

__all__ = ["simulate_acquisition", "smooth_phase", "simulation_maps", "noise_sigma_for_snr", "derive_seed",
           "SimulatedBrainDataset", "simulate_builtin", "default_num_acs", "slice_positions", "TWO_D_PATTERNS"]


def smooth_phase(shape: tuple[int, int], generator=None, phase_max: float = math.pi / 2,
                 radius: int = 2, dtype=torch.float32) -> torch.Tensor:
    """A smooth random phase map ``(H, W)`` with ``max |phi| = phase_max``.

    Low-pass Gaussian random field: complex normal coefficients on the ``(2 radius + 1)^2`` lowest
    frequencies, weighted by ``exp(-|k|^2 / radius^2)``, inverse FFT, real part.
    """
    H, W = shape
    g = as_generator(generator)
    n = 2 * radius + 1
    coef = torch.randn(2, n, n, generator=g, dtype=torch.float64)
    ky, kx = torch.meshgrid(torch.arange(-radius, radius + 1, dtype=torch.float64),
                            torch.arange(-radius, radius + 1, dtype=torch.float64), indexing="ij")
    c = torch.complex(coef[0], coef[1]) * torch.exp(-(ky**2 + kx**2) / max(radius, 1) ** 2)
    yy = torch.arange(H, dtype=torch.float64)[:, None] / H
    xx = torch.arange(W, dtype=torch.float64)[None, :] / W
    # Direct evaluation of the few Fourier modes (no wrap-around assumptions on H, W).
    phase = torch.zeros(H, W, dtype=torch.complex128)
    for i in range(n):
        for j in range(n):
            phase = phase + c[i, j] * torch.exp(2j * math.pi * (ky[i, j] * yy + kx[i, j] * xx))
    phi = phase.real
    phi = phi - phi.mean()
    m = phi.abs().max()
    if m > 0:
        phi = phi * (phase_max / m)
    return phi.to(dtype)


def simulation_maps(ncoils: int, shape: tuple[int, int], coil_radius: float = 1.5) -> torch.Tensor:
    """Birdcage-like sensitivities ``(C, H, W)`` complex64, ``sum_c |S_c|^2 = 1`` at every pixel."""
    if not isinstance(ncoils, int) or ncoils < 1:
        raise ValueError(f"ncoils must be a positive int, got {ncoils!r}")
    if ncoils == 1:
        return torch.ones(1, *shape, dtype=torch.complex64)
    return normalize_maps(birdcage_maps((ncoils, *shape), r=coil_radius))


def noise_sigma_for_snr(coil_images: torch.Tensor, snr_db: float) -> float:
    """``sigma = sqrt(P / 10^(snr_db/10))``, ``P = mean |coil_images|^2`` (see module docstring)."""
    P = float((coil_images.abs() ** 2).double().mean())
    return math.sqrt(P / 10.0 ** (float(snr_db) / 10.0))


def _complex_noise(shape, sigma: float, generator) -> torch.Tensor:
    re = torch.randn(shape, generator=generator, dtype=torch.float32)
    im = torch.randn(shape, generator=generator, dtype=torch.float32)
    return torch.complex(re, im) * (sigma / math.sqrt(2.0))


def _simulate_one(m, mask, trajectory, dcf, maps, snr_db, noise_sigma, g, phase_max, normalise, num_acs,
                  metadata, espirit_options):
    H, W = m.shape
    phi = smooth_phase((H, W), g, phase_max=phase_max) if phase_max > 0 else torch.zeros(H, W)
    x = torch.polar(m, phi).to(torch.complex64)
    coil_images = maps * x
    if snr_db is not None:
        sigma = noise_sigma_for_snr(coil_images, snr_db)
    else:
        sigma = float(noise_sigma or 0.0)
    if trajectory is None:
        k = fft2c(coil_images)
        if sigma > 0:
            k = k + _complex_noise(k.shape, sigma, g)
        k = apply_mask(k, mask)
        zf = zero_filled_magnitude(k)
    else:
        from ..physics.nufft import NonCartesianMRI

        op = NonCartesianMRI(trajectory, (H, W), coil_maps=maps[None])
        k = op.A(x[None])[0]
        if sigma > 0:
            k = k + _complex_noise(k.shape, sigma, g)
        zf = zero_filled_magnitude(k, trajectory, dcf, (H, W))
    scale = intensity_scale(zf, 0.95) if normalise else 1.0
    md = dict(metadata or {})
    md.setdefault("snr_db", None if snr_db is None else float(snr_db))
    if mask is not None:
        from ..physics.masks import acceleration_of

        md.setdefault("acceleration", acceleration_of(mask, (H, W)))
    else:
        md.setdefault("acceleration", H * W / trajectory.shape[0])
    return MRISample(
        kspace=(k / scale).to(torch.complex64),
        img_shape=(H, W),
        mask=None if mask is None else mask.to(torch.float32),
        trajectory=trajectory,
        dcf=dcf,
        target=(x / scale).to(torch.complex64),
        coil_images=(coil_images / scale).to(torch.complex64),
        maps_true=maps,
        noise_sigma=sigma / scale,
        scale=scale,
        num_acs=num_acs,
        metadata=md,
        espirit_options=dict(espirit_options or {}),
    )


def simulate_acquisition(
    magnitude: torch.Tensor,
    mask: torch.Tensor | None = None,
    trajectory: torch.Tensor | None = None,
    dcf: torch.Tensor | None = None,
    ncoils: int = 8,
    snr_db: float | None = None,
    noise_sigma: float | None = None,
    seed=None,
    maps: torch.Tensor | None = None,
    coil_radius: float = 1.5,
    phase_max: float = math.pi / 2,
    normalise: bool = True,
    num_acs=None,
    metadata: dict | None = None,
    espirit_options: dict | None = None,
):
    """Simulate a multi-coil acquisition of a magnitude slice (module docstring for the model).

    Parameters
    ----------
    magnitude : Tensor ``(H, W)`` or ``(B, H, W)``, real, non-negative.
    mask : Tensor float 0/1 ``(W,)`` or ``(H, W)`` (e.g. :func:`bayesmri.physics.masks.make_mask`);
        ``None`` with no trajectory means fully sampled (a mask of ones).
    trajectory : Tensor ``(K, 2)`` in ``[-0.5, 0.5]`` (exclusive with ``mask``); dcf : ``(K,)`` density
        compensation (used for the zero-filled normalisation and kept in the sample).
    ncoils : int, default 8. maps : Tensor ``(C, H, W)``, optional, overrides the birdcage maps.
    snr_db : float, optional: ``10 log10(P / sigma^2)`` (module docstring). noise_sigma : float,
        optional: the per-sample noise standard deviation in the units of ``magnitude`` (exclusive with
        ``snr_db``). Neither: noise-free.
    seed : int or torch.Generator: drives the phase and the noise (the mask is the caller's);
        ``None`` means seed 0, so the simulation is always reproducible.
    phase_max : float: amplitude of the smooth phase (0 disables it).
    normalise : bool: divide by the 95th percentile of the zero-filled RSS magnitude (default True).
    num_acs : calibration size stored for ESPIRiT. metadata : dict stored in the sample.

    Returns
    -------
    :class:`MRISample` for ``(H, W)`` input; a list of them for ``(B, H, W)`` (one generator drawn
    in sequence, so the list is deterministic for a given seed).
    """
    if not isinstance(magnitude, torch.Tensor):
        raise TypeError(f"magnitude must be a torch.Tensor, got {type(magnitude).__name__}")
    if magnitude.is_complex():
        raise TypeError("magnitude must be real; pass |x| (the simulator adds the phase)")
    if magnitude.ndim not in (2, 3):
        raise ValueError(f"magnitude must have shape (H, W) or (B, H, W), got {tuple(magnitude.shape)}")
    check_finite(magnitude, "magnitude")
    if bool((magnitude < 0).any()):
        raise ValueError("magnitude must be non-negative")
    if mask is not None and trajectory is not None:
        raise ValueError("pass either mask or trajectory, not both")
    if snr_db is not None and noise_sigma is not None:
        raise ValueError("pass either snr_db or noise_sigma, not both")
    if noise_sigma is not None and noise_sigma < 0:
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    H, W = magnitude.shape[-2:]
    if trajectory is None:
        if mask is None:
            mask = torch.ones(W)
        check_mask(mask)
        if mask.ndim not in (1, 2) or mask.shape[-1] != W or (mask.ndim == 2 and mask.shape[0] != H):
            raise ValueError(f"mask must have shape ({W},) or ({H}, {W}), got {tuple(mask.shape)}")
    else:
        check_trajectory(trajectory)
        if trajectory.ndim != 2:
            raise ValueError(f"trajectory must have shape (K, 2), got {tuple(trajectory.shape)}")
    if maps is None:
        maps = simulation_maps(ncoils, (H, W), coil_radius)
    else:
        if maps.ndim != 3 or tuple(maps.shape[-2:]) != (H, W) or not maps.is_complex():
            raise ValueError(f"maps must be complex (C, {H}, {W}), got {tuple(maps.shape)} {maps.dtype}")
        maps = maps.to(torch.complex64)
    g = as_generator(seed)
    if g is None:
        g = torch.Generator().manual_seed(0) if seed is None else g
    mags = magnitude.to(torch.float32)
    args = (mask, trajectory, dcf, maps, snr_db, noise_sigma, g, phase_max, normalise, num_acs,
            metadata, espirit_options)
    if mags.ndim == 2:
        return _simulate_one(mags, *args)
    return [_simulate_one(mi, *args) for mi in mags]


# ----------------------------------------------------------------------------------------------------
# dataset
# ----------------------------------------------------------------------------------------------------
def derive_seed(*parts) -> int:
    """A deterministic 63-bit seed from any printable parts (SHA-256; equal in every process)."""
    import hashlib

    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SimulatedBrainDataset(torch.utils.data.Dataset):
    """Built-in brain slices with a simulated acquisition; yields :class:`MRISample`.

    Deterministic: sample ``i`` depends only on ``(split, contrast, i, seed)`` and the arguments; the
    acquisition seed is ``derive_seed("acq", split, contrast, slice, seed)`` and the mask seed
    ``derive_seed("mask", split, contrast, slice, seed)`` (or ``derive_seed("mask", seed)`` for every
    slice with ``fixed_mask=True``).

    Parameters
    ----------
    split : {"train", "val", "test", "ood"}
    size : int: image size ``H = W`` (default 128; 64 for quick tests).
    pattern : str: mask pattern (:func:`bayesmri.physics.masks.make_mask`: ``gro``, ``uniform1d``,
        ``gaussian1d``, ``gaussian2d``, ``poisson``, ``equispaced``) or ``"full"``; ignored with a
        trajectory.
    acceleration : float: ``R`` (Cartesian: exact to a line; radial: ``R = H W / K``).
    ncoils : int, default 8. snr_db : float or None (noise-free), default 30 dB (SNR as in
        :func:`simulate_acquisition`).
    seed : int. contrast : {"T1", "T2-like"} or None (all slices).
    num_acs : int or (int, int), optional: calibration lines/block of the mask (pattern default).
    trajectory : None, "radial", "spiral" or a Tensor ``(K, 2)``: non-Cartesian acquisition shared by all
        slices (``radial``: ``round(H W / (R H))`` golden-angle spokes of ``H`` samples; ``spiral``:
        ``traj_kwargs`` passed to :func:`bayesmri.physics.trajectories.spiral_trajectory`, default 8
        interleaves). dcf_method : density compensation method (default ``"pipe"``).
    indices : optional subset of slice positions. phase_max, coil_radius: see the simulator.
    espirit_options : dict for :func:`bayesmri.physics.espirit.espirit_maps` (computed lazily).
    mask_kwargs, traj_kwargs : extra options for the mask / trajectory builders.
    """

    def __init__(self, split: str = "train", size: int = 128, pattern: str = "gro", acceleration: float = 4.0,
                 ncoils: int = 8, snr_db: float | None = 30.0, seed: int = 0, contrast: str | None = None,
                 num_acs=None, trajectory=None, dcf_method: str = "pipe", fixed_mask: bool = False,
                 indices=None, phase_max: float = math.pi / 2, coil_radius: float = 1.5,
                 espirit_options: dict | None = None, mask_kwargs: dict | None = None,
                 traj_kwargs: dict | None = None):
        from .builtin import load_slices, slice_info

        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.images = load_slices(split, size=size, contrast=contrast)
        self.info = slice_info(split, contrast)
        self.positions = list(range(len(self.info))) if indices is None else [int(i) for i in indices]
        for i in self.positions:
            if not 0 <= i < len(self.info):
                raise ValueError(f"index {i} out of range for split {split!r} with {len(self.info)} slices")
        self.split, self.size, self.contrast = split, int(size), contrast
        self.pattern = pattern
        self.acceleration = float(acceleration)
        self.ncoils, self.snr_db, self.seed = int(ncoils), snr_db, seed
        self.num_acs, self.fixed_mask = num_acs, fixed_mask
        self.phase_max, self.coil_radius = phase_max, coil_radius
        self.espirit_options = dict(espirit_options or {})
        self.mask_kwargs = dict(mask_kwargs or {})
        self.maps = simulation_maps(self.ncoils, (self.size, self.size), coil_radius)
        self.trajectory, self.dcf = None, None
        if trajectory is not None:
            from ..physics import trajectories as T

            tk = dict(traj_kwargs or {})
            if isinstance(trajectory, torch.Tensor):
                traj = trajectory
            elif trajectory == "radial":
                n_spokes = tk.pop("n_spokes", max(1, round(self.size / self.acceleration)))
                traj = T.radial_trajectory(n_spokes, self.size, **tk)
            elif trajectory == "spiral":
                traj = T.spiral_trajectory(tk.pop("n_interleaves", 8), self.size, **tk)
            else:
                raise ValueError(f"trajectory must be None, 'radial', 'spiral' or a tensor, got {trajectory!r}")
            self.trajectory = check_trajectory(traj.to(torch.float32))
            self.dcf = T.density_compensation(self.trajectory, (self.size, self.size), method=dcf_method)
            self.pattern = trajectory if isinstance(trajectory, str) else "custom"
        elif pattern != "full":
            from ..physics.masks import MASK_PATTERNS

            if pattern not in MASK_PATTERNS:
                raise ValueError(f"unknown mask pattern {pattern!r}; valid: full, {', '.join(MASK_PATTERNS)}")

    def __len__(self) -> int:
        return len(self.positions)

    def mask_for(self, pos: int) -> torch.Tensor:
        """The sampling mask of slice position ``pos`` (deterministic)."""
        if self.pattern == "full":
            return torch.ones(self.size)
        from ..physics.masks import make_mask

        ms = derive_seed("mask", self.seed) if self.fixed_mask else derive_seed(
            "mask", self.split, self.contrast, pos, self.seed)
        return make_mask(self.pattern, (self.size, self.size), self.acceleration, num_acs=self.num_acs,
                         seed=ms, **self.mask_kwargs)

    def __getitem__(self, i: int) -> MRISample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} slices")
        pos = self.positions[i]
        info = self.info[pos]
        mask = None if self.trajectory is not None else self.mask_for(pos)
        acq_seed = derive_seed("acq", self.split, self.contrast, pos, self.seed)
        md = {"split": self.split, "slice": pos, "source": info.source, "slice_index": info.slice_index,
              "contrast": info.contrast, "pattern": self.pattern, "seed": self.seed, "ncoils": self.ncoils,
              "requested_acceleration": self.acceleration}
        return simulate_acquisition(
            self.images[pos], mask=mask, trajectory=self.trajectory, dcf=self.dcf, maps=self.maps,
            snr_db=self.snr_db, seed=acq_seed, phase_max=self.phase_max, num_acs=self.num_acs,
            metadata=md, espirit_options=self.espirit_options)


# ---------------------------------------------------------------------- built-in test acquisitions
#: 2-D sampling patterns (their calibration region is a block, not central lines).
TWO_D_PATTERNS = ("gaussian2d", "poisson")


def default_num_acs(pattern: str, size: int):
    """Calibration size used by the CLI, large enough for ESPIRiT's 6x6 kernel (a calibration width
    of 8 leaves too few patches and gives empty maps): for 1-D patterns ``max(10, round(0.04 size))``
    central lines (13 at 320, as Wen et al. for knees); for 2-D patterns a centred ``a x a`` block
    with ``a = max(12, size // 8)``."""
    if pattern in TWO_D_PATTERNS:
        return (max(12, size // 8),) * 2
    return max(10, round(0.04 * size))


def slice_positions(n_total: int, n: int) -> list[int]:
    """``n`` slice positions evenly spread over the central 40 % of a split (where the brain is)."""
    if n < 1:
        raise ValueError(f"number of slices must be >= 1, got {n}")
    if n > n_total:
        raise ValueError(f"requested {n} slices but the split has only {n_total}")
    lo, hi = 0.3 * (n_total - 1), 0.7 * (n_total - 1)
    pos = sorted({int(round(p)) for p in np.linspace(lo, hi, n)})
    extra = [i for i in range(n_total) if i not in pos]
    while len(pos) < n:  # tiny splits: fill from outside the central range
        pos.append(extra.pop(0))
    return sorted(pos)


def simulate_builtin(split="test", n_slices=4, pattern="gro", acceleration=4.0, coils=8, snr=30.0, seed=0, size=None,
                     mask_seed=None):
    """Simulated acquisitions of ``n_slices`` built-in slices: a list of :class:`MRISample`.

    Masks differ per slice (deterministic, from ``seed``; see :class:`SimulatedBrainDataset`) unless
    ``mask_seed`` is given: then every slice gets ``make_mask(pattern, (size, size), acceleration,
    num_acs=default_num_acs(pattern, size), seed=mask_seed)``. ``pattern="full"``: fully sampled. The
    phase and the noise do not depend on the mask, so the measured k-space of a pattern equals the
    fully sampled k-space with that mask applied (:func:`bayesmri.physics.masks.apply_mask`).
    """
    from .builtin import DEFAULT_SIZE, num_slices
    from ..physics.masks import MASK_PATTERNS

    size = DEFAULT_SIZE if size is None else int(size)
    if pattern not in MASK_PATTERNS and pattern != "full":
        raise ValueError(f"unknown sampling pattern {pattern!r}; available: {', '.join(MASK_PATTERNS)}, full")
    if int(coils) < 1:
        raise ValueError(f"coils must be >= 1, got {coils}")
    if float(acceleration) < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    pos = slice_positions(num_slices(split), int(n_slices))
    acs = default_num_acs(pattern, size)
    # ESPIRiT calibrates on at most num_acs x num_acs; a 1-D mask is fully sampled along H, so let
    # the region grow to 24 x 24 (BART's default) over the central run, not acs x acs.
    esp = {"num_acs": min(24, size)} if pattern not in TWO_D_PATTERNS else None
    ds = _Dataset(
        split, size=size, pattern=pattern, acceleration=float(acceleration), ncoils=int(coils),
        snr_db=float(snr), seed=int(seed), num_acs=acs, indices=pos, espirit_options=esp,
    )
    ds.mask_seed = mask_seed
    return [ds[i] for i in range(len(ds))]


def _Dataset(*args, **kw):
    from ..physics.masks import make_mask

    class _SmallSeedMasks(SimulatedBrainDataset):
        # GRO turns an int seed into a float frame shift, and 63-bit seeds lose their low bits
        # (every line collapses onto the centre); keep mask seeds below 2**31 until masks.py does.
        def mask_for(self, pos: int):
            if self.pattern == "full":
                return super().mask_for(pos)
            ms = getattr(self, "mask_seed", None)
            if ms is None:
                ms = derive_seed("mask", self.split, self.contrast, pos, self.seed) % (2**31 - 1)
            return make_mask(self.pattern, (self.size, self.size), self.acceleration, num_acs=self.num_acs,
                             seed=ms, **self.mask_kwargs)

    return _SmallSeedMasks(*args, **kw)
