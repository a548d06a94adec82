"""``bayesmri recon``: reconstruct (or sample the posterior of) a fastMRI-layout ``.h5`` file.

Writes into ``--out`` (default ``<input stem>_<method>/``):

- ``<method>_mean.nii.gz`` (magnitude stack ``(H, W, S)``), ``<method>_mean.png`` (up to 8 slices),
- ``<method>_std.nii.gz`` / ``<method>_std.png`` for methods that draw several samples,
- ``<method>.npz`` (or ``.h5`` with ``--array-format h5``): complex ``mean``, ``std``, ``samples``
  (``(P, S, H, W)``, up to ``--keep-samples``), ``nfe``, ``wall_time``,
- ``metrics.json`` when the file holds a ground truth (schema: ``docs/metrics_schema.md``).

All files are written into a staging folder that is moved into place only when everything has
succeeded: a failed run leaves no output behind.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["add_arguments", "run", "evaluate", "check_input_file", "resolve_device"]


def add_arguments(parser) -> None:
    from ..methods import available_methods

    names = available_methods()
    parser.add_argument("input", type=Path, help="fastMRI-layout .h5 file (e.g. written by `bayesmri simulate`)")
    parser.add_argument(
        "--method", default="zf", metavar="NAME",
        help=f"reconstruction method, one of: {', '.join(names)} (default: zf)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <input stem>_<method>)")
    parser.add_argument("--samples", type=int, default=1, help="posterior samples per slice (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--array-format", choices=("npz", "h5"), default="npz", help="format of the array file (default: npz)"
    )
    parser.add_argument("--keep-samples", type=int, default=8, help="samples stored in the array file (default: 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


# --------------------------------------------------------------------------------------------------
# helpers shared with `demo`
# --------------------------------------------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """``torch.device`` for ``device``; ``ValueError`` if it is unknown or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    return dev


def check_input_file(path: Path) -> Path:
    """Refuse a missing file or one that is not HDF5 before any work starts."""
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"input {path} is not a file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"input {path} is not an HDF5 file (expected the fastMRI .h5 layout)")
    return path


def evaluate(mean: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Slice-averaged metrics of ``mean (S, H, W)`` against ``target (S, H, W)``.

    Magnitude PSNR/SSIM/NMSE always; complex PSNR only when ``target`` is complex (a magnitude
    reference such as fastMRI's ``reconstruction_rss`` has no phase to compare with).
    """
    from .. import metrics as M

    mean = mean.detach().cpu()
    target = target.detach().cpu()
    out = {
        "psnr": float(M.psnr(mean, target).mean()),
        "ssim": float(M.ssim(mean, target).mean()),
        "nmse": float(M.nmse(mean, target).mean()),
    }
    if target.is_complex():
        out["cpsnr"] = float(M.complex_psnr(mean, target).mean())
    return {k: v for k, v in out.items() if math.isfinite(v)}


def run_method(name: str, sample, *, n_samples: int, seed: int, device, progress: bool):
    """Run registered method ``name`` on ``sample``; return the result moved to the CPU."""
    from ..methods import get_method, method_info

    info = method_info(name)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    res = info.fn(sample, n_samples=n_samples if info.stochastic else 1, generator=gen, device=str(device), progress=progress)
    for attr in ("samples", "mean", "std"):
        v = getattr(res, attr, None)
        if isinstance(v, torch.Tensor):
            setattr(res, attr, v.detach().cpu())
    return res


def write_result(stage: Path, name: str, res, *, array_format: str = "npz", keep_samples: int = 8, voxel_size=(1, 1, 1)):
    """Write the image files of one method's result into ``stage``; return the written paths."""
    from .. import io

    mean = res.mean.reshape(-1, *res.mean.shape[-2:])
    files = [
        io.save_nifti(stage / f"{name}_mean.nii.gz", mean, magnitude=True, voxel_size=voxel_size),
        _save_stack_png(stage / f"{name}_mean.png", mean, f"{name}: mean"),
    ]
    std = res.std.reshape(-1, *res.std.shape[-2:]) if res.std is not None else None
    if std is not None and res.samples.shape[0] > 1:
        files.append(io.save_nifti(stage / f"{name}_std.nii.gz", std, voxel_size=voxel_size))
        files.append(_save_stack_png(stage / f"{name}_std.png", std, f"{name}: std", cmap="magma"))
    arrays = {
        "mean": mean,
        "std": std,
        "samples": res.samples[:keep_samples],
        "nfe": np.int64(res.nfe),
        "wall_time": np.float64(res.wall_time),
    }
    if array_format == "h5":
        files.append(io.save_h5(stage / f"{name}.h5", arrays, {"method": name}))
    else:
        files.append(io.save_npz(stage / f"{name}.npz", **arrays))
    return files


def _save_stack_png(path, stack, title, cmap="gray", max_slices=8):
    from .. import io

    n = min(stack.shape[0], max_slices)
    imgs = [stack[i].abs() if stack.is_complex() else stack[i] for i in range(n)]
    vmax = float(max(im.max() for im in imgs))
    titles = [f"{title} [{i}]" for i in range(n)] if n > 1 else [title]
    return io.save_image_grid(path, imgs, titles, vmin=0.0, vmax=vmax or None, ncols=min(n, 4))


# --------------------------------------------------------------------------------------------------
def run(args) -> int:
    from .. import io
    from ..data import read_fastmri_h5
    from ..methods import method_info

    info = method_info(args.method)  # unknown names fail here, before any file is touched
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.keep_samples < 0:
        raise ValueError(f"--keep-samples must be >= 0, got {args.keep_samples}")
    device = resolve_device(args.device)
    path = check_input_file(args.input)
    out = args.out if args.out is not None else path.with_name(f"{path.stem}_{args.method}")

    sample = read_fastmri_h5(path)
    progress = not args.no_progress and sys.stderr.isatty()
    res = run_method(args.method, sample, n_samples=args.samples, seed=args.seed, device=device, progress=progress)
    n_slices = int(res.mean.reshape(-1, *res.mean.shape[-2:]).shape[0])
    P = int(res.samples.shape[0])
    target = getattr(sample, "target", None)
    with io.atomic_dir(out) as stage:
        write_result(stage, args.method, res, array_format=args.array_format, keep_samples=args.keep_samples)
        if target is not None:
            row = evaluate(res.mean.reshape(target.shape), target)
            row.update(
                time_per_sample_s=float(res.wall_time) / (n_slices * P),
                nfe=int(res.nfe),
                n_slices=n_slices,
                n_samples=P,
            )
            pattern = getattr(sample, "pattern", None) or "input"
            io.save_json(stage / "metrics.json", {args.method: {pattern: row}})
            print(
                f"{args.method} on {path.name} ({n_slices} slices, {P} sample(s)): PSNR {row['psnr']:.2f} dB, "
                f"SSIM {row['ssim']:.4f}, NMSE {row['nmse']:.4g}, {row['time_per_sample_s']:.3g} s/sample"
            )
        else:
            print(f"{args.method} on {path.name}: {n_slices} slices, {P} sample(s), {res.wall_time:.3g} s (no ground truth)")
    print(f"wrote {out}")
    return 0
