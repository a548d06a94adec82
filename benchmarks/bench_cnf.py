"""CNF benchmark (Wen et al. 2023): quality, Table-3 ablation, calibration (Fig. 4), MAP (Fig. 5), speed.

Run (CPU, bounded)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_cnf.py --weights cnf64 \
        --ablation-weights runs/cnf64s_nonull/model_ema --n-slices 8 --out benchmarks/results/cnf.md

Data: the built-in *test* split (a different brain from training) as the rest of the project sees it,
:class:`bayesmri.data.SimulatedBrainDataset` (8 birdcage coils, smooth random phase, SNR 30 dB, a GRO
frame per slice, seed 0). Everything is normalised by the 95th percentile of the zero-filled RSS.
All methods are coil-combined with the *true* maps (``S^H``) and compared with the true complex image
on magnitude PSNR/SSIM (fastMRI conventions, :mod:`bayesmri.metrics`); TV and l1-wavelet use the SENSE
operator with the true maps and the library's default weights (tuned on ``val``).
"UNet only (DC)" is the conditioning UNet's MSE estimate made data consistent, the baseline the CNF mean
builds on. Speed: time per sample for P = 1 and for P = 32 in one batched call (one conditioning pass), with peak
memory (CUDA: ``max_memory_allocated``; CPU: peak RSS of a fresh process above its RSS after loading),\neach timing in its own process; sizes other than the weights' use an untrained net of the same config.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.flows.cnf import ConditionalNF, cnf_log_posterior, cnf_map, cnf_sample, load_cnf  # noqa: E402
from bayesmri.metrics import complex_psnr, mean_gain_curve, mean_gain_reference, psnr, ssim  # noqa: E402
from bayesmri.physics.cartesian import MultiCoilMRI  # noqa: E402


def combine(x, maps):
    """``S^H x``: ``(..., C, H, W)`` -> ``(..., H, W)``."""
    return (maps.conj() * x).sum(-3)


def build_items(size, R, n, ncoils=8):
    """``n`` central slices of the built-in test split, acquired exactly as everywhere else in the project
    (:class:`bayesmri.data.SimulatedBrainDataset`: its own GRO frame per slice, SNR 30 dB, seed 0)."""
    from bayesmri.data.simulate import SimulatedBrainDataset

    ds = SimulatedBrainDataset("test", size=size, pattern="gro", acceleration=R, ncoils=ncoils)
    N = len(ds)
    idx = torch.linspace(N * 0.2, N * 0.8, n).round().long().tolist()  # central slices: brain, not caps
    out = []
    for i in idx:
        s = ds[i]
        out.append(dict(x=s.coil_images, k=s.kspace, mask=s.mask, truth=s.target))
    return out, ds.maps


@torch.no_grad()
def unet_only(model, y, mask):
    """The conditioning UNet's MSE estimate made data consistent: ``(I - A^+A) UNet(A^+ y) + A^+ y``."""
    from bayesmri.flows.cnf import _project_null, channels_to_complex, complex_to_channels, zero_filled_and_scale

    zf, scale, m = zero_filled_and_scale(y, mask)
    s = scale.view(-1, 1, 1, 1)
    x = channels_to_complex(model.unet(complex_to_channels(zf / s)))
    return (_project_null(x, m) + zf / s) * s


def quality(model, items, maps, P, gen, with_dc=True, extra_methods=True):
    from bayesmri.methods import DEFAULT_ITERS, DEFAULT_LAMBDAS
    from bayesmri.recon import l1_wavelet_recon, tv_recon

    rows = {"zero-filled": [], "TV": [], "l1-wavelet": [], "UNet only (DC)": [], "CNF mean": []}
    for it in items:
        truth = it["truth"][None]
        op = MultiCoilMRI(maps[None], it["mask"])
        y = it["k"][None]
        est = {}
        if extra_methods:
            est["zero-filled"] = op.A_adjoint(y)
            est["TV"] = tv_recon(op, y, lam=DEFAULT_LAMBDAS["tv"], max_iter=DEFAULT_ITERS["tv"])
            est["l1-wavelet"] = l1_wavelet_recon(op, y, lam=DEFAULT_LAMBDAS["l1wav"], max_iter=DEFAULT_ITERS["l1wav"])
            est["UNet only (DC)"] = combine(unet_only(model, y, it["mask"]), maps)
        xs, _ = cnf_sample(model, y, it["mask"], P, generator=gen, chunk=P, data_consistency=with_dc)
        est["CNF mean"] = combine(xs[:, 0], maps).mean(0, keepdim=True)
        for k, v in est.items():
            rows[k].append((float(psnr(v, truth)[0]), float(ssim(v.abs(), truth.abs())[0])))
    return {k: v for k, v in rows.items() if v}


