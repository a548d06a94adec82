"""PoGMDM benchmark: denoising, joint reconstruction table, coil maps vs ACS, run times, Fig. 1.

Writes ``benchmarks/results/pogmdm.md`` and ``.json`` (atomically) and ``docs/figures/pogmdm_filters.png``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_pogmdm.py                 # everything
    python benchmarks/bench_pogmdm.py --only denoise figure                          # the cheap parts
    python benchmarks/bench_pogmdm.py --slices 2 --samples 4 --steps 300 --zeta-start 0.3

Settings are printed into the report. The CPU defaults are lighter than the paper's (N = 1000 levels,
10 samples, M = 1 corrector): see the report header.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from bayesmri.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmri.data import load_slices, simulate_acquisition  # noqa: E402
from bayesmri.metrics import nmse, psnr, ssim  # noqa: E402
from bayesmri.physics.masks import make_mask  # noqa: E402
from bayesmri.physics.trajectories import density_compensation, radial_trajectory  # noqa: E402
from bayesmri.priors.pogmdm import load_pogmdm  # noqa: E402
from bayesmri.samplers.pogmdm_joint import CartesianCoilFourier, JointPoGMDM, coil_nullspace_residual  # noqa: E402


def _atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# ---------------------------------------------------------------------------------------------- sampling
def make_pattern(name: str, H: int, W: int, seed: int) -> dict:
    """Keyword arguments of ``simulate_acquisition`` for a sampling pattern at acceleration 4.

    ``cart-acsP``: 1-D uniform random columns, R = 4, ``P`` % of the columns as ACS (8, 4, 2);
    ``radial``: golden-angle radial spokes with ``H W / (4 N)`` spokes of ``N = max(H, W)`` readout
    samples (K = H W / 4, i.e. R = 4 in samples), a real non-Cartesian acquisition (NUFFT), Pipe-Menon
    density compensation; ``gauss2d``: 2-D variable-density Gaussian points.
    """
    if name.startswith("cart-acs"):
        pct = int(name[len("cart-acs"):])
        n = max(1, round(pct / 100 * W))
        return {"mask": make_mask("uniform1d", (H, W), 4, num_acs=n, seed=seed), "num_acs": n}
    if name == "radial":
        N = max(H, W)
        traj = radial_trajectory(round(H * W / (4 * N)), N)
        return {"trajectory": traj, "dcf": density_compensation(traj, (H, W)), "num_acs": 16}
    if name == "gauss2d":
        return {"mask": make_mask("gaussian2d", (H, W), 4, seed=seed), "num_acs": (12, 12)}
    raise ValueError(f"unknown pattern {name!r}")


# ---------------------------------------------------------------------------------------------- parts
def bench_denoise(model, size: int, n: int, split: str = "test") -> dict:
    x = load_slices(split, size)
    x = x[torch.linspace(0, x.shape[0] - 1, n).round().long()]
    x = x / x.flatten(1).amax(1)[:, None, None]
    out = {}
    g = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.1, 0.2):
        y = x + sigma * torch.randn(x.shape, generator=g)

        def p(a):
            return float((10 * torch.log10(1.0 / (a - x).pow(2).flatten(1).mean(1))).mean())

        best, best_w = -1e9, None
        for w in (0.5, 0.7, 1.0, 1.4, 2.0, 2.8):  # oracle choice of the blur width per noise level
            r = torch.arange(-8, 9, dtype=torch.float32)
            k = torch.exp(-r**2 / (2 * w**2))
            k = k / k.sum()
            b = torch.nn.functional.conv2d(y[:, None], (k[:, None] * k[None])[None, None], padding=8)[:, 0]
            if p(b) > best:
                best, best_w = p(b), w
        t0 = time.perf_counter()
        with torch.no_grad():
            d = model.denoise(y, sigma)
        out[str(sigma)] = {"noisy": p(y), "gauss_oracle": best, "gauss_width": best_w, "pogmdm": p(d),
                           "time_s": time.perf_counter() - t0}
    return out


def _metrics(est, tgt):
    e, t = est.reshape(1, *est.shape[-2:]), tgt.reshape(1, *tgt.shape[-2:])
    return {"psnr": float(psnr(e, t)), "ssim": float(ssim(e, t)), "nmse": float(nmse(e.abs(), t.abs()))}


def bench_recon(model, args) -> dict:
    from bayesmri.methods import DEFAULT_ITERS, DEFAULT_LAMBDAS, available_methods, get_method
    import bayesmri.samplers.pogmdm_joint  # noqa: F401  (registers pogmdm-joint)

    size = args.size
    slices = load_slices(args.split, size)
    idx = torch.linspace(slices.shape[0] * 0.3, slices.shape[0] * 0.7, args.slices).round().long()
    rows = []
    learned = [m for m in available_methods() if m not in ("zf", "sense", "tv", "l1wav", "pogmdm-joint")]
    for pat in args.patterns:
        for si in idx.tolist():
            acq = make_pattern(pat, size, size, seed=si)
            s = simulate_acquisition(slices[si], ncoils=8, snr_db=30, seed=1000 + si, **acq)
            tgt = s.target
            R = (size * size / s.trajectory.shape[0] if s.trajectory is not None else
                 float(s.mask.numel() / s.mask.sum()))
            row = {"pattern": pat, "slice": si, "R": R}
            support = (tgt.abs() > 0.05 * tgt.abs().max())[None]
            if not s.is_cartesian:
                # the registry's zf is the plain adjoint and its TV weight is tuned for Cartesian
                # ||A|| = 1; for the NUFFT use the gridding (density-compensated adjoint) and scale the
                # TV weight by ||A||^2 (x3, the best of {1, 3, 10} on val slice 14)
                from bayesmri.recon import tv_recon

                op = s.operator("espirit")
                t0 = time.perf_counter()
                row["zf"] = {**_metrics(op.gridding(s.y)[0], tgt), "time_s": time.perf_counter() - t0}
                t0 = time.perf_counter()
                lam = args.tv_factor_noncart * DEFAULT_LAMBDAS["tv"] * op.compute_norm(n_iter=30)
                row["tv"] = {**_metrics(tv_recon(op, s.y, lam=lam, max_iter=DEFAULT_ITERS["tv"])[0], tgt),
                             "time_s": time.perf_counter() - t0, "lam": lam}
            for name in (["zf", "tv"] if s.is_cartesian else []) + (learned if args.with_learned else []):
                t0 = time.perf_counter()
                try:
                    r = get_method(name)(s, n_samples=1, generator=0)
                    row[name] = {**_metrics(r.mean, tgt), "time_s": time.perf_counter() - t0}
                except Exception as exc:  # a method that cannot run here is reported, not fatal
                    row[name] = {"error": str(exc)[:200]}
            sampler = JointPoGMDM(model, n_steps=args.steps, zeta_start=args.zeta_start, mu=args.mu,
                                  n_corrector=args.corrector, map_steps=args.map_steps, map_weight=args.map_weight)
            t0 = time.perf_counter()
            if s.is_cartesian:
                res = sampler.sample(s.kspace, s.mask, n_samples=args.samples, generator=si)
            else:
                res = sampler.sample(s.kspace, n_samples=args.samples, generator=si, trajectory=s.trajectory,
                                     dcf=s.dcf, img_shape=s.img_shape, weighting=args.weighting)
            wall = time.perf_counter() - t0
            row["pogmdm_mmse"] = {**_metrics(res.mean, tgt), "time_s": wall}
            row["pogmdm_map"] = _metrics(res.diagnostics["map"], tgt)
            err = (res.mean.abs() - tgt.abs()).abs()
            row["std_err_corr"] = float(torch.corrcoef(torch.stack([res.std.flatten(), err.flatten()]))[0, 1])
            coil = s.coil_images[None]
            row["nullres_joint"] = float(coil_nullspace_residual(res.diagnostics["coil_maps"][None], coil, support))
            try:  # ESPIRiT needs >= 4 calibration lines
                row["nullres_espirit"] = float(coil_nullspace_residual(s.maps_espirit[None], coil, support))
            except ValueError:
                row["nullres_espirit"] = float("nan")
            zf = s.zero_filled()
            init = zf / (zf.abs() ** 2).sum(0).sqrt().clamp_min(1e-3 * float(zf.abs().max()))
            row["nullres_init"] = float(coil_nullspace_residual(init[None], coil, support))
            row["levels"] = len(res.diagnostics["zetas"]) - 1
            row["fourier_norm"] = res.diagnostics["fourier_norm"]
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("pattern", "slice", "pogmdm_mmse", "pogmdm_map", "tv", "zf",
                                                  "nullres_joint", "nullres_espirit")}), flush=True)
    return {"rows": rows}


def bench_timing(model, args) -> dict:
    """Per-iteration time of Alg. 1 (P chains) at 128x128x8 and 320x320x16, extrapolated to the schedule."""
    out = {}
    # the experts' tables are built once per noise level (then cached): time one build
    xs = torch.zeros(2, 128, 128)
    with torch.no_grad():
        t0 = time.perf_counter()
        model.score(xs, 0.0123457)
        t1 = time.perf_counter()
        model.score(xs, 0.0123457)
        t2 = time.perf_counter()
    out["table_build_s"] = (t1 - t0) - (t2 - t1)
    for (H, C) in ((128, 8), (320, 16)):
        img = load_slices("test", H)[60]
        mask = make_mask("uniform1d", (H, H), 4, num_acs=round(0.08 * H), seed=0)
        s = simulate_acquisition(img, mask=mask, ncoils=C, snr_db=30, seed=0)
        for P in (1, args.samples):
            n_it = 6
            sampler = JointPoGMDM(model, n_steps=n_it, zeta_max=0.02, zeta_min=0.01, zeta_start=None,
                                  n_corrector=args.corrector, map_steps=0)
            sampler.sample(s.kspace, s.mask, n_samples=P, generator=0)  # warm-up (tables, FFT plans)
            t0 = time.perf_counter()
            sampler.sample(s.kspace, s.mask, n_samples=P, generator=0)
            per_it = (time.perf_counter() - t0) / n_it
            t1 = time.perf_counter()
            JointPoGMDM(model, n_steps=1, zeta_start=None, map_steps=10)._map(
                torch.zeros(1, H, H, dtype=torch.complex64), s.maps_true[None], s.kspace[None],
                CartesianCoilFourier(s.mask, (H, H)))
            per_map = (time.perf_counter() - t1) / 10
            levels = len(JointPoGMDM(model, n_steps=args.steps, zeta_start=args.zeta_start).schedule()) - 1
            out[f"{H}x{H}x{C}_P{P}"] = {"per_iteration_s": per_it, "per_map_step_s": per_map,
                                        "levels": levels, "extrapolated_total_s": per_it * levels + per_map * args.map_steps,
                                        "paper_schedule_total_s": per_it * 1000}
            print(f"{H}x{H}x{C} P={P}: {per_it:.3f} s/iteration", flush=True)
    return out


def make_figure(model, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        k = model.filters_spatial(33, 33)
        z = torch.linspace(-1, 1, 401)
        ts = [0.0, 0.05, 0.1, 0.2, 0.4]
        pots = [model.potentials(z, t) for t in ts]
    n = model.n_filters
    fig, ax = plt.subplots(4, 11, figsize=(22, 8.5))
    for a in ax[2:, 10]:
        a.axis("off")
    for i in range(n):
        r, c = (0 if i < 10 or i == 20 else 2), (i % 10 if i < 20 else 10)
        a = ax[r, c]
        a.imshow(k[i], cmap="gray")
        name = "low-pass" if i == 20 else f"{'V' if i < 10 else 'H'} {'coarse' if (i % 10) < 5 else 'fine'} s={(i % 5) - 2}"
        a.set_title(f"{name}\ngamma={float(model.gamma[i]):.2f}", fontsize=7)
        a.axis("off")
        b = ax[r + 1, c]
        for t, p in zip(ts, pots):
            b.plot(z, p[i] - p[i].min(), lw=0.8, label=f"sigma={t}")
        b.set_ylim(0, 12)
        b.tick_params(labelsize=6)
    ax[1, 0].legend(fontsize=5)
    fig.suptitle("PoGMDM: learned shearlet filters (rows 1, 3: vertical / horizontal cone) and expert "
                 "potentials -log psi_k(z, sigma) (rows 2, 4)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    plt.close(fig)


def to_markdown(res: dict, args) -> str:
    L = ["# PoGMDM benchmark", "",
         f"Command: `python benchmarks/bench_pogmdm.py {' '.join(sys.argv[1:])}`; weights `{args.weights}`; "
         f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU (shared machine: timings are "
         "inflated by other jobs).", ""]
    if "denoise" in res:
        L += ["## Denoising (Tweedie denoiser of the prior vs. oracle Gaussian filter)", "",
              f"{args.denoise_slices} test slices {args.size}x{args.size} (max 1), PSNR in dB.", "",
              "| sigma | noisy | Gaussian filter (best width) | PoGMDM | margin |", "|---|---|---|---|---|"]
        for s, d in res["denoise"].items():
            L.append(f"| {s} | {d['noisy']:.2f} | {d['gauss_oracle']:.2f} (w={d['gauss_width']}) | {d['pogmdm']:.2f} "
                     f"| {d['pogmdm'] - d['gauss_oracle']:+.2f} |")
        L.append("")
    if "recon" in res:
        rows = res["recon"]["rows"]
        nsl = len({r["slice"] for r in rows})
        L += [f"## Joint reconstruction (built-in {args.split} split, {nsl} slices, 8 coils, SNR 30 dB, R = 4)", "",
              "Patterns: `cart-acsP` 1-D random columns with P % ACS columns; `radial` golden-angle spokes "
              "(K = HW/4 samples) reconstructed with the NUFFT (`NonCartesianMRI`, finufft), data-term "
              f"weighting `{args.weighting}`; `gauss2d` 2-D Gaussian variable density.", "",
              f"Settings: N = {args.steps} levels in the full schedule, CCDF start zeta = {args.zeta_start}, "
              f"{args.samples} samples (paper: 10), {args.corrector} corrector step(s) (paper: 1), mu = {args.mu}, "
              f"MAP: {args.map_steps} Nesterov steps, beta = {args.map_weight}. TV uses ESPIRiT maps. "
              "Metrics on magnitude, mean over slices.", "",
              "| pattern | method | PSNR | SSIM | NMSE | time/recon (s) |", "|---|---|---|---|---|---|"]
        pats = list(dict.fromkeys(r["pattern"] for r in rows))
        for p in pats:
            rr = [r for r in rows if r["pattern"] == p]
            for m in ["zf", "tv"] + [k for k in rr[0] if isinstance(rr[0][k], dict) and k not in
                                      ("zf", "tv", "pogmdm_mmse", "pogmdm_map")] + ["pogmdm_mmse", "pogmdm_map"]:
                vals = [r[m] for r in rr if "psnr" in r.get(m, {})]
                if not vals:
                    err = rr[0].get(m, {}).get("error", "n/a")
                    L.append(f"| {p} | {m} | - | - | - | {err[:60]} |")
                    continue
                mean = {k: sum(v[k] for v in vals) / len(vals) for k in ("psnr", "ssim", "nmse")}
                t = [v.get("time_s") for v in vals if v.get("time_s") is not None]
                ts = f"{sum(t) / len(t):.1f}" if t else "(with mmse)"
                L.append(f"| {p} | {m} | {mean['psnr']:.2f} | {mean['ssim']:.3f} | {mean['nmse']:.4f} | {ts} |")
        L += ["", "### Coil maps: relative RSS nullspace residual (Nagler Fig. 3), lower is better", "",
              "`||X - S S^H X||^2 / ||X||^2` of the true coil images inside the object.", "",
              "| pattern | ESPIRiT | joint (PoGMDM) | initial (ZF / RSS) | std-error corr. |", "|---|---|---|---|---|"]
        for p in pats:
            rr = [r for r in rows if r["pattern"] == p]

            def m(k):
                v = [r[k] for r in rr if k in r]
                return sum(v) / len(v) if v else float("nan")

            L.append(f"| {p} | {m('nullres_espirit'):.2e} | {m('nullres_joint'):.2e} | {m('nullres_init'):.2e} "
                     f"| {m('std_err_corr'):.2f} |")
        L.append("")
    if "timing" in res:
        L += ["## Run time per reconstruction (CPU)", "",
              "| size | P | s / iteration | levels | total (extrapolated, incl. MAP) | paper schedule N=1000 |",
              "|---|---|---|---|---|---|"]
        for k, v in res["timing"].items():
            if not isinstance(v, dict):
                continue
            size, P = k.split("_P")
            L.append(f"| {size} | {P} | {v['per_iteration_s']:.3f} | {v['levels']} | {v['extrapolated_total_s']:.0f} s "
                     f"| {v['paper_schedule_total_s']:.0f} s |")
        tb = res["timing"].get("table_build_s")
        L += ["", "Per iteration with the experts' tables cached (reverse-diffusion step, likelihood step, map "
              "step; Cartesian R = 4). The tables are built once per noise level and kept (up to 256 levels), "
              + (f"{tb:.2f} s each here, " if tb is not None else "")
              + "so the first reconstruction with a new schedule costs that much more per level; later ones "
              "(every slice of a benchmark) reuse them. Paper: 20 s for 640x372x16 on a GPU. No GPU was "
              "available for this run.", ""]
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="*", default=["denoise", "figure", "recon", "timing"],
                   choices=["denoise", "figure", "recon", "timing"])
    p.add_argument("--weights", default="pogmdm_mri")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--slices", type=int, default=1)
    p.add_argument("--denoise-slices", type=int, default=8)
    p.add_argument("--split", default="test", choices=["train", "val", "test", "ood"],
                   help="built-in split (tune on val, report on test)")
    p.add_argument("--patterns", nargs="*", default=["cart-acs8", "cart-acs4", "cart-acs2", "radial", "gauss2d"])
    p.add_argument("--weighting", default="dcf", choices=["none", "dcf"],
                   help="data-term weights of the NUFFT (radial) joint reconstruction")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--zeta-start", type=float, default=0.3)
    p.add_argument("--mu", type=float, default=1.0)
    p.add_argument("--corrector", type=int, default=0)
    p.add_argument("--map-steps", type=int, default=100)
    p.add_argument("--map-weight", type=float, default=1e-4)
    p.add_argument("--tv-factor-noncart", type=float, default=3.0,
                   help="TV weight for radial = this x the Cartesian default x ||A||^2 (tuned on val)")
    p.add_argument("--extra-rows", nargs="*", default=[], help="JSON-lines logs of earlier runs to merge")
    p.add_argument("--with-learned", action="store_true", help="also run other registered learned methods")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pogmdm"))
    args = p.parse_args(argv)
    model = load_pogmdm(args.weights)
    out = Path(args.out)
    res = {}
    if out.with_suffix(".json").exists():  # keep parts computed by earlier (partial) runs
        res = json.loads(out.with_suffix(".json").read_text())
    if "figure" in args.only:
        make_figure(model, ROOT / "docs" / "figures" / "pogmdm_filters.png")
    if "denoise" in args.only:
        res["denoise"] = bench_denoise(model, args.size, args.denoise_slices, args.split)
        print(json.dumps(res["denoise"], indent=1), flush=True)
    if "recon" in args.only:
        res["recon"] = bench_recon(model, args)
        for f in args.extra_rows:  # rows printed by an earlier, interrupted run (JSON lines)
            res["recon"]["rows"] = [json.loads(line) for line in open(f) if line.startswith('{"pattern"')] + \
                res["recon"]["rows"]
    if "timing" in args.only:
        res["timing"] = bench_timing(model, args)
    res["settings"] = vars(args)
    _atomic_write(out.with_suffix(".json"), json.dumps(res, indent=1))
    _atomic_write(out.with_suffix(".md"), to_markdown(res, args))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
