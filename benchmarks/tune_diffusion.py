"""Tune a diffusion sampler's settings on the built-in ``val`` split (never on ``test``).

Runs one method with each of several option sets on a few val slices (8 coils, SNR 30 dB, true maps)
and prints mean PSNR / SSIM / NFE / time next to TV at the benchmark's val-tuned lambda, so that the
settings (``DEFAULTS`` in ``bayesmri/methods/diffusion.py``, history in ``docs/tuning.md``) come from a recorded search:

    OMP_NUM_THREADS=1 python benchmarks/tune_diffusion.py ula-annealed \
        '{"n_levels": 160}' '{"n_levels": 160, "init": "gaussian"}' --patterns gro4,poisson8 --slices 3

Each option set is merged over ``BENCH_OPTIONS[method]``. ``--weights`` as in ``bench_diffusion.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diffusion import BENCH_OPTIONS, DIFF, RESULTS, dataset, load_prior, run_one, slice_indices  # noqa: E402


def tv_lambda(pattern: str, size: int) -> float:
    """TV lambda tuned on ``val`` by ``bench_diffusion.py`` (``lam|<pattern>|<size>`` in its cache)."""
    cache = json.loads((RESULTS / "diffusion_cache.json").read_text())
    key = f"lam|{pattern}|{size}"
    if key not in cache:
        raise SystemExit(f"no tuned TV lambda for {pattern} at {size}x{size}: run bench_diffusion.py first, "
                         "or pass --no-tv")
    return cache[key]["tv"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("method", choices=DIFF)
    ap.add_argument("options", nargs="+", help="JSON dicts merged over BENCH_OPTIONS[method]")
    ap.add_argument("--patterns", default="gro4,poisson8")
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--no-tv", action="store_true")
    args = ap.parse_args(argv)
    prior, label = load_prior(args.weights)
    print(f"# {args.method} on val, {args.slices} slices, P={args.P}, weights {label}", flush=True)
    print("| pattern | options | PSNR | SSIM | NFE | s/sample |\n|---|---|---|---|---|---|", flush=True)
    for pat in args.patterns.split(","):
        name = pat.rstrip("0123456789")
        R = int(pat[len(name):])
        ds = dataset("val", args.size, name, R)
        idx = slice_indices(len(ds), args.slices)
        samples = [ds[i] for i in idx]
        runs = [] if args.no_tv else [("tv", {"lam": tv_lambda(pat, args.size)}, "tv")]
        runs += [(args.method, dict(BENCH_OPTIONS[args.method], **json.loads(o)), o) for o in args.options]
        for m, opts, label in runs:
            t = time.time()
            rows = [run_one(m, s, args.P, i, prior, opts) for i, s in zip(idx, samples)]
            psnr, ssim = np.mean([r["psnr"] for r in rows]), np.mean([r["ssim"] for r in rows])
            print(f"| {pat} | {label} | {psnr:.2f} | {ssim:.3f} | {rows[0]['nfe']} | "
                  f"{(time.time() - t) / len(rows) / (args.P if m in DIFF else 1):.2f} |", flush=True)


if __name__ == "__main__":
    main()
