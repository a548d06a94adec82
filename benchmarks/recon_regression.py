"""Before/after check of the classical reconstructions for a refactoring (issue 20: the one CG).

Writes the CG-SENSE (with and without Tikhonov term and warm start), TV (ADMM) and l1-wavelet (FISTA)
images of 2 built-in test slices x 2 patterns (GRO and Poisson, R = 4, 8 coils, 64x64, true maps) to a
file, or compares two such files (PSNR against the truth and the largest pixel difference)::

    git archive <base> bayesmri | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base OMP_NUM_THREADS=1 python benchmarks/recon_regression.py write before.pt
    PYTHONPATH=$PWD      OMP_NUM_THREADS=1 python benchmarks/recon_regression.py write after.pt
    python benchmarks/recon_regression.py compare before.pt after.pt
"""
from __future__ import annotations

import sys

import torch


def write(path: str) -> None:
    from bayesmri.data.simulate import SimulatedBrainDataset
    from bayesmri.metrics import psnr
    from bayesmri.recon import cg_sense, l1_wavelet_recon, tv_recon

    out = {}
    for pattern in ("gro", "poisson"):
        ds = SimulatedBrainDataset("test", size=64, pattern=pattern, acceleration=4, ncoils=8)
        for i in range(2):
            s = ds[i]
            op, y = s.operator("true"), s.y
            xt = s.target[None] if s.target.ndim == 2 else s.target
            runs = {"tv": lambda: tv_recon(op, y, lam=0.01, max_iter=60),
                    "cg": lambda: cg_sense(op, y, lam=0.0, max_iter=30),
                    "cg-tikhonov-warm": lambda: cg_sense(op, y, lam=0.05, max_iter=30, x0=op.A_adjoint(y)),
                    "l1-wavelet": lambda: l1_wavelet_recon(op, y, lam=0.01, max_iter=60)}
            for name, fn in runs.items():
                x = fn()
                out[f"{pattern}/{i}/{name}"] = (x, float(psnr(x, xt, reduction="mean")))
    torch.save(out, path)


def compare(a_path: str, b_path: str) -> None:
    a, b = torch.load(a_path), torch.load(b_path)
    print("| case | PSNR before | PSNR after | relative change | max |x_a - x_b| / max |x_a| |")
    print("|---|---:|---:|---:|---:|")
    for k in a:
        (xa, pa), (xb, pb) = a[k], b[k]
        print(f"| {k} | {pa:.4f} | {pb:.4f} | {abs(pb - pa) / pa:.1e} | {float((xa - xb).abs().max() / xa.abs().max()):.1e} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
