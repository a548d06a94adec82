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
import os
import signal
import sys
import warnings
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
    parser.add_argument("--keep-samples", type=int, default=8,
                        help="samples stored in the array file; only these are held in memory (default: 8)")
    parser.add_argument("--chunk", type=int, default=None, metavar="N",
                        help="run at most N chains at once to bound memory (~0.35 GB per chain at 320x320, 16 "
                             "coils); the summaries pool every chunk (default: all --samples at once)")
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="weights of a learned method: .safetensors/.json pair or their stem "
                             "(default: the method's shipped weights)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, at most the number of cores (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--partial", action="store_true",
                        help="on Ctrl-C/SIGTERM, write the slices finished so far as <method>.partial_* "
                             "(metrics marked partial); without it an interrupted run writes nothing")


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
               keep: int | None = None):
    """Run registered method ``name`` on each slice of ``samples`` (a list of ``MRISample``).

    Slice ``i`` gets a generator seeded with ``seed + i``. ``maps`` (``"espirit"``/``"true"``) is
    passed to methods that take it. ``on_slice()`` is called after each slice (progress bars).
    ``options`` are extra keyword options for the method (e.g. its ``demo_options``).

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
    the CPU; ``diagnostics["n_samples"] = P``.
    """
    from .. import _interrupt
    from ..methods import SamplerResult, method_info

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

    def stacked():
        res = SamplerResult(samples=torch.stack(kept, dim=1), mean=torch.stack(means),
                            std=torch.stack(stds) if P > 1 else None, nfe=int(max(nfes)), wall_time=float(sum(walls)))
        res.diagnostics["n_samples"] = P
        return res

    try:
        for i, sample in enumerate(samples):
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


def load_h5_samples(path: Path):
    """Read an undersampled fastMRI-layout file into per-slice ``MRISample`` s.

    The mask is the file's ``mask`` dataset when present and consistent, else the sampled locations
    of each slice (nonzero k-space). Each slice is normalised by the 95th percentile of its
    zero-filled RSS (GUIDE section 1). ``reconstruction_rss``/``_esc``, when present, is returned as
    the magnitude reference in the same normalised units.

    Returns
    -------
    samples : list of MRISample; reference : Tensor ``(S, h, w)`` float or None; pattern : str
    """
    import h5py

    from ..data import MRISample
    from ..data.fastmri import read_fastmri_h5

    from ..data.fastmri import max_slice_bytes

    vol = read_fastmri_h5(path)  # validates layout; one-line ValueError naming the file
    # Every slice is held (k-space, normalised copy, coil maps): refuse a volume that cannot fit.
    need = vol.num_slices * int(np.prod(vol.shape[1:], dtype=np.float64)) * 8 * 3
    if need > 2 * max_slice_bytes():
        raise ValueError(f"{path}: {vol.num_slices} slices of {' x '.join(map(str, vol.shape[1:]))} need about "
                         f"{need / 2**30:.3g} GiB, more than half of this machine's memory")
    with h5py.File(path, "r") as f:
        file_mask = np.asarray(f["mask"][()]) if "mask" in f else None
    attrs = vol.attrs
    # 2-D masks: the stored calibration block (the greedy search for the largest fully sampled
    # region can lock onto a thin strip of a Poisson pattern). 1-D masks: up to 24 x (central run).
    acs2d = attrs.get("bayesmri_num_acs")
    if acs2d is not None:
        try:
            acs2d = tuple(int(a) for a in np.asarray(acs2d).reshape(-1))
        except (TypeError, ValueError):
            acs2d = None
        if acs2d is None or len(acs2d) not in (1, 2) or min(acs2d) < 1 or max(acs2d) > max(vol.shape[-2:]):
            # only a hint for ESPIRiT's calibration region; a bad one falls back to the search
            warnings.warn(f"{path}: ignoring attribute bayesmri_num_acs={attrs.get('bayesmri_num_acs')!r} "
                          f"(expected one or two sizes within {vol.shape[-2]} x {vol.shape[-1]})", stacklevel=2)
            acs2d = None
    samples, refs = [], []
    ref_ok = True
    mask_problems = []  # (slice, description): one warning for the file, not one per slice
    for i in range(vol.num_slices):
        k = vol.read_slice(i)  # (C, H, W)
        H, W = k.shape[-2:]
        if not bool(torch.isfinite(torch.view_as_real(k)).all()):
            raise ValueError(f"{path}: kspace slice {i} contains NaN or Inf")
        sampled = (k != 0).any(0)
        if not bool(sampled.any()):
            raise ValueError(f"{path}: slice {i} has no sampled k-space (all zeros)")
        derived = sampled[0].to(torch.float32) if bool((sampled == sampled[:1]).all()) else sampled.to(torch.float32)
        mask = derived
        if file_mask is not None:
            mask, problem = _check_file_mask(file_mask, sampled, derived)
            if problem:
                mask_problems.append((i, problem))
        scale, k = _normalise(k)
        acs = acs2d if (mask.ndim == 2 and acs2d is not None and len(acs2d) == 2) else None
        smp = MRISample(kspace=k, img_shape=(H, W), mask=mask, scale=scale, num_acs=acs,
                        metadata={"fname": Path(path).name, "slice": i})
        if k.shape[0] == 1:  # single-coil file: the coil map is 1 (ESPIRiT needs two coils)
            smp._maps_espirit = torch.ones(1, H, W, dtype=torch.complex64)
        samples.append(smp)
        ref = vol.read_target(i)
        if ref is not None and ref_ok:
            if not bool(torch.isfinite(ref).all()):
                # The reference is only for the metrics: keep the reconstruction, skip the scores.
                warnings.warn(f"{path}: the reference image of slice {i} contains NaN or Inf; "
                              "metrics are skipped, the reconstruction is written", stacklevel=2)
                ref_ok = False
            else:
                refs.append((ref.double() / scale).to(torch.float32))
    refs = refs if ref_ok else []
    if mask_problems:
        which = ", ".join(str(i) for i, _ in mask_problems[:8]) + (", ..." if len(mask_problems) > 8 else "")
        warnings.warn(f"{path}: dataset 'mask' disagrees with the sampled k-space of slice(s) {which} "
                      f"(slice {mask_problems[0][0]}: {mask_problems[0][1]}); using the mask derived from the "
                      "nonzero k-space there", stacklevel=2)
    reference = torch.stack(refs) if len(refs) == vol.num_slices and refs else None
    pattern = attrs.get("bayesmri_pattern")
    R = attrs.get("bayesmri_acceleration")
    if pattern is not None and R is not None:
        from .demo import pattern_name

        pattern = pattern_name(str(pattern), round(float(R), 2))
    return samples, reference, pattern or "input"


