"""The ``bayesmri`` command line.

Each subcommand lives in its own module under :mod:`bayesmri.commands` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# name -> (module, one-line help). A subcommand is listed once its module exists.
SUBCOMMANDS = {
    "demo": ("bayesmri.commands.demo", "run every method on built-in test slices and write an HTML report"),
    "simulate": ("bayesmri.commands.simulate", "write a fastMRI-layout .h5 of simulated undersampled data"),
    "recon": ("bayesmri.commands.recon", "reconstruct (or sample the posterior of) a fastMRI-layout .h5 file"),
    "train": ("bayesmri.commands.train", "train a learned prior or conditional flow"),
    "info": ("bayesmri.commands.info", "show the installed version, devices, shipped data and weights"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bayesmri",
        description="Posterior sampling for accelerated MRI reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"bayesmri {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in SUBCOMMANDS.items():
        if importlib.util.find_spec(mod) is None:
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(mod)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        # User errors (bad file, bad option): one clear line, no traceback.
        print(f"bayesmri {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bayesmri {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
