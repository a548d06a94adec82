"""Reconstruct every file of a dataset: streamed, resumable, sharded over ``torchrun`` processes (issue 21).

``bayesmri recon DIR_OR_GLOB --out OUT`` calls :func:`reconstruct_dataset` (``docs/datasets.md``). This
module knows nothing of file formats or methods: the caller gives two functions,

- ``plan(path) -> list[int]``: the slice indices of an input to reconstruct;
- ``reconstruct_slice(path, index, position) -> SliceResult``: read one slice and reconstruct it
  (``position`` is the slice's place in ``plan(path)``, which seeds it: a file's result does not depend on
  how many processes share the dataset),

so a new reader or method plugs in without touching the loop. What this module owns:

- **Outputs**: one HDF5 per input, ``OUT/<input stem>.h5``, in the fastMRI submission layout
  (``reconstruction (S, h, w)`` float32: magnitude of the posterior mean in the input's units) plus
  ``mean`` (complex64), ``std`` (float32; samplers), ``samples (P', S, h, w)`` (complex64; samplers),
  ``slices``, ``scale``, ``wall_time_s``, ``nfe``, and the file's manifest record as the attribute
  ``bayesmri_record`` (JSON). Slices are written as they finish: memory does not grow with the volume
  (the magnitude images kept for the metrics aside, 8 bytes per output voxel).
- **Atomicity and resume**: an output is written to a temporary file and renamed when complete, so a
  file in ``OUT`` is either complete or absent. A file is *finished* when its output exists with a
  record made with the same options; a restarted run skips it. The record inside the output makes this
  safe even if a process dies between the rename and the manifest update (the next run re-enters it).
- **Manifest** ``OUT/manifest.json``: method, options, versions, the inputs, one record per file
  (metrics, times, peak memory, process) updated as each file finishes (under a folder lock), every run
  with its processes, and a summary (fastMRI metrics over volumes, :mod:`bayesmri.evaluation`).
- **Distribution**: under ``torchrun`` (``WORLD_SIZE > 1``) the processes join a ``torch.distributed``
  group (gloo; with CUDA one GPU per process). Rank 0 decides which files are
  pending and broadcasts them with a deterministic shard (largest files first, each to the least-loaded
  process); every process writes its own outputs; rank 0 writes the run summary after a barrier.
"""
from __future__ import annotations

import glob as _glob
import json
import math
import os
import platform
import resource
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["SliceResult", "DatasetReport", "find_inputs", "is_dataset_input", "output_name", "join_process_group",
           "shard", "reconstruct_dataset", "read_record", "summary_table", "MANIFEST", "RECORD_ATTR", "INPUT_SUFFIXES"]

#: Name of the run manifest in the output folder.
MANIFEST = "manifest.json"
#: HDF5 attribute of an output that holds its manifest record (JSON).
RECORD_ATTR = "bayesmri_record"
#: File endings a folder input is searched for (readers of other formats add theirs here).
INPUT_SUFFIXES = (".h5", ".cfl")
#: Format tag of the manifest.
MANIFEST_FORMAT = "bayesmri-dataset/1"
#: How long a process waits at a barrier for the others (the slowest shard): a week.
DIST_TIMEOUT = timedelta(days=7)
_GLOB_CHARS = set("*?[")


@dataclass
class SliceResult:
    """One reconstructed slice, in the input's units (the caller undoes the normalisation).

    Attributes
    ----------
    index : slice index in the input file.
    mean : ``(h, w)`` complex posterior mean (the reconstruction of a deterministic method).
    std : ``(h, w)`` real posterior std, or None (deterministic methods, one sample).
    samples : ``(P', h, w)`` complex kept samples, or None.
    reference : ``(h, w)`` magnitude reference, or None.
    scale : the normalisation scale that was undone. nfe, wall_time : of the method.
    n_samples : samples drawn. info : JSON-friendly facts of the file (mask, reference source, ...),
        taken from the file's first slice into its record.
    """

    index: int
    mean: torch.Tensor
    std: torch.Tensor | None = None
    samples: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    scale: float = 1.0
    nfe: int = 0
    wall_time: float = 0.0
    n_samples: int = 1
    info: dict = field(default_factory=dict)


