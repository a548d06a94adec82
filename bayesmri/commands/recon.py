"""``bayesmri recon``: reconstruct (or sample the posterior of) a k-space file.

Inputs (``docs/inputs.md``; :func:`bayesmri.data.inputs.open_volume`): fastMRI-layout ``.h5``, ISMRMRD raw
data ``.h5`` (prewhitened, readout oversampling removed, one image per slice/contrast/phase/repetition/set)
and BART ``.cfl``. ``--maps FILE`` gives explicit coil maps (default ESPIRiT; maps of 1 for one coil).

The mask is the file's ``mask`` dataset, else the nonzero k-space; with ``--mask PATTERN`` (a
retrospective study) a fully sampled file is undersampled on reading by
:func:`bayesmri.physics.masks.apply_mask`, the function the simulator uses, and scored against its
fully sampled reference. One line says where the mask came from; a fully sampled file run without
``--mask`` gets a warning (it runs at R=1). ``--slices`` picks slices.

Writes into ``--out`` (default ``<input stem>_<method>/``), at the header's recon matrix (the image is
cropped as fastMRI crops, which removes readout oversampling; :func:`bayesmri.data.fastmri.image_geometry`):

- ``<method>_mean.nii.gz`` (magnitude stack ``(H, W, S)``, voxel size from the header's FOV),
  ``<method>_mean.png`` (up to 8 slices at full resolution with a colour bar),
- ``<method>_std.nii.gz`` / ``<method>_std.png`` (colour map and bar) for methods that draw several samples,
- ``<method>.npz`` (or ``.h5`` with ``--array-format h5``; with ``cfl`` BART pairs ``<method>_mean/_std/_samples``
  in the input's units): complex ``mean``, ``std``, ``samples``
  (``(P, S, H, W)``, up to ``--keep-samples``), ``nfe``, ``wall_time``, ``slices``, ``voxel_size_mm``,
- ``metrics.json`` when a reference is known (schema: ``docs/metrics_schema.md``): slice averages,
  per-slice values, calibration numbers of a sampler, mask, geometry, settings and versions.

All files are written into a staging folder that is moved into place only when everything has
succeeded: a failed run leaves no output behind.
"""
from __future__ import annotations

import math
import re
import signal
import sys
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .._validate import check_seed, check_threads, resolve_device
from ..methods.run import (calibration_numbers, center_crop, evaluate_per_slice, n_samples_of, run_method,
                           schema_row)

__all__ = ["add_arguments", "run", "check_input_file", "resolve_device", "parse_slices", "load_h5",
           "DEFAULT_SAMPLES", "compress_samples"]

#: Samples per slice of a sampling method when --samples is not given: a std map and a P-gain need several.
DEFAULT_SAMPLES = 8

#: A file whose k-space has an acceleration below this is fully sampled (fastMRI pads the phase-encoding
#: axis with zero lines: a fully sampled knee file has R of about 1.1).
FULLY_SAMPLED_R = 1.25


def _mask_patterns():
    from ..physics.masks import MASK_PATTERNS

    return list(MASK_PATTERNS)


