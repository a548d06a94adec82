"""Running a registered method over slices, and scoring what it returns (the library behind ``recon``,
``demo``, ``recon`` of a dataset and the benchmarks).

:func:`run_method` runs one method on a list of slices (seeding, chunking, interrupt handling) and stacks
the per-slice :class:`~bayesmri.samplers.SamplerResult`s; :func:`evaluate`, :func:`schema_row` and
:func:`calibration_numbers` score a result against a reference (:func:`reference_image`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..samplers.base import SamplerResult

__all__ = ["run_method", "evaluate", "evaluate_per_slice", "calibration_numbers", "reference_image", "n_samples_of",
           "schema_row", "center_crop"]


def _metric_tensors(mean: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    # one value per slice; complex PSNR only when the target has a phase
    from .. import metrics as M

    mean = mean.detach().cpu()
    target = target.detach().cpu()
    out = {"psnr": M.psnr(mean, target), "ssim": M.ssim(mean, target), "nmse": M.nmse(mean, target)}
    if target.is_complex():
        out["cpsnr"] = M.complex_psnr(mean, target)
    return {k: v.reshape(-1) for k, v in out.items()}


def evaluate(mean: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Slice-averaged metrics of ``mean (S, H, W)`` against ``target (S, H, W)``.

    Magnitude PSNR/SSIM/NMSE always; complex PSNR only when ``target`` is complex (a magnitude
    reference such as fastMRI's ``reconstruction_rss`` has no phase to compare with).
    """
    out = {k: float(v.mean()) for k, v in _metric_tensors(mean, target).items()}
    return {k: v for k, v in out.items() if math.isfinite(v)}


def evaluate_per_slice(mean: torch.Tensor, target: torch.Tensor) -> dict[str, list]:
    """The metrics of :func:`evaluate`, one value per slice (``None`` where one is not finite: strict JSON)."""
    return {k: [float(x) if math.isfinite(float(x)) else None for x in v]
            for k, v in _metric_tensors(mean, target).items()}


def calibration_numbers(res, reference: torch.Tensor) -> dict | None:
    """Calibration of a sampler's kept samples against a magnitude ``reference (S, h, w)``, or None.

    From :func:`bayesmri.calibration.calibration_statistics` (slices as replicates, sample magnitudes
    against the reference magnitude): the P-gain of the mean of all kept samples over one sample and its
    value for exact samples ``10 log10(2P / (P + 1))`` (near 0 dB: samples collapsed; far above: the
    samples scatter more than their error), the std ratio (RMS error of the mean over the spread an exact
    sampler predicts; 1 calibrated, > 1 over-confident) and the 90 % interval coverage; and per slice
    :func:`bayesmri.metrics.std_error_correlation` of the std map with ``| |mean| - reference |``.
    Needs at least two kept samples. ``flags``: the labels of :func:`bayesmri.calibration.calibration_flags`.
    """
    from ..calibration import calibration_flags, calibration_statistics
    from ..metrics import std_error_correlation

    L = int(res.samples.shape[0]) if res.samples is not None else 0
    if L < 2 or res.std is None:
        return None
    S = int(reference.shape[0])
    shape = tuple(reference.shape[-2:])
    smp = center_crop(res.samples.reshape(L, S, *res.samples.shape[-2:]), shape).abs().double()
    ref = reference.double()
    rep = calibration_statistics(ref, smp, Ps=[1, L], generator=0)
    out = {"on": "sample magnitudes against the magnitude reference; slices as replicates", "n_samples": L,
           "p_gain_db": rep.gain[-1], "p_gain_reference_db": rep.gain_theory[-1], "std_ratio": rep.std_ratio}
    if rep.coverage:  # the widest central interval L samples can form (90 % needs L >= 19)
        level = max(rep.coverage)
        out.update(coverage_level=level, coverage=rep.coverage[level]["coverage"],
                   coverage_nominal=rep.coverage[level]["nominal"])
    std = center_crop(res.std.reshape(S, *res.std.shape[-2:]), shape).double()
    err = center_crop(res.mean.reshape(S, *res.mean.shape[-2:]), shape).abs().double() - ref
    corr = []
    for s_, e_ in zip(std, err):
        try:
            corr.append(float(std_error_correlation(s_, e_)))
        except ValueError:  # a constant map: the correlation is undefined
            corr.append(None)
    out["std_error_correlation_per_slice"] = [c if c is None or math.isfinite(c) else None for c in corr]
    valid = [c for c in out["std_error_correlation_per_slice"] if c is not None]
    if valid:
        out["std_error_correlation"] = float(np.mean(valid))
    out = {k: v for k, v in out.items() if not (isinstance(v, float) and not math.isfinite(v))}
    out["flags"] = [f.label for f in calibration_flags(out)]  # thresholds: calibration.FLAG_THRESHOLDS
    return out


