"""CNF benchmark (Wen et al. 2023): quality, Table-3 ablation, calibration (Fig. 4), MAP (Fig. 5), speed.

Run (CPU, bounded)::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_cnf.py --weights cnf64 \
        --ablation-weights runs/cnf64_v4_nonull/model_ema --n-slices 8 --out benchmarks/results/cnf.md

Data: the built-in *test* split (a different brain from training) as the rest of the project sees it,
:class:`bayesmri.data.SimulatedBrainDataset` (8 birdcage coils, smooth random phase, SNR 30 dB, a GRO
frame per slice, seed 0). Everything is normalised by the 95th percentile of the zero-filled RSS.
The quality section has two coil-map protocols (``--maps``): ``true`` (the simulation's maps, for the CNF's
``S^H`` combination and the SENSE operator of TV / l1-wavelet) and ``espirit`` (maps estimated per slice from
its ACS region, what real data allows and what the paper uses; ESPIRiT maps vanish outside the object
support, where no measurement constrains the image: the baselines are scored both as solved and restricted to
the support, ``x sum_c |S_c|^2``, and keep the better). TV and l1-wavelet weights are tuned per protocol and
acceleration on ``--val-slices`` central ``val`` slices (grid ``LAMBDA_GRID``, by PSNR, as in
``bench_diffusion.py``). Metrics: magnitude PSNR/SSIM against the true complex image (fastMRI conventions,
:mod:`bayesmri.metrics`). The ablation, calibration and MAP sections use the true maps.
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
from bayesmri.metrics import mean_gain_curve, mean_gain_reference, psnr, ssim  # noqa: E402
from bayesmri.physics.cartesian import MultiCoilMRI  # noqa: E402
from bayesmri.physics.coils import coil_combine  # noqa: E402


combine = coil_combine  # S^H x: (..., C, H, W) -> (..., H, W)


LAMBDA_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


def build_items(size, R, n, ncoils=8, split="test", espirit=False):
    """``n`` central slices of a built-in split, acquired exactly as everywhere else in the project
    (:class:`bayesmri.data.SimulatedBrainDataset`: its own GRO frame per slice, SNR 30 dB, seed 0).
    Each item carries its maps per protocol: ``maps["true"]`` and, with ``espirit``, ``maps["espirit"]``."""
    from bayesmri.data.simulate import SimulatedBrainDataset

    ds = SimulatedBrainDataset(split, size=size, pattern="gro", acceleration=R, ncoils=ncoils)
    N = len(ds)
    idx = torch.linspace(N * 0.2, N * 0.8, n).round().long().tolist()  # central slices: brain, not caps
    out = []
    for i in idx:
        s = ds[i]
        maps = {"true": ds.maps}
        if espirit:
            maps["espirit"] = s.maps_espirit
        out.append(dict(x=s.coil_images, k=s.kspace, mask=s.mask, truth=s.target, maps=maps))
    return out, ds.maps


@torch.no_grad()
def unet_only(model, y, mask):
    """The conditioning UNet's MSE estimate made data consistent: ``(I - A^+A) UNet(A^+ y) + A^+ y``."""
    from bayesmri.flows.cnf import _project_null, channels_to_complex, complex_to_channels, zero_filled_and_scale

    zf, scale, m = zero_filled_and_scale(y, mask)
    s = scale.view(-1, 1, 1, 1)
    x = channels_to_complex(model.unet(complex_to_channels(zf / s)))
    return (_project_null(x, m) + zf / s) * s


def _score(v, truth):
    return float(psnr(v, truth)[0]), float(ssim(v.abs(), truth.abs())[0])


def _baseline(name, op, y, lam):
    from bayesmri.methods import DEFAULT_ITERS
    from bayesmri.recon import l1_wavelet_recon, tv_recon

    fn = tv_recon if name == "tv" else l1_wavelet_recon
    return fn(op, y, lam=lam, max_iter=DEFAULT_ITERS[name])


def tune_baselines(size, R, protocol, n_val):
    """TV / l1-wavelet weight (and, for ESPIRiT maps, support restriction or not) with the best mean PSNR on
    ``n_val`` central ``val`` slices: ``{name: (lam, restrict, psnr)}``."""
    items, _ = build_items(size, R, n_val, split="val", espirit=protocol == "espirit")
    scores = {}
    for it in items:
        S = it["maps"][protocol]
        op = MultiCoilMRI(S[None], it["mask"])
        w = (S.abs() ** 2).sum(0)
        for name in ("tv", "l1wav"):
            for lam in LAMBDA_GRID:
                x = _baseline(name, op, it["k"][None], lam)
                for restrict in ((False, True) if protocol == "espirit" else (False,)):
                    scores.setdefault((name, lam, restrict), []).append(_score(x * w if restrict else x, it["truth"][None])[0])
    best = {}
    for (name, lam, restrict), v in scores.items():
        m = sum(v) / len(v)
        if name not in best or m > best[name][2]:
            best[name] = (lam, restrict, m)
    return best