def _check_file_mask(file_mask: np.ndarray, sampled: torch.Tensor, derived: torch.Tensor):
    """``(mask, problem)``: the file's ``mask`` dataset if it agrees with the nonzero k-space, else
    ``(derived, description)``.

    A mask that marks unsampled locations as measured makes the likelihood pull them to zero (CG-SENSE
    lost 6 dB in a probe); one that omits measured locations throws data away. Either way the data
    decide and the caller warns. Measured-but-zero locations (the zero padding of fastMRI k-space)
    are allowed up to 1/8 of the mask.
    """
    from ..physics.masks import acceleration_of

    H, W = sampled.shape
    fm = np.asarray(file_mask)
    kind = f"derived mask R={acceleration_of(derived, (H, W)):.2f}, {'1-D' if derived.ndim == 1 else '2-D'}"
    if fm.shape not in ((W,), (H, W)) or fm.dtype.kind not in "biuf":
        return derived, f"mask of shape {fm.shape} and dtype {fm.dtype}, expected ({W},) or ({H}, {W}); {kind}"
    m = torch.from_numpy(fm.astype(np.float32))
    m2 = (m.reshape(1, W) if m.ndim == 1 else m).expand(H, W) > 0
    data_off_mask = int((sampled & ~m2).sum())
    mask_no_data = int((m2 & ~sampled).sum())
    if data_off_mask == 0 and mask_no_data <= int(m2.sum()) // 8:
        return m, None
    return derived, (f"{data_off_mask} measured points outside the file mask, {mask_no_data} of its points "
                     f"without data, file mask R={acceleration_of(m, (H, W)):.2f}; {kind}")


def _normalise(k: torch.Tensor) -> tuple[float, torch.Tensor]:
    """``(scale, k / scale)`` with ``scale`` the 95th percentile of the zero-filled RSS (GUIDE section 1).

    Computed after dividing by the peak magnitude in double precision: squares of k-space stored at
    1e-25 underflow (and at 1e36 overflow) in float32, which made the percentile 0 or inf and the
    image blank. Any finite, nonzero scale of the data now gives the same normalised slice.
    """
    from ..data.sample import percentile_scale
    from ..physics.coils import rss
    from ..physics.fft import ifft2c

    kd = k.to(torch.complex128)
    peak = float(kd.abs().max())
    kd = kd / peak
    rel = percentile_scale(rss(ifft2c(kd), dim=-3), 0.95)
    return peak * rel, (kd / rel).to(torch.complex64)


