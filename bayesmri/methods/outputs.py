"""What ``recon`` writes for one method's result: image files, array files and the ``metrics.json`` entry.

:func:`write_result` writes the NIfTI stacks, PNGs and the array file (npz, h5 or BART cfl) of a result;
:func:`to_recon_grid` crops it to the recon matrix first; :func:`metrics_row` is its ``metrics.json`` entry
(``docs/metrics_schema.md``); :func:`write_partial` writes the slices an interrupted run finished;
:func:`method_files` names every file of a method (stale ones are removed) and :func:`output_bytes` bounds
their size before the compute starts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .run import calibration_numbers, center_crop, evaluate_per_slice, n_samples_of, schema_row

__all__ = ["write_result", "save_stack_png", "to_recon_grid", "metrics_row", "method_files", "output_bytes",
           "write_partial", "STD_PNG_VMAX"]


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

    Parameters
    ----------
    stage : folder to write into (a staging folder of :func:`bayesmri.io.atomic_dir`). name : file stem.
    res : a result of :func:`bayesmri.methods.run_method`: ``mean``/``std`` ``(S, H, W)`` complex, ``samples
        (P, S, H, W)``, ``nfe``, ``wall_time``.
    scales : ``(S,)`` the slices' normalisations (for ``cfl`` only).

    Returns
    -------
    list of the written paths.
    """
    from .. import io

    mean = res.mean.reshape(-1, *res.mean.shape[-2:])
    idx = list(slices) if slices is not None else list(range(mean.shape[0]))
    files = [
        io.save_nifti(stage / f"{name}_mean.nii.gz", mean, magnitude=True, voxel_size=voxel_size),
        save_stack_png(stage / f"{name}_mean.png", mean, f"{name}: posterior mean" if n_samples_of(res) > 1
                        else f"{name}: reconstruction", idx, label="magnitude"),
    ]
    std = res.std.reshape(-1, *res.std.shape[-2:]) if res.std is not None else None
    if std is not None and n_samples_of(res) > 1:
        files.append(io.save_nifti(stage / f"{name}_std.nii.gz", std, voxel_size=voxel_size))
        files.append(save_stack_png(stage / f"{name}_std.png", std,
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


def save_stack_png(path, stack, title, slices, cmap="gray", vmax=None, label=None, max_slices=8):
    """A PNG of the first ``max_slices`` images of ``stack (S, H, W)`` (magnitudes of a complex stack) at full
    resolution, one colour scale ``[0, vmax]`` (None: the largest value) with a bar, titled by ``slices``
    (their indices in the input); returns the path."""
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


def metrics_row(res, reference: torch.Tensor, data=None, settings: dict | None = None) -> dict:
    """The ``metrics.json`` entry of a ``recon`` run: :func:`schema_row` plus the per-slice values, the
    calibration numbers of a sampler, the mask, the settings and the versions (``docs/metrics_schema.md``).

    Parameters
    ----------
    res : the result (``mean (S, H, W)``). reference : ``(S, h, w)`` float magnitudes.
    data : the :class:`bayesmri.data.recon_input.ReconInput` read (slices, mask, reference source, geometry),
        or None. settings : what was asked for (JSON types), or None.
    """
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


def method_files(name: str) -> list[str]:
    """Every file name :func:`write_result` can write for method ``name`` (stale ones are removed)."""
    return [f"{name}_mean.nii.gz", f"{name}_mean.png", f"{name}_std.nii.gz", f"{name}_std.png",
            f"{name}.npz", f"{name}.h5"] + [f"{name}_{a}.{e}" for a in ("mean", "std", "samples") for e in ("cfl", "hdr")]



def output_bytes(shape: tuple[int, int, int], n_samples: int, keep_samples: int) -> int:
    """Upper bound of the bytes :func:`write_result` writes for ``S`` slices of ``H x W`` (uncompressed)."""
    S, H, W = shape
    per_pixel = 4 + 4 + 8 + 4 + 8 * min(int(keep_samples), int(n_samples))  # niftis, mean, std, samples
    return S * H * W * per_pixel + (4 << 20)  # PNGs and headers


def write_partial(out: Path, method: str, res, data, *, n_slices: int, array_format: str = "npz",
                  keep_samples: int = 8, settings: dict | None = None) -> str:
    """Write the slices an interrupted run finished as ``<method>.partial_*`` into ``out`` (atomically); return
    that name.

    A name no method can have (method names have no ``.``), so a partial result never replaces a
    complete one; its ``metrics.json`` entry says ``"partial": true`` and how many slices it holds.

    Parameters
    ----------
    res : the ``partial_result`` of :func:`bayesmri.methods.run_method`'s interrupt (the first ``k`` slices).
    data : the :class:`bayesmri.data.recon_input.ReconInput` of the run. n_slices : the slices asked for.
    """
    from .. import io

    name = f"{method}.partial"
    k = int(res.mean.shape[0])
    res = to_recon_grid(res, data.geometry.matrix)
    with io.atomic_dir(out, replace=method_files(name), merge_json=["metrics.json"]) as stage:
        write_result(stage, name, res, array_format=array_format, keep_samples=keep_samples,
                     voxel_size=data.geometry.voxel_mm, slices=data.slices[:k], bart_dims=data.info.get("bart_dims"),
                     scales=[s.scale for s in data.samples[:k]])
        row = None
        if data.reference is not None:
            row = metrics_row(res, data.reference[:k], data, settings)
            row.update(partial=True, n_slices_total=int(n_slices))
        io.save_json(stage / "metrics.json", {name: {data.pattern: row} if row is not None else None})
    return name
