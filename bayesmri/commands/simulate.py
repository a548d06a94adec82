"""``bayesmri simulate``: write a fastMRI-layout ``.h5`` of simulated undersampled built-in slices.

Each slice of the built-in set gets a simulated acquisition (:class:`bayesmri.data.SimulatedBrainDataset`:
smooth random phase, birdcage coil maps, complex Gaussian noise at ``--snr`` dB, the chosen mask),
and the file is written by :func:`bayesmri.data.fastmri.write_fastmri_h5` (atomically) with

- ``kspace (slices, coils, H, W)`` complex64 in raw units, zeros off the mask (as fastMRI test files),
- ``reconstruction_rss (slices, H, W)``: the ground-truth magnitude ``|x|`` in the same raw units,
- ``mask``: ``(W,)`` for 1-D patterns, ``(H, W)`` for 2-D ones, and the attribute ``num_low_frequency``,
- ``ismrmrd_header`` and the attributes ``acquisition``, ``max``, ``norm``, plus ``bayesmri_*``
  attributes recording the simulation (pattern, acceleration, SNR, seed, split, slice indices).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# The simulation itself is library code (bayesmri.data.simulate); re-exported for the callers of this module.
from ..data.simulate import TWO_D_PATTERNS, default_num_acs, simulate_builtin, slice_positions  # noqa: F401

__all__ = ["add_arguments", "run", "simulate_builtin", "default_num_acs", "TWO_D_PATTERNS"]


def add_arguments(parser) -> None:
    parser.add_argument("--split", default="test", help="built-in split: train, val, test or ood (default: test)")
    parser.add_argument("--slices", type=int, default=4, help="number of slices, evenly spread (default: 4)")
    parser.add_argument(
        "--pattern", default="gro",
        help="sampling pattern: gro, uniform1d, gaussian1d, gaussian2d, poisson, equispaced, or full (fully "
             "sampled k-space, for retrospective studies with `bayesmri recon --mask`) (default: gro)",
    )
    parser.add_argument("--acceleration", type=float, default=4.0, help="acceleration R (default: 4)")
    parser.add_argument("--coils", type=int, default=8, help="simulated receive coils (default: 8)")
    parser.add_argument("--snr", type=float, default=30.0, help="signal-to-noise ratio in dB (default: 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of phase, noise and masks (default: 0)")
    parser.add_argument("--mask-seed", type=int, default=None, metavar="S",
                        help="one mask for every slice, make_mask(..., seed=S), the mask `bayesmri recon --mask "
                             "PATTERN --mask-seed S` applies to fully sampled data (default: a mask per slice "
                             "derived from --seed)")
    parser.add_argument("--size", type=int, default=128, help="image size H = W (default: 128)")
    parser.add_argument("--out", type=Path, default=Path("simulated.h5"), help="output .h5 (default: simulated.h5)")


def run(args) -> int:
    import torch

    from ..data.fastmri import write_fastmri_h5

    out = Path(args.out)
    if out.suffix != ".h5":
        raise ValueError(f"--out must be a .h5 file, got {str(out)!r}")
    if out.exists() and out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a .h5 file name")
    # argparse's float() accepts inf and nan; neither is an SNR (or an acceleration)
    if not math.isfinite(args.snr):
        raise ValueError(f"--snr must be a finite number of dB, got {args.snr}")
    if not (math.isfinite(args.acceleration) and args.acceleration >= 1):
        raise ValueError(f"--acceleration must be a finite number >= 1, got {args.acceleration}")
    from .._validate import check_seed

    check_seed(args.seed)
    if args.mask_seed is not None and not 0 <= args.mask_seed < 2**31 - 1:
        raise ValueError(f"--mask-seed must be between 0 and 2**31 - 2, got {args.mask_seed}")
    if args.pattern == "full":
        args.acceleration = 1.0
    # bounds that keep one slice's arrays far below a workstation's memory (2048^2 x 128 coils = 4 GiB)
    if not 1 <= args.coils <= 128:
        raise ValueError(f"--coils must be between 1 and 128, got {args.coils}")
    if not 16 <= args.size <= 2048:
        raise ValueError(f"--size must be between 16 and 2048, got {args.size}")
    if args.pattern in TWO_D_PATTERNS:
        # the calibration block alone must not use up the sample budget H*W/R (poisson_disc_mask
        # divides by the remaining budget)
        a = default_num_acs(args.pattern, args.size)
        if a[0] * a[1] >= args.size * args.size / args.acceleration:
            raise ValueError(f"--pattern {args.pattern} at --size {args.size}: its {a[0]}x{a[1]} calibration block "
                             f"already holds the {args.size * args.size / args.acceleration:.0f} samples that "
                             f"R={args.acceleration:g} allows; use a larger --size or a lower --acceleration")
    from .. import io

    io.check_writable(out, folder=False)
    samples = simulate_builtin(
        args.split, args.slices, args.pattern, args.acceleration, args.coils, args.snr, args.seed, args.size,
        mask_seed=args.mask_seed,
    )
    # Raw units (undo the per-slice 95th-percentile normalisation), as a scanner would store them.
    k = torch.stack([s.kspace * s.scale for s in samples])
    ref = torch.stack([s.target.abs() * s.scale for s in samples])
    mask = samples[0].mask
    same_mask = all(torch.equal(s.mask, mask) for s in samples)
    acs = default_num_acs(args.pattern, samples[0].img_shape[0])
    attrs = {
        "bayesmri_pattern": args.pattern,
        "bayesmri_acceleration": float(samples[0].metadata.get("acceleration", args.acceleration)),
        "bayesmri_snr_db": float(args.snr),
        "bayesmri_seed": int(args.seed),
        "bayesmri_split": args.split,
        "bayesmri_slice_positions": np.array([s.metadata["slice"] for s in samples], dtype=np.int64),
        "bayesmri_noise_sigma": np.array([s.noise_sigma * s.scale for s in samples], dtype=np.float64),
    }
    full = args.pattern == "full"
    if acs is not None and not full:
        attrs["bayesmri_num_acs"] = np.array(acs, dtype=np.int64)
    num_low = None
    if mask.ndim == 1 and not full:
        num_low = _central_run(mask)
    write_fastmri_h5(
        out, k, reconstruction=ref, recon_size=tuple(samples[0].img_shape),
        acquisition="bayesmri_simulated", mask=mask if same_mask and not full else None, num_low_frequency=num_low,
        patient_id=f"bayesmri-{args.split}", extra_attrs=attrs,
        # the simulation's coil maps, for `recon --maps true` (S, C, H, W)
        extra_datasets={"maps_true": torch.stack([s.maps_true for s in samples]).to(torch.complex64)},
    )
    R = attrs["bayesmri_acceleration"]
    print(
        f"wrote {out}: {len(samples)} slices of {args.split}, {k.shape[1]} coils, {k.shape[-2]}x{k.shape[-1]}, "
        f"{args.pattern} R={R:.3g}, SNR {args.snr:g} dB"
    )
    return 0


def _central_run(mask) -> int:
    """Length of the fully sampled run of lines around the centre of a 1-D mask."""
    m = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask) > 0
    c = m.shape[0] // 2
    if not m[c]:
        return 0
    lo, hi = c, c
    while lo - 1 >= 0 and m[lo - 1]:
        lo -= 1
    while hi + 1 < m.shape[0] and m[hi + 1]:
        hi += 1
    return hi - lo + 1