def write_result(stage: Path, name: str, res, *, array_format: str = "npz", keep_samples: int = 8, voxel_size=(1, 1, 1)):
    """Write the image files of one method's result into ``stage``; return the written paths."""
    from .. import io

    mean = res.mean.reshape(-1, *res.mean.shape[-2:])
    files = [
        io.save_nifti(stage / f"{name}_mean.nii.gz", mean, magnitude=True, voxel_size=voxel_size),
        _save_stack_png(stage / f"{name}_mean.png", mean, f"{name}: mean"),
    ]
    std = res.std.reshape(-1, *res.std.shape[-2:]) if res.std is not None else None
    if std is not None and n_samples_of(res) > 1:
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
def method_files(name: str) -> list[str]:
    """Every file name :func:`write_result` can write for method ``name`` (stale ones are removed)."""
    return [f"{name}_mean.nii.gz", f"{name}_mean.png", f"{name}_std.nii.gz", f"{name}_std.png",
            f"{name}.npz", f"{name}.h5"]


def check_threads(threads: int) -> int:
    """``threads`` if it is between 1 and the number of CPU cores, else a ``ValueError``.

    More threads than cores makes torch's thread pool fight itself (a 3 s job took 162 s with 10000).
    """
    cores = os.cpu_count() or 1
    if not 1 <= threads <= cores:
        raise ValueError(f"--threads must be between 1 and the {cores} CPU core(s) of this machine, got {threads}")
    return threads


def check_seed(seed: int) -> int:
    """``seed`` if torch can seed a generator with it (and with ``seed + slice``), else a ``ValueError``."""
    if not 0 <= seed < 2**63 - 2**20:
        raise ValueError(f"--seed must be between 0 and 2**63 - 2**20, got {seed}")
    return seed


#: Bytes a sampler holds per chain, in units of one coil k-space ``C*H*W`` complex64: measured for pULA
#: at 320x320 with 16 coils (issue 22: ~0.35 GB per sample = 27 x 13.1 MB).
CHAIN_BYTES_FACTOR = 27


