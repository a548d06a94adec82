"""Where a reconstruction's error lies in k-space: sampled vs unsampled locations (docs/pogmdm_native.md).

On one val slice of ``bench_realsize.py`` (same simulation, 224 px, 8 coils, 30 dB), the magnitude error
``a |x| - |x_true|`` (``a`` the least-squares scale, as the PSNR uses) is transformed with the centred FFT and
its energy split by the sampling mask. A prior that mostly fails to fill the unsampled k-space shows its error
there; a data step that keeps the measured noise shows it at the sampled locations.

    python benchmarks/kspace_error_split.py --pattern gro4 --methods zf,tv,pogmdm-joint --P 2
    python benchmarks/kspace_error_split.py --pattern gro4 --methods pula --P 4 --opt 'pula:prior="pogmdm_native"'

Sampling methods run with the simulation's coil maps (``maps="true"``, as in ``bench_realsize.py``) and
``--opt method:key=value`` options; without a ``prior`` option the score methods use their default prior.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_realsize as B  # noqa: E402
from bayesmri.methods.registry import get_method  # noqa: E402
from bayesmri.physics import fft2c  # noqa: E402


def split_energy(mean: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Total error energy and its fraction at the sampled k-space locations."""
    m, t = mean.abs(), target.abs()
    a = float((m * t).sum() / (m * m).sum())
    E = fft2c((a * m - t).to(torch.complex64)).abs() ** 2
    sampled = torch.broadcast_to(mask.bool(), E.shape)
    total = float(E.sum())
    return total, float(E[sampled].sum()) / total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pattern", default="gro4")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--methods", default="zf,tv,pogmdm-joint")
    ap.add_argument("--P", type=int, default=2)
    ap.add_argument("--opt", action="append", help="method:key=value option (repeatable, as bench_realsize.py)")
    ap.add_argument("--lam-cache", default="benchmarks/results/realsize_cache.json",
                    help="bench_realsize cache holding the val-tuned lam|tv|... entries")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    name, R = B.parse_pattern(args.pattern)
    (i, img), = B.pick_slices("val", 1, None)
    s = B.simulate(img, args.size, 8, name, R, 30.0, f"val|{i}|{args.size}|8|{name}{R}")
    lams = json.loads(Path(args.lam_cache).read_text())
    opts = B.parse_opts(args.opt)
    print(f"val slice {i}, {args.size} px, {args.pattern}, noise_sigma {s.noise_sigma:.4g}")
    print("| method | PSNR | error energy | at sampled k-space | at unsampled |\n|---|---|---|---|---|")
    for method in args.methods.split(","):
        fn = get_method(method)
        if method in ("tv", "l1wav"):
            res = fn(s, maps="true", lam=lams[f"lam|{method}|{args.size}|8|{args.pattern}"]["lam"])
        elif method == "zf":
            res = fn(s, maps="true")
        else:
            o = {"map_steps": 0} if method == "pogmdm-joint" else {}
            o.update(opts.get(method, {}))
            res = fn(s, n_samples=args.P, generator=torch.Generator().manual_seed(0), maps="true", **o)
        total, frac = split_energy(res.mean, s.target, s.mask)
        psnr = float(B.M.psnr(res.mean.abs().cpu()[None], s.target.abs()[None])[0])
        label = method + (" " + json.dumps(opts[method]) if method in opts else "")
        print(f"| {label} | {psnr:.2f} | {total:.4g} | {frac:.1%} | {1 - frac:.1%} |", flush=True)


if __name__ == "__main__":
    main()