def _accepts(fn, name: str) -> bool:
    """True if ``fn`` takes keyword ``name``, by name or through ``**kwargs``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False
    # Methods that forward **options (the diffusion samplers) must get the maps the reference uses,
    # else they reconstruct with ESPIRiT's phase reference while being scored against the true image.
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _chunk_seed(seed: int, i: int, c: int) -> int:
    # chunk 0 keeps the unchunked seed (seed + i); later chunks get independent, reproducible streams
    return int(np.random.SeedSequence([int(seed), int(i), int(c)]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def run_method(name: str, samples, *, n_samples: int = 1, seed: int = 0, device="cpu", maps=None,
               progress: bool = False, on_slice=None, options: dict | None = None, chunk: int | None = None,
               keep: int | None = None, first: int = 0):
    """Run registered method ``name`` on each slice of ``samples`` (a list of ``MRISample``).

    Slice ``i`` gets a generator seeded with ``seed + first + i`` (``first``: the position of
    ``samples[0]`` among a file's slices, for a caller that streams them one at a time). ``maps`` (``"espirit"``/``"true"``) is
    passed to methods that take it. ``on_slice()`` is called after each slice (progress bars).
    ``options`` are extra keyword options for the method (e.g. a preset: :func:`bayesmri.methods.preset_options`).

    ``chunk``: run at most this many chains at once (a sampler's memory grows with its chains:
    ~0.35 GB each at 320x320 with 16 coils); the chunks' samples are pooled and summarised by
    :meth:`SamplerResult.from_samples` (the mean is the chunk-size-weighted mean of the chunks' means,
    so a method whose mean is a point estimate keeps it). Chunk 0 uses the unchunked generator, later
    chunks independent streams, so a chunked run is reproducible but not identical to an unchunked one.
    ``keep``: keep only this many samples per slice once the slice's mean and std are computed, so the
    held samples do not grow with ``n_samples`` times the number of slices.

    Stops with ``KeyboardInterrupt`` (:class:`bayesmri._interrupt.Interrupted` under the CLI) after a
    slice whose sampler was interrupted: its chains were cut short, and no further slice is run. The
    exception carries ``partial_result``: the slices completed before it (stacked as below), or None.

    Returns
    -------
    SamplerResult with ``samples (P', S, H, W)`` (``P' = min(P, keep)``), ``mean (S, H, W)``, ``std
    (S, H, W)`` or None, ``nfe`` per slice and sample, ``wall_time`` summed over slices (seconds), all on
    the CPU; ``diagnostics["n_samples"] = P``, and ``diagnostics["size_policy"]`` where the method ran
    its model at another matrix than the data's (the first slice's note; its one-line message is printed).
    """
    from .. import _interrupt
    from .registry import method_info

    info = method_info(name)
    P = int(n_samples) if info.stochastic else 1
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    sizes = [P] if chunk is None or P <= int(chunk) else [int(chunk)] * (P // int(chunk)) + (
        [P % int(chunk)] if P % int(chunk) else [])
    kw = {"maps": maps} if maps is not None and _accepts(info.fn, "maps") else {}
    kw.update(options or {})
    dev = torch.device(device)

    def cpu(t):
        return t.detach().cpu() if isinstance(t, torch.Tensor) else t

    means, stds, kept, nfes, walls = [], [], [], [], []
    notes = {}  # the learned flows' size policy (bayesmri.flows.sizes), said once per run

    def run_slice(i, sample):
        parts = []
        for c, n in enumerate(sizes):
            gen = torch.Generator(device=dev).manual_seed(int(seed) + i if c == 0 else _chunk_seed(seed, i, c))
            r = info.fn(sample, n_samples=n, generator=gen, device=str(dev), progress=progress, **kw)
            # The samplers catch Ctrl-C and return the chains they have: that is a cut-short result,
            # not this slice's answer. Stop here (no further slices) and let the caller write nothing.
            _interrupt.raise_if_pending(f"during slice {i} of {name}")
            diag = getattr(r, "diagnostics", None) or {}
            if diag.get("interrupted") and kw.get("max_time") is None:
                raise KeyboardInterrupt(f"{name} was interrupted during slice {i}")
            parts.append(r)
        shape = parts[0].mean.shape[-2:]
        smp = torch.cat([cpu(r.samples).reshape(-1, *shape) for r in parts])
        if len(parts) == 1:
            r = parts[0]
            mean = cpu(r.mean).reshape(shape)
            std = cpu(r.std).reshape(shape) if r.std is not None else None
        else:
            w = torch.tensor([float(n) for n in sizes], dtype=torch.float64) / P
            mean = sum(wi.item() * cpu(r.mean).reshape(shape) for wi, r in zip(w, parts))
            std = cpu(SamplerResult.from_samples(smp).std)
        if P > 1 and std is None:
            std = cpu(SamplerResult.from_samples(smp).std)
        means.append(mean)
        stds.append(std)
        kept.append(smp if keep is None else smp[: int(keep)])
        nfes.append(max(int(getattr(r, "nfe", 0) or 0) for r in parts))
        walls.append(sum(float(r.wall_time) for r in parts))
        plan = (getattr(parts[0], "diagnostics", None) or {}).get("size_policy")
        if plan is not None and "size_policy" not in notes:
            from tqdm.auto import tqdm

            notes["size_policy"] = plan
            tqdm.write(plan["message"])

    def stacked():
        res = SamplerResult(samples=torch.stack(kept, dim=1), mean=torch.stack(means),
                            std=torch.stack(stds) if P > 1 else None, nfe=int(max(nfes)), wall_time=float(sum(walls)))
        res.diagnostics["n_samples"] = P
        res.diagnostics.update(notes)
        return res

    try:
        for i, sample in enumerate(samples, start=int(first)):
            run_slice(i, sample)
            if on_slice is not None:
                on_slice()
    except KeyboardInterrupt as exc:
        # The slices finished before the interrupt, for a caller asked to keep them (recon --partial).
        exc.partial_result = stacked() if means else None
        raise
    return stacked()


def reference_image(sample, maps: str = "true") -> torch.Tensor:
    """Ground truth that a reconstruction with coil maps ``maps`` is compared with, ``(H, W)`` complex.

    ``"true"``: the simulated image ``sample.target``. ``"espirit"``: the ESPIRiT coil combination of
    the noise-free coil images, ``sum_c conj(S_c) x_c`` (fastMRI's definition of a multi-coil
    target), because ESPIRiT maps carry their own phase reference. No reconstruction is rescaled.
    """
    if maps == "espirit" and sample.coil_images is not None:
        return (sample.maps_espirit.conj() * sample.coil_images).sum(0)
    if sample.target is None:
        raise ValueError("sample has no ground truth")
    return sample.target


def n_samples_of(res) -> int:
    """Samples drawn per slice (``run_method`` may keep fewer in ``res.samples``)."""
    return int((getattr(res, "diagnostics", None) or {}).get("n_samples", res.samples.shape[0]))


def schema_row(res, reference: torch.Tensor) -> dict:
    """One ``metrics.json`` entry (``docs/metrics_schema.md``) for a stacked result."""
    mean = res.mean.reshape(reference.shape[0], *res.mean.shape[-2:])
    mean = center_crop(mean, tuple(reference.shape[-2:]))
    row = evaluate(mean, reference)
    S, P = int(reference.shape[0]), n_samples_of(res)
    row.update(time_per_sample_s=float(res.wall_time) / (S * P), nfe=int(res.nfe), n_slices=S, n_samples=P)
    return row


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre crop of the last two axes to ``size`` (fastMRI's crop of reconstructions)."""
    H, W = x.shape[-2:]
    h, w = size
    if (h, w) == (H, W):
        return x
    if h > H or w > W:
        raise ValueError(f"reference of size {h}x{w} is larger than the reconstruction {H}x{W}")
    t, l = (H - h) // 2, (W - w) // 2
    return x[..., t:t + h, l:l + w]
