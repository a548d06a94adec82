"""The typed sample every data source yields and every method consumes.

An :class:`MRISample` holds one slice's measurement and what is known about it, **in normalised
units**: every tensor (k-space, ground truth, coil images) and ``noise_sigma`` have been divided by
``scale``, the 95th percentile of the zero-filled magnitude computed from the measured data only
(Wen et al. 2023, sec. 3.2). Multiply a reconstruction by ``sample.scale`` (:meth:`MRISample.unscale`)
to return to the units of the raw data.

Forward model (GUIDE section 1):

- Cartesian: ``y_c = M F (S_c x) + M n_c``, ``F`` = :func:`bayesmri.physics.fft2c`, ``M`` the 0/1 mask
  (``kspace`` keeps the full ``(C, H, W)`` grid, zeros off-mask), ``n_c ~ CN(0, noise_sigma^2)`` i.i.d.
  per complex k-space sample (``E|n|^2 = noise_sigma^2``, i.e. ``noise_sigma^2 / 2`` per real part).
- Non-Cartesian: ``y_c = (1/sqrt(HW)) F_nu (S_c x) + n_c``, ``kspace (C, K)``, trajectory ``(K, 2)``
  in ``[-0.5, 0.5]`` (:class:`bayesmri.physics.nufft.NonCartesianMRI`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from ..physics.coils import rss
from ..physics.fft import ifft2c

__all__ = ["MRISample", "collate_samples", "zero_filled_magnitude"]


def zero_filled_magnitude(kspace: torch.Tensor, trajectory: torch.Tensor | None = None,
                          dcf: torch.Tensor | None = None, img_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Root-sum-of-squares magnitude of the zero-filled (Cartesian) or gridded (non-Cartesian) coil images.

    Parameters
    ----------
    kspace : ``(C, H, W)`` (zeros off-mask) or, with ``trajectory``, ``(C, K)`` complex
    trajectory : ``(K, 2)``, optional; dcf : ``(K,)``, needed with a trajectory; img_shape : (H, W)

    Returns
    -------
    Tensor ``(H, W)`` real.
    """
    if trajectory is None:
        return rss(ifft2c(kspace), dim=-3)
    from ..physics.nufft import NonCartesianMRI

    if img_shape is None:
        raise ValueError("img_shape is required with a trajectory")
    C, K = kspace.shape[-2:]
    w = dcf if dcf is not None else torch.ones(K, dtype=kspace.real.dtype)
    op = NonCartesianMRI(trajectory, img_shape, dcf=w)
    coil_imgs = op.gridding(kspace.reshape(C, 1, K))  # coils as batch, single-coil operator
    return rss(coil_imgs, dim=-3)