def add_arguments(parser) -> None:
    from ..methods import available_methods

    names = available_methods()
    parser.add_argument("input", type=Path, nargs="*",
                        help="k-space file: fastMRI-layout .h5 (e.g. written by `bayesmri "
                        "simulate`), ISMRMRD raw data .h5 or a BART .cfl/.hdr pair (docs/inputs.md); without --mask "
                        "the mask is the file's 'mask' dataset (applied to the k-space where the file holds data "
                        "outside it), the acquired lines (ISMRMRD), else the nonzero k-space; a line 'mask: ...' "
                        "says which. A folder, a glob or several files reconstruct a dataset into --out "
                        "(docs/datasets.md)")
    parser.add_argument(
        "--method", default="zf", metavar="NAME",
        help=f"reconstruction method, one of: {', '.join(names)} (default: zf)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <input stem>_<method>)")
    parser.add_argument("--samples", type=int, default=None,
                        help=f"posterior samples per slice (default: {DEFAULT_SAMPLES} for the sampling methods, "
                             "enough for a std map and the calibration numbers; 1 for deterministic methods)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--array-format", choices=("npz", "h5", "cfl"), default="npz",
        help="format of the array file(s): npz, h5, or cfl (BART .cfl/.hdr pairs <method>_mean/_std/_samples) "
             "(default: npz)")
    parser.add_argument("--maps", default="espirit", metavar="SOURCE",
                        help="coil maps: espirit (estimated from the calibration lines; maps of 1 for single-coil "
                             "data), true (the simulation's, stored by `bayesmri simulate`), joint (estimated with "
                             "the image by methods that do: pogmdm-joint) or a file of explicit maps: BART .cfl, .npy "
                             "(C, H, W) or (S, C, H, W), HDF5 FILE.h5[:DATASET] (default: espirit)")
    parser.add_argument("--keep-samples", type=int, default=8,
                        help="samples stored in the array file; only these are held in memory (default: 8)")
    parser.add_argument("--chunk", type=int, default=None, metavar="N",
                        help="run at most N chains at once to bound memory (~0.35 GB per chain at 320x320, 16 "
                             "coils); the summaries pool every chunk (default: all --samples at once)")
    parser.add_argument("--virtual-coils", type=_virtual_coils_arg, default=None, metavar="N",
                        help="SVD coil compression to N virtual coils (or a fraction such as 0.99: the fewest "
                             "keeping that share of the k-space energy) before the coil maps; for every method "
                             "(default: off, all coils)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="weights of a learned method: .safetensors/.json pair or their stem "
                             "(default: the method's shipped weights)")
    parser.add_argument("--prior", default=None, metavar="NAME",
                        help="score prior of a score-based sampler (pula, ula-annealed, score-mri, pogmdm-joint): score_native, "
                             "score_small64, pogmdm, pogmdm_mri, pogmdm_native or a .safetensors path (default: the "
                             "shipped score weights for the image size); --list shows them")
    parser.add_argument("--opt", action="append", default=None, metavar="KEY=VALUE",
                        help="a method option, e.g. --opt n_levels=40 --opt step=0.5 (repeatable; values are "
                             "int/float/true/false/none or text); --list shows each method's options and defaults")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="a named option set of the method, e.g. 'calibrated' (pula, score-mri: the settings that "
                             "pass simulation-based calibration, docs/uncertainty.md) or 'demo'; --opt overrides its keys; "
                             "--list shows each method's presets")
    parser.add_argument("--list", action="store_true",
                        help="list the methods, the score priors and each method's options with defaults, and exit")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, at most the number of cores (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    study = parser.add_argument_group(
        "retrospective study",
        "undersample fully sampled k-space on reading (the reference then comes from the fully sampled data: "
        "the file's reconstruction_rss/_esc, else the RSS of its k-space); one mask for every slice, as fastMRI")
    study.add_argument("--mask", default=None, metavar="PATTERN",
                       help=f"sampling pattern: {', '.join(_mask_patterns())}")
    study.add_argument("--acceleration", type=float, default=None, metavar="R",
                       help="acceleration of --mask (default: 4)")
    study.add_argument("--acs", type=int, default=None, metavar="N",
                       help="central calibration lines (1-D patterns) or N x N block (2-D) of --mask (default: "
                            "max(10, 4%% of the lines) for 1-D, max(12, size/8) for 2-D, as `bayesmri simulate`)")
    study.add_argument("--mask-seed", type=int, default=None, metavar="S",
                       help="seed of --mask (default: GRO's frame 0 of Wen et al.; 0 for the random patterns)")
    parser.add_argument("--slices", default=None, metavar="LIST",
                        help="slices to reconstruct, e.g. 0,3,5-7 (default: all)")
    parser.add_argument("--partial", action="store_true",
                        help="on Ctrl-C/SIGTERM, write the slices finished so far as <method>.partial_* "
                             "(metrics marked partial); without it an interrupted run writes nothing")


# --------------------------------------------------------------------------------------------------
# helpers shared with `demo`
# --------------------------------------------------------------------------------------------------
def _virtual_coils_arg(text: str):
    """``--virtual-coils``: an int >= 1 (coils) or a fraction in (0, 1) (energy kept)."""
    import argparse

    try:
        v = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of coils or an energy fraction, got {text!r}") from None
    if isinstance(v, int) and v < 1 or isinstance(v, float) and not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 (virtual coils) or a fraction in (0, 1), got {text}")
    return v


def compress_samples(samples, virtual_coils):
    """SVD coil compression of every slice (:meth:`MRISample.compress_coils`); ``(samples, summary)``.

    ``summary`` (JSON types, for ``metrics.json`` settings): ``method``, ``coils``, ``virtual_coils`` and
    ``energy_kept`` (per slice), ``calib``. ``virtual_coils=None`` returns the samples and ``None``."""
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


def check_input_file(path: Path) -> Path:
    """Refuse a missing file, or one that is neither HDF5 (fastMRI, ISMRMRD) nor a BART cfl pair, before any
    work starts (:func:`bayesmri.data.inputs.detect_format`)."""
    from ..data.inputs import detect_format

    detect_format(path)
    return Path(path)


@dataclass
class RetrospectiveMask:
    """What ``recon --mask`` asks for: ``make_mask(pattern, (H, W), acceleration, num_acs, seed)`` applied
    to every slice of a fully sampled file (one mask per volume, as fastMRI's retrospective masks)."""

    pattern: str
    acceleration: float = 4.0
    num_acs: object = None
    seed: int | None = None


@dataclass
class H5Input:
    """A fastMRI-layout file read for ``recon`` (:func:`load_h5`).

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


def load_h5_samples(path: Path):
    """``(samples, reference, pattern)`` of every slice of ``path`` as given (no retrospective mask);
    see :func:`load_h5`."""
    d = load_h5(path)
    return d.samples, d.reference, d.pattern


def input_info(vol, idx: list[int], maps=None) -> dict:
    """JSON description of an input volume for ``metrics.json`` settings and the printed line."""
    info = {"format": getattr(vol, "format", "fastmri"), "maps": "espirit" if maps in (None, "espirit") else str(maps)}
    for key in ("summary", "noise", "labels", "num_acs"):
        v = getattr(vol, key, None)
        if v:
            info[key] = [v[i] for i in idx] if key in ("labels", "num_acs") else v
    extra = getattr(vol, "extra_dims", None)
    if extra is not None and list(idx) == list(range(vol.num_slices)):
        info["bart_dims"] = [int(d) for d in extra]  # cfl outputs restore the input's dims
    return info


def load_h5(path: Path, *, slices: list[int] | None = None, mask: RetrospectiveMask | None = None,
            maps: str | None = None) -> H5Input:
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

    Returns
    -------
    H5Input
    """
    import h5py

    from ..data import MRISample
    from ..data.fastmri import FastMRIVolume, center_crop as crop_to, image_geometry, max_slice_bytes
    from ..physics.coils import rss
    from ..physics.fft import ifft2c
    from ..physics.masks import acceleration_of, apply_mask, make_mask

    from ..data.inputs import maps_tensor, open_volume, read_coil_maps

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
        from ..data.simulate import TWO_D_PATTERNS, default_num_acs

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
                m, problem, holds_more = _check_file_mask(file_mask, sampled, derived)
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
        scale, k = _normalise(k)
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
        pattern = _pattern_key(attrs, R_measured, fully)
    # 1-D: phase-encode lines (realisable in 2-D imaging); 2-D: a pattern over both axes of the slice
    mask_info["dims"] = 1 if all(s.mask.ndim == 1 or bool((s.mask == s.mask[:1]).all()) for s in samples) else 2
    return H5Input(samples, reference, pattern, idx, geometry, mask_info,
                   ref_source if reference is not None else None, fully, input_info(vol, idx, maps))


def _pattern_key(attrs, R_measured: float, fully: bool) -> str:
    """The ``metrics.json`` pattern key of a file read as it is: ``full-r1`` for fully sampled k-space, the
    simulator's ``bayesmri_pattern``/``bayesmri_acceleration`` attributes where they agree with the measured
    acceleration (within 10 %), else ``input-r<R>`` with the measured R (a fastMRI file, or attributes that
    no longer describe the data, e.g. a fully sampled simulation undersampled by hand)."""
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


def _check_file_mask(file_mask: np.ndarray, sampled: torch.Tensor, derived: torch.Tensor):
    """``(mask, problem, holds_more)``: the file's ``mask`` dataset if it agrees with the nonzero k-space,
    else ``(derived, description, False)``.

    A mask that marks unsampled locations as measured makes the likelihood pull them to zero (CG-SENSE
    lost 6 dB in a probe): the data decide and the caller warns. Measured-but-zero locations (the zero
    padding of fastMRI k-space) are allowed up to 1/8 of the mask. A mask whose every location holds data
    but which leaves measured locations out (``holds_more``: a mask added to fully sampled k-space) is a
    retrospective mask: the caller applies it to the k-space, so the result equals that of the same data
    zeroed off the mask (before, the unmasked k-space reached the normalisation and the ESPIRiT
    calibration: SENSE 30.43 vs 31.07 dB in issue 24).
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


def _normalise(k: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``(scale, k / scale)`` with ``scale`` the 95th percentile of the zero-filled RSS (GUIDE section 1).

    Computed after dividing by the peak magnitude in double precision: squares of k-space stored at
    1e-25 underflow (and at 1e36 overflow) in float32, which made the percentile 0 or inf and the
    image blank. Any finite, nonzero scale of the data now gives the same normalised slice.
    """
    from ..physics.intensity import intensity_scale
    from ..physics.coils import rss
    from ..physics.fft import ifft2c

    kd = k.to(torch.complex128)
    peak = float(kd.abs().max())
    kd = kd / peak
    rel = intensity_scale(rss(ifft2c(kd), dim=-3), 0.95)
    return peak * rel, (kd / rel).to(torch.complex64)


#: Upper end of the std PNG's colour scale, in the units ``recon`` writes (each slice divided by the 95th
#: percentile of its zero-filled magnitude): one scale for every method and run on any data, so std PNGs
#: can be compared side by side (measured std maps: 0.005 collapsed cINN to 0.18 annealed ULA). 0.05 keeps
#: a calibrated sampler's std visible (pULA at 256 px: 0.01-0.03 at edges; at 0.2 the map was black);
#: larger values saturate, and the NIfTI keeps them.
STD_PNG_VMAX = 0.05


def write_result(stage: Path, name: str, res, *, array_format: str = "npz", keep_samples: int = 8,
                 voxel_size=(1, 1, 1), slices=None, std_vmax: float | None = STD_PNG_VMAX, bart_dims=None,
                 scales=None):
    """Write the image files of one method's result into ``stage``; return the written paths.

    NIfTI stacks carry ``voxel_size`` (mm, from the file's header: :func:`bayesmri.data.fastmri.image_geometry`).
    PNGs show up to 8 slices at full resolution with a colour bar; ``slices`` are their indices in the
    input file (titles). The std PNG uses a colour map on the range ``[0, std_vmax]``, by default
    :data:`STD_PNG_VMAX` for every method, so that std maps of different methods and runs can be compared
    (None: the largest std of this result). ``array_format="cfl"`` writes BART pairs ``<name>_mean``, ``_std``,
    ``_samples`` (:func:`bayesmri.bart.stack_to_bart`; ``bart_dims``: the extra dims of a BART input) in the
    units of the input k-space: each slice times its normalisation ``scales[i]`` (``MRISample.scale``), so that
    they compare with BART's own results on the same data (the other files keep the normalised units).
    """
    from .. import io

    mean = res.mean.reshape(-1, *res.mean.shape[-2:])
    idx = list(slices) if slices is not None else list(range(mean.shape[0]))
    files = [
        io.save_nifti(stage / f"{name}_mean.nii.gz", mean, magnitude=True, voxel_size=voxel_size),
        _save_stack_png(stage / f"{name}_mean.png", mean, f"{name}: posterior mean" if n_samples_of(res) > 1
                        else f"{name}: reconstruction", idx, label="magnitude"),
    ]
    std = res.std.reshape(-1, *res.std.shape[-2:]) if res.std is not None else None
    if std is not None and n_samples_of(res) > 1:
        files.append(io.save_nifti(stage / f"{name}_std.nii.gz", std, voxel_size=voxel_size))
        files.append(_save_stack_png(stage / f"{name}_std.png", std,
                                     f"{name}: posterior std of {n_samples_of(res)} samples"
                                     + (" (one scale for every method)" if std_vmax is not None else ""), idx,
                                     cmap="magma", vmax=std_vmax, label="std"))
    arrays = {
        "mean": mean,
        "std": std,
        "samples": res.samples[:keep_samples],
        "nfe": np.int64(res.nfe),
        "wall_time": np.float64(res.wall_time),
        "slices": np.asarray(idx, dtype=np.int64),
        "voxel_size_mm": np.asarray(voxel_size, dtype=np.float64),
    }
    if array_format == "cfl":
        from ..bart import stack_to_bart, writecfl

        sc = np.ones(mean.shape[0]) if scales is None else np.asarray(scales, dtype=np.float64)[: mean.shape[0]]
        for key, smp in (("mean", False), ("std", False), ("samples", True)):
            if arrays[key] is not None and arrays[key].numel():
                a = io.to_numpy(arrays[key]) * sc.reshape(-1, 1, 1)  # raw units of the input
                writecfl(stage / f"{name}_{key}", stack_to_bart(a, bart_dims, samples=smp))
                files += [stage / f"{name}_{key}.cfl", stage / f"{name}_{key}.hdr"]
    elif array_format == "h5":
        files.append(io.save_h5(stage / f"{name}.h5", arrays, {"method": name}))
    else:
        files.append(io.save_npz(stage / f"{name}.npz", **arrays))
    return files


def _save_stack_png(path, stack, title, slices, cmap="gray", vmax=None, label=None, max_slices=8):
    from .. import io

    n = min(stack.shape[0], max_slices)
    imgs = [stack[i].abs() if stack.is_complex() else stack[i] for i in range(n)]
    if vmax is None:
        vmax = float(max(im.max() for im in imgs))
    titles = [f"slice {slices[i]}" for i in range(n)]
    more = f" (first {n} of {stack.shape[0]} slices; all in the NIfTI)" if stack.shape[0] > n else ""
    return io.save_image_grid_native(path, imgs, titles, vmin=0.0, vmax=vmax or None, ncols=min(n, 4), cmap=cmap,
                                     label=label, suptitle=title + more)


def to_recon_grid(res, matrix):
    """``res`` with mean, std and samples centre-cropped in image space to ``matrix`` ``(h, w)``: the
    readout oversampling (and phase padding) removed as fastMRI does. Returns ``res`` if nothing to crop."""
    from ..data.fastmri import center_crop as crop_to

    if tuple(res.mean.shape[-2:]) == tuple(matrix):
        return res
    res.mean = crop_to(res.mean, matrix)
    res.std = crop_to(res.std, matrix) if res.std is not None else None
    res.samples = crop_to(res.samples, matrix) if res.samples is not None else None
    return res


def metrics_row(res, reference: torch.Tensor, data: H5Input | None = None, settings: dict | None = None) -> dict:
    """The ``metrics.json`` entry of a ``recon`` run: :func:`schema_row` plus the per-slice values, the
    calibration numbers of a sampler, the mask, the settings and the versions (``docs/metrics_schema.md``)."""
    import platform

    from .. import __version__

    row = schema_row(res, reference)
    mean = center_crop(res.mean.reshape(reference.shape[0], *res.mean.shape[-2:]), tuple(reference.shape[-2:]))
    row["per_slice"] = evaluate_per_slice(mean, reference)
    if data is not None:
        row["per_slice"]["slice"] = list(data.slices[: reference.shape[0]])
    cal = calibration_numbers(res, reference) if n_samples_of(res) > 1 else None
    if cal is not None:
        row["calibration"] = cal
    if data is not None:
        row["mask"] = dict(data.mask_info)
        row["reference"] = data.reference_source
        g = data.geometry
        row["geometry"] = {"matrix": list(g.matrix), "voxel_mm": list(g.voxel_mm), "source": g.source}
        if getattr(g, "orientation", None):
            row["geometry"]["orientation"] = g.orientation
    if settings is not None:
        row["settings"] = settings
    row["versions"] = {"bayesmri": __version__, "torch": torch.__version__, "python": platform.python_version()}
    return row


# --------------------------------------------------------------------------------------------------
def method_files(name: str) -> list[str]:
    """Every file name :func:`write_result` can write for method ``name`` (stale ones are removed)."""
    return [f"{name}_mean.nii.gz", f"{name}_mean.png", f"{name}_std.nii.gz", f"{name}_std.png",
            f"{name}.npz", f"{name}.h5"] + [f"{name}_{a}.{e}" for a in ("mean", "std", "samples") for e in ("cfl", "hdr")]


#: Bytes a sampler holds per chain, in units of one coil k-space ``C*H*W`` complex64: measured for pULA
#: at 320x320 with 16 coils (issue 22: ~0.35 GB per sample = 27 x 13.1 MB).
CHAIN_BYTES_FACTOR = 27


def available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _warn_chain_memory(P: int, chunk: int | None, C: int, H: int, W: int) -> None:
    # An estimate, so a warning when it exceeds the memory available now (other programs may free
    # some); an error only when it exceeds twice the machine's whole memory, which no run survives.
    from ..data.fastmri import max_slice_bytes

    per_chain = CHAIN_BYTES_FACTOR * C * H * W * 8
    at_once = min(P, chunk or P)
    need = at_once * per_chain
    phys = 4 * max_slice_bytes()  # the physical memory (or BAYESMRI_MAX_SLICE_BYTES x 4)
    avail = available_memory()
    limit = avail if avail is not None else phys
    fit = max(1, int(limit // per_chain))
    what = f"{at_once} chains at once need about {need / 2**30:.1f} GiB ({C} coils, {H}x{W})"
    if need > 2 * phys:
        raise ValueError(f"{what}, more than twice this machine's {phys / 2**30:.1f} GiB: use --chunk {fit}")
    if avail is not None and need > avail:
        warnings.warn(f"{what}; {avail / 2**30:.1f} GiB available: use --chunk {fit}", stacklevel=3)


def output_bytes(shape: tuple[int, int, int], n_samples: int, keep_samples: int) -> int:
    """Upper bound of the bytes :func:`write_result` writes for ``S`` slices of ``H x W`` (uncompressed)."""
    S, H, W = shape
    per_pixel = 4 + 4 + 8 + 4 + 8 * min(int(keep_samples), int(n_samples))  # niftis, mean, std, samples
    return S * H * W * per_pixel + (4 << 20)  # PNGs and headers


def _retrospective_mask(args) -> RetrospectiveMask | None:
    """The ``--mask`` options as a :class:`RetrospectiveMask` (checked), or None without ``--mask``."""
    extra = [o for o, v in (("--acceleration", args.acceleration), ("--acs", args.acs),
                            ("--mask-seed", args.mask_seed)) if v is not None]
    if args.mask is None:
        if extra:
            raise ValueError(f"{', '.join(extra)} only apply with --mask PATTERN (a retrospective study)")
        return None
    if args.mask not in _mask_patterns():
        raise ValueError(f"--mask: unknown sampling pattern {args.mask!r}; available: {', '.join(_mask_patterns())}")
    R = 4.0 if args.acceleration is None else float(args.acceleration)
    if not (math.isfinite(R) and R >= 1):
        raise ValueError(f"--acceleration must be a finite number >= 1, got {args.acceleration}")
    if args.acs is not None and args.acs < 1:
        raise ValueError(f"--acs must be >= 1, got {args.acs}")
    # GRO turns the seed into a float frame shift: 63-bit seeds lose their low bits (simulate's limit too)
    if args.mask_seed is not None and not 0 <= args.mask_seed < 2**31 - 1:
        raise ValueError(f"--mask-seed must be between 0 and 2**31 - 2, got {args.mask_seed}")
    return RetrospectiveMask(args.mask, R, args.acs, args.mask_seed)


def method_options(args) -> dict | None:
    """The method's keyword options from ``--preset``, ``--weights``, ``--prior`` and ``--opt`` (checked, :mod:`bayesmri.options`)."""
    from ..options import recon_options

    return recon_options(args.method, weights=getattr(args, "weights", None), prior=getattr(args, "prior", None),
                         opts=getattr(args, "opt", None), preset=getattr(args, "preset", None))


def map_source(args) -> str:
    """The method's coil-map source for ``--maps``: ``espirit``, ``true`` or ``joint`` as given, ``espirit`` for a
    file (its maps take ESPIRiT's place); a source the method does not take is a one-line error."""
    from ..methods import check_maps
    from ..methods.registry import MAP_SOURCES

    maps = getattr(args, "maps", None) or "espirit"
    src = maps if maps in MAP_SOURCES else "espirit"
    check_maps(args.method, src)
    return src


def run(args) -> int:
    from ..methods import method_info

    if getattr(args, "list", False):
        from ..options import format_method_list

        print(format_method_list())
        return 0
    if not args.input:
        raise ValueError("an input file is required (or --list to list the methods and their options)")
    info = method_info(args.method)  # unknown names fail here, before any file is touched
    method_options(args)  # unknown options, values of the wrong type, a missing prior: before any file is read
    if args.samples is None:
        args.samples = DEFAULT_SAMPLES if info.stochastic else 1
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.keep_samples < 0:
        raise ValueError(f"--keep-samples must be >= 0, got {args.keep_samples}")
    check_threads(args.threads)
    check_seed(args.seed)
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    _retrospective_mask(args)
    map_source(args)
    if args.slices is not None:
        parse_slices(args.slices, 10**9)  # the syntax here; the range once the file is open
    device = resolve_device(args.device)
    from .recon_dataset import is_dataset_input, run_dataset

    if is_dataset_input(args.input):  # a folder, a glob or several files (docs/datasets.md)
        path = None
    else:
        args.input = args.input[0] if isinstance(args.input, list) else args.input
        path = check_input_file(args.input)
    if getattr(args, "weights", None) is not None:
        from ..priors.loading import resolve_weights

        if not info.stochastic:
            raise ValueError(f"--weights is for the learned methods; {args.method!r} has no weights")
        resolve_weights(args.weights)  # a missing pair fails here; a corrupt one when the method loads it
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, path, device) if path is not None else run_dataset(args, device)
    finally:
        torch.set_num_threads(previous)


def _settings(args, path: Path, data: H5Input) -> dict:
    # what was asked for, so a metrics.json entry can be reproduced (JSON types only)
    return {"input": str(path), "method": args.method, "samples": int(args.samples), "seed": int(args.seed),
            "keep_samples": int(args.keep_samples), "chunk": args.chunk,
            "weights": None if getattr(args, "weights", None) is None else str(args.weights),
            "method_options": method_options(args), "maps": getattr(args, "maps", None) or "espirit", "device": str(args.device), "threads": int(args.threads), "slices": list(data.slices),
            "mask": args.mask, "acceleration": args.acceleration, "acs": args.acs, "mask_seed": args.mask_seed,
            "virtual_coils": getattr(args, "virtual_coils", None), "input_info": data.info}


def write_partial(out: Path, args, res, data: H5Input, *, n_slices: int, settings: dict | None = None) -> str:
    """Write the slices an interrupted run finished as ``<method>.partial_*`` (atomically); return that name.

    A name no method can have (method names have no ``.``), so a partial result never replaces a
    complete one; its ``metrics.json`` entry says ``"partial": true`` and how many slices it holds.
    """
    from .. import io

    name = f"{args.method}.partial"
    k = int(res.mean.shape[0])
    res = to_recon_grid(res, data.geometry.matrix)
    with io.atomic_dir(out, replace=method_files(name), merge_json=["metrics.json"]) as stage:
        write_result(stage, name, res, array_format=args.array_format, keep_samples=args.keep_samples,
                     voxel_size=data.geometry.voxel_mm, slices=data.slices[:k], bart_dims=data.info.get("bart_dims"),
                     scales=[s.scale for s in data.samples[:k]])
        row = None
        if data.reference is not None:
            row = metrics_row(res, data.reference[:k], data, settings)
            row.update(partial=True, n_slices_total=int(n_slices))
        io.save_json(stage / "metrics.json", {name: {data.pattern: row} if row is not None else None})
    return name


def _run(args, path: Path, device) -> int:
    from .. import io
    from ..methods import method_info

    out = args.out if args.out is not None else path.with_name(f"{path.stem}_{args.method}")
    slices = None
    if args.slices is not None:
        from ..data.inputs import open_volume

        slices = parse_slices(args.slices, open_volume(path).num_slices, path)
    data = load_h5(path, slices=slices, mask=_retrospective_mask(args), maps=getattr(args, "maps", None))
    samples, reference, pattern = data.samples, data.reference, data.pattern
    try:  # before the coil maps: every method then sees (and estimates maps from) the virtual coils
        samples, compression = compress_samples(samples, getattr(args, "virtual_coils", None))
    except ValueError as exc:
        raise ValueError(f"{path}: --virtual-coils: {exc}") from None
    S = len(samples)
    H, W = samples[0].img_shape
    if data.fully_sampled and args.mask is None:
        warnings.warn(f"{path}: the k-space is fully sampled, so this runs at R=1; for a retrospective study "
                      "undersample it with --mask PATTERN --acceleration R", stacklevel=2)
    if data.info.get("summary"):
        print(f"input: {data.info['summary']}")
    print(data.mask_line())
    P = int(args.samples) if method_info(args.method).stochastic else 1
    if reference is not None and (reference.shape[-2] > H or reference.shape[-1] > W):
        # schema_row would find this only after the compute
        raise ValueError(f"{path}: reference of {reference.shape[-2]} x {reference.shape[-1]} is larger than the "
                         f"k-space matrix {H} x {W}")
    # Fail before the compute, not after it: a folder that cannot be written or a full disk.
    io.check_writable(out, need_bytes=output_bytes((S, H, W), P, args.keep_samples))
    if P > 1:
        _warn_chain_memory(P, args.chunk, int(samples[0].kspace.shape[0]), H, W)
    progress = not args.no_progress
    settings = _settings(args, path, data)
    if compression is not None:
        settings["coil_compression"] = compression
        print(f"coil compression: SVD, {compression['coils']} -> {max(compression['virtual_coils'])} virtual "
              f"coils, k-space energy kept {100 * min(compression['energy_kept']):.2f} % (worst slice)")
    geo = data.geometry
    from tqdm.auto import tqdm

    from .. import _interrupt

    # The staging folder exists from here on, so an interrupted or failed run leaves `out` untouched;
    # the commit replaces this method's files (stale ones removed) and merges metrics.json per method.
    # A complete run also retires a partial result of the same method (files and metrics entry).
    replace = method_files(args.method) + method_files(f"{args.method}.partial")
    try:
        with io.atomic_dir(out, replace=replace, merge_json=["metrics.json"]) as stage:
            with tqdm(total=S, desc=f"recon {args.method}", disable=not progress, file=sys.stderr) as bar:
                options = method_options(args)
                try:
                    res = run_method(args.method, samples, n_samples=args.samples, seed=args.seed, device=device,
                                     maps=map_source(args), progress=progress, on_slice=lambda: bar.update(1),
                                     options=options, chunk=args.chunk, keep=args.keep_samples)
                except ValueError as exc:
                    # a problem of the data found by the method (e.g. "k-space centre is not sampled")
                    # must still say which file
                    if str(path) in str(exc):
                        raise
                    raise ValueError(f"{path}: {exc}") from None
            S, P = int(res.mean.shape[0]), n_samples_of(res)
            if "size_policy" in res.diagnostics:  # what a learned flow did with this matrix size
                settings["size_policy"] = res.diagnostics["size_policy"]
            res = to_recon_grid(res, geo.matrix)
            write_result(stage, args.method, res, array_format=args.array_format, keep_samples=args.keep_samples,
                         voxel_size=geo.voxel_mm, slices=data.slices, bart_dims=data.info.get("bart_dims"),
                         scales=[s.scale for s in samples])
            if reference is not None:
                row = metrics_row(res, reference, data, settings)
                io.save_json(stage / "metrics.json", {args.method: {pattern: row}, f"{args.method}.partial": None})
                summary = (f"{args.method} on {path.name} ({S} slices, {P} sample(s)): PSNR {row['psnr']:.2f} dB, "
                           f"SSIM {row['ssim']:.4f}, NMSE {row['nmse']:.4g}, {row['time_per_sample_s']:.3g} s/sample")
            else:
                # no scores for this run: drop this method's entry of an earlier run (null removes it)
                io.save_json(stage / "metrics.json", {args.method: None, f"{args.method}.partial": None})
                summary = f"{args.method} on {path.name}: {S} slices, {P} sample(s), {res.wall_time:.3g} s (no ground truth)"
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or _interrupt.pending() or signal.SIGINT
        kept = (f"the results were written to {out} before stopping" if getattr(exc, "deferred", False)
                else f"nothing written, {out} left as it was")
        partial = getattr(exc, "partial_result", None)
        if getattr(args, "partial", False) and partial is not None and not getattr(exc, "deferred", False):
            name = write_partial(out, args, partial, data, n_slices=S, settings=settings)
            kept = (f"the first {partial.mean.shape[0]} of {S} slices written to {out} as {name}* "
                    f"(complete results there untouched)")
        raise _interrupt.Interrupted(signum, f"{exc or 'interrupted'}; {kept}") from None
    print(summary)
    print(f"wrote {out}")
    return 0