@dataclass
class DatasetReport:
    """What one process of :func:`reconstruct_dataset` did (``done``/``skipped``/``failed``: file names;
    ``summary``: the manifest summary, on rank 0 only)."""

    out: Path
    done: list
    skipped: list
    failed: list
    rank: int = 0
    world_size: int = 1
    summary: dict | None = None


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def is_dataset_input(spec) -> bool:
    """True for a folder, a glob pattern that is not an existing file, or several paths."""
    if isinstance(spec, (list, tuple)):
        if len(spec) != 1:
            return True
        spec = spec[0]
    p = Path(spec)
    return p.is_dir() or (not p.exists() and any(c in str(spec) for c in _GLOB_CHARS))


def output_name(path) -> str:
    """Output file name of an input: its stem with ``.h5`` (fastMRI: the input's own name)."""
    return Path(path).stem + ".h5"


def find_inputs(spec, suffixes=INPUT_SUFFIXES) -> list[Path]:
    """The input files of ``spec``: a folder (its files ending in ``suffixes``, not recursive), a glob
    pattern, a file, or a list of those; sorted by path, without duplicates.

    ``ValueError``/``FileNotFoundError`` (one line) for a pattern or folder with no file, a missing path,
    or two inputs that would write the same output name.
    """
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    files = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = [f for f in p.iterdir() if f.is_file() and f.suffix in suffixes and not f.name.startswith(".")]
            if not found:
                raise ValueError(f"no input files ({', '.join('*' + s for s in suffixes)}) in the folder {p}")
        elif p.is_file():
            found = [p]
        elif any(c in str(item) for c in _GLOB_CHARS):
            found = [Path(f) for f in _glob.glob(str(item)) if Path(f).is_file()]
            if not found:
                raise ValueError(f"no file matches {item}")
        else:
            raise FileNotFoundError(f"input {p} does not exist")
        files.extend(found)
    files = sorted({f.resolve(): f for f in files}.values(), key=lambda f: str(f.resolve()))
    names = {}
    for f in files:
        other = names.setdefault(output_name(f), f)
        if other is not f:
            raise ValueError(f"inputs {other} and {f} would both write {output_name(f)}; give them different names")
    return files


# --------------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------------
def join_process_group(device: torch.device):
    """Join the ``torchrun`` process group if ``WORLD_SIZE > 1``; return ``(DistInfo, device)``.

    With a CUDA ``device`` each process takes GPU ``LOCAL_RANK`` (modulo the GPUs of the node; an explicit
    ``cuda:N`` is refused, it would put every process on one GPU). The group is gloo whatever the device:
    the processes only exchange the plan and their reports (small objects, no tensors), and gloo, unlike
    NCCL, also allows more processes than GPUs.
    """
    import torch.distributed as dist

    from .train.distributed import DistInfo, dist_info

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"--device {device} under torchrun would put every process on one GPU; "
                             "use --device cuda (process LOCAL_RANK takes GPU LOCAL_RANK)")
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=DIST_TIMEOUT)
    return dist_info(), device


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def _broadcast(obj, rank: int):
    d = _dist()
    if d is None:
        return obj
    box = [obj if rank == 0 else None]
    d.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj):
    d = _dist()
    if d is None:
        return [obj]
    box = [None] * d.get_world_size()
    d.all_gather_object(box, obj)
    return box


