"""Speed at real sizes (issue 23): bayesmri against BART and against its own FFTs / network, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py [--sections sense,poisson,espirit,recon,samplers]
        [--sizes 128x8,320x16] [--recon-iters 30,200] [--recon-methods tv,l1-wavelet] [--lam-factors 0.0625,...,1 | a:b:n]
        [--no-recon-timing] [--draws 4] [--P 8] [--levels 1,3] [--out benchmarks/results/speed.md]

Every number is measured in this one process (BART as a child process), one thread, and the ratios
compare timings taken in the same run, interleaved. The machine is shared, so the primary measure is
**CPU time** (``time.process_time`` for bayesmri, the children's user + system time from ``getrusage``
for BART): on one thread it is the compute a run needs, independent of how many other processes wait
for the cores; wall times are printed beside it. Each timing is the minimum over ``--repeats``.

Sections:

* ``sense``: ``MultiCoilMRI`` ``A`` + ``A_adjoint`` against the bare ``torch.fft.fft2`` + ``ifft2`` of the
  coil stack (same shape), birdcage maps, GRO R=4 (1-D) and Poisson-disc R=8 (2-D) masks.
* ``poisson``: ``poisson_disc_mask`` at 320x320 (R=4, 8; steady state after the first call, which loads
  the compiled pass), and ``bart poisson`` for reference.
* ``espirit``: ``espirit_maps`` against ``bart ecalib -m1 -r 24 -t 0.0004 -c 0.95`` (the same
  threshold and crop) on 320x320x16 data; maps compared per pixel by ``|<S_ours, S_bart>|``.
* ``recon``: ``tv_recon`` / ``l1_wavelet_recon`` against ``bart pics -w 1 -S -R T:3:0:lam`` /
  ``-R W:3:0:lam`` (``-w 1``: no data scaling, so ``lam`` means the same; checked: at lam = 30 on the
  128 px phantom ours and BART's TV agree to 43 dB). "Same iterations" counts applications of
  ``A^H A``: BART's ``-i K`` for ADMM (TV) is a budget of K conjugate-gradient iterations in all (its
  inner CG runs up to 10 per ADMM iteration with its own tolerance), so ours runs ``K // 5`` ADMM
  iterations of 5 CG steps; for FISTA (wavelet) both run K iterations of one ``A^H A`` each (ours
  db2 with random shifts, as BART's). Data: simulated 320x320 and 128x128 slices (birdcage coils,
  smooth phase, 40 dB SNR, GRO R=4); both use the simulation's coil maps (ESPIRiT has its own
  section); PSNR of the magnitude against the simulated image.
* ``samplers``: pULA, Score-MRI and annealed ULA at 320x320x16 with P chains and the shipped
  ``score_native`` prior (64 px tiles) at two reduced level counts. The network's own CPU time is
  summed over its calls inside the run (``ScoreUNet.score`` on the tiles); "NFE x net" is that sum,
  "tiling" the rest of the prior call, "sampler" everything else (operators, CG, noise, phase fit).
  The difference between the two runs gives the cost per NFE, extrapolated to the registered
  default settings (Score-MRI is asked for ``L / t0`` levels so that it runs ``L``).
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bayesmri  # noqa: E402,F401  (allocator setting before any tensor exists)
from bayesmri.bart import bart_available, readcfl, writecfl  # noqa: E402
from bayesmri.physics import MultiCoilMRI  # noqa: E402
from bayesmri.physics.coils import birdcage_maps, normalize_maps  # noqa: E402
from bayesmri.physics.fft import fft2c, ifft2c  # noqa: E402
from bayesmri.physics.masks import make_mask  # noqa: E402

LINES: list[str] = []


def out(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def cpu_wall(fn, repeats: int, inner: int = 1):
    """Minimum (CPU seconds, wall seconds) per call of ``fn`` over ``repeats`` runs of ``inner`` calls."""
    fn()
    best_c = best_w = math.inf
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(inner):
            fn()
        best_c = min(best_c, (time.process_time() - c0) / inner)
        best_w = min(best_w, (time.perf_counter() - w0) / inner)
    return best_c, best_w


def child_cpu_wall(cmd: list[str], repeats: int, cwd: str):
    """Minimum (CPU = user + system of the child, wall) of running ``cmd`` ``repeats`` times."""
    best_c = best_w = math.inf
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(repeats):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
        w = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_c = min(best_c, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        best_w = min(best_w, w)
    return best_c, best_w


def to_bart(a: torch.Tensor) -> np.ndarray:
    """Ours ``(C, H, W)`` -> BART ``(H, W, 1, C)``."""
    return np.transpose(a.numpy(), (1, 2, 0))[:, :, None, :]


def from_bart(a: np.ndarray, H: int, W: int) -> torch.Tensor:
    """BART ``(H, W, 1, C)`` (or ``(H, W)``) -> ours ``(C, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a.reshape(H, W, -1), (2, 0, 1))))