def quality(model, items, maps, P, gen, with_dc=True, extra_methods=True, protocol="true", lams=None):
    """Magnitude PSNR / SSIM per item of zero-filled, TV, l1-wavelet, the UNet alone and the CNF mean.

    ``protocol`` picks the item's maps (``it["maps"][protocol]``; ``maps`` is the fallback for items without
    them); ``lams`` = :func:`tune_baselines` output (default: the library's default weights, unrestricted)."""
    from bayesmri.methods import DEFAULT_LAMBDAS

    lams = lams or {k: (DEFAULT_LAMBDAS[k], False, None) for k in ("tv", "l1wav")}
    rows = {"zero-filled": [], "TV": [], "l1-wavelet": [], "UNet only (DC)": [], "CNF mean": []}
    for it in items:
        truth = it["truth"][None]
        S = it.get("maps", {}).get(protocol, maps)
        op = MultiCoilMRI(S[None], it["mask"])
        w = (S.abs() ** 2).sum(0)
        y = it["k"][None]
        est = {}
        if extra_methods:
            est["zero-filled"] = op.A_adjoint(y)
            for label, name in (("TV", "tv"), ("l1-wavelet", "l1wav")):
                lam, restrict, _ = lams[name]
                x = _baseline(name, op, y, lam)
                est[label] = x * w if restrict else x
            est["UNet only (DC)"] = combine(unet_only(model, y, it["mask"]), S)
        xs, _ = cnf_sample(model, y, it["mask"], P, generator=gen, chunk=P, data_consistency=with_dc)
        est["CNF mean"] = combine(xs[:, 0], S).mean(0, keepdim=True)
        for k, v in est.items():
            rows[k].append(_score(v, truth))
    return {k: v for k, v in rows.items() if v}


def verdict(rows):
    """One line: does the CNF mean beat zero-filled, TV and l1-wavelet in mean PSNR and SSIM?"""
    mean = {k: (sum(p for p, _ in v) / len(v), sum(s for _, s in v) / len(v)) for k, v in rows.items()}
    c = mean["CNF mean"]
    others = [k for k in ("zero-filled", "TV", "l1-wavelet") if k in mean]
    lost = [k for k in others if not (c[0] > mean[k][0] and c[1] > mean[k][1])]
    if not lost:
        return f"CNF mean beats {', '.join(others)} in PSNR and SSIM ({c[0]:.2f} dB / {c[1]:.3f})."
    return ("CNF mean does NOT beat " + ", ".join(f"{k} ({mean[k][0]:.2f} / {mean[k][1]:.3f})" for k in lost)
            + f" in both PSNR and SSIM ({c[0]:.2f} dB / {c[1]:.3f}).")


@torch.no_grad()
def degeneracy(model, items, seed=0):
    """NLL degeneracy diagnostic (issue 7): on the clean nullspace targets of ``items``, the NLL (bits/dim),
    the log-determinant per dimension (nats) and the local latent stretch ``||J d|| / ||d||`` of
    ``z = h^{-1}(u)`` (central differences) along random nullspace directions supported on the exactly-zero
    background of the truth, on the foreground, and along the measured k-space (where ``u`` is exactly 0).
    A flow that fits its training noise ``sigma`` rather than the images stretches towards ``1 / sigma``."""
    import math

    from bayesmri.flows.cnf import _project_null, complex_to_channels, zero_filled_and_scale

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