def available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _warn_chain_memory(P: int, chunk: int | None, C: int, H: int, W: int) -> None:
    # An estimate, so a warning when it exceeds the memory available now (other programs may free
    # some); an error only when it exceeds twice the machine's whole memory, which no run survives.
    from ..data.fastmri import max_slice_bytes

    per_chain = CHAIN_BYTES_FACTOR * C * H * W * 8
    at_once = min(P, chunk or P)
    need = at_once * per_chain
    phys = 4 * max_slice_bytes()  # the physical memory (or BAYESMRI_MAX_SLICE_BYTES x 4)
    avail = available_memory()
    limit = avail if avail is not None else phys
    fit = max(1, int(limit // per_chain))
    what = f"{at_once} chains at once need about {need / 2**30:.1f} GiB ({C} coils, {H}x{W})"
    if need > 2 * phys:
        raise ValueError(f"{what}, more than twice this machine's {phys / 2**30:.1f} GiB: use --chunk {fit}")
    if avail is not None and need > avail:
        warnings.warn(f"{what}; {avail / 2**30:.1f} GiB available: use --chunk {fit}", stacklevel=3)


def output_bytes(shape: tuple[int, int, int], n_samples: int, keep_samples: int) -> int:
    """Upper bound of the bytes :func:`write_result` writes for ``S`` slices of ``H x W`` (uncompressed)."""
    S, H, W = shape
    per_pixel = 4 + 4 + 8 + 4 + 8 * min(int(keep_samples), int(n_samples))  # niftis, mean, std, samples
    return S * H * W * per_pixel + (4 << 20)  # PNGs and headers


def run(args) -> int:
    from ..methods import method_info

    method_info(args.method)  # unknown names fail here, before any file is touched
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    if args.keep_samples < 0:
        raise ValueError(f"--keep-samples must be >= 0, got {args.keep_samples}")
    check_threads(args.threads)
    check_seed(args.seed)
    if args.chunk is not None and args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    device = resolve_device(args.device)
    path = check_input_file(args.input)
    if getattr(args, "weights", None) is not None:
        from ..priors.loading import resolve_weights

        if not method_info(args.method).stochastic:
            raise ValueError(f"--weights is for the learned methods; {args.method!r} has no weights")
        resolve_weights(args.weights)  # a missing pair fails here; a corrupt one when the method loads it
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, path, device)
    finally:
        torch.set_num_threads(previous)


def write_partial(out: Path, args, res, reference, pattern: str, *, n_slices: int) -> str:
    """Write the slices an interrupted run finished as ``<method>.partial_*`` (atomically); return that name.

    A name no method can have (method names have no ``.``), so a partial result never replaces a
    complete one; its ``metrics.json`` entry says ``"partial": true`` and how many slices it holds.
    """
    from .. import io

    name = f"{args.method}.partial"
    k = int(res.mean.shape[0])
    with io.atomic_dir(out, replace=method_files(name), merge_json=["metrics.json"]) as stage:
        write_result(stage, name, res, array_format=args.array_format, keep_samples=args.keep_samples)
        row = None
        if reference is not None:
            row = schema_row(res, reference[:k])
            row.update(partial=True, n_slices_total=int(n_slices))
        io.save_json(stage / "metrics.json", {name: {pattern: row} if row is not None else None})
    return name


def _run(args, path: Path, device) -> int:
    from .. import io
    from ..methods import method_info

    out = args.out if args.out is not None else path.with_name(f"{path.stem}_{args.method}")
    samples, reference, pattern = load_h5_samples(path)
    S = len(samples)
    H, W = samples[0].img_shape
    P = int(args.samples) if method_info(args.method).stochastic else 1
    if reference is not None and (reference.shape[-2] > H or reference.shape[-1] > W):
        # schema_row would find this only after the compute
        raise ValueError(f"{path}: reference of {reference.shape[-2]} x {reference.shape[-1]} is larger than the "
                         f"k-space matrix {H} x {W}")
    # Fail before the compute, not after it: a folder that cannot be written or a full disk.
    io.check_writable(out, need_bytes=output_bytes((S, H, W), P, args.keep_samples))
    if P > 1:
        _warn_chain_memory(P, args.chunk, int(samples[0].kspace.shape[0]), H, W)
    progress = not args.no_progress
    from tqdm.auto import tqdm

    from .. import _interrupt

    # The staging folder exists from here on, so an interrupted or failed run leaves `out` untouched;
    # the commit replaces this method's files (stale ones removed) and merges metrics.json per method.
    # A complete run also retires a partial result of the same method (files and metrics entry).
    replace = method_files(args.method) + method_files(f"{args.method}.partial")
    try:
        with io.atomic_dir(out, replace=replace, merge_json=["metrics.json"]) as stage:
            with tqdm(total=S, desc=f"recon {args.method}", disable=not progress, file=sys.stderr) as bar:
                options = {"weights": str(args.weights)} if getattr(args, "weights", None) is not None else None
                try:
                    res = run_method(args.method, samples, n_samples=args.samples, seed=args.seed, device=device,
                                     maps="espirit", progress=progress, on_slice=lambda: bar.update(1),
                                     options=options, chunk=args.chunk, keep=args.keep_samples)
                except ValueError as exc:
                    # a problem of the data found by the method (e.g. "k-space centre is not sampled")
                    # must still say which file
                    if str(path) in str(exc):
                        raise
                    raise ValueError(f"{path}: {exc}") from None
            S, P = int(res.mean.shape[0]), n_samples_of(res)
            write_result(stage, args.method, res, array_format=args.array_format, keep_samples=args.keep_samples)
            if reference is not None:
                row = schema_row(res, reference)
                io.save_json(stage / "metrics.json", {args.method: {pattern: row}, f"{args.method}.partial": None})
                summary = (f"{args.method} on {path.name} ({S} slices, {P} sample(s)): PSNR {row['psnr']:.2f} dB, "
                           f"SSIM {row['ssim']:.4f}, NMSE {row['nmse']:.4g}, {row['time_per_sample_s']:.3g} s/sample")
            else:
                # no scores for this run: drop this method's entry of an earlier run (null removes it)
                io.save_json(stage / "metrics.json", {args.method: None, f"{args.method}.partial": None})
                summary = f"{args.method} on {path.name}: {S} slices, {P} sample(s), {res.wall_time:.3g} s (no ground truth)"
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None) or _interrupt.pending() or signal.SIGINT
        kept = (f"the results were written to {out} before stopping" if getattr(exc, "deferred", False)
                else f"nothing written, {out} left as it was")
        partial = getattr(exc, "partial_result", None)
        if getattr(args, "partial", False) and partial is not None and not getattr(exc, "deferred", False):
            name = write_partial(out, args, partial, reference, pattern, n_slices=S)
            kept = (f"the first {partial.mean.shape[0]} of {S} slices written to {out} as {name}* "
                    f"(complete results there untouched)")
        raise _interrupt.Interrupted(signum, f"{exc or 'interrupted'}; {kept}") from None
    print(summary)
    print(f"wrote {out}")
    return 0