def parse_sizes(s: str):
    return [tuple(int(v) for v in item.split("x")) for item in s.split(",")]


def parse_factors(s: str) -> tuple[float, ...]:
    """``"0.0625,0.125"`` or ``"a:b:n"`` (n log-spaced values from a to b), sorted."""
    if ":" in s:
        a, b, n = s.split(":")
        return tuple(sorted(float(v) for v in np.geomspace(float(a), float(b), int(n))))
    return tuple(sorted(float(v) for v in s.split(",")))


def phantom(N: int) -> torch.Tensor:
    """A brain-like magnitude: ellipses of different intensity (deterministic)."""
    from bayesmri.data.phantoms import ellipse_image

    return ellipse_image(N, [
        (1.0, 0.69, 0.92, 0.0, 0.0, 0.0), (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
        (-0.2, 0.11, 0.31, 0.22, 0.0, -0.314), (-0.2, 0.16, 0.41, -0.22, 0.0, 0.314),
        (0.1, 0.21, 0.25, 0.0, 0.35, 0.0), (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
        (0.1, 0.046, 0.023, -0.08, -0.605, 0.0), (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
    ]).abs().float()


def simulated(N: int, C: int, pattern: str = "gro", R: float = 4, seed: int = 0):
    """Fully sampled coil k-space ``(C, N, N)``, its mask and the coil-combined truth."""
    from bayesmri.data import simulate_acquisition

    mask = make_mask(pattern, (N, N), R, seed=seed)
    s = simulate_acquisition(phantom(N), mask=None, ncoils=C, snr_db=40, seed=seed)
    return s, mask


# ----------------------------------------------------------------------------------------------------
def bench_sense(sizes, repeats):
    out("\n## SENSE operator: A + A^H against the bare FFT pair of the coil stack (CPU ms, 1 thread)\n")
    out("| size | mask | A | A^H | A + A^H | fft2 + ifft2 | ratio | (wall ratio) |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for N, C in sizes:
        S = normalize_maps(birdcage_maps((C, N, N))).to(torch.complex64)[None]
        inner = max(1, int(2e6 // (C * N * N)))
        for name, mask in [("GRO R=4 (1-D)", make_mask("gro", (N, N), 4)),
                           ("Poisson R=8 (2-D)", make_mask("poisson", (N, N), 8, seed=0))]:
            op = MultiCoilMRI(S, mask)
            x = torch.randn(1, N, N, dtype=torch.complex64, generator=g)
            y = op.A(x)
            z = torch.randn(1, C, N, N, dtype=torch.complex64, generator=g)
            best = {}
            for _ in range(repeats):  # interleaved: both see the same machine state
                for key, fn in [("A", lambda: op.A(x)), ("AH", lambda: op.A_adjoint(y)),
                                ("f", lambda: torch.fft.fft2(z, norm="ortho")),
                                ("i", lambda: torch.fft.ifft2(z, norm="ortho"))]:
                    c, w = cpu_wall(fn, 1, inner)
                    bc, bw = best.get(key, (math.inf, math.inf))
                    best[key] = (min(bc, c), min(bw, w))
            ours = best["A"][0] + best["AH"][0]
            ref = best["f"][0] + best["i"][0]
            wr = (best["A"][1] + best["AH"][1]) / (best["f"][1] + best["i"][1])
            out(f"| {N}x{N}x{C} | {name} | {1e3 * best['A'][0]:.2f} | {1e3 * best['AH'][0]:.2f} | "
                f"{1e3 * ours:.2f} | {1e3 * ref:.2f} | **{ours / ref:.2f}** | {wr:.2f} |")


# ----------------------------------------------------------------------------------------------------
def bench_poisson(repeats, have_bart):
    from bayesmri.physics.masks import poisson_disc_mask

    out("\n## Poisson-disc masks, 320x320 (CPU ms, 1 thread)\n")
    code = ("import time, bayesmri.physics.masks as M; t = time.process_time(); "
            "M.poisson_disc_mask((320, 320), 8, seed=0); print(time.process_time() - t)")
    first = float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}).stdout.split()[-1])
    out(f"First mask in a fresh process (imports numba and loads the cached compiled pass; a fresh install "
        f"compiles it once, ~1.5 s): {1e3 * first:.0f} ms CPU. Every later mask:\n")
    out("| R | bayesmri (min over seeds) | points | bart poisson |")
    out("|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for R in (4, 8):
            best = math.inf
            for seed in range(repeats):
                c, _ = cpu_wall(lambda: poisson_disc_mask((320, 320), R, seed=seed), 1)
                best = min(best, c)
            n = int(poisson_disc_mask((320, 320), R, seed=0).sum())
            tb = "n/a"
            if have_bart:
                a = math.sqrt(R)
                c, _ = child_cpu_wall(["bart", "poisson", "-Y", "320", "-Z", "320", "-y", f"{a:g}", "-z", f"{a:g}",
                                       "-C", "24", "-v", "-e", "p"], repeats, tmp)
                tb = f"{1e3 * c:.0f}"
            out(f"| {R} | **{1e3 * best:.1f}** | {n} | {tb} |")


# ----------------------------------------------------------------------------------------------------
def bench_espirit(repeats, have_bart, N=320, C=16):
    from bayesmri.physics.espirit import espirit_maps

    out(f"\n## ESPIRiT, {N}x{N}x{C}, 24 calibration lines (CPU s, 1 thread)\n")
    s, _ = simulated(N, C)
    k = s.kspace  # (C, N, N), fully sampled: the calibration region is the central 24x24
    c_o, w_o = cpu_wall(lambda: espirit_maps(k, num_acs=24), repeats)
    ours = espirit_maps(k, num_acs=24)
    line = f"| bayesmri `espirit_maps` (eigh) | **{c_o:.2f}** | {w_o:.2f} |"
    out("| | CPU | wall |")
    out("|---|---:|---:|")
    out(line)
    if not have_bart:
        out("\nBART not installed: no comparison.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        writecfl(Path(tmp) / "k", to_bart(k))
        c_b, w_b = child_cpu_wall(["bart", "ecalib", "-m1", "-r", "24", "-t", "0.0004", "-c", "0.95", "k", "m"],
                                  repeats, tmp)
        mb = from_bart(readcfl(Path(tmp) / "m"), N, N)
    out(f"| `bart ecalib -m1 -r 24 -t 0.0004 -c 0.95` | {c_b:.2f} | {w_b:.2f} |")
    both = (ours.abs().pow(2).sum(0) > 0.5) & (mb.abs().pow(2).sum(0) > 0.5)
    either = (ours.abs().pow(2).sum(0) > 0.5) | (mb.abs().pow(2).sum(0) > 0.5)
    ip = (ours.conj() * mb).sum(0).abs()[both]
    out(f"\nRatio ours / BART (CPU): **{c_o / c_b:.2f}**. Maps: |<S_ours, S_bart>| over the {int(both.sum())} pixels "
        f"both keep: median {float(ip.median()):.5f}, 1st percentile {float(ip.quantile(0.01)):.4f}, min "
        f"{float(ip.min()):.4f}; the two crops agree on {100 * float(both.sum()) / max(1, float(either.sum())):.2f} % of "
        f"the pixels either keeps.")


# ----------------------------------------------------------------------------------------------------
def bench_recon(sizes, iters_list, repeats, have_bart, lam_rel=1e-3, lam_grid=(0.0625, 0.125, 0.25, 0.5, 1.0),
                methods=("tv", "l1-wavelet"), timing=True, draws=1):
    """Timing at the common lambda (``timing``) and PSNR over ``lam_grid`` x that lambda, each toolkit at its best."""
    from bayesmri.recon import l1_wavelet_recon, tv_recon

    out(f"\n## TV and l1-wavelet against `bart pics`, lam = {lam_rel:g} max|y| (CPU s, 1 thread; PSNR dB of |x| against the truth)\n")
    if not have_bart:
        out("BART not installed: no comparison.")
        return
    best_rows, curves = [], []
    if timing:
        out("| size | method | A^H A budget | bayesmri CPU | bart CPU | ratio | (wall ratio) | PSNR ours | PSNR bart |")
        out("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    K = max(iters_list)
    for N, C in sizes:
        s, mask = simulated(N, C)
        maps = s.maps_true  # the simulation's: the model is exact, ESPIRiT is benchmarked on its own
        ku = s.kspace * mask
        with tempfile.TemporaryDirectory() as tmp:
            writecfl(Path(tmp) / "ku", to_bart(ku))
            writecfl(Path(tmp) / "maps", to_bart(maps))
            op = MultiCoilMRI(maps[None], mask)
            y = op.mask * ku[None]
            lam = lam_rel * float(y.abs().max())
            mag = s.target.abs()[None]

            def psnr(x):
                return float(10 * torch.log10(mag.max() ** 2 / ((x.abs() - mag) ** 2).mean()))

            def setups(K):
                return [(name, reg, fn, kw) for name, reg, fn, kw in [
                    ("TV", "T:3:0", tv_recon, dict(max_iter=max(1, K // 5), cg_iter=5)),
                    ("l1-wavelet", "W:3:0", l1_wavelet_recon, dict(max_iter=K, wavelet="db2")),
                ] if name.lower() in methods]

            for Ki in iters_list if timing else []:
                for name, reg, fn, kw in setups(Ki):
                    cmd = ["bart", "pics", "-w", "1", "-S", "-i", str(Ki), "-R", f"{reg}:{lam:g}", "ku", "maps", "x"]
                    reps = max(1, repeats // 2)
                    c_b, w_b = child_cpu_wall(cmd, reps, tmp)
                    xb = torch.from_numpy(np.ascontiguousarray(readcfl(Path(tmp) / "x").reshape(N, N)))[None]
                    c_o, w_o = cpu_wall(lambda: fn(op, y, lam, **kw), reps)
                    xo = fn(op, y, lam, **kw)
                    out(f"| {N}x{N}x{C} | {name} | {Ki} | {c_o:.3f} | {c_b:.3f} | **{c_o / c_b:.2f}** | {w_o / w_b:.2f} | "
                        f"{psnr(xo):.2f} | {psnr(xb):.2f} |")
            # Quality at each toolkit's best lambda: the wavelet transforms differ (ptwt boundary wavelets
            # and depth vs BART's), so one lambda is not the same regularisation strength for both.
            # Cycle spinning makes one run a random draw (BART's shift sequence has a fixed seed), so each
            # lambda runs on `draws` circularly shifted copies of the problem (draw 0: unshifted).
            for name, reg, fn, kw in setups(K):
                p_o, p_b = {f: [] for f in lam_grid}, {f: [] for f in lam_grid}
                for d in range(draws):
                    sh = [0, 0] if d == 0 else torch.randint(0, N, (2,), generator=torch.Generator().manual_seed(d)).tolist()
                    ku_d = fft2c(torch.roll(ifft2c(s.kspace), sh, dims=(-2, -1))) * mask
                    maps_d = torch.roll(maps, sh, dims=(-2, -1))
                    writecfl(Path(tmp) / "kud", to_bart(ku_d))
                    writecfl(Path(tmp) / "mapsd", to_bart(maps_d))
                    op_d = MultiCoilMRI(maps_d[None], mask)
                    y_d = op_d.mask * ku_d[None]

                    def psnr_d(x):
                        return psnr(torch.roll(x, [-sh[0], -sh[1]], dims=(-2, -1)))

                    for f in lam_grid:
                        lam_f = f * lam
                        subprocess.run(["bart", "pics", "-w", "1", "-S", "-i", str(K), "-R", f"{reg}:{lam_f:g}", "kud", "mapsd", "x"],
                                       cwd=tmp, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                        p_b[f].append(psnr_d(torch.from_numpy(np.ascontiguousarray(readcfl(Path(tmp) / "x").reshape(N, N)))[None]))
                        p_o[f].append(psnr_d(fn(op_d, y_d, lam_f, **kw)))
                        print(f"  {N}x{N}x{C} {name} shift {sh} x{f:g}: ours {p_o[f][-1]:.2f} dB, bart {p_b[f][-1]:.2f} dB", flush=True)
                m_o = {f: float(np.mean(v)) for f, v in p_o.items()}
                m_b = {f: float(np.mean(v)) for f, v in p_b.items()}
                fo, fb = max(m_o, key=m_o.get), max(m_b, key=m_b.get)

                def cell(m, p, f):
                    edge = " grid edge" if f in (min(lam_grid), max(lam_grid)) else ""
                    sd = f" +- {np.std(p[f], ddof=1):.2f}" if draws > 1 else ""
                    return f"{m[f]:.2f}{sd} (x{f:g}{edge})"

                best_rows.append(f"| {N}x{N}x{C} | {name} | {K} | {draws} | {cell(m_o, p_o, fo)} | {cell(m_b, p_b, fb)} | "
                                 f"**{m_o[fo] - m_b[fb]:+.2f}** |")
                curves.append((f"{N}x{N}x{C}", name, m_o, m_b))
    out(f"\nBest PSNR over lam in {{{', '.join(f'{f:g}' for f in lam_grid)}}} x the lam above, each toolkit at its own "
        f"best, {K} A^H A; mean (+- sd) over {draws} circularly shifted copies of the problem:\n")
    out("| size | method | A^H A budget | draws | PSNR ours (lam factor) | PSNR bart (lam factor) | ours - bart (dB) |")
    out("|---|---|---:|---:|---:|---:|---:|")
    for line in best_rows:
        out(line)
    out(f"\nPSNR (dB, mean over the draws) against the lam factor, {K} A^H A (ours / bart):\n")
    out("| size | method | " + " | ".join(f"x{f:g}" for f in lam_grid) + " |")
    out("|---|---|" + "---:|" * len(lam_grid))
    for size, name, p_o, p_b in curves:
        out(f"| {size} | {name} | " + " | ".join(f"{p_o[f]:.2f} / {p_b[f]:.2f}" for f in lam_grid) + " |")


# ----------------------------------------------------------------------------------------------------
class _CpuTimed:
    """Wrap a callable, summing the CPU time spent in it."""

    def __init__(self, fn):
        self.fn, self.cpu, self.calls = fn, 0.0, 0

    def __call__(self, *a, **k):
        c0 = time.process_time()
        try:
            return self.fn(*a, **k)
        finally:
            self.cpu += time.process_time() - c0
            self.calls += 1


def bench_samplers(P, levels, methods, N=320, C=16):
    from bayesmri.methods import get_method
    from bayesmri.priors.loading import load_model
    from bayesmri.priors.patch import PatchScore
    from bayesmri.methods.diffusion import DEFAULTS

    out(f"\n## Samplers at {N}x{N}x{C}, P = {P}, score_native in 64 px tiles (CPU s, 1 thread)\n")
    from bayesmri.data import simulate_acquisition

    sample = simulate_acquisition(phantom(N), mask=make_mask("gro", (N, N), 4), ncoils=C, snr_db=40, seed=0)
    out("| method | levels | NFE | total CPU | net (NFE x net) | tiling | sampler | total / net | wall |")
    out("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for method in methods:
        rows = []
        for L in levels:
            # Score-MRI runs round(t0 n_levels) of its n_levels (CCDF start): ask for L / t0 to run L.
            n_levels = math.ceil(L / DEFAULTS[method]["t0"]) if "t0" in DEFAULTS[method] else L
            net = load_model("score_native").eval()
            net_t = _CpuTimed(net.score)
            net.score = net_t
            prior = PatchScore(net, patch=64)
            prior_t = _CpuTimed(prior.score)
            prior.score = prior_t
            fn = get_method(method)
            c0, w0 = time.process_time(), time.perf_counter()
            res = fn(sample, n_samples=P, generator=torch.Generator().manual_seed(0), maps="true", prior=prior,
                     n_levels=n_levels)
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            tiling = prior_t.cpu - net_t.cpu
            rows.append((res.nfe, cpu, net_t.cpu))
            out(f"| {method} | {n_levels} | {res.nfe} | {cpu:.1f} | {net_t.cpu:.1f} | {tiling:.1f} | {cpu - prior_t.cpu:.1f} | "
                f"**{cpu / net_t.cpu:.2f}** | {wall:.1f} |")
        if len(rows) >= 2 and rows[-1][0] > rows[0][0]:
            (n0, c0_, t0), (n1, c1_, t1) = rows[0], rows[-1]
            per_nfe, net_nfe = (c1_ - c0_) / (n1 - n0), (t1 - t0) / (n1 - n0)
            fixed = c0_ - n0 * per_nfe
            d = DEFAULTS[method]
            # NFE at the registered defaults: one per level (pULA, ULA) or predictor + corrector per level
            # actually run (Score-MRI), plus the final Tweedie step.
            nfe_d = (round(d["t0"] * d["n_levels"]) * (1 + d["n_corrector"]) if "t0" in d else d["n_levels"] * d["n_steps"])
            nfe_d += int(bool(d.get("final_denoise")))
            total = fixed + nfe_d * per_nfe
            summary.append(f"| {method} | {per_nfe / net_nfe:.3f} | {net_nfe:.2f} | {fixed:.1f} | {nfe_d} | {total:.0f} | "
                           f"**{total / (nfe_d * net_nfe):.3f}** |")
    if summary:
        out("\nPer NFE (difference of the two runs) and extrapolated to the registered defaults (CPU s):\n")
        out("| method | CPU per NFE / net per NFE | net per NFE | fixed | default NFE | total | total / (NFE x net) |")
        out("|---|---:|---:|---:|---:|---:|---:|")
        for line in summary:
            out(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="sense,poisson,espirit,recon,samplers")
    ap.add_argument("--sizes", default="128x8,320x16")
    ap.add_argument("--recon-iters", default="30,200")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--levels", default="1,3")
    ap.add_argument("--methods", default="pula,score-mri,ula-annealed")
    ap.add_argument("--recon-methods", default="tv,l1-wavelet", help="recon section: comma list of tv, l1-wavelet")
    ap.add_argument("--lam-factors", default="0.0625,0.125,0.25,0.5,1",
                    help="recon section: lambda grid (factors of 0.001 max|y|) for the best-lambda PSNR table; "
                         "'a:b:n' is n log-spaced factors from a to b")
    ap.add_argument("--recon-timing", action=argparse.BooleanOptionalAction, default=True,
                    help="recon section: time both toolkits at the common lambda (--no-recon-timing: PSNR grid only)")
    ap.add_argument("--draws", type=int, default=1,
                    help="recon section: run the lambda grid on this many circularly shifted copies of the problem "
                         "(cycle spinning makes each run a random draw) and report mean +- sd")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    sections = set(a.sections.split(","))
    sizes = parse_sizes(a.sizes)
    have_bart = bart_available()
    load = os.getloadavg()
    out(f"# bench_speed: `{' '.join(['python benchmarks/bench_speed.py', *(argv if argv is not None else sys.argv[1:])])}`\n")
    out(f"torch {torch.__version__}, {torch.get_num_threads()} thread, "
        f"{'BART ' + subprocess.run(['bart', 'version'], capture_output=True, text=True).stdout.strip() if have_bart else 'no BART'}, "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores.")
    if "sense" in sections:
        bench_sense(sizes, a.repeats)
    if "poisson" in sections:
        bench_poisson(a.repeats, have_bart)
    if "espirit" in sections:
        bench_espirit(max(1, a.repeats // 2), have_bart)
    if "recon" in sections:
        bench_recon(sizes, [int(v) for v in a.recon_iters.split(",")], a.repeats, have_bart,
                    lam_grid=parse_factors(a.lam_factors), methods=tuple(a.recon_methods.split(",")),
                    timing=a.recon_timing, draws=a.draws)
    if "samplers" in sections:
        bench_samplers(a.P, [int(v) for v in a.levels.split(",")], a.methods.split(","))
    load = os.getloadavg()
    out(f"\nLoad average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.")
    if a.out:
        from bayesmri.io import atomic_path

        with atomic_path(a.out) as tmp:
            tmp.write_text("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