@dataclass
class MRISample:
    """One slice: measurement, ground truth (when known) and acquisition description.

    Attributes
    ----------
    kspace : Tensor complex64, ``(C, H, W)`` Cartesian (zeros off-mask) or ``(C, K)`` non-Cartesian.
    mask : Tensor float32 0/1 ``(W,)`` (1-D, last axis) or ``(H, W)``; ``None`` for non-Cartesian.
    trajectory : Tensor ``(K, 2)`` in ``[-0.5, 0.5]``; ``None`` for Cartesian. dcf : ``(K,)`` or None.
    img_shape : (H, W).
    target : Tensor complex64 ``(H, W)``: ground-truth image (``None`` if unknown, e.g. fastMRI test
        data). For simulated data this is ``x``; for fastMRI it is the coil combination of the fully
        sampled (cropped, compressed) coil images with the ESPIRiT maps, ``S^H F^H k_full``.
    coil_images : Tensor ``(C, H, W)``: noise-free ground-truth coil images ``S_c x`` (simulated) or the
        fully sampled coil images (fastMRI); ``None`` if unknown.
    maps_true : Tensor ``(C, H, W)``: the simulation's sensitivities (``sum_c |S_c|^2 = 1``); ``None``
        for real data.
    noise_sigma : float: standard deviation per complex k-space sample, normalised units (0 if noise-free
        or unknown).
    scale : float: normalisation; raw units = normalised units * ``scale``.
    num_acs : int or (int, int) or None: calibration lines, for ESPIRiT.
    metadata : dict: ``split``, ``slice`` (index), ``source``, ``slice_index``, ``pattern``,
        ``acceleration`` (measured), ``snr_db``, ``seed``, ``fname``...
    espirit_options : dict: keyword arguments for :func:`bayesmri.physics.espirit.espirit_maps`.
    calib_kspace : Tensor ``(C, H, W)`` or None: k-space to estimate the ESPIRiT maps from instead of
        ``kspace`` (an ISMRMRD file's separate reference lines, or the average of interleaved frames).
    maps_source : str: where :attr:`maps_espirit` comes from: ``"espirit"`` (estimated), ``"ones"``
        (single coil) or ``"file"`` (explicit maps given at construction, e.g. ``recon --maps FILE``).

    ESPIRiT maps are computed lazily from ``kspace`` (or ``calib_kspace``) on first access of
    :attr:`maps_espirit` (or given at construction: ``maps_source`` says so) and cached.
    """

    kspace: torch.Tensor
    img_shape: tuple[int, int]
    mask: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None
    dcf: torch.Tensor | None = None
    target: torch.Tensor | None = None
    coil_images: torch.Tensor | None = None
    maps_true: torch.Tensor | None = None
    noise_sigma: float = 0.0
    scale: float = 1.0
    num_acs: Any = None
    metadata: dict = field(default_factory=dict)
    espirit_options: dict = field(default_factory=dict)
    calib_kspace: torch.Tensor | None = None
    maps_source: str = "espirit"
    _maps_espirit: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.mask is None) == (self.trajectory is None):
            raise ValueError("MRISample needs exactly one of mask (Cartesian) or trajectory (non-Cartesian)")
        self.img_shape = (int(self.img_shape[0]), int(self.img_shape[1]))
        exp = 3 if self.mask is not None else 2
        if self.kspace.ndim != exp:
            kind = "(C, H, W) for Cartesian" if exp == 3 else "(C, K) for non-Cartesian"
            raise ValueError(f"kspace must have shape {kind} data, got {tuple(self.kspace.shape)}")

    # ------------------------------------------------------------------ properties
    @property
    def ncoils(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def is_cartesian(self) -> bool:
        return self.mask is not None

    @property
    def maps_espirit(self) -> torch.Tensor:
        """ESPIRiT maps ``(C, H, W)`` from the calibration region of ``kspace`` (computed once, cached).

        Cartesian: :func:`espirit_maps` on ``kspace``; the calibration region is the largest fully
        sampled centred block up to ``num_acs`` (24 if unknown; ``(max(24, a), a)`` for a 1-D mask with
        ``a`` ACS lines). ``espirit_options`` override it. Non-Cartesian: on the Cartesian k-space of the gridded coil images (``fft2c`` of the
        density-compensated adjoint), whose centre is densely sampled.
        """
        if self._maps_espirit is None and self.ncoils == 1:
            # one coil: its map is 1 (ESPIRiT needs two coils; every single-coil method assumes S = 1)
            self._maps_espirit = torch.ones(1, *self.img_shape, dtype=torch.complex64, device=self.kspace.device)
            self.maps_source = "ones"
        if self._maps_espirit is None:
            from ..physics.espirit import espirit_maps
            from ..physics.fft import fft2c

            opts = dict(self.espirit_options)
            if "num_acs" not in opts:
                a = self.num_acs
                if a is None:
                    opts["num_acs"] = 24
                elif isinstance(a, int) and self.is_cartesian and self.mask.ndim == 1:
                    # 1-D masks sample every row: calibrate on >= 24 rows x the ACS columns.
                    opts["num_acs"] = (max(24, a), a)
                else:
                    opts["num_acs"] = a
            if self.is_cartesian:
                k = self.kspace if self.calib_kspace is None else self.calib_kspace
            else:
                from ..physics.nufft import NonCartesianMRI

                C, K = self.kspace.shape
                w = self.dcf if self.dcf is not None else torch.ones(K)
                op = NonCartesianMRI(self.trajectory, self.img_shape, dcf=w)
                k = fft2c(op.gridding(self.kspace.reshape(C, 1, K)))
            self._maps_espirit = espirit_maps(k[None], **opts)[0]
        return self._maps_espirit

    @property
    def has_espirit(self) -> bool:
        """Whether ESPIRiT maps have been computed or given."""
        return self._maps_espirit is not None

    def maps(self, kind: str = "espirit") -> torch.Tensor:
        """Coil maps ``(C, H, W)``: ``"espirit"`` (estimated from the data) or ``"true"`` (simulation)."""
        if kind == "espirit":
            return self.maps_espirit
        if kind == "true":
            if self.maps_true is None:
                raise ValueError("this sample has no true coil maps (real data); use maps='espirit'")
            return self.maps_true
        raise ValueError(f"maps must be 'espirit' or 'true', got {kind!r}")

    # ------------------------------------------------------------------ coil compression
    def compress_coils(self, virtual_coils, *, calib=None) -> "MRISample":
        """This sample on ``V`` SVD virtual coils, ``y_v = U^H y``
        (:func:`~bayesmri.physics.coils.svd_coil_compression`; Buehrer et al. 2007, Huang et al. 2008).

        ``U`` is estimated from the measured k-space: every sampled point (``calib=None``; zeros off the
        mask add nothing) or the central ``calib`` block (int or ``(h, w)``, Cartesian only). The copy has
        ``kspace``, ``coil_images`` and ``maps_true`` compressed with the same matrix (``U^H S``: the exact
        model of the compressed data, no longer normalised to ``sum_v |S_v|^2 = 1``); ``target``, ``mask``,
        ``scale`` and ``noise_sigma`` are unchanged (white noise stays white with the same variance). ESPIRiT
        maps are estimated afresh from the compressed k-space on first use (a single coil keeps map 1).
        ``metadata["coil_compression"]`` records ``coils``, ``virtual_coils``, ``energy_kept`` (fraction of
        the measured k-space energy) and ``calib``. The copy is cached per setting on this sample, so every
        method and chain chunk run on it shares its ESPIRiT maps.

        Parameters
        ----------
        virtual_coils : int or float
            An int ``1 <= V <= C``: that many virtual coils; a float in ``(0, 1)``: the fewest virtual coils
            keeping this fraction of the energy (e.g. 0.99).
        calib : None, int or (int, int)
            Data for the SVD (above).

        Returns
        -------
        MRISample
        """
        import numbers

        from ..physics.coils import svd_coil_compression

        v = virtual_coils
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"virtual_coils must be an int number of coils or an energy fraction in (0, 1), "
                             f"got {v!r}")
        if isinstance(v, numbers.Integral):
            kw = {"num_virtual": int(v)}
        elif 0 < float(v) < 1:
            kw = {"energy": float(v)}
        elif float(v).is_integer():
            kw = {"num_virtual": int(v)}
        else:
            raise ValueError(f"virtual_coils must be an int number of coils or an energy fraction in (0, 1), "
                             f"got {v!r}")
        if "num_virtual" in kw and not 1 <= kw["num_virtual"] <= self.ncoils:
            raise ValueError(f"virtual_coils must be in [1, {self.ncoils}] (this sample has {self.ncoils} coils), "
                             f"got {v!r}")
        if calib is not None and not self.is_cartesian:
            raise ValueError("calib (a central k-space block) needs Cartesian data; use calib=None")
        key = (tuple(kw.items()), calib if not isinstance(calib, list) else tuple(calib))
        cache = self.__dict__.setdefault("_compressed", {})
        if key in cache:
            return cache[key]
        k = self.kspace if self.is_cartesian else self.kspace.unsqueeze(-2)  # (C, K) -> (C, 1, K)
        kc, M = svd_coil_compression(k, calib=calib, **kw)
        kc = kc.reshape(kc.shape[0], *self.kspace.shape[1:])

        def comp(t):
            return None if t is None else torch.einsum("vc,c...->v...", M.to(device=t.device, dtype=t.dtype), t)

        total = float(self.kspace.abs().double().pow(2).sum())
        md = dict(self.metadata)
        md["coil_compression"] = {
            "method": "svd", "coils": self.ncoils, "virtual_coils": int(kc.shape[0]),
            "energy": kw.get("energy"), "energy_kept": float(kc.abs().double().pow(2).sum()) / total if total else 1.0,
            "calib": "all sampled points" if calib is None else calib if isinstance(calib, int) else list(calib)}
        out = dataclasses.replace(self, kspace=kc, coil_images=comp(self.coil_images), maps_true=comp(self.maps_true),
                                  calib_kspace=comp(self.calib_kspace), metadata=md, _maps_espirit=None)
        if self.maps_source != "espirit" and self._maps_espirit is not None:
            out._maps_espirit = comp(self._maps_espirit)  # given maps (a file's, or 1 for one coil): U^H S
        cache[key] = out
        return out

    # ------------------------------------------------------------------ operators
    def operator(self, maps: str | torch.Tensor = "espirit"):
        """The SENSE forward operator of this sample (batch 1; broadcasts over chains).

        Parameters
        ----------
        maps : "espirit", "true" or a Tensor ``(C, H, W)`` / ``(1, C, H, W)``

        Returns
        -------
        :class:`~bayesmri.physics.cartesian.MultiCoilMRI` (image ``(B, H, W)`` -> ``(B, C, H, W)``) or
        :class:`~bayesmri.physics.nufft.NonCartesianMRI` (-> ``(B, C, K)``).
        Apply it to ``self.y`` (the k-space with a batch axis).
        """
        S = self.maps(maps) if isinstance(maps, str) else maps
        if S.ndim == 3:
            S = S[None]
        if self.is_cartesian:
            from ..physics.cartesian import MultiCoilMRI

            return MultiCoilMRI(S, self.mask)
        from ..physics.nufft import NonCartesianMRI

        return NonCartesianMRI(self.trajectory, self.img_shape, coil_maps=S, dcf=self.dcf)

    def coil_operator(self):
        """Wen et al.'s coil-image operator ``blkdiag(F^H P^T P F)`` (eq. 3); Cartesian only."""
        if not self.is_cartesian:
            raise ValueError("the coil-image operator is defined for Cartesian samples only")
        from ..physics.cartesian import CoilImageMRI

        return CoilImageMRI(self.mask, self.img_shape, self.ncoils)

    @property
    def y(self) -> torch.Tensor:
        """Measured k-space with a batch axis: ``(1, C, H, W)`` or ``(1, C, K)``."""
        return self.kspace[None]

    def zero_filled(self) -> torch.Tensor:
        """Zero-filled (Cartesian) / gridded (non-Cartesian) coil images ``(C, H, W)``."""
        if self.is_cartesian:
            return ifft2c(self.kspace)
        from ..physics.nufft import NonCartesianMRI

        C, K = self.kspace.shape
        w = self.dcf if self.dcf is not None else torch.ones(K)
        return NonCartesianMRI(self.trajectory, self.img_shape, dcf=w).gridding(self.kspace.reshape(C, 1, K))

    def zero_filled_rss(self) -> torch.Tensor:
        """RSS magnitude ``(H, W)`` of :meth:`zero_filled`; its 95th percentile is 1 after normalisation."""
        return rss(self.zero_filled(), dim=-3)

    @property
    def target_magnitude(self) -> torch.Tensor | None:
        return None if self.target is None else self.target.abs()

    def unscale(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` (normalised units) in the raw data's units: ``x * scale``."""
        return x * self.scale

    def to(self, device) -> "MRISample":
        """A copy with every tensor on ``device``."""
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device) if isinstance(v, torch.Tensor) else v
        return MRISample(**kw)

    @staticmethod
    def batch(samples) -> dict:
        """Stack samples for training: see :func:`collate_samples`."""
        return collate_samples(samples)


def collate_samples(samples) -> dict:
    """Collate Cartesian samples of one shape into batched tensors (a ``DataLoader`` ``collate_fn``).

    Returns
    -------
    dict with ``kspace (B, C, H, W)``, ``mask (B, 1, H|1, W)`` float32, ``target (B, H, W)``,
    ``coil_images (B, C, H, W)``, ``maps_true (B, C, H, W)`` and ``maps_espirit`` only when every sample
    has them (ESPIRiT maps only if already computed), ``scale (B,)`` and ``noise_sigma (B,)`` float32,
    ``metadata`` (list of dicts).

    Raises
    ------
    ValueError
        Empty list, non-Cartesian samples, or mismatched shapes.
    """
    samples = list(samples)
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    if not all(isinstance(s, MRISample) for s in samples):
        raise TypeError("collate_samples expects MRISample objects")
    if not all(s.is_cartesian for s in samples):
        raise ValueError("collate_samples supports Cartesian samples only (trajectories differ in length)")
    shapes = {tuple(s.kspace.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(f"samples have different k-space shapes {sorted(shapes)}; cannot stack")
    H, W = samples[0].img_shape
    out: dict = {"kspace": torch.stack([s.kspace for s in samples])}
    masks = []
    for s in samples:
        m = s.mask.to(torch.float32)
        m = m.reshape(1, 1, W) if m.ndim == 1 else m.reshape(1, H, W)
        masks.append(m)
    if len({tuple(m.shape) for m in masks}) != 1:
        masks = [m.expand(1, H, W) for m in masks]
    out["mask"] = torch.stack(masks)
    for name in ("target", "coil_images", "maps_true"):
        vals = [getattr(s, name) for s in samples]
        if all(v is not None for v in vals):
            out[name] = torch.stack(vals)
    if all(s.has_espirit for s in samples):
        out["maps_espirit"] = torch.stack([s.maps_espirit for s in samples])
    out["scale"] = torch.tensor([s.scale for s in samples], dtype=torch.float32)
    out["noise_sigma"] = torch.tensor([s.noise_sigma for s in samples], dtype=torch.float32)
    out["metadata"] = [dict(s.metadata) for s in samples]
    return out