@torch.no_grad()
def degeneracy(model, items, seed=0):
    """NLL degeneracy diagnostic (issue 7): on the clean nullspace targets of ``items``, the NLL (bits/dim),
    the log-determinant per dimension (nats) and the local latent stretch ``||J d|| / ||d||`` of
    ``z = h^{-1}(u)`` (central differences) along random nullspace directions supported on the exactly-zero
    background of the truth, on the foreground, and along the measured k-space (where ``u`` is exactly 0).
    A flow that fits its training noise ``sigma`` rather than the images stretches towards ``1 / sigma``."""
    import math

    from bayesmri.flows.cnf import _project_null, channels_to_complex, complex_to_channels, zero_filled_and_scale

    g = torch.Generator().manual_seed(seed)
    acc = {}
    for it in items:
        zf, s, m = zero_filled_and_scale(it["k"][None], it["mask"])
        sc = s.view(-1, 1, 1, 1)
        ur = complex_to_channels(_project_null(it["x"][None] / sc, m))
        _, conds = model.conditioning(complex_to_channels(zf / sc), m)
        z, ld = model.encode(ur, conds)
        bg = it["x"].abs().sum(0) == 0

        def rand_c():
            return torch.randn(it["x"][None].shape, generator=g, dtype=it["x"].dtype)

        dirs = {"bg": complex_to_channels(_project_null(rand_c() * bg, m)),
                "fg": complex_to_channels(_project_null(rand_c() * ~bg, m))}
        r = rand_c()
        dirs["meas"] = complex_to_channels(r - _project_null(r, m))
        vals = {"bpd": float(-(model.base.log_prob(z) + ld) / (model.dim * math.log(2))),
                "logdet": float(ld) / model.dim}
        for k, d in dirs.items():
            eps = 1e-3 * ur.norm() / d.norm()
            dz = (model.encode(ur + eps * d, conds)[0] - model.encode(ur - eps * d, conds)[0]) / (2 * eps)
            vals[k] = float(dz.norm() / d.norm())
        for k, v in vals.items():
            acc.setdefault(k, []).append(v)
    return {k: (min(v), max(v)) for k, v in acc.items()}


def mean_std(vals):
    t = torch.tensor(vals, dtype=torch.float64)
    return f"{t.mean():.2f} ± {t.std(correction=1) if len(vals) > 1 else 0:.2f}"


def _proc_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def speed_worker(weights, size, P, device, reps=3):
    """Time ``cnf_sample`` with P samples in one call (fresh process, so peak memory is this run's own)."""
    model = load_cnf(weights) if size is None else None
    if model is None:
        cfg = dict(load_cnf(weights).config)
        cfg["img_size"] = [size, size]
        torch.manual_seed(0)
        model = ConditionalNF(**cfg).eval()
    size = model.img_size[0]
    items, _ = build_items(size, 4.0, 1, ncoils=model.ncoils)
    y = items[0]["k"][None].to(device)
    mask = items[0]["mask"].to(device)
    model = model.to(device)
    base = _proc_kib("VmRSS")
    cnf_sample(model, y, mask, P, generator=0, chunk=P)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    ts = []
    for r in range(reps):
        t0 = time.perf_counter()
        cnf_sample(model, y, mask, P, generator=r + 1, chunk=P)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    mem = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
           else (_proc_kib("VmHWM") - base) / 1024)
    print(f"RESULT {min(ts) / P * 1e3:.3f} {mem:.1f}")


