"""``bayesmri demo``: every registered method on built-in test slices, as an HTML report.

Parses the arguments and calls :func:`bayesmri.demo.run_demo` (what it simulates, runs and writes is
described there).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..demo import DEFAULT_PATTERNS, DEFAULT_SAMPLES, DEFAULT_SIZE, DEFAULT_SLICES, DEMO_EXCLUDED
from ..physics.masks import pattern_name

__all__ = ["add_arguments", "run"]


def add_arguments(parser) -> None:
    from ..methods import available_methods

    names = available_methods()
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument(
        "--methods", default=None, metavar="A,B,...",
        help=f"comma-separated methods (default: all registered but {','.join(DEMO_EXCLUDED)}: "
             f"{','.join(m for m in names if m not in DEMO_EXCLUDED)})",
    )
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES, help=f"test slices (default: {DEFAULT_SLICES})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES,
        help=f"posterior samples per slice for sampling methods (default: {DEFAULT_SAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of masks, noise and samplers (default: 0)")
    parser.add_argument(
        "--size", type=int, default=DEFAULT_SIZE,
        help=f"image size of the built-in slices (default: {DEFAULT_SIZE})",
    )
    parser.add_argument(
        "--patterns", default=",".join(pattern_name(p, r) for p, r in DEFAULT_PATTERNS),
        help="comma-separated PATTERN-rR sampling setups (default: %(default)s)",
    )
    parser.add_argument("--coils", type=int, default=8, help="simulated coils (default: 8)")
    parser.add_argument("--snr", type=float, default=30.0, help="k-space SNR in dB (default: 30)")
    parser.add_argument(
        "--maps", choices=("true", "espirit"), default="true",
        help="coil maps given to the methods: the simulation's (true) or estimated by ESPIRiT (default: true)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default: 1; per-slice FFTs gain little from more, and spinning "
             "threads slow down badly on a shared machine)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")



def run(args) -> int:
    import math

    from .. import io
    from .._validate import check_seed, check_threads
    from ..demo import parse_patterns, run_demo

    progress = not args.no_progress
    check_threads(args.threads)
    check_seed(args.seed)
    if not math.isfinite(args.snr):
        raise ValueError(f"--snr must be a finite number of dB, got {args.snr}")
    io.check_writable(args.out)  # before minutes of compute, not after
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        run_demo(
            args.out,
            None if args.methods is None else [m for m in args.methods.split(",")],
            n_slices=args.slices,
            device=args.device,
            n_samples=args.samples,
            seed=args.seed,
            size=args.size,
            patterns=parse_patterns(args.patterns),
            coils=args.coils,
            snr=args.snr,
            maps=args.maps,
            progress=progress,
        )
    finally:
        torch.set_num_threads(previous)
    return 0
