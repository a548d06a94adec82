"""Sampler benchmarks.

1. Convergence (pULA paper's claim): on the 64x64 complex Gaussian / 8-coil SENSE R=4 problem of
   ``tests/samplers/gaussian_problem.py``, the smallest NFE (over a doubling grid of noise levels)
   at which each sampler's posterior-mean error ``||mean_P - m||^2 / (tr C / P)`` falls below a target,
   and the ratios to pULA.
2. Cost per sample at 128x128, 8 coils: wall time per sample split into score time and the rest
   (FFTs, CG), for a cheap analytic score and for a small UNet-sized convolutional dummy score;
   ``total / (NFE x score time per call)`` approaches 1 when the score dominates.

Usage: ``python benchmarks/bench_samplers.py [--quick]``.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.physics import MultiCoilMRI  # noqa: E402
from bayesmri.priors import StationaryGaussianPrior  # noqa: E402
from bayesmri.samplers import PULA, ULA, AnnealedULA, Measurement, ScoreMRI  # noqa: E402
from tests.samplers.gaussian_problem import exact_posterior, make_problem  # noqa: E402


def convergence(target: float, P: int, max_nfe: int):
    prior, op, meas, x_true, power, maps, mask = make_problem(dtype=torch.complex64)
    mean, var, trC = exact_posterior(prior, meas, power, maps, mask)
    trC = float(trC)
    makers = {
        "pULA (exact lik.)": lambda n: PULA(n_levels=n, n_steps=1, sigma_max=1.0),
        "ULA (exact lik.)": lambda n: ULA(n_levels=n, n_steps=4, sigma_max=1.0, init="gaussian"),
        "annealed ULA": lambda n: AnnealedULA(n_levels=n, n_steps=4, sigma_max=1.0),
    }
    rows = []
    for name, mk in makers.items():
        n, found = 4, None
        while True:
            s = mk(n)
            if n * s.n_steps > max_nfe:
                break
            res = s.sample(meas, prior, P, generator=0)
            x = res.samples.to(torch.complex128)
            e = float(((x.mean(0) - mean).abs() ** 2).sum()) / (trC / P)
            print(f"  {name:20s} NFE {res.nfe:6d}  e_mean {e:8.3f}  {res.wall_time:6.1f} s", flush=True)
            if e < target:
                found = (res.nfe, res.wall_time)
                break
            n *= 2
        rows.append((name, found))
    base = rows[0][1][0] if rows[0][1] else float("nan")
    print(f"\nNFE to reach e_mean < {target} (P = {P}); ratio to pULA:")
    for name, f in rows:
        if f:
            print(f"  {name:20s} {f[0]:6d}  x{f[0] / base:6.1f}   ({f[1]:.1f} s)")
        else:
            print(f"  {name:20s}  > {max_nfe} (not reached)")


class DummyUNet(torch.nn.Module):
    """Conv stack roughly as costly per pixel as a small score UNet (not trained: cost only)."""

    def __init__(self, ch=64, depth=6):
        super().__init__()
        layers = [torch.nn.Conv2d(2, ch, 3, padding=1)]
        for _ in range(depth - 2):
            layers += [torch.nn.SiLU(), torch.nn.Conv2d(ch, ch, 3, padding=1)]
        layers += [torch.nn.SiLU(), torch.nn.Conv2d(ch, 2, 3, padding=1)]
        self.net = torch.nn.Sequential(*layers)

    def score(self, x, sigma):
        with torch.no_grad():
            r = torch.view_as_real(x).permute(0, 3, 1, 2)
            out = self.net(r.float()).permute(0, 2, 3, 1).contiguous()
            return torch.view_as_complex(out).to(x.dtype) * 1e-3 - x / (1 + sigma**2)


def cost(P: int, levels: int):
    H = W = 128
    C = 8
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    maps = torch.stack([torch.exp(-((xx - c) ** 2 + yy**2) / 0.5) * torch.exp(1j * torch.pi * c * torch.ones(1))
                        for c in torch.linspace(-1, 1, C)]).to(torch.complex64)
    maps = (maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))).unsqueeze(0)
    mask = torch.zeros(W)
    mask[::4] = 1
    mask[W // 2 - 8: W // 2 + 8] = 1
    op = MultiCoilMRI(maps, mask)
    y = op.A(torch.randn(1, H, W, dtype=torch.complex64))
    meas = Measurement(y, op, 1.0)
    k2 = (torch.arange(H) - H // 2)[:, None] ** 2 + (torch.arange(W) - W // 2)[None] ** 2
    cheap = StationaryGaussianPrior(torch.zeros(H, W, dtype=torch.complex64), 1.0 / (1 + k2.float() / 64) + 0.01)
    priors = {"analytic (FFT)": cheap, "UNet-sized dummy": DummyUNet()}
    samplers = {
        "pULA K=1 CG=10": PULA(n_levels=levels, sigma_max=1.0),
        "annealed ULA": AnnealedULA(n_levels=levels, sigma_max=1.0, lambda_max=1.0),
        "ULA exact": ULA(n_levels=levels, sigma_max=1.0, lambda_max=1.0),
        "Score-MRI complex": ScoreMRI(n_levels=levels, sigma_max=1.0, split_complex=False, dc_norm=1.0),
        "Score-MRI hybrid": ScoreMRI(n_levels=levels, sigma_max=1.0, mode="hybrid", split_complex=False),
    }
    print(f"\nCost per sample, 128x128 x 8 coils, P = {P} chains, {levels} levels "
          f"(threads: {torch.get_num_threads()})")
    print(f"  {'sampler':20s} {'prior':18s} {'NFE':>5s} {'s/sample':>9s} {'score s':>8s} {'other s':>8s} {'total/(NFE*score)':>18s}")
    for pname, prior in priors.items():
        for sname, s in samplers.items():
            if sname == "Score-MRI hybrid" and pname != "analytic (FFT)":
                continue
            res = s.sample(meas, prior, P, generator=0)
            per = res.wall_time / P
            ratio = res.wall_time / max(res.score_time, 1e-12)
            print(f"  {sname:20s} {pname:18s} {res.nfe:5d} {per:9.3f} {res.score_time / P:8.3f} "
                  f"{(res.wall_time - res.score_time) / P:8.3f} {ratio:18.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small budgets (a smoke run)")
    a = ap.parse_args()
    torch.manual_seed(0)
    print("Convergence on the 64x64 Gaussian SENSE problem:")
    convergence(target=2.0, P=4 if a.quick else 8, max_nfe=256 if a.quick else 4096)
    cost(P=2 if a.quick else 4, levels=5 if a.quick else 20)


if __name__ == "__main__":
    main()
