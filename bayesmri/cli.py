"""The ``bayesmri`` command line.

Each subcommand lives in its own module under :mod:`bayesmri.commands` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

# name -> (module, one-line help). A subcommand is listed once its module exists.
SUBCOMMANDS = {
    "demo": ("bayesmri.commands.demo", "run every method on built-in test slices and write an HTML report"),
    "simulate": ("bayesmri.commands.simulate", "write a fastMRI-layout .h5 of simulated undersampled data"),
    "recon": ("bayesmri.commands.recon", "reconstruct (or sample the posterior of) a fastMRI-layout .h5 file or a whole dataset"),
    "evaluate": ("bayesmri.commands.evaluate", "fastMRI-style per-volume PSNR/SSIM/NMSE of reconstructions against references"),
    "train": ("bayesmri.commands.train", "train a learned prior or conditional flow"),
    "info": ("bayesmri.commands.info", "show the installed version, devices, shipped data and weights"),
}


def _add_debug(parser, top: bool = False) -> None:
    # On the top parser and on every subcommand, so `bayesmri recon ... --debug` works; SUPPRESS keeps
    # a subparser from resetting a --debug given before the subcommand.
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the full traceback of an error instead of one line")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="bayesmri",
        description="Posterior sampling for accelerated MRI reconstruction.",
    )
    parser.add_argument("--version", action="version", version=f"bayesmri {__version__}")
    _add_debug(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod, help_) in SUBCOMMANDS.items():
        if importlib.util.find_spec(mod) is None:
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(mod)
        module.add_arguments(p)
        _add_debug(p)
        p.set_defaults(_run=module.run)
    return parser


#: Failures a user can cause (bad file, bad option, full disk, too large an input): one line.
USER_ERRORS = (ValueError, TypeError, OSError, MemoryError)


def _one_line(exc) -> str:
    # an exception or warning message on one line, at most 400 characters (unless it lists what is accepted)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 400 or getattr(exc, "full_line", False) else text[:397] + "..."


def _format_warning(prog: str):
    def fmt(message, category, filename, lineno, line=None):
        return f"{prog}: warning: {_one_line(message)}\n"

    return fmt


def main(argv=None) -> int:
    import warnings

    from . import _interrupt

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    prog = f"bayesmri {args.command}"
    debug = bool(getattr(args, "debug", False)) or bool(os.environ.get("BAYESMRI_DEBUG"))
    old_format = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _format_warning(prog)  # one line per warning, no source line
    try:
        with _interrupt.signals_as_interrupt():
            return int(args._run(args) or 0)
    except KeyboardInterrupt as exc:
        # SIGINT -> 130, SIGTERM -> 143 (shell convention); the command's message says what was kept
        code = getattr(exc, "exit_code", 130)
        print(f"{prog}: {_one_line(exc) if str(exc) else 'interrupted'}", file=sys.stderr)
        return code
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, USER_ERRORS):
            print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        else:  # not the user's doing: still one line, but say how to get the details for a report
            print(f"{prog}: internal error ({type(exc).__name__}): {_one_line(exc)} (rerun with --debug "
                  "for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = old_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
