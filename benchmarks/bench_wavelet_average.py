"""Cycle spinning's seed-to-seed spread in l1-wavelet FISTA, and averaging the last iterates against it.

With ``random_shift=True`` (BART's default too) every FISTA iterate is one draw of random wavelet shifts,
so the returned image depends on the shift seed. This prints, for each lambda, the PSNR mean and max-min
spread over seeds of the last iterate and of the mean of the last K iterates (``average_last=K``).
Data: the phantom simulation of ``bench_speed.py`` (GRO R=4, true maps, 40 dB).

    OMP_NUM_THREADS=1 python benchmarks/bench_wavelet_average.py --size 128 --coils 8
    OMP_NUM_THREADS=1 python benchmarks/bench_wavelet_average.py --size 320 --coils 16

Results: docs/speed.md ("Averaging the last iterates against the seed spread").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import simulated  # noqa: E402

from bayesmri.physics import MultiCoilMRI  # noqa: E402
from bayesmri.recon import l1_wavelet_recon  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--lam-factors", default="0.02,0.03", help="lambda / (1e-3 max|y|), comma-separated")
    ap.add_argument("--average", default="20,50,100", help="K values of average_last, comma-separated")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    s, mask = simulated(args.size, args.coils)
    op = MultiCoilMRI(s.maps_true[None], mask)
    y = op.mask * (s.kspace * mask)[None]
    mag = s.target.abs()[None]
    Ks = [int(k) for k in args.average.split(",")]

    def psnr(x):
        return float(10 * torch.log10(mag.max() ** 2 / ((x.abs() - mag) ** 2).mean()))

    print(f"{args.size}x{args.size}x{args.coils}, GRO R=4, db2, {args.iters} iterations, {args.seeds} seeds: "
          "PSNR mean (max-min spread)\n")
    print("| lambda factor | last iterate | " + " | ".join(f"mean of last {k}" for k in Ks) + " |")
    print("|---|---|" + "---|" * len(Ks))
    for f in (float(v) for v in args.lam_factors.split(",")):
        lam = f * 1e-3 * float(y.abs().max())
        rows = []
        for seed in range(args.seeds):
            its = []
            x = l1_wavelet_recon(op, y, lam, wavelet="db2", max_iter=args.iters, generator=seed,
                                 callback=lambda it, v: its.append(v.clone()))
            # the callback's iterates give every K from one run; average_last=K returns the same means
            rows.append([psnr(x)] + [psnr(torch.stack(its[-k:]).mean(0)) for k in Ks])
        r = np.array(rows)
        cells = [f"{m:.2f} ({sp:.2f})" for m, sp in zip(r.mean(0), r.max(0) - r.min(0))]
        print(f"| {f:g} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
