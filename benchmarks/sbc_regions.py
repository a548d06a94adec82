"""Where an SBC run is miscalibrated: coverage and std ratio by region, and the truths' vs samples' texture.

Reads the ``.pt`` files of ``bench_calibration.py --save-samples DIR`` (truths ``(R, *domain)``, samples
``(L, R, *domain)``, and ``tweedie`` for ``final_denoise=both`` rows) and prints, per file and per variant:

* 50 / 90 % coverage and the std ratio (as in the main table) on three pixel sets of each replicate:
  ``background`` (posterior-mean magnitude below 5 % of the replicate's 99th percentile), ``edges`` (the
  top 20 % of the mean's gradient magnitude outside the background) and ``flat`` (the rest);
* the truths' and the samples' power in three radial k-space bands (fraction of Nyquist), as the ratio
  samples / truths: below 1 in the high band means the samples have less fine texture than the truths
  (e.g. truths drawn to a lower ``sigma_min`` than the samplers reach), and the std ratio in each band
  (error power of the L-sample mean over the spread's, as the main table's std ratio).

Example::

    python benchmarks/sbc_regions.py out/c19b/a1/*.pt
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.calibration import calibration_statistics  # noqa: E402

BANDS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.01))


def regions(mean: torch.Tensor) -> dict:
    """Boolean masks ``(R, H, W)`` of background / edges / flat from the posterior means ``(R, H, W)``."""
    mag = mean.abs()
    ref = torch.quantile(mag.reshape(mag.shape[0], -1), 0.99, dim=1).reshape(-1, 1, 1)
    bg = mag < 0.05 * ref
    gy = torch.zeros_like(mag)
    gx = torch.zeros_like(mag)
    gy[:, 1:-1] = (mag[:, 2:] - mag[:, :-2]) / 2
    gx[:, :, 1:-1] = (mag[:, :, 2:] - mag[:, :, :-2]) / 2
    grad = torch.sqrt(gx**2 + gy**2)
    edges = torch.zeros_like(bg)
    for r in range(mag.shape[0]):
        fg = ~bg[r]
        thr = torch.quantile(grad[r][fg], 0.8) if fg.any() else math.inf
        edges[r] = fg & (grad[r] >= thr)
    return {"background": bg, "edges": edges, "flat": ~bg & ~edges}


def region_stats(truth, samples, mask) -> tuple:
    """Coverage 50 / 90 and std ratio of the components inside ``mask`` (pooled over replicates)."""
    L = samples.shape[0]
    t = truth[mask]
    s = samples[:, mask]
    below = (s < t).sum(0)
    cov = []
    for a in (5, 1):  # L = 19: ranks a .. L - a are the exact 50 / 90 % intervals
        cov.append(float(((below >= a) & (below <= L - a)).double().mean()))
    m = s.mean(0)
    err2 = float((m - t).abs().pow(2).mean())
    var = float(s.var(0, correction=1).mean())
    return cov[0], cov[1], math.sqrt(err2 / max((1 + 1 / L) * var, 1e-30)), int(mask.sum())


def band_power(x: torch.Tensor) -> list:
    """Mean power of ``x (..., H, W)`` in the radial bands :data:`BANDS` (fraction of Nyquist)."""
    H, W = x.shape[-2:]
    k = torch.fft.fftshift(torch.fft.fft2(x.to(torch.complex128), norm="ortho"), dim=(-2, -1)).abs().pow(2)
    yy, xx = torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij")
    rad = torch.sqrt((yy / (H / 2)) ** 2 + (xx / (W / 2)) ** 2)
    return [float(k[..., (rad >= lo) & (rad < hi)].mean()) for lo, hi in BANDS]


def report(name, truth, samples):
    t = truth.reshape(truth.shape[0], *truth.shape[-2:])
    s = samples.reshape(samples.shape[0], samples.shape[1], *samples.shape[-2:]).to(t.dtype)
    rep = calibration_statistics(t, s, generator=0)
    reg = regions(s.mean(0))
    parts = [f"all {rep.coverage[0.5]['coverage']:.3f} {rep.coverage[0.9]['coverage']:.3f} ratio {rep.std_ratio:.2f}"]
    for k, m in reg.items():
        c5, c9, ratio, n = region_stats(t, s, m)
        parts.append(f"{k} ({n / m.numel():.0%}) {c5:.3f} {c9:.3f} ratio {ratio:.2f}")
    pt, ps = band_power(t), band_power(s)
    parts.append("power samples/truths by band " + " ".join(f"{b:.2f}" for b in (a / b for a, b in zip(ps, pt))))
    L = s.shape[0]
    pe, pd = band_power(s.mean(0) - t), band_power(s - s.mean(0))
    parts.append("std ratio by band " + " ".join(f"{math.sqrt(e / max((1 + 1 / L) * d * L / (L - 1), 1e-30)):.2f}"
                                                for e, d in zip(pe, pd)))
    print(f"{name}: " + "; ".join(parts), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for f in args.files:
        d = torch.load(f, map_location="cpu")
        if "tweedie" in d:
            report(f"{f.stem} [no Tweedie]", d["truths"], d["samples"])
            report(f"{f.stem} [Tweedie]", d["truths"], d["tweedie"])
        else:
            report(f.stem, d["truths"], d["samples"])


if __name__ == "__main__":
    main()
