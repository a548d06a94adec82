"""What ``bayesmri recon`` reads: one input file as normalised per-slice :class:`~bayesmri.data.MRISample` s.

:func:`load_input` reads any format of :func:`bayesmri.data.inputs.open_volume` (fastMRI ``.h5``, ISMRMRD
``.h5``, BART ``.cfl``) into a :class:`ReconInput`: the samples (each slice divided by the 95th percentile
of its zero-filled RSS, :func:`normalise_kspace`), the reference, the mask and where it came from, the
``metrics.json`` pattern key and the output geometry. A retrospective study (``recon --mask``) is a
:class:`RetrospectiveMask` (:func:`retrospective_mask` checks the options) applied on reading by
:func:`bayesmri.physics.masks.apply_mask`, the function the simulator uses. :func:`parse_slices` reads
``--slices``; :func:`compress_samples` is ``recon --virtual-coils`` over every slice.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

__all__ = ["ReconInput", "RetrospectiveMask", "retrospective_mask", "load_input", "load_input_samples",
           "input_slice_count", "input_info", "parse_slices", "check_input_file", "pattern_key", "check_file_mask",
           "normalise_kspace", "compress_samples", "TRUE_MAPS_DATASET", "FULLY_SAMPLED_R"]


#: A file whose k-space has an acceleration below this is fully sampled (fastMRI pads the phase-encoding
#: axis with zero lines: a fully sampled knee file has R of about 1.1).
FULLY_SAMPLED_R = 1.25


def compress_samples(samples, virtual_coils):
    """SVD coil compression of every slice (:meth:`MRISample.compress_coils`; ``recon --virtual-coils``).

    Parameters
    ----------
    samples : list of ``MRISample``. virtual_coils : int >= 1 (coils), a fraction in (0, 1) (the fewest coils
        keeping that share of the k-space energy) or None (no compression).

    Returns
    -------
    ``(samples, summary)``; ``summary`` (JSON types, for ``metrics.json`` settings): ``method``, ``coils``,
    ``requested``, ``virtual_coils`` and ``energy_kept`` (per slice), ``calib``; None without compression.
    """
    if virtual_coils is None:
        return samples, None
    out = [s.compress_coils(virtual_coils) for s in samples]
    info = [s.metadata["coil_compression"] for s in out]
    return out, {"method": "svd", "coils": info[0]["coils"], "requested": virtual_coils,
                 "virtual_coils": [i["virtual_coils"] for i in info],
                 "energy_kept": [round(i["energy_kept"], 6) for i in info], "calib": info[0]["calib"]}


#: Dataset of a simulated file that holds the simulation's coil maps ``(S, C, H, W)`` (``recon --maps true``).
TRUE_MAPS_DATASET = "maps_true"


def _has_dataset(path, name: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return name in f


def check_input_file(path) -> Path:
    """``Path(path)`` after refusing a missing file, or one that is neither HDF5 (fastMRI, ISMRMRD) nor a BART
    cfl pair, before any work starts (:func:`bayesmri.data.inputs.detect_format`; one-line ``ValueError`` or
    ``FileNotFoundError`` naming it)."""
    from .inputs import detect_format

    detect_format(path)
    return Path(path)


def input_slice_count(path) -> int:
    """Number of slices (images) of one input file, after :func:`check_input_file`."""
    from .inputs import open_volume

    return open_volume(check_input_file(path)).num_slices


@dataclass
class RetrospectiveMask:
    """What ``recon --mask`` asks for: ``make_mask(pattern, (H, W), acceleration, num_acs, seed)`` applied
    to every slice of a fully sampled file (one mask per volume, as fastMRI's retrospective masks)."""

    pattern: str
    acceleration: float = 4.0
    num_acs: object = None
    seed: int | None = None


def retrospective_mask(pattern: str | None, acceleration: float | None = None, num_acs: int | None = None,
                       seed: int | None = None) -> RetrospectiveMask | None:
    """The checked :class:`RetrospectiveMask` of ``recon --mask PATTERN --acceleration R --acs N --mask-seed S``.

    Parameters
    ----------
    pattern : a pattern of :data:`bayesmri.physics.masks.MASK_PATTERNS`, or None (no retrospective study:
        then the other options must be None too).
    acceleration : R >= 1 (default 4). num_acs : calibration lines (1-D) or block side (2-D), >= 1, or None
        (the simulator's default). seed : the mask's seed in ``[0, 2**31 - 2]``, or None (GRO's frame 0).

    Returns
    -------
    RetrospectiveMask or None. A bad value is a one-line ``ValueError`` naming the option.
    """
    from ..physics.masks import MASK_PATTERNS

    extra = [o for o, v in (("--acceleration", acceleration), ("--acs", num_acs), ("--mask-seed", seed))
             if v is not None]
    if pattern is None:
        if extra:
            raise ValueError(f"{', '.join(extra)} only apply with --mask PATTERN (a retrospective study)")
        return None
    if pattern not in MASK_PATTERNS:
        raise ValueError(f"--mask: unknown sampling pattern {pattern!r}; available: {', '.join(MASK_PATTERNS)}")
    R = 4.0 if acceleration is None else float(acceleration)
    if not (math.isfinite(R) and R >= 1):
        raise ValueError(f"--acceleration must be a finite number >= 1, got {acceleration}")
    if num_acs is not None and num_acs < 1:
        raise ValueError(f"--acs must be >= 1, got {num_acs}")
    # GRO turns the seed into a float frame shift: 63-bit seeds lose their low bits (simulate's limit too)
    if seed is not None and not 0 <= seed < 2**31 - 1:
        raise ValueError(f"--mask-seed must be between 0 and 2**31 - 2, got {seed}")
    return RetrospectiveMask(pattern, R, num_acs, seed)


@dataclass
class ReconInput:
    """An input file read for ``recon`` (:func:`load_input`): fastMRI, ISMRMRD or BART cfl.

    Attributes
    ----------
    samples : one ``MRISample`` per selected slice (normalised, GUIDE section 1).
    reference : ``(S, h, w)`` float magnitude reference in the samples' units, or None.
    pattern : the ``metrics.json`` pattern key (``gro-r4``; ``input`` when unknown).
    slices : indices of the selected slices in the file.
    geometry : :class:`bayesmri.data.fastmri.ImageGeometry` of the outputs (recon matrix, voxel size).
    mask_info : JSON-friendly description of the mask (``source``: ``option`` / ``file`` / ``kspace``).
    reference_source : where ``reference`` came from (None without one).
    fully_sampled : the file's k-space was fully sampled (before any ``--mask``).
    info : :func:`input_info`: format, maps, and for ISMRMRD/cfl the reader's summary, noise handling and
        per-image labels.
    """

    samples: list
    reference: torch.Tensor | None
    pattern: str
    slices: list
    geometry: object
    mask_info: dict
    reference_source: str | None
    fully_sampled: bool
    info: dict = field(default_factory=dict)

    def mask_line(self) -> str:
        """One line saying where the mask came from (printed by ``recon``)."""
        from ..physics.masks import TWO_D_NOTE

        m = self.mask_info
        R = f"R={m['acceleration']:.3g}"
        if m["source"] == "option":
            acs = m.get("num_acs")
            acs = "x".join(map(str, acs)) if isinstance(acs, (list, tuple)) else acs
            seed = "GRO frame 0" if m.get("seed") is None else f"seed {m['seed']}"
            line = (f"mask: --mask {m['pattern']} {R} ({acs} ACS, {seed}) applied to the fully sampled k-space; "
                    f"reference: {self.reference_source}")
        elif m["source"] == "file":
            line = f"mask: the file's 'mask' dataset, {R}"
        elif m["source"] == "file-applied":
            line = (f"mask: the file's 'mask' dataset, {R}, applied to the k-space (the file holds data outside "
                    f"it: a retrospective study); reference: {self.reference_source}")
        elif m["source"] == "file+kspace":
            line = f"mask: the file's 'mask' dataset, the nonzero k-space where they disagree, {R}"
        elif m["source"] == "acquired":
            line = f"mask: the acquired lines of each image, {R}{' (fully sampled)' if self.fully_sampled else ''}"
        else:
            line = f"mask: the nonzero k-space of each slice, {R}{' (fully sampled)' if self.fully_sampled else ''}"
        if m.get("dims") == 2:
            line += f"; note: {TWO_D_NOTE}"
        return line


def parse_slices(spec: str | None, n: int, fname="") -> list[int]:
    """Slice indices of ``spec`` (``"0,3,5-7"``: items and inclusive ranges) in a file of ``n`` slices.

    Returns the sorted distinct indices (all ``n`` for ``None``); ``ValueError`` names ``--slices`` for a
    malformed item or an index outside ``[0, n)``.
    """
    if spec is None:
        return list(range(n))
    out = set()
    for item in str(spec).split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if m is None:
            raise ValueError(f"--slices: {item!r} is not a slice index or a range a-b (e.g. 0,3,5-7)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if lo > hi:
            raise ValueError(f"--slices: empty range {item!r}")
        if lo < 0 or hi >= n:
            raise ValueError(f"--slices: {item!r} is outside the {n} slice(s) 0-{n - 1} of {fname}".rstrip())
        out.update(range(lo, hi + 1))
    if not out:
        raise ValueError("--slices: no slice given")
    return sorted(out)


def load_input_samples(path) -> tuple[list, torch.Tensor | None, str]:
    """``(samples, reference, pattern)`` of every slice of ``path`` as given (no retrospective mask), the
    fields of :func:`load_input`'s :class:`ReconInput`."""
    d = load_input(path)
    return d.samples, d.reference, d.pattern


def input_info(vol, idx: list[int], maps=None) -> dict:
    """JSON description of an input volume for ``metrics.json`` settings and the printed line.

    Parameters
    ----------
    vol : a volume of :func:`bayesmri.data.inputs.open_volume`. idx : the slices read. maps : the ``--maps``
        value (None / ``"espirit"`` / a source or file name).

    Returns
    -------
    dict with ``format``, ``maps`` and, where the reader knows them, ``summary``, ``noise``, ``labels`` and
    ``num_acs`` (per read slice) and ``bart_dims`` (a whole cfl input: the dims its outputs restore).
    """
    info = {"format": getattr(vol, "format", "fastmri"), "maps": "espirit" if maps in (None, "espirit") else str(maps)}
    for key in ("summary", "noise", "labels", "num_acs"):
        v = getattr(vol, key, None)
        if v:
            info[key] = [v[i] for i in idx] if key in ("labels", "num_acs") else v
    extra = getattr(vol, "extra_dims", None)
    if extra is not None and list(idx) == list(range(vol.num_slices)):
        info["bart_dims"] = [int(d) for d in extra]  # cfl outputs restore the input's dims
    return info


def load_input(path, *, slices: list[int] | None = None, mask: RetrospectiveMask | None = None,
               maps: str | None = None) -> ReconInput:
    """Read an input file (fastMRI ``.h5``, ISMRMRD ``.h5`` or BART ``.cfl``) into per-slice ``MRISample`` s.

    The format is detected by :func:`bayesmri.data.inputs.open_volume` (ISMRMRD: prewhitened, readout
    oversampling removed, one image per slice/repetition/...; ``docs/inputs.md``). ``maps``: ``None`` or
    ``"espirit"`` (ESPIRiT on first use; a single coil gets maps of 1), or a file of explicit coil maps
    (:func:`bayesmri.data.inputs.read_coil_maps`; whitened like the data).

    Without ``mask`` the mask is the file's ``mask`` dataset when present and consistent, else the
    sampled locations of each slice (nonzero k-space). With ``mask`` (a retrospective study) the file
    must be fully sampled: the mask is built once by :func:`bayesmri.physics.masks.make_mask` and applied
    by :func:`bayesmri.physics.masks.apply_mask`, the function the simulator uses, so the data equal
    those of a file written undersampled on the same mask. Each slice is then normalised by the 95th
    percentile of its zero-filled RSS (GUIDE section 1). The reference is ``reconstruction_rss``/``_esc``
    when present (magnitude, same normalised units); for a retrospective study without one, the RSS of
    the fully sampled k-space cropped to the recon matrix.

    Parameters
    ----------
    path : the file. slices : indices to read (default all). mask : :class:`RetrospectiveMask` or None.
    maps : None / ``"espirit"``, ``"true"`` (the simulation's maps, dataset :data:`TRUE_MAPS_DATASET`),
        ``"joint"`` (estimated by the method; read as ESPIRiT) or a maps file.

    Returns
    -------
    ReconInput
    """
    import h5py

    from .sample import MRISample
    from .fastmri import FastMRIVolume, center_crop as crop_to, image_geometry, max_slice_bytes
    from ..physics.coils import rss
    from ..physics.fft import ifft2c
    from ..physics.masks import acceleration_of, apply_mask, make_mask

    from .inputs import maps_tensor, open_volume, read_coil_maps

    vol = open_volume(path)  # fastMRI, ISMRMRD or BART cfl; validates; one-line ValueError naming the file
    H0, W0 = vol.shape[-2:]
    idx = parse_slices(None, vol.num_slices) if slices is None else list(slices)
    if any(not 0 <= i < vol.num_slices for i in idx):
        raise ValueError(f"--slices: {path} has {vol.num_slices} slice(s)")
    # Every slice is held (k-space, normalised copy, coil maps): refuse a volume that cannot fit.
    need = len(idx) * int(np.prod(vol.shape[1:], dtype=np.float64)) * 8 * 3
    if need > 2 * max_slice_bytes():
        raise ValueError(f"{path}: {len(idx)} slices of {' x '.join(map(str, vol.shape[1:]))} need about "
                         f"{need / 2**30:.3g} GiB, more than half of this machine's memory")
    file_mask = None
    if isinstance(vol, FastMRIVolume):
        with h5py.File(path, "r") as f:
            file_mask = np.asarray(f["mask"][()]) if "mask" in f else None
    attrs = vol.attrs
    geometry = image_geometry(vol.header, vol.shape)
    if getattr(vol, "orientation", None):
        geometry = replace(geometry, orientation=[vol.orientation[i] for i in idx])
    file_maps = true_maps = None
    if maps == "true":  # the simulation's maps, stored beside the k-space by `bayesmri simulate`
        if not (isinstance(vol, FastMRIVolume) and _has_dataset(path, TRUE_MAPS_DATASET)):
            raise ValueError(f"--maps true: {path} carries no simulated coil maps (dataset {TRUE_MAPS_DATASET!r}, "
                             "written by `bayesmri simulate`); use --maps espirit")
        true_maps = read_coil_maps(f"{path}:{TRUE_MAPS_DATASET}", vol.shape[-3] if vol.multicoil else 1, (H0, W0),
                                   vol.num_slices)
    elif maps not in (None, "espirit", "joint"):
        file_maps = read_coil_maps(maps, vol.shape[-3] if vol.multicoil else 1, (H0, W0), vol.num_slices)
    H, W = vol.shape[-2:]
    # 2-D masks: the stored calibration block (the greedy search for the largest fully sampled
    # region can lock onto a thin strip of a Poisson pattern). 1-D masks: up to 24 x (central run).
    acs2d = attrs.get("bayesmri_num_acs")
    if acs2d is not None:
        try:
            acs2d = tuple(int(a) for a in np.asarray(acs2d).reshape(-1))
        except (TypeError, ValueError):
            acs2d = None
        if acs2d is None or len(acs2d) not in (1, 2) or min(acs2d) < 1 or max(acs2d) > max(vol.shape[-2:]):
            # only a hint for ESPIRiT's calibration region; a bad one falls back to the search
            warnings.warn(f"{path}: ignoring attribute bayesmri_num_acs={attrs.get('bayesmri_num_acs')!r} "
                          f"(expected one or two sizes within {vol.shape[-2]} x {vol.shape[-1]})", stacklevel=2)
            acs2d = None
    retro = None
    if mask is not None:
        from .simulate import TWO_D_PATTERNS, default_num_acs

        two_d = mask.pattern in TWO_D_PATTERNS
        acs = mask.num_acs
        if acs is None:
            acs = default_num_acs(mask.pattern, min(H, W) if two_d else W)
        elif two_d:
            acs = (int(acs), int(acs))
        # GRO's seed None is the paper's frame 0; the random patterns need a seed to be reproducible
        seed = mask.seed if (mask.seed is not None or mask.pattern == "gro") else 0
        try:
            retro = make_mask(mask.pattern, (H, W), mask.acceleration, num_acs=acs, seed=seed)
        except ValueError as exc:
            raise ValueError(f"--mask {mask.pattern} at R={mask.acceleration:g} on {H} x {W} k-space: {exc}") from None
        if two_d:
            acs2d = tuple(acs)
        mask_info = {"source": "option", "pattern": mask.pattern, "acceleration": acceleration_of(retro, (H, W)),
                     "requested_acceleration": float(mask.acceleration),
                     "num_acs": list(acs) if isinstance(acs, tuple) else int(acs), "seed": seed}
    samples, refs = [], []
    ref_ok = True
    ref_source = None
    mask_problems = []  # (slice, description): one warning for the file, not one per slice
    sources, Rs = set(), []
    fully = True
    for i in idx:
        k = vol.read_slice(i)  # (C, H, W)
        if not bool(torch.isfinite(torch.view_as_real(k)).all()):
            raise ValueError(f"{path}: kspace slice {i} contains NaN or Inf")
        sampled = (k != 0).any(0)
        if not bool(sampled.any()):
            raise ValueError(f"{path}: slice {i} has no sampled k-space (all zeros)")
        derived = sampled[0].to(torch.float32) if bool((sampled == sampled[:1]).all()) else sampled.to(torch.float32)
        acquired = vol.read_mask(i) if hasattr(vol, "read_mask") else None
        if acquired is not None:
            derived = acquired  # the acquired lines (ISMRMRD), exact even where the data are 0
        R_file = acceleration_of(derived, (H, W))
        slice_full = R_file < FULLY_SAMPLED_R and (file_mask is None or bool((np.asarray(file_mask) != 0).all()))
        fully = fully and slice_full
        k_full = None
        if retro is not None:
            if not slice_full:
                raise ValueError(f"{path}: --mask needs fully sampled k-space, but slice {i} is already undersampled "
                                 f"(R={R_file:.2f}{', mask dataset' if file_mask is not None else ''}); "
                                 "drop --mask to reconstruct it as it is")
            k_full = k
            k = apply_mask(k, retro)
            m = retro
            sources.add("option")
        else:
            m = derived
            if file_mask is not None:
                m, problem, holds_more = check_file_mask(file_mask, sampled, derived)
                if problem:
                    mask_problems.append((i, problem))
                if holds_more:
                    # a mask stored beside fuller k-space: a retrospective study, undersampled here exactly
                    # as --mask would (normalisation and ESPIRiT then see only the masked data)
                    k_full = k
                    k = apply_mask(k, m)
                sources.add("kspace" if problem else "file-applied" if holds_more else "file")
            else:
                sources.add("kspace" if acquired is None else "acquired")
            Rs.append(acceleration_of(m, (H, W)))
        scale, k = normalise_kspace(k)
        acs = acs2d if (m.ndim == 2 and acs2d is not None and len(acs2d) == 2) else None
        calib = vol.read_calibration(i) if hasattr(vol, "read_calibration") else None
        noise_std = getattr(vol, "noise_std", None)  # known after prewhitening (ISMRMRD noise scans)
        smp = MRISample(kspace=k, img_shape=(H, W), mask=m, scale=scale, num_acs=acs,
                        noise_sigma=noise_std / scale if noise_std else 0.0,
                        calib_kspace=None if calib is None else calib / scale,
                        metadata={"fname": Path(path).name, "slice": i})
        if file_maps is not None:  # explicit maps, whitened like the data
            smp._maps_espirit = maps_tensor(file_maps, i, getattr(vol, "whitening", None))
            smp.maps_source = "file"
        if true_maps is not None:
            smp.maps_true = maps_tensor(true_maps, i)
        samples.append(smp)
        ref = vol.read_target(i)
        if ref is None and k_full is not None:
            # fastMRI's own definition of the target: RSS of the fully sampled coil images, cropped
            ref = crop_to(rss(ifft2c(k_full.to(torch.complex128)), dim=-3), geometry.matrix).to(torch.float32)
            ref_source = "rss of the fully sampled k-space"
        elif ref is not None:
            ref_source = "reconstruction_rss" if vol.has_rss else "reconstruction_esc"
        if ref is not None and ref_ok:
            if not bool(torch.isfinite(ref).all()):
                # The reference is only for the metrics: keep the reconstruction, skip the scores.
                warnings.warn(f"{path}: the reference image of slice {i} contains NaN or Inf; "
                              "metrics are skipped, the reconstruction is written", stacklevel=2)
                ref_ok = False
            else:
                refs.append((ref.double() / scale).to(torch.float32))
    refs = refs if ref_ok else []
    if mask_problems:
        which = ", ".join(str(i) for i, _ in mask_problems[:8]) + (", ..." if len(mask_problems) > 8 else "")
        warnings.warn(f"{path}: dataset 'mask' disagrees with the sampled k-space of slice(s) {which} "
                      f"(slice {mask_problems[0][0]}: {mask_problems[0][1]}); using the mask derived from the "
                      "nonzero k-space there", stacklevel=2)
    reference = torch.stack(refs) if len(refs) == len(idx) and refs else None
    if reference is not None:
        # A reference larger than the header's recon matrix (a hand-made header) must still be
        # comparable: the crop keeps at least the reference's size (never more than the k-space).
        h, w = geometry.matrix
        rh, rw = reference.shape[-2:]
        if rh > h or rw > w:
            geometry = replace(geometry, matrix=(min(max(h, rh), H), min(max(w, rw), W)))
    from ..physics.masks import pattern_name

    if retro is not None:
        pattern = pattern_name(mask.pattern, round(float(mask.acceleration), 2))
    else:
        source = sources.pop() if len(sources) == 1 else "file+kspace" if "kspace" in sources else "file-applied"
        R_measured = float(np.mean(Rs))
        mask_info = {"source": source, "acceleration": R_measured}
        pattern = pattern_key(attrs, R_measured, fully)
    # 1-D: phase-encode lines (realisable in 2-D imaging); 2-D: a pattern over both axes of the slice
    mask_info["dims"] = 1 if all(s.mask.ndim == 1 or bool((s.mask == s.mask[:1]).all()) for s in samples) else 2
    return ReconInput(samples, reference, pattern, idx, geometry, mask_info,
                   ref_source if reference is not None else None, fully, input_info(vol, idx, maps))


def pattern_key(attrs, R_measured: float, fully: bool) -> str:
    """The ``metrics.json`` pattern key of a file read as it is: ``full-r1`` for fully sampled k-space, the
    simulator's ``bayesmri_pattern``/``bayesmri_acceleration`` attributes where they agree with the measured
    acceleration (within 10 %), else ``input-r<R>`` with the measured R (a fastMRI file, or attributes that
    no longer describe the data, e.g. a fully sampled simulation undersampled by hand).

    Parameters
    ----------
    attrs : the file's attributes (dict-like). R_measured : the acceleration of the masks read.
    fully : the k-space is fully sampled.
    """
    from ..physics.masks import pattern_name

    if fully:
        return "full-r1"
    pattern, R = attrs.get("bayesmri_pattern"), attrs.get("bayesmri_acceleration")
    try:
        R = float(R) if R is not None else None
    except (TypeError, ValueError):
        R = None
    if pattern is not None and R is not None and abs(R - R_measured) <= 0.1 * R_measured:
        return pattern_name(str(pattern), round(R, 2))
    return pattern_name("input", round(R_measured, 2))


def check_file_mask(file_mask: np.ndarray, sampled: torch.Tensor, derived: torch.Tensor):
    """``(mask, problem, holds_more)``: the file's ``mask`` dataset if it agrees with the nonzero k-space,
    else ``(derived, description, False)``.

    A mask that marks unsampled locations as measured makes the likelihood pull them to zero (CG-SENSE
    lost 6 dB in a probe): the data decide and the caller warns. Measured-but-zero locations (the zero
    padding of fastMRI k-space) are allowed up to 1/8 of the mask. A mask whose every location holds data
    but which leaves measured locations out (``holds_more``: a mask added to fully sampled k-space) is a
    retrospective mask: the caller applies it to the k-space, so the result equals that of the same data
    zeroed off the mask (before, the unmasked k-space reached the normalisation and the ESPIRiT
    calibration: SENSE 30.43 vs 31.07 dB in issue 24).

    Parameters
    ----------
    file_mask : the ``mask`` dataset, any shape and dtype (checked: ``(W,)`` or ``(H, W)``, numeric).
    sampled : ``(H, W)`` bool, nonzero k-space of the slice. derived : the mask derived from the data,
        float32 ``(W,)`` or ``(H, W)``.

    Returns
    -------
    mask : float32 0/1 tensor. problem : str or None. holds_more : bool.
    """
    from ..physics.masks import acceleration_of

    H, W = sampled.shape
    fm = np.asarray(file_mask)
    kind = f"derived mask R={acceleration_of(derived, (H, W)):.2f}, {'1-D' if derived.ndim == 1 else '2-D'}"
    if fm.shape not in ((W,), (H, W)) or fm.dtype.kind not in "biuf":
        return (derived, f"mask of shape {fm.shape} and dtype {fm.dtype}, expected ({W},) or ({H}, {W}); {kind}",
                False)
    m = (torch.from_numpy(fm.astype(np.float32)) != 0).to(torch.float32)
    m2 = (m.reshape(1, W) if m.ndim == 1 else m).expand(H, W) > 0
    data_off_mask = int((sampled & ~m2).sum())
    mask_no_data = int((m2 & ~sampled).sum())
    if mask_no_data <= int(m2.sum()) // 8 and int(m2.sum()) > 0:
        return m, None, data_off_mask > 0
    return derived, (f"{data_off_mask} measured points outside the file mask, {mask_no_data} of its points "
                     f"without data, file mask R={acceleration_of(m, (H, W)):.2f}; {kind}"), False


def normalise_kspace(k: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``(scale, k / scale)`` with ``scale`` the 95th percentile of the zero-filled RSS (GUIDE section 1).

    Computed after dividing by the peak magnitude in double precision: squares of k-space stored at
    1e-25 underflow (and at 1e36 overflow) in float32, which made the percentile 0 or inf and the
    image blank. Any finite, nonzero scale of the data now gives the same normalised slice.

    Parameters
    ----------
    k : ``(C, H, W)`` complex k-space (zeros off-mask).

    Returns
    -------
    scale : float. k_normalised : ``(C, H, W)`` complex64.
    """
    from ..physics.intensity import intensity_scale
    from ..physics.coils import rss
    from ..physics.fft import ifft2c

    kd = k.to(torch.complex128)
    peak = float(kd.abs().max())
    kd = kd / peak
    rel = intensity_scale(rss(ifft2c(kd), dim=-3), 0.95)
    return peak * rel, (kd / rel).to(torch.complex64)