def _cnf_meta(weights) -> dict:
    """The ``cnf`` training metadata stored beside the weights (acceleration, pretraining, noise)."""
    from bayesmri.priors.loading import read_config

    meta = read_config(weights)
    return meta.get("cnf") or meta.get("metadata", {}).get("cnf") or {}


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
    ap.add_argument("--ablation-nullspace-weights", default=None,
                    help="the nullspace-learning row of the ablation (default --weights): the model trained with the "
                         "same recipe as --ablation-weights")
    ap.add_argument("--n-slices", type=int, default=8)
    ap.add_argument("--P", type=int, default=8, help="samples for the posterior mean in the quality table")
    ap.add_argument("--accelerations", default="4,8")
    ap.add_argument("--weights-at", default="",
                    help="weights per acceleration for the quality section, e.g. '8=runs/cnf64_r8/model_ema' "
                         "(default: --weights for every acceleration)")
    ap.add_argument("--maps", default="true,espirit", help="coil-map protocols of the quality section: true,espirit")
    ap.add_argument("--val-slices", type=int, default=8, help="val slices for tuning the TV / l1-wavelet weights")
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
    try:
        weights_at = {float(k): v for k, v in (kv.split("=", 1) for kv in filter(None, a.weights_at.split(",")))}
    except ValueError:
        ap.error(f"--weights-at: expected R=path[,R=path...], got {a.weights_at!r}")
    bad = set(a.maps.split(",")) - {"true", "espirit"}
    if bad:
        ap.error(f"--maps: unknown protocol(s) {', '.join(sorted(bad))}; use true and/or espirit")
    torch.manual_seed(0)
    model = load_cnf(a.weights)
    loaded = {a.weights: model}

    def cnf(weights):  # each weights file loaded once
        if weights not in loaded:
            loaded[weights] = load_cnf(weights)
        return loaded[weights]
    size = model.img_size[0]
    cfg = model.config
    from bayesmri.priors.loading import read_config

    meta = read_config(a.weights)
    cmeta = _cnf_meta(a.weights)
    train_R = cmeta.get("acceleration", "?")
    train_steps = meta.get("training", {}).get("steps", "?")
    pre_steps, t_noise = cmeta.get("pretrain_steps", "?"), cmeta.get("train_noise", "?")
    t_dom = cmeta.get("train_noise_domain", "flow target, after the nullspace projection")
    lines = ["# CNF benchmark (Wen et al. 2023)", "",
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
                  f"{a.n_slices} test slices, P = {a.P} samples, magnitude PSNR (dB) / SSIM, mean ± std over slices. "
                  f"TV / l1-wavelet weights tuned on {a.val_slices} `val` slices per protocol and acceleration.", ""]
        for protocol in a.maps.split(","):
            for R in [float(r) for r in a.accelerations.split(",")]:
                try:
                    lams = tune_baselines(size, R, protocol, a.val_slices)
                    items, maps = build_items(size, R, a.n_slices, espirit=protocol == "espirit")
                except ValueError as e:  # ESPIRiT without a usable calibration region
                    lines += [f"GRO R={R:g}, {protocol} maps: not run ({e}).", ""]
                    print(lines[-2], flush=True)
                    continue
                w_R = weights_at.get(R, a.weights)
                rows = quality(cnf(w_R), items, maps, a.P, torch.Generator().manual_seed(0), protocol=protocol, lams=lams)
                tuned = "; ".join(f"{k} lam {v[0]:g}{', restricted to the support' if v[1] else ''} (val {v[2]:.2f} dB)"
                                  for k, v in lams.items())
                trained = train_R if w_R == a.weights else f"{_cnf_meta(w_R).get('acceleration', '?')}, weights `{w_R}`"
                lines += [f"GRO R={R:g}, {protocol} maps (CNF trained at R={trained}; {tuned}):", "",
                          "| method | PSNR | SSIM |", "|---|---|---|"]
                for k, v in rows.items():
                    lines.append(f"| {k} | {mean_std([p for p, _ in v])} | {mean_std([s for _, s in v])} |")
                lines += ["", verdict(rows), ""]
                print("\n".join(lines[-len(rows) - 5:]), flush=True)
    if a.ablation_weights and "ablation" not in skip:
        abl = cnf(a.ablation_weights)
        items, maps = build_items(size, 4.0, a.n_slices)
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        r1 = quality(abl, items, maps, a.P, g(), with_dc=False, extra_methods=False)["CNF mean"]
        r2 = quality(abl, items, maps, a.P, g(), with_dc=True, extra_methods=False)["CNF mean"]
        w3 = a.ablation_nullspace_weights or a.weights
        r3 = quality(cnf(w3), items, maps, a.P, g(), with_dc=True,
                     extra_methods=False)["CNF mean"]
        lines += ["## Ablation (paper Table 3), GRO R=4, true maps", "",
                  f"Without nullspace learning: `{a.ablation_weights}` (samples used as drawn, then with their measured "
                  f"k-space replaced by the data); with nullspace learning: `{w3}`.", "",
                  "| variant | PSNR | SSIM |", "|---|---|---|"]
        for name, r in (("without data consistency", r1), ("with data consistency", r2), ("with nullspace learning", r3)):
            lines.append(f"| {name} | {mean_std([p for p, _ in r])} | {mean_std([s for _, s in r])} |")
        lines.append("")
        print("\n".join(lines[-8:]), flush=True)
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
            mdl = cnf(w)
            cm = _cnf_meta(w)
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
