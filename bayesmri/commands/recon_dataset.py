"""``bayesmri recon DIR_OR_GLOB --out OUT``: the dataset form of ``recon`` (``docs/datasets.md``).

Wires the per-file helpers of :mod:`bayesmri.commands.recon` (reading, coil compression, the method
loop, the recon-matrix crop) into :func:`bayesmri.dataset_recon.reconstruct_dataset`, one slice at a
time. :func:`load_input` and :func:`input_slice_count` are the only places that read an input: a reader
of another format plugs in there (and its file ending into ``dataset_recon.INPUT_SUFFIXES``).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

__all__ = ["run_dataset", "dataset_options", "load_input", "input_slice_count", "is_dataset_input"]


def is_dataset_input(spec) -> bool:
    from ..dataset_recon import is_dataset_input as f

    return f(spec)


def load_input(path: Path, *, slices=None, mask=None):
    """Read ``slices`` of one input file for ``recon`` (an :class:`~bayesmri.commands.recon.H5Input`; any
    format of :func:`bayesmri.data.inputs.open_volume`), with ESPIRiT coil maps."""
    from .recon import load_h5

    return load_h5(path, slices=slices, mask=mask, maps="espirit")


def input_slice_count(path: Path) -> int:
    """Number of slices of one input file (checks its format; one-line ``ValueError`` naming it)."""
    from ..data.inputs import open_volume
    from .recon import check_input_file

    return open_volume(check_input_file(path)).num_slices


def dataset_options(args) -> dict:
    """The settings that determine a dataset run's outputs (JSON types): a resumed run must match them."""
    from .recon import method_options

    opts = method_options(args)
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


def run_dataset(args, device) -> int:
    """Reconstruct every input of ``args.input`` into ``args.out``; 0 if every file is done, else 1."""
    from .. import _interrupt
    from ..dataset_recon import find_inputs, join_process_group, reconstruct_dataset
    from ..methods import method_info, n_samples_of, run_method
    from .recon import _retrospective_mask, compress_samples, parse_slices, to_recon_grid

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
    mask = _retrospective_mask(args)
    options = dataset_options(args)
    from .recon import method_options

    method_opts = method_options(args)
    progress = not args.no_progress and info.is_main
    from ..dataset_recon import SliceResult

    def plan(path):
        return parse_slices(args.slices, input_slice_count(path), path)

    def reconstruct_slice(path, index, position):
        data = load_input(path, slices=[index], mask=mask)
        if position == 0:
            if data.fully_sampled and args.mask is None:
                warnings.warn(f"{path}: the k-space is fully sampled, so this runs at R=1; for a retrospective "
                              "study undersample it with --mask PATTERN --acceleration R", stacklevel=2)
        try:
            samples, compression = compress_samples(data.samples, getattr(args, "virtual_coils", None))
        except ValueError as exc:
            raise ValueError(f"{path}: --virtual-coils: {exc}") from None
        try:
            res = run_method(args.method, samples, n_samples=args.samples, seed=args.seed, first=position,
                             device=device, maps="espirit", progress=False, options=method_opts,
                             chunk=args.chunk, keep=args.keep_samples)
        except ValueError as exc:
            raise ValueError(exc if str(path) in str(exc) else f"{path}: {exc}") from None
        res = to_recon_grid(res, data.geometry.matrix)
        scale = float(samples[0].scale)
        P = n_samples_of(res)
        ref = data.reference[0] * scale if data.reference is not None else None
        g = data.geometry
        facts = {"mask": dict(data.mask_info), "pattern": data.pattern, "reference": data.reference_source,
                 "voxel_mm": list(g.voxel_mm)}
        if compression is not None:
            facts["coil_compression"] = compression
        if getattr(data, "info", None):
            facts["input_info"] = data.info
        return SliceResult(index=index, mean=res.mean[0] * scale,
                           std=res.std[0] * scale if res.std is not None and P > 1 else None,
                           samples=res.samples[:, 0] * scale if P > 1 and res.samples.shape[0] else None,
                           reference=ref, scale=scale, nfe=int(res.nfe), wall_time=float(res.wall_time),
                           n_samples=P, info=facts)

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
        _print_summary(rep)
    return 1 if rep.failed or (rep.summary is not None and rep.summary.get("failed")) else 0


def _print_summary(rep) -> None:
    from .. import io
    from ..dataset_recon import MANIFEST
    from ..evaluation import format_table

    s = rep.summary
    m = io.load_json(Path(rep.out) / MANIFEST)
    from ..dataset_recon import output_name

    names = {output_name(f) for f in m["inputs"]}
    rows = [{"file": r["output"], "n_slices": r.get("n_slices"), **(r.get("metrics") or {})}
            for n, r in m["files"].items() if n in names and r.get("status") == "done" and r.get("metrics")]
    if rows:
        print(format_table(sorted(rows, key=lambda r: r["file"]), s.get("mean"), s.get("std")))
    failed = f", {s['failed']} failed (see {MANIFEST})" if s.get("failed") else ""
    print(f"{s['done']} of {s['n_inputs']} file(s) done{failed}; wrote {rep.out}")
