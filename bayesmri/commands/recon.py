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
succeeded: a failed run leaves no output behind. This module parses the arguments; the work is
:func:`bayesmri.methods.reconstruct.reconstruct_file` (one file) and, for a folder, a glob or several files
(``docs/datasets.md``), :func:`bayesmri.dataset_recon.reconstruct_dataset` over
:func:`bayesmri.methods.reconstruct.reconstruct_input_slice` (one slice at a time, resumable, sharded over
``torchrun``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .._validate import check_seed, check_threads, resolve_device

__all__ = ["add_arguments", "run", "DEFAULT_SAMPLES"]

#: Samples per slice of a sampling method when --samples is not given: a std map and a P-gain need several.
DEFAULT_SAMPLES = 8


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


def _retrospective_mask(args):
    from ..data.recon_input import retrospective_mask

    return retrospective_mask(args.mask, args.acceleration, args.acs, args.mask_seed)


def _method_options(args) -> dict | None:
    """The method's keyword options from ``--preset``, ``--weights``, ``--prior`` and ``--opt`` (checked, :mod:`bayesmri.options`)."""
    from ..options import recon_options

    return recon_options(args.method, weights=getattr(args, "weights", None), prior=getattr(args, "prior", None),
                         opts=getattr(args, "opt", None), preset=getattr(args, "preset", None))


def run(args) -> int:
    from ..methods import check_maps, method_info
    from ..methods.registry import MAP_SOURCES

    if getattr(args, "list", False):
        from ..options import format_method_list

        print(format_method_list())
        return 0
    if not args.input:
        raise ValueError("an input file is required (or --list to list the methods and their options)")
    info = method_info(args.method)  # unknown names fail here, before any file is touched
    _method_options(args)  # unknown options, values of the wrong type, a missing prior: before any file is read
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
    maps = getattr(args, "maps", None) or "espirit"
    check_maps(args.method, maps if maps in MAP_SOURCES else "espirit")  # a file's maps take ESPIRiT's slot
    from ..data.recon_input import check_input_file, parse_slices

    if args.slices is not None:
        parse_slices(args.slices, 10**9)  # the syntax here; the range once the file is open
    device = resolve_device(args.device)
    from ..dataset_recon import is_dataset_input

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
        if path is None:
            return _run_dataset(args, device)
        _run(args, path, device)
        return 0
    finally:
        torch.set_num_threads(previous)


def _run(args, path: Path, device) -> None:
    from ..data.recon_input import input_slice_count, parse_slices
    from ..methods.reconstruct import reconstruct_file

    maps = getattr(args, "maps", None) or "espirit"
    options = _method_options(args)
    # what was asked for, so a metrics.json entry can be reproduced (JSON types only); slices and input_info
    # are filled in once the file is read
    settings = {"input": str(path), "method": args.method, "samples": int(args.samples), "seed": int(args.seed),
                "keep_samples": int(args.keep_samples), "chunk": args.chunk,
                "weights": None if getattr(args, "weights", None) is None else str(args.weights),
                "method_options": options, "maps": maps, "device": str(args.device),
                "threads": int(args.threads), "slices": None, "mask": args.mask, "acceleration": args.acceleration,
                "acs": args.acs, "mask_seed": args.mask_seed, "virtual_coils": getattr(args, "virtual_coils", None),
                "input_info": None}
    slices = None if args.slices is None else parse_slices(args.slices, input_slice_count(path), path)
    reconstruct_file(path, args.out if args.out is not None else path.with_name(f"{path.stem}_{args.method}"),
                     args.method, n_samples=args.samples, seed=args.seed, device=device, maps=maps,
                     options=options, slices=slices, mask=_retrospective_mask(args),
                     virtual_coils=getattr(args, "virtual_coils", None), chunk=args.chunk,
                     keep_samples=args.keep_samples, array_format=args.array_format, progress=not args.no_progress,
                     partial=getattr(args, "partial", False), settings=settings)


def _dataset_options(args) -> dict:
    """The settings that determine a dataset run's outputs (JSON types): a resumed run must match them."""
    opts = _method_options(args)
    out = {"method": args.method, "samples": int(args.samples), "seed": int(args.seed),
            "keep_samples": int(args.keep_samples), "chunk": args.chunk,
            "weights": None if getattr(args, "weights", None) is None else str(args.weights), "maps": "espirit",
            "slices": args.slices, "mask": args.mask, "acceleration": args.acceleration, "acs": args.acs,
            "mask_seed": args.mask_seed, "virtual_coils": getattr(args, "virtual_coils", None)}
    if opts and set(opts) != {"weights"}:  # --prior / --opt (absent otherwise: earlier runs stay resumable)
        out["method_options"] = opts
    return out


def _default_out(inputs, spec, method: str) -> Path:
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    if len(items) == 1 and Path(items[0]).is_dir():
        d = Path(items[0])
        return d.with_name(f"{d.resolve().name}_{method}")
    raise ValueError("--out is required when the input is a glob or several files (the outputs' folder)")


def _run_dataset(args, device) -> int:
    """Reconstruct every input of ``args.input`` into ``args.out``; 0 if every file is done, else 1."""
    from .. import _interrupt
    from ..data.recon_input import input_slice_count, parse_slices, retrospective_mask
    from ..dataset_recon import find_inputs, join_process_group, reconstruct_dataset, summary_table
    from ..methods import method_info
    from ..methods.reconstruct import reconstruct_input_slice

    if getattr(args, "maps", "espirit") not in (None, "espirit"):
        raise ValueError(f"--maps {args.maps} is for one input; a dataset run estimates ESPIRiT maps for every file")
    if getattr(args, "partial", False):
        raise ValueError("--partial is for one file: a dataset run keeps every finished file and resumes where it stopped")
    inputs = find_inputs(args.input)
    out = args.out if args.out is not None else _default_out(inputs, args.input, args.method)
    info, device = join_process_group(device)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local * int(args.threads) > (os.cpu_count() or 1) and device.type == "cpu":
        warnings.warn(f"{local} processes x --threads {args.threads} exceed the {os.cpu_count()} CPU cores", stacklevel=2)
    mask = retrospective_mask(args.mask, args.acceleration, args.acs, args.mask_seed)
    options = _dataset_options(args)
    method_opts = _method_options(args)
    progress = not args.no_progress and info.is_main

    def plan(path):
        return parse_slices(args.slices, input_slice_count(path), path)

    def reconstruct_slice(path, index, position):
        return reconstruct_input_slice(path, index, position, args.method, n_samples=args.samples, seed=args.seed,
                                       device=device, options=method_opts, mask=mask,
                                       virtual_coils=getattr(args, "virtual_coils", None), chunk=args.chunk,
                                       keep_samples=args.keep_samples)

    if info.is_main:
        print(f"{len(inputs)} input file(s), method {args.method}"
              + (f", {info.world_size} processes" if info.world_size > 1 else "") + f" -> {out}")
    P = int(args.samples) if method_info(args.method).stochastic else 1
    options["samples"] = P
    try:
        rep = reconstruct_dataset(inputs, out, plan=plan, reconstruct_slice=reconstruct_slice, options=options,
                                  device=device, progress=progress)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or _interrupt.pending()
        raise _interrupt.Interrupted(signum or 2, f"{exc or 'interrupted'}; the finished files stay in {out}, "
                                                  "the file in progress left nothing: rerun the command to "
                                                  "continue") from None
    if rep.summary is not None:
        print(summary_table(rep))
    return 1 if rep.failed or (rep.summary is not None and rep.summary.get("failed")) else 0