def shard(files, world_size: int, sizes=None) -> list[list]:
    """Split ``files`` over ``world_size`` processes: largest first, each to the least-loaded process.

    ``sizes`` (default: the file sizes on disk) estimate the work. Deterministic: ties go to the lower
    rank and equal sizes keep the order of ``files``.
    """
    sizes = [os.path.getsize(f) for f in files] if sizes is None else list(sizes)
    order = sorted(range(len(files)), key=lambda i: (-sizes[i], i))
    load = [0] * world_size
    parts = [[] for _ in range(world_size)]
    for i in order:
        r = min(range(world_size), key=lambda k: (load[k], k))
        parts[r].append(files[i])
        load[r] += sizes[i]
    return parts


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------------------------------
# records and manifest
# --------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict:
    import h5py

    from . import __version__

    return {"bayesmri": __version__, "torch": torch.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
            "python": platform.python_version()}


def read_record(path) -> dict | None:
    """The manifest record stored in an output file, or None (no such file, not HDF5, no record)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "reconstruction" not in f or RECORD_ATTR not in f.attrs:
                return None
            rec = json.loads(f.attrs[RECORD_ATTR])
    except (OSError, ValueError, TypeError):
        return None
    return rec if isinstance(rec, dict) else None


def _load_manifest(out: Path) -> dict | None:
    from . import io

    p = out / MANIFEST
    if not p.exists():
        return None
    try:
        m = io.load_json(p)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p} is not valid JSON ({' '.join(str(exc).split())[:80]}); move it away to start over") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{p} is not a bayesmri dataset manifest; use another --out")
    return m


def _update_manifest(out: Path, fn) -> dict:
    """Read-modify-write of the manifest under the folder lock, with signals held until it is written."""
    from . import _interrupt, io

    with _interrupt.deferred(), io.folder_lock(out):
        m = _load_manifest(out) or {}
        m = fn(m) or m
        io.save_json(out / MANIFEST, m)
    return m


def _entry(rec: dict) -> dict:
    # the manifest states the options once; the copy in each output is for the resume check
    return {k: v for k, v in rec.items() if k != "options"}


def _option_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _prepare(inputs: list[Path], out: Path, options: dict, world: int, argv) -> dict:
    """Rank 0: check ``out``, find the finished files, open a run entry. Returns ``{"pending", "skipped", "run"}``."""
    from . import io

    out_r = out.resolve() if out.exists() else out.absolute()
    for f in inputs:
        if f.resolve().parent == out_r:
            raise ValueError(f"--out {out} is the folder of the input {f.name}: the outputs would replace the inputs")
    io.check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    old = _load_manifest(out)
    if old is not None and old.get("options") != options:
        diff = "; ".join(_option_diff(old.get("options") or {}, options))
        raise ValueError(f"{out} holds a run with other options ({diff}); use another --out to keep both, "
                         "or remove it to start over")
    records, pending, skipped = {}, [], []
    io.remove_stale_temporaries(out, MANIFEST)  # leftovers of processes killed with SIGKILL
    for f in inputs:
        name = output_name(f)
        dest = out / name
        io.remove_stale_temporaries(out, name)
        rec = read_record(dest) if dest.exists() else None
        if dest.exists() and rec is None:
            raise ValueError(f"{dest} exists but was not written by a dataset run of bayesmri recon; "
                             "refusing to replace it (use another --out)")
        if rec is not None and rec.get("status") == "done" and rec.get("options") == options:
            records[name] = rec
            skipped.append(f)
        elif rec is not None:
            raise ValueError(f"{dest} was written with other options "
                             f"({'; '.join(_option_diff(rec.get('options') or {}, options))}); use another --out")
        else:
            pending.append(f)
    run = {"started": _now(), "status": "running", "world_size": world, "argv": list(argv),
           "n_inputs": len(inputs), "skipped": len(skipped), "pending": len(pending), "versions": _versions(),
           "host": socket.gethostname()}

    def fn(m):
        if not m:
            m.update(format=MANIFEST_FORMAT, method=options.get("method"), options=options, files={}, runs=[])
        for r in m["runs"]:  # a run that never reached its end (killed) is marked so
            if r.get("status") == "running":
                r["status"] = "interrupted"
        m["inputs"] = [str(f.resolve()) for f in inputs]
        m["files"].update({n: _entry(r) for n, r in records.items()})  # outputs renamed into place by a process killed before it wrote here
        m["runs"].append(run)
        m["versions"] = run["versions"]
        return m

    m = _update_manifest(out, fn)
    return {"pending": [str(f) for f in pending], "skipped": [str(f) for f in skipped], "run": len(m["runs"]) - 1}


def _finish_run(out: Path, run_index: int, processes: list, t0: float, failed_all: list) -> dict:
    """Rank 0 after the barrier: close the run entry and write the summary over the current inputs."""
    from .evaluation import METRICS, summarise

    def fn(m):
        run = m["runs"][run_index]
        run.update(finished=_now(), wall_time_s=round(time.perf_counter() - t0, 3), processes=processes,
                   status="failed" if failed_all else "done",
                   done=sum(len(p["done"]) for p in processes), failed=sum(len(p["failed"]) for p in processes))
        names = [output_name(f) for f in m["inputs"]]
        recs = [m["files"][n] for n in names if n in m["files"]]
        ok = [r for r in recs if r.get("status") == "done"]
        rows = [{"file": r["output"], **(r.get("metrics") or {})} for r in ok if r.get("metrics")]
        mean, std = summarise(rows) if rows else ({}, {})
        m["summary"] = {"n_inputs": len(names), "done": len(ok), "failed": sum(r.get("status") == "failed" for r in recs),
                        "not_done": len(names) - len(ok), "n_scored": len(rows),
                        "metrics": "fastMRI per-volume definitions (bayesmri.evaluation)",
                        "mean": mean, "std": std,
                        "wall_time_s": round(sum(float(r.get("wall_time_s", 0)) for r in ok), 3),
                        "slices": sum(int(r.get("n_slices", 0)) for r in ok), "metric_names": list(METRICS)}
        return m

    return _update_manifest(out, fn)


# --------------------------------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------------------------------
class _VolumeWriter:
    """Datasets of one output, created at the first slice and filled one slice at a time."""

    def __init__(self, f, n: int):
        self.f, self.n = f, n
        self.recon, self.refs = [], []
        self.nfe, self.wall = [], []
        self.first: SliceResult | None = None

    def add(self, pos: int, r: SliceResult) -> None:
        f, n = self.f, self.n
        mean = r.mean.detach().cpu()
        h, w = mean.shape[-2:]
        mag = mean.abs().to(torch.float32).numpy()
        if self.first is None:
            self.first = r
            f.create_dataset("reconstruction", (n, h, w), dtype="f4", chunks=(1, h, w))
            f.create_dataset("mean", (n, h, w), dtype="c8", chunks=(1, h, w))
            if r.std is not None:
                f.create_dataset("std", (n, h, w), dtype="f4", chunks=(1, h, w))
            if r.samples is not None and r.n_samples > 1:
                f.create_dataset("samples", (r.samples.shape[0], n, h, w), dtype="c8", chunks=(1, 1, h, w))
            for name, dt in (("slices", "i8"), ("scale", "f8"), ("wall_time_s", "f8"), ("nfe", "i8")):
                f.create_dataset(name, (n,), dtype=dt)
        elif (h, w) != tuple(f["reconstruction"].shape[-2:]):
            raise ValueError(f"slice {r.index} is {h} x {w}, the earlier slices {tuple(f['reconstruction'].shape[-2:])}")
        f["reconstruction"][pos] = mag
        f["mean"][pos] = mean.to(torch.complex64).numpy()
        if "std" in f:
            f["std"][pos] = r.std.detach().cpu().to(torch.float32).numpy()
        if "samples" in f:
            f["samples"][:, pos] = r.samples.detach().cpu().to(torch.complex64).numpy()
        f["slices"][pos], f["scale"][pos] = int(r.index), float(r.scale)
        f["wall_time_s"][pos], f["nfe"][pos] = float(r.wall_time), int(r.nfe)
        self.recon.append(mag)
        self.refs.append(None if r.reference is None else r.reference.detach().cpu().abs().to(torch.float32).numpy())
        self.nfe.append(int(r.nfe))
        self.wall.append(float(r.wall_time))


def _reconstruct_file(path: Path, out: Path, *, plan, reconstruct_slice, options: dict, rank: int, world: int,
                      device: str, bar=None) -> dict:
    """Reconstruct one input into ``out/<name>.h5`` (atomic) and return its record."""
    import h5py

    from . import io
    from .evaluation import volume_metrics

    name = output_name(path)
    dest = out / name
    io.remove_stale_temporaries(out, name)  # leftovers of a process killed with SIGKILL
    t0 = time.perf_counter()
    slices = [int(i) for i in plan(path)]
    if not slices:
        raise ValueError(f"{path}: no slice to reconstruct")
    with io.atomic_path(dest) as tmp:
        with h5py.File(tmp, "w") as f:
            wr = _VolumeWriter(f, len(slices))
            for pos, idx in enumerate(slices):
                if bar is not None:
                    bar.set_postfix_str(f"{name} slice {pos + 1}/{len(slices)}")
                wr.add(pos, reconstruct_slice(path, idx, pos))
            metrics = None
            if all(r is not None for r in wr.refs):
                try:
                    vals = volume_metrics(np.stack(wr.recon), np.stack(wr.refs))
                    metrics = {k: (v if math.isfinite(v) else None) for k, v in vals.items()}
                except ValueError as exc:
                    warnings.warn(f"{path}: no metrics: {exc}", stacklevel=2)
            first = wr.first
            rec = {"input": str(path.resolve()), "output": name, "status": "done", "slices": slices,
                   "n_slices": len(slices), "matrix": list(f["reconstruction"].shape[-2:]),
                   "n_samples": int(first.n_samples), "kept_samples": int(f["samples"].shape[0]) if "samples" in f else 0,
                   "metrics": metrics, "nfe": max(wr.nfe), "recon_time_s": round(sum(wr.wall), 4),
                   "wall_time_s": round(time.perf_counter() - t0, 4),
                   "time_per_slice_s": round((time.perf_counter() - t0) / len(slices), 4),
                   "peak_rss_mb": round(_peak_rss_mb(), 1), "rank": rank, "world_size": world,
                   "host": socket.gethostname(), "device": str(device), "finished": _now(), "options": options,
                   **first.info}
            f.attrs[RECORD_ATTR] = json.dumps(rec)
            f.attrs["method"] = str(options.get("method"))
            f.attrs["units"] = "the input's (normalisation undone)"
    return rec


# --------------------------------------------------------------------------------------------------
def reconstruct_dataset(inputs, out, *, plan: Callable, reconstruct_slice: Callable, options: dict,
                        device="cpu", progress: bool = True, argv=None, log=print) -> DatasetReport:
    """Reconstruct every file of ``inputs`` into ``out``; resumable; sharded over the process group.

    Parameters
    ----------
    inputs : list of input paths (:func:`find_inputs`), the same on every process.
    out : output folder.
    plan, reconstruct_slice : see the module docstring.
    options : JSON-friendly settings that determine the outputs (method, samples, seed, ...): a run into
        an ``out`` made with other options is refused, and an output counts as finished only for equal options.
    device : this process's device (recorded). progress : tqdm bar of the slices of rank 0.
    argv : command line recorded in the manifest. log : where one line per finished file goes.

    Returns
    -------
    DatasetReport of this process. A file that fails with ``ValueError``/``OSError``/``TypeError``/``MemoryError``
    (bad data) is recorded as failed with its message and the run goes on; it is retried by the next run.
    ``KeyboardInterrupt`` (Ctrl-C, SIGTERM) stops the process: finished outputs stay, the file in progress
    leaves nothing.
    """
    from tqdm.auto import tqdm

    from .train.distributed import dist_info

    out = Path(out)
    inputs = [Path(f) for f in inputs]
    info = dist_info()
    rank, world = info.rank, info.world_size
    t0 = time.perf_counter()
    argv = list(sys.argv if argv is None else argv)
    plan_ = None
    if rank == 0:
        try:
            plan_ = _prepare(inputs, out, options, world, argv)
        except (ValueError, OSError) as exc:  # every process must stop with the same message
            plan_ = {"error": f"{type(exc).__name__}", "message": str(exc)}
        if "error" not in plan_:
            pending = [Path(p) for p in plan_["pending"]]
            plan_["shards"] = [[str(p) for p in s] for s in shard(pending, world)]
    plan_ = _broadcast(plan_, rank)
    if "error" in plan_:
        raise (OSError if plan_["error"] == "OSError" else ValueError)(plan_["message"])
    mine = [Path(p) for p in plan_["shards"][rank]]
    skipped = [output_name(p) for p in plan_["skipped"]]
    if rank == 0 and skipped:
        log(f"{len(skipped)} of {len(inputs)} file(s) already finished in {out}, skipped")
    who = f"[rank {rank}] " if world > 1 else ""
    done, failed = [], []
    with tqdm(total=len(mine), disable=not progress or rank != 0, file=sys.stderr, unit="file",
              desc=f"recon {options.get('method')}") as bar:
        for k, path in enumerate(mine):
            try:
                rec = _reconstruct_file(path, out, plan=plan, reconstruct_slice=reconstruct_slice, options=options,
                                        rank=rank, world=world, device=str(device), bar=bar if progress else None)
            except (ValueError, OSError, TypeError, MemoryError) as exc:
                msg = " ".join(str(exc).split()) or type(exc).__name__
                rec = {"input": str(path.resolve()), "output": output_name(path), "status": "failed",
                       "error": msg[:400], "rank": rank, "finished": _now(), "options": options}
                warnings.warn(f"{path.name} failed: {msg}", stacklevel=2)
                failed.append(rec["output"])
            else:
                done.append(rec["output"])
                m = rec.get("metrics") or {}
                score = (f", PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, NMSE {m['nmse']:.4g}"
                         if m.get("psnr") is not None and m.get("ssim") is not None else "")
                (tqdm.write if bar is not None and not bar.disable else log)(
                    f"{who}[{k + 1}/{len(mine)}] {rec['output']}: {rec['n_slices']} slice(s), "
                    f"{rec['wall_time_s']:.3g} s{score}")
            _update_manifest(out, lambda m, r=rec: m["files"].__setitem__(r["output"], _entry(r)))
            bar.update(1)
    me = {"rank": rank, "host": socket.gethostname(), "device": str(device), "done": done, "failed": failed,
          "wall_time_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
          "threads": torch.get_num_threads()}
    processes = _gather(me)  # also the barrier: every shard has finished
    summary = None
    if rank == 0:
        failed_all = [f for p in processes for f in p["failed"]]
        summary = _finish_run(out, plan_["run"], processes, t0, failed_all)["summary"]
    return DatasetReport(out, done, skipped, failed, rank, world, summary)


def summary_table(report: "DatasetReport") -> str:
    """What ``recon DIR`` prints after a run: the per-file metrics of the finished inputs with their mean and
    std (:func:`bayesmri.evaluation.format_table`; none without references), then one line of counts."""
    from . import io
    from .evaluation import format_table

    s = report.summary
    m = io.load_json(Path(report.out) / MANIFEST)
    names = {output_name(f) for f in m["inputs"]}
    rows = [{"file": r["output"], "n_slices": r.get("n_slices"), **(r.get("metrics") or {})}
            for n, r in m["files"].items() if n in names and r.get("status") == "done" and r.get("metrics")]
    lines = [format_table(sorted(rows, key=lambda r: r["file"]), s.get("mean"), s.get("std"))] if rows else []
    failed = f", {s['failed']} failed (see {MANIFEST})" if s.get("failed") else ""
    lines.append(f"{s['done']} of {s['n_inputs']} file(s) done{failed}; wrote {report.out}")
    return "\n".join(lines)
