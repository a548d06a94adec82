"""``recon`` end to end: one input file into an output folder (:func:`reconstruct_file`), or one slice of an
input into a dataset run's :class:`~bayesmri.dataset_recon.SliceResult` (:func:`reconstruct_input_slice`).

Both read with :func:`bayesmri.data.recon_input.load_input`, compress coils on request
(:func:`~bayesmri.data.recon_input.compress_samples`), run the method with :func:`bayesmri.methods.run_method`
and crop to the recon matrix (:func:`~bayesmri.methods.outputs.to_recon_grid`). :func:`reconstruct_file`
then writes through :func:`~bayesmri.methods.outputs.write_result` into a staging folder that is moved into
place only when everything has succeeded, so a failed run leaves no output behind.
"""
from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path

from ..data.recon_input import compress_samples, load_input
from .outputs import metrics_row, method_files, output_bytes, to_recon_grid, write_partial, write_result
from .run import n_samples_of, run_method

__all__ = ["reconstruct_file", "reconstruct_input_slice", "FULLY_SAMPLED_WARNING"]

#: Warning for a fully sampled input run without ``--mask`` (``{path}`` is the file).
FULLY_SAMPLED_WARNING = ("{path}: the k-space is fully sampled, so this runs at R=1; for a retrospective study "
                         "undersample it with --mask PATTERN --acceleration R")


def _with_path(exc: ValueError, path) -> ValueError:
    # a problem of the data found by the method (e.g. "k-space centre is not sampled") must say which file
    return exc if str(path) in str(exc) else ValueError(f"{path}: {exc}")


def _compress(samples, virtual_coils, path):
    try:  # before the coil maps: every method then sees (and estimates maps from) the virtual coils
        return compress_samples(samples, virtual_coils)
    except ValueError as exc:
        raise ValueError(f"{path}: --virtual-coils: {exc}") from None


