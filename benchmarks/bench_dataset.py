"""Dataset reconstruction on 1 process vs N processes (issue 21, items 3-4): wall time and peak memory.

Simulates ``--volumes`` fastMRI-layout files (``bayesmri simulate``: ``--size`` x ``--size``, ``--coils``
coils, ``--slices`` slices, GRO R=4; cached in ``--work``), then runs for each method and process count

    bayesmri recon DATA --method M --samples P --out OUT                       # 1 process
    python -m torch.distributed.run --standalone --nproc-per-node N -m bayesmri.cli recon DATA ...  # N

and reports the wall time of the whole command, the time per slice, each process's peak RSS (from the
run manifest: ``ru_maxrss`` of every process), and whether the outputs equal those of 1 process.

The issue's configuration (20 volumes of 10 slices, 320 x 320, 16 coils; tv and pula P=1; 1 vs 2 processes)::

    python benchmarks/bench_dataset.py --volumes 20 --size 320 --coils 16 --slices 10 --methods tv pula --procs 1 2

Results: ``benchmarks/results/dataset.md`` (appended with ``--md``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def simulate(work: Path, args) -> Path:
    data = work / f"data_{args.volumes}x{args.slices}_{args.size}_{args.coils}c"
    data.mkdir(parents=True, exist_ok=True)
    for i in range(args.volumes):
        f = data / f"vol{i:03d}.h5"
        if not f.exists():
            cmd = [sys.executable, "-m", "bayesmri.cli", "simulate", "--slices", str(args.slices), "--size",
                   str(args.size), "--coils", str(args.coils), "--seed", str(i), "--out", str(f)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env(args))
    return data


def env(args) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def run(data: Path, out: Path, method: str, n: int, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    rest = ["recon", str(data), "--method", method, "--samples", str(args.samples), "--threads", str(args.threads),
            "--device", args.device, "--out", str(out), "--no-progress"]
    if n == 1:
        cmd = [sys.executable, "-m", "bayesmri.cli", *rest]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
               "-m", "bayesmri.cli", *rest]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(args))
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    m = json.loads((out / "manifest.json").read_text())
    run_ = m["runs"][-1]
    s = m["summary"]
    return {"method": method, "procs": n, "wall_s": wall, "slices": s["slices"], "per_slice_s": wall / s["slices"],
            "rss_mb": [p["peak_rss_mb"] for p in run_["processes"]],
            "files": [len(p["done"]) for p in run_["processes"]], "psnr": (s.get("mean") or {}).get("psnr"),
            "load": (load0, os.getloadavg()[0])}


def identical(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    for f in sorted(a.glob("*.h5")):
        with h5py.File(f) as x, h5py.File(b / f.name) as y:
            for k in x:
                if k != "wall_time_s" and not np.array_equal(x[k][()], y[k][()]):
                    return False
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volumes", type=int, default=20)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--coils", type=int, default=16)
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=["tv", "pula"])
    p.add_argument("--samples", type=int, default=1, help="P per slice (default 1)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each process takes GPU LOCAL_RANK)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench_dataset"))
    p.add_argument("--md", type=Path, default=None, help="append the table to this markdown file")
    args = p.parse_args(argv)
    data = simulate(args.work, args)
    rows = []
    for method in args.methods:
        base = None
        for n in args.procs:
            out = args.work / f"out_{data.name}_{method}_{n}"
            row = run(data, out, method, n, args)
            if base is None:
                base, row["same"] = out, "-"
            else:
                row["same"] = "yes" if identical(base, out) else "NO"
            rows.append(row)
            print(json.dumps(row), flush=True)
    head = (f"{args.volumes} volumes x {args.slices} slices, {args.size}x{args.size}, {args.coils} coils, GRO R=4, "
            f"P={args.samples}, {args.threads} thread(s) per process, {args.device}; {os.cpu_count()} CPU cores")
    lines = [f"#### {head}", "", "| method | processes | wall time (s) | s / slice | speed-up | peak RSS per process (MB) "
             "| files per process | mean PSNR (dB) | equal to 1 process | load avg before/after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one = next(x for x in rows if x["method"] == r["method"] and x["procs"] == args.procs[0])
        lines.append(f"| {r['method']} | {r['procs']} | {r['wall_s']:.1f} | {r['per_slice_s']:.2f} | "
                     f"{one['wall_s'] / r['wall_s']:.2f} | {', '.join(f'{x:.0f}' for x in r['rss_mb'])} | "
                     f"{', '.join(map(str, r['files']))} | {r['psnr']:.2f} | {r['same']} | "
                     f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.md is not None:
        with open(args.md, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
