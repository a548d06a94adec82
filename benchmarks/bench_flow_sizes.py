"""The learned flows (``cnf``, ``cinn``; weights trained at 64 x 64) on files of other sizes (issue 18 item 4).

Scores, as ``bayesmri recon`` does (ESPIRiT maps, its reference, ``evaluate``: magnitude PSNR / SSIM of the
mean over the slices), each size policy of :mod:`bayesmri.flows.sizes` against zero-filled and TV:

* ``kspace`` (default): reconstruct at 64 x 64 from the central k-space, zero-pad back, measured samples
  restored;
* ``kspace, no DC`` (cINN only): the same without restoring the measured samples (what the cINN did before,
  with an image-domain resampling instead of the k-space one);
* ``native``: the fully convolutional weights at the data's size.

Run (files from ``bayesmri simulate --size N --slices 2 --out /tmp/f/sN.h5``)::

    OMP_NUM_THREADS=1 python benchmarks/bench_flow_sizes.py /tmp/f/s128.h5 /tmp/f/s224.h5

``--builtin 128 224``: instead, 8 test slices (every 15th) of ``SimulatedBrainDataset("test", size=N,
pattern="gro", acceleration=4)`` with the true maps, P = 8, per-slice and mean PSNR of the default and the
native policy.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.methods import run_method, schema_row  # noqa: E402
from bayesmri.data.recon_input import load_input  # noqa: E402

VARIANTS = [
    ("zf", "zf", {}),
    ("tv", "tv", {}),
    ("cnf", "cnf", {}),
    ("cnf native", "cnf", {"size_policy": "native"}),
    ("cinn", "cinn", {}),
    ("cinn no DC", "cinn", {"data_consistency": False}),
    ("cinn native", "cinn", {"size_policy": "native"}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--builtin", type=int, nargs="+", default=None, metavar="N")
    args = ap.parse_args(argv)
    if args.builtin:
        return builtin(args.builtin, args.samples)
    print("| file | size | variant | PSNR (dB) | SSIM |")
    print("| --- | --- | --- | --- | --- |")
    for path in args.files:
        data = load_input(path)
        H, W = data.samples[0].img_shape
        for label, name, options in VARIANTS:
            try:
                res = run_method(name, data.samples, n_samples=args.samples, seed=0, maps="espirit",
                                 options=options)
            except ValueError as exc:
                print(f"| {path.name} | {H}x{W} | {label} | error: {exc} | |")
                continue
            row = schema_row(res, data.reference)
            print(f"| {path.name} | {H}x{W} | {label} | {row['psnr']:.2f} | {row['ssim']:.4f} |", flush=True)


def builtin(sizes, P):
    import torch

    from bayesmri.data.simulate import SimulatedBrainDataset
    from bayesmri.methods import get_method
    from bayesmri.metrics import psnr

    cols = [("zf", "zf", {}), ("cnf", "cnf", {}), ("cnf native", "cnf", {"size_policy": "native"}),
            ("cinn", "cinn", {}), ("cinn native", "cinn", {"size_policy": "native"})]
    for N in sizes:
        ds = SimulatedBrainDataset("test", size=N, pattern="gro", acceleration=4)
        idx = list(range(0, len(ds), max(1, len(ds) // 8)))[:8]
        print(f"\n{N}x{N}, slices {idx}: " + " | ".join(c[0] for c in cols))
        rows = []
        for i in idx:
            s = ds[i]
            row = []
            for _, name, opts in cols:
                kw = {} if name == "zf" else {"n_samples": P, "generator": 0, **opts}
                row.append(float(psnr(get_method(name)(s, maps="true", **kw).mean, s.target)))
            rows.append(row)
            print(i, " ".join(f"{v:.2f}" for v in row), flush=True)
        t = torch.tensor(rows)
        print("mean", " ".join(f"{v:.2f}" for v in t.mean(0)))


if __name__ == "__main__":
    main()