def reconstruct_file(path, out, method: str, *, n_samples: int, seed: int = 0, device="cpu", maps: str = "espirit",
                     options: dict | None = None, slices: list[int] | None = None, mask=None, virtual_coils=None,
                     chunk: int | None = None, keep_samples: int = 8, array_format: str = "npz",
                     progress: bool = True, partial: bool = False, settings: dict | None = None, log=print) -> dict | None:
    """Reconstruct (or sample the posterior of) ``slices`` of one input file into the folder ``out``.

    Writes ``<method>_mean/_std`` NIfTI and PNG, the array file (``array_format``) and, when a reference is
    known, the ``metrics.json`` entry (:func:`~bayesmri.methods.outputs.metrics_row`), all at the header's
    recon matrix; replaces this method's earlier files in ``out`` and retires a partial result of it.

    Parameters
    ----------
    path : the input (any format of :func:`bayesmri.data.inputs.open_volume`). out : the output folder.
    method : a registered method. n_samples : samples per slice (1 for a deterministic method).
    maps : ``recon --maps``: ``espirit``, ``true``, ``joint`` or a maps file (which takes ESPIRiT's place).
    options : the method's keyword options (:func:`bayesmri.options.recon_options`).
    slices : indices to read (default all). mask : a :class:`~bayesmri.data.recon_input.RetrospectiveMask`.
    virtual_coils : SVD coil compression (``MRISample.compress_coils``), or None.
    chunk, keep_samples : chains run at once and samples kept (:func:`~bayesmri.methods.run_method`).
    partial : on Ctrl-C/SIGTERM write the finished slices as ``<method>.partial_*``
        (:func:`~bayesmri.methods.outputs.write_partial`).
    settings : what was asked for (JSON types) for ``metrics.json``; its ``slices`` and ``input_info`` are
        filled in here, and ``coil_compression`` / ``size_policy`` added where they apply.
    log : prints the lines a user reads (input summary, mask, coil compression, result).

    Returns
    -------
    The ``metrics.json`` row, or None without a reference. An interrupt raises
    :class:`bayesmri._interrupt.Interrupted` saying what was kept.
    """
    from .. import _interrupt, io
    from .maps import check_maps
    from .registry import MAP_SOURCES, method_info

    path, out = Path(path), Path(out)
    source = maps if maps in MAP_SOURCES else "espirit"
    check_maps(method, source)
    data = load_input(path, slices=slices, mask=mask, maps=maps)
    samples, reference, pattern = data.samples, data.reference, data.pattern
    samples, compression = _compress(samples, virtual_coils, path)
    S = len(samples)
    H, W = samples[0].img_shape
    if data.fully_sampled and mask is None:
        warnings.warn(FULLY_SAMPLED_WARNING.format(path=path), stacklevel=2)
    if data.info.get("summary"):
        log(f"input: {data.info['summary']}")
    log(data.mask_line())
    P = int(n_samples) if method_info(method).stochastic else 1
    if reference is not None and (reference.shape[-2] > H or reference.shape[-1] > W):
        # schema_row would find this only after the compute
        raise ValueError(f"{path}: reference of {reference.shape[-2]} x {reference.shape[-1]} is larger than the "
                         f"k-space matrix {H} x {W}")
    # Fail before the compute, not after it: a folder that cannot be written or a full disk.
    io.check_writable(out, need_bytes=output_bytes((S, H, W), P, keep_samples))
    if P > 1:
        from .memory import check_chain_memory

        check_chain_memory(P, chunk, int(samples[0].kspace.shape[0]), H, W)
    settings = dict(settings or {})
    settings.update(slices=list(data.slices), input_info=data.info)
    if compression is not None:
        settings["coil_compression"] = compression
        log(f"coil compression: SVD, {compression['coils']} -> {max(compression['virtual_coils'])} virtual "
            f"coils, k-space energy kept {100 * min(compression['energy_kept']):.2f} % (worst slice)")
    geo = data.geometry
    from tqdm.auto import tqdm

    # The staging folder exists from here on, so an interrupted or failed run leaves `out` untouched;
    # the commit replaces this method's files (stale ones removed) and merges metrics.json per method.
    # A complete run also retires a partial result of the same method (files and metrics entry).
    replace = method_files(method) + method_files(f"{method}.partial")
    row = None
    try:
        with io.atomic_dir(out, replace=replace, merge_json=["metrics.json"]) as stage:
            with tqdm(total=S, desc=f"recon {method}", disable=not progress, file=sys.stderr) as bar:
                try:
                    res = run_method(method, samples, n_samples=n_samples, seed=seed, device=device, maps=source,
                                     progress=progress, on_slice=lambda: bar.update(1), options=options,
                                     chunk=chunk, keep=keep_samples)
                except ValueError as exc:
                    raise _with_path(exc, path) from None
            S, P = int(res.mean.shape[0]), n_samples_of(res)
            if "size_policy" in res.diagnostics:  # what a learned flow did with this matrix size
                settings["size_policy"] = res.diagnostics["size_policy"]
            res = to_recon_grid(res, geo.matrix)
            write_result(stage, method, res, array_format=array_format, keep_samples=keep_samples,
                         voxel_size=geo.voxel_mm, slices=data.slices, bart_dims=data.info.get("bart_dims"),
                         scales=[s.scale for s in samples])
            if reference is not None:
                row = metrics_row(res, reference, data, settings)
                io.save_json(stage / "metrics.json", {method: {pattern: row}, f"{method}.partial": None})
                summary = (f"{method} on {path.name} ({S} slices, {P} sample(s)): PSNR {row['psnr']:.2f} dB, "
                           f"SSIM {row['ssim']:.4f}, NMSE {row['nmse']:.4g}, {row['time_per_sample_s']:.3g} s/sample")
            else:
                # no scores for this run: drop this method's entry of an earlier run (null removes it)
                io.save_json(stage / "metrics.json", {method: None, f"{method}.partial": None})
                summary = f"{method} on {path.name}: {S} slices, {P} sample(s), {res.wall_time:.3g} s (no ground truth)"
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or _interrupt.pending() or signal.SIGINT
        kept = (f"the results were written to {out} before stopping" if getattr(exc, "deferred", False)
                else f"nothing written, {out} left as it was")
        done = getattr(exc, "partial_result", None)
        if partial and done is not None and not getattr(exc, "deferred", False):
            name = write_partial(out, method, done, data, n_slices=S, array_format=array_format,
                                 keep_samples=keep_samples, settings=settings)
            kept = (f"the first {done.mean.shape[0]} of {S} slices written to {out} as {name}* "
                    f"(complete results there untouched)")
        raise _interrupt.Interrupted(signum, f"{exc or 'interrupted'}; {kept}") from None
    log(summary)
    log(f"wrote {out}")
    return row


def reconstruct_input_slice(path, index: int, position: int, method: str, *, n_samples: int, seed: int = 0,
                            device="cpu", options: dict | None = None, mask=None, virtual_coils=None,
                            chunk: int | None = None, keep_samples: int = 8):
    """Slice ``index`` of one input, reconstructed with ESPIRiT maps for a dataset run, in the input's units.

    The :func:`bayesmri.dataset_recon.reconstruct_dataset` callback of ``recon DIR``: ``position`` is the
    slice's place among the file's planned slices (the seed is ``seed + position``, as a whole-file run's
    slice; the fully sampled warning is given once, at position 0).

    Returns
    -------
    :class:`bayesmri.dataset_recon.SliceResult`: ``mean``/``std (H, W)`` and ``samples (P', H, W)`` times the
    slice's normalisation, the reference, and the facts (mask, pattern, reference source, voxel size, coil
    compression, input description) for the output's record.
    """
    from ..dataset_recon import SliceResult

    data = load_input(path, slices=[index], mask=mask, maps="espirit")
    if position == 0 and data.fully_sampled and mask is None:
        warnings.warn(FULLY_SAMPLED_WARNING.format(path=path), stacklevel=2)
    samples, compression = _compress(data.samples, virtual_coils, path)
    try:
        res = run_method(method, samples, n_samples=n_samples, seed=seed, first=position, device=device,
                         maps="espirit", progress=False, options=options, chunk=chunk, keep=keep_samples)
    except ValueError as exc:
        raise _with_path(exc, path) from None
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
