"""``bayesmri simulate``: write a fastMRI-layout ``.h5`` of simulated undersampled built-in slices.

The acquisition (smooth random phase, simulated coil maps, complex Gaussian noise at ``--snr`` dB,
the chosen mask) is simulated per slice by :func:`bayesmri.data.simulate_acquisition`; the file is
written by :func:`bayesmri.data.write_fastmri_h5` (``kspace``, ``reconstruction_rss``, the mask,
attributes and the ISMRMRD header), atomically.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["add_arguments", "run", "simulate_builtin"]


def add_arguments(parser) -> None:
    parser.add_argument("--split", default="test", help="built-in split: train, val, test or ood (default: test)")
    parser.add_argument("--slices", type=int, default=4, help="number of slices (default: 4)")
    parser.add_argument(
        "--pattern", default="gro",
        help="sampling pattern: gro, uniform1d, gaussian1d, gaussian2d, poisson, equispaced (default: gro)",
    )
    parser.add_argument("--acceleration", type=float, default=4.0, help="acceleration R (default: 4)")
    parser.add_argument("--coils", type=int, default=8, help="simulated receive coils (default: 8)")
    parser.add_argument("--snr", type=float, default=30.0, help="signal-to-noise ratio in dB (default: 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of phase, noise and mask (default: 0)")
    parser.add_argument("--size", type=int, default=128, help="image size H = W (default: 128)")
    parser.add_argument("--out", type=Path, default=Path("simulated.h5"), help="output .h5 (default: simulated.h5)")


def simulate_builtin(split="test", n_slices=4, pattern="gro", acceleration=4.0, coils=8, snr=30.0, seed=0, size=None):
    raise NotImplementedError


def run(args) -> int:
    raise NotImplementedError