def speed(weights, size, device):
    import subprocess

    res = {}
    for P in (1, 32):
        cmd = [sys.executable, __file__, "--_speed-worker", str(weights), str(size if size else 0), str(P), device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        line = [l for l in out.splitlines() if l.startswith("RESULT")][-1].split()
        res[P] = (float(line[1]), float(line[2]))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="cnf64")
    ap.add_argument("--ablation-weights", default=None, help="a CNF trained without nullspace learning")
    ap.add_argument("--n-slices", type=int, default=8)
    ap.add_argument("--P", type=int, default=8, help="samples for the posterior mean in the quality table")
    ap.add_argument("--accelerations", default="4,8")
    ap.add_argument("--calib-slices", type=int, default=4)
    ap.add_argument("--map-slices", type=int, default=2)
    ap.add_argument("--map-steps", type=int, default=100)
    ap.add_argument("--speed-sizes", default="64,128", help="image sizes timed (untrained nets of the same config at other sizes)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="benchmarks/results/cnf.md")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: quality,ablation,calib,map,degeneracy,speed")
    ap.add_argument("--degeneracy-compare", default=None,
                    help="other CNF weights (e.g. runs/cnf64_v2/model_ema) to diagnose beside --weights")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    torch.manual_seed(0)
    model = load_cnf(a.weights)
    size = model.img_size[0]
    cfg = model.config
    from bayesmri.priors.loading import read_config

    meta = read_config(a.weights)
    train_R = (meta.get("cnf") or meta.get("metadata", {}).get("cnf") or {}).get("acceleration", "?")
    train_steps = meta.get("training", {}).get("steps", "?")
    cmeta = meta.get("cnf") or meta.get("metadata", {}).get("cnf") or {}
    pre_steps, t_noise = cmeta.get("pretrain_steps", "?"), cmeta.get("train_noise", "?")
    t_dom = cmeta.get("train_noise_domain", "flow target, after the nullspace projection")
    lines = [f"# CNF benchmark (Wen et al. 2023)", "",
             f"Command: `python benchmarks/bench_cnf.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"Model `{a.weights}`: L={cfg['num_levels']} levels, B={cfg['num_blocks']} blocks, UNet {cfg['unet_chans']} "
             f"channels / {cfg['unet_pools']} pools, coupling width {cfg['hidden']}, base {cfg['base']}, "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; image {size}x{size}, "
             f"{model.ncoils} coils; {pre_steps} UNet pretraining + {train_steps} joint training steps, training noise "
             f"std {t_noise} ({t_dom}); device {a.device}, "
             f"torch threads {torch.get_num_threads()}.", ""]
    t_all = time.perf_counter()
    if "quality" not in skip:
        lines += ["## Posterior-mean quality on the built-in test split", "",
                  f"{a.n_slices} test slices, P = {a.P} samples, magnitude PSNR (dB) / SSIM, mean ± std over slices.", ""]
        for R in [float(r) for r in a.accelerations.split(",")]:
            items, maps = build_items(size, R, a.n_slices)
            rows = quality(model, items, maps, a.P, torch.Generator().manual_seed(0))
            lines += [f"GRO R={R:g} (CNF trained at R={train_R}):", "", "| method | PSNR | SSIM |", "|---|---|---|"]
            for k, v in rows.items():
                lines.append(f"| {k} | {mean_std([p for p, _ in v])} | {mean_std([s for _, s in v])} |")
            lines.append("")
            print("\n".join(lines[-len(rows) - 3:]), flush=True)
    if a.ablation_weights and "ablation" not in skip:
        abl = load_cnf(a.ablation_weights)
        items, maps = build_items(size, 4.0, a.n_slices)
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        r1 = quality(abl, items, maps, a.P, g(), with_dc=False, extra_methods=False)["CNF mean"]
        r2 = quality(abl, items, maps, a.P, g(), with_dc=True, extra_methods=False)["CNF mean"]
        r3 = quality(model, items, maps, a.P, g(), with_dc=True, extra_methods=False)["CNF mean"]
        lines += ["## Ablation (paper Table 3), GRO R=4", "", "| variant | PSNR | SSIM |", "|---|---|---|"]
        for name, r in (("without data consistency", r1), ("with data consistency", r2), ("with nullspace learning", r3)):
            lines.append(f"| {name} | {mean_std([p for p, _ in r])} | {mean_std([s for _, s in r])} |")
        lines.append("")
        print("\n".join(lines[-6:]), flush=True)
    if "calib" not in skip:
        items, maps = build_items(size, 4.0, a.calib_slices)
        Ps = [1, 2, 4, 8, 16, 32]
        gains = []
        for i, it in enumerate(items):
            xs, info = cnf_sample(model, it["k"][None], it["mask"], 64, generator=100 + i, chunk=32)
            gains.append(mean_gain_curve(combine(xs[:, 0], maps), it["truth"], Ps, n_repeats=8, generator=i))
        gm = torch.stack(gains).mean(0)
        lines += ["## Calibration (paper Fig. 4): complex-PSNR gain of the P-sample mean", "",
                  f"{a.calib_slices} test slices, GRO R=4, 64 samples each, gain averaged over slices.", "",
                  "| P | measured gain (dB) | 10 log10(2P/(P+1)) |", "|---|---|---|"]
        lines += [f"| {P} | {float(v):.2f} | {mean_gain_reference(P):.2f} |" for P, v in zip(Ps, gm)]
        lines.append("")
        print("\n".join(lines[-9:]), flush=True)
    if "map" not in skip:
        items, maps = build_items(size, 4.0, a.map_slices)
        lines += ["## MAP vs posterior mean vs one sample (paper Fig. 5): log-posterior ln p(u|y), normalised units", "",
                  "| slice | one sample | mean of 8 | MAP | PSNR sample / mean / MAP |", "|---|---|---|---|---|"]
        for i, it in enumerate(items):
            y = it["k"][None]
            xs, _ = cnf_sample(model, y, it["mask"], 8, generator=200 + i)
            mean = xs.mean(0)
            xm, _ = cnf_map(model, y, it["mask"], mean, steps=a.map_steps, lr=1e-2)
            lp = [float(cnf_log_posterior(model, v, y, it["mask"]).detach()) for v in (xs[0], mean, xm)]
            ps = [float(psnr(combine(v, maps), it["truth"][None])[0]) for v in (xs[0], mean, xm)]
            lines.append(f"| {i} | {lp[0]:.4g} | {lp[1]:.4g} | {lp[2]:.4g} | {ps[0]:.2f} / {ps[1]:.2f} / {ps[2]:.2f} |")
        lines.append("")
        print("\n".join(lines[-len(items) - 1:]), flush=True)
    if "degeneracy" not in skip:
        items, _ = build_items(size, 4.0, a.calib_slices)
        lines += ["## NLL degeneracy diagnostic (issue 7), GRO R=4", "",
                  f"{a.calib_slices} test slices, clean nullspace targets; min-max over slices. Stretch: "
                  "||dz|| / ||du|| along random nullspace directions on the exactly-zero background (bg) and the "
                  "foreground (fg) of the truth, and along the measured k-space (meas, where the target is 0).", "",
                  "| weights | training noise | NLL (bits/dim) | log-det/dim (nats) | stretch bg | stretch fg | stretch meas |",
                  "|---|---|---|---|---|---|---|"]
        for w in [a.weights] + ([a.degeneracy_compare] if a.degeneracy_compare else []):
            mdl = model if w == a.weights else load_cnf(w)
            cm = read_config(w)
            cm = cm.get("cnf") or cm.get("metadata", {}).get("cnf") or {}
            nz = f"{cm.get('train_noise', '?')} ({cm.get('train_noise_domain', 'after the projection')})"
            d = degeneracy(mdl, items)
            lines.append(f"| `{w}` | {nz} | " + " | ".join(f"{d[k][0]:.3g} to {d[k][1]:.3g}"
                                                        for k in ("bpd", "logdet", "bg", "fg", "meas")) + " |")
        lines.append("")
        print("\n".join(lines[-4:]), flush=True)
    if "speed" not in skip:
        lines += ["## Speed: time per sample, P = 1 vs P = 32 batched (one conditioning pass)", "",
                  "Paper: 108 ms vs 44 ms per sample (ratio 2.5) on a V100 at 320x320x8 with L=3, B=20.", "",
                  "| size | device | ms/sample P=1 | ms/sample P=32 | ratio | peak mem P=1 (MiB) | peak mem P=32 (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        for s in [int(v) for v in a.speed_sizes.split(",")]:
            r = speed(a.weights, None if s == size else s, a.device)
            lines.append(f"| {s}x{s} | {a.device} | {r[1][0]:.1f} | {r[32][0]:.1f} | {r[1][0] / r[32][0]:.2f} | "
                         f"{r[1][1]:.0f} | {r[32][1]:.0f} |")
            print(lines[-1], flush=True)
        lines.append("")
    lines += [f"Total benchmark time {time.perf_counter() - t_all:.0f} s.", ""]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_speed-worker":
        w, sz, P, dev = sys.argv[2:6]
        speed_worker(w, int(sz) or None, int(P), dev)
    else:
        main()
