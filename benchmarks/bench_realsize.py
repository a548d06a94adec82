"""Learned priors at real matrix sizes on a brain no model saw: diffusion samplers against TV and l1-wavelet.

Data: native 1 mm axial slices of a split (:func:`bayesmri.data.volumes.native_slices`): ``test`` =
Colin27 (``ch2bet``), ``val`` = held-out MNI slices (for choices such as the tiling mode), ``ood`` =
Colin27 with skull (``--ood-volume macaque`` for the macaque). Each slice is zero-padded to a 224 mm
square field of view and resampled to each ``--sizes`` entry (``native`` = 224 px at 1 mm; 128 = 1.75 mm;
320 = 0.7 mm), then simulated (:func:`bayesmri.data.simulate_acquisition`: birdcage coil maps, smooth
phase, complex noise at ``--snr`` dB) under each ``--patterns`` mask. Coil maps: the simulation's
(``maps="true"``), so the rows compare priors, not ESPIRiT.

Methods: ``zf``, ``tv``, ``l1wav`` (lambda chosen on ``--val-slices`` val slices per size, coil count
and pattern from ``LAMBDA_GRID``), and the score-based samplers ``pula``, ``score-mri``,
``ula-annealed`` with the prior given by ``--weights`` wrapped in
:class:`bayesmri.priors.patch.PatchScore` (``--tiling``, ``--margin``, ``--patch``); the sampler
settings are the registered defaults (``bayesmri.methods.diffusion.DEFAULTS``) unless ``--opt
method:key=value``; ``pogmdm-joint`` (joint coil maps, its own PoGMDM prior: ``--weights`` or the
method's default by size) takes the same ``--P``. Metrics: magnitude PSNR / SSIM (fastMRI) of the P-sample mean against the ground
truth, seconds per slice (all P chains, one process).

Every unit (split, size, coils, pattern, slice, method, variant) is cached in ``--cache`` (JSON, written
atomically after each unit), so an interrupted run resumes and several processes can split the work
(``--sizes``/``--patterns``/``--methods`` subsets with one cache each, merged by ``--merge``).

    OMP_NUM_THREADS=1 python benchmarks/bench_realsize.py --weights score_native \\
        --split test --slices 3 --sizes 128,native,320 --coils 8 --patterns gro4,poisson8 \\
        --methods zf,tv,l1wav,pula --P 2 --cache benchmarks/results/realsize_cache.json \\
        --report benchmarks/results/realsize.md
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmri import metrics as M  # noqa: E402
from bayesmri.data import simulate_acquisition  # noqa: E402
from bayesmri.data.simulate import derive_seed  # noqa: E402
from bayesmri.data.synth import resample_slice  # noqa: E402
from bayesmri.data.volumes import native_slices  # noqa: E402
from bayesmri.io import atomic_path  # noqa: E402
from bayesmri.methods import get_method  # noqa: E402
from bayesmri.physics.masks import make_mask  # noqa: E402
from bayesmri.priors.loading import load_model  # noqa: E402
from bayesmri.priors.patch import PatchScore  # noqa: E402

FOV_MM = 224
LAMBDA_GRID = (3e-4, 1e-3, 3e-3, 1e-2)  # extended downwards while the best is the smallest (below)
CLASSICAL = ("zf", "tv", "l1wav")
SCORE_METHODS = ("pula", "score-mri", "ula-annealed")
#: Samplers with their own prior (``--weights`` names its weights; none: the method's default).
JOINT_METHODS = ("pogmdm-joint",)
PRIOR_METHODS = SCORE_METHODS + JOINT_METHODS
SCORE_WEIGHTS = "score_native"  # shipped; a training run's export by --weights (runs/score_native/model_ema)


def parse_size(s: str) -> int:
    return FOV_MM if s == "native" else int(s)


def parse_pattern(s: str) -> tuple[str, float]:
    name = s.rstrip("0123456789.")
    return name, float(s[len(name):])


def pick_slices(split: str, n: int, volume: str | None) -> list[tuple[int, np.ndarray]]:
    sl, _ = native_slices(split, volume)
    idx = np.unique(np.round(np.linspace(0.2, 0.8, n) * (len(sl) - 1)).astype(int))
    return [(int(i), sl[i]) for i in idx]


def simulate(img: np.ndarray, size: int, coils: int, pattern: str, R: float, snr: float, key: str):
    mag = resample_slice(img, size, FOV_MM)
    mask = make_mask(pattern, (size, size), R, seed=derive_seed("mask", key) % (2**31))
    return simulate_acquisition(mag, mask=mask, ncoils=coils, snr_db=snr, seed=derive_seed("acq", key))


def score(mean: torch.Tensor, target: torch.Tensor) -> dict:
    m, t = mean.detach().abs().cpu()[None], target.abs().cpu()[None]
    return {"psnr": float(M.psnr(m, t)[0]), "ssim": float(M.ssim(m, t)[0])}


class Cache:
    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key):
        return self.data.get(key)

    def put(self, key, value):
        self.data[key] = value
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))


def build_prior(args):
    net = load_model(args.weights or SCORE_WEIGHTS).eval()
    return PatchScore(net, patch=args.patch, mode=args.tiling, margin=args.margin, seed=args.seed)


def run_unit(method: str, sample, args, prior, opts: dict, lam=None):
    fn = get_method(method)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    if method in SCORE_METHODS:
        res = fn(sample, n_samples=args.P, generator=g, maps="true", prior=prior, **opts)
    elif method in JOINT_METHODS:
        res = fn(sample, n_samples=args.P, generator=g, maps="true", weights=args.weights, **opts)
    elif method == "zf":
        res = fn(sample, maps="true")
    else:
        res = fn(sample, maps="true", lam=lam)
    dt = time.perf_counter() - t0
    return {**score(res.mean, sample.target), "seconds": round(dt, 2)}


def tune_lambda(cache, args, method, size, coils, pattern, R):
    key = f"lam|{method}|{size}|{coils}|{pattern}{R:g}"
    if cache.get(key) is None:
        vals = pick_slices("val", args.val_slices, None)

        def val_psnr(lam):
            ps = []
            for i, img in vals:
                s = simulate(img, size, coils, pattern, R, args.snr, f"val|{i}|{size}|{coils}|{pattern}{R}")
                ps.append(run_unit(method, s, args, None, {}, lam)["psnr"])
            return float(np.mean(ps))

        scores = {str(lam): val_psnr(lam) for lam in LAMBDA_GRID}
        lam = min(LAMBDA_GRID)
        while max(scores, key=scores.get) == str(lam) and lam > 1e-6:
            # the best is the grid's smallest (more coils or less noise): look below it (3e-4, 1e-4, 3e-5 ...),
            # so that the classical rows are at their optimum and not at the grid's edge
            lam = float(f"{lam / 3 if f'{lam:.0e}'.startswith('3') else lam * 0.3:.1g}")
            scores[str(lam)] = val_psnr(lam)
        best = max(scores, key=scores.get)
        cache.put(key, {"lam": float(best), "val_psnr": scores})
    return cache.get(key)["lam"]


def parse_opts(items) -> dict:
    from bayesmri.options import parse_value

    out: dict[str, dict] = {}
    for it in items or []:
        meth, kv = it.split(":", 1)
        k, v = kv.split("=", 1)
        try:  # JSON first, so that a quoted value ('prior="score_native"') stays a string
            v = json.loads(v)
        except json.JSONDecodeError:
            v = parse_value(v)  # recon --opt's rules: True/False/None in any case, numbers, else text
        out.setdefault(meth, {})[k] = v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help=f"prior weights (score methods: default {SCORE_WEIGHTS}; "
                    "pogmdm-joint: default the method's own)")
    ap.add_argument("--variant", default=None, help="name of this prior/tiling in the cache (default from options)")
    ap.add_argument("--split", default="test", choices=["test", "val", "ood"])
    ap.add_argument("--ood-volume", default=None, choices=[None, "colin_head", "macaque"])
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--val-slices", type=int, default=2)
    ap.add_argument("--sizes", default="128,native,320")
    ap.add_argument("--coils", default="8")
    ap.add_argument("--patterns", default="gro4,poisson8")
    ap.add_argument("--methods", default="zf,tv,l1wav,pula")
    ap.add_argument("--P", type=int, default=2)
    ap.add_argument("--snr", type=float, default=30.0)
    ap.add_argument("--tiling", default="tiled", choices=["tiled", "whole"])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--margin", type=int, default=0)
    ap.add_argument("--opt", action="append", help="method:key=value sampler option (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="benchmarks/results/realsize_cache.json")
    ap.add_argument("--report", default=None, help="write the markdown table here")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--prior-samples", type=int, default=0, metavar="N",
                    help="only draw N unconditional samples at the first --sizes entry (figure --figure)")
    ap.add_argument("--prior-levels", type=int, default=60)
    ap.add_argument("--figure", default="docs/figures/score_native_prior_samples.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cache = Cache(Path(args.cache))
    opts = parse_opts(args.opt)
    variant = args.variant or f"{Path(args.weights or SCORE_WEIGHTS).name}:{args.tiling}{args.margin if args.tiling == 'tiled' else ''}"
    joint_variant = args.variant or (Path(args.weights).name if args.weights else "default")
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    coils = [int(c) for c in args.coils.split(",")]
    patterns = [parse_pattern(p) for p in args.patterns.split(",")]
    methods = args.methods.split(",")
    if args.prior_samples:
        return prior_figure(args, sizes[0])
    if not args.report_only:
        prior = build_prior(args) if set(methods) & set(SCORE_METHODS) else None
        slices = pick_slices(args.split, args.slices, args.ood_volume)
        for i, img in slices:  # slice outermost: an interrupted run still covers every size
            for size in sizes:
                for C in coils:
                    for pat, R in patterns:
                        lams = {m: tune_lambda(cache, args, m, size, C, pat, R) for m in methods
                                if m in ("tv", "l1wav")}
                        sk = f"{args.split}{args.ood_volume or ''}|{i}|{size}|{C}|{pat}{R}"
                        sample = None
                        for m in methods:
                            v = variant if m in SCORE_METHODS else (joint_variant if m in JOINT_METHODS else "-")
                            o = opts.get(m, {})
                            key = f"{sk}|{m}|{v}|P{args.P if m in PRIOR_METHODS else 1}|{json.dumps(o, sort_keys=True)}"
                            if cache.get(key) is not None:
                                continue
                            if sample is None:
                                sample = simulate(img, size, C, pat, R, args.snr, sk)
                            r = run_unit(m, sample, args, prior, o, lams.get(m))
                            cache.put(key, r)
                            print(f"{key}: {r['psnr']:.2f} dB {r['ssim']:.3f} {r['seconds']:.1f} s", flush=True)
    if args.report:
        write_report(cache, Path(args.report))
    return 0


def prior_figure(args, size: int) -> int:
    """Unconditional samples of the tiled prior at ``size`` (two-stage: image mean from the weights' stored
    distribution, then reverse diffusion from the prior's sigma_max), saved as one PNG row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesmri.priors.score import ScorePrior
    from bayesmri.samplers.learned import sample_prior

    prior = ScorePrior(build_prior(args))
    t0 = time.perf_counter()
    x = sample_prior(prior, args.prior_samples, (size, size), n_levels=args.prior_levels, n_corrector=1,
                     sigma_max=prior.sigma_range[1], generator=torch.Generator().manual_seed(args.seed),
                     mean="prior", progress=True)
    dt = time.perf_counter() - t0
    fig, ax = plt.subplots(1, x.shape[0], figsize=(3 * x.shape[0], 3.2))
    for a, im in zip(np.atleast_1d(ax), x):
        a.imshow(im.clamp_min(0).numpy(), cmap="gray", vmin=0, vmax=float(np.quantile(im.numpy(), 0.995)))
        a.axis("off")
    fig.suptitle(f"{Path(args.weights or SCORE_WEIGHTS).name}, {args.tiling} (margin {args.margin}), {size}x{size}, "
                 f"{args.prior_levels} levels + 1 corrector, {dt:.0f} s")
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(args.figure)) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    print(f"wrote {args.figure} ({dt:.0f} s)")
    return 0


def verdicts(cache: Cache) -> str:
    """Each score-based row against the best of TV / l1-wavelet on the *same* slices (PSNR and SSIM)."""
    units: dict[tuple, dict] = {}
    for key, v in cache.data.items():
        if key.startswith("lam|"):
            continue
        split, i, size, C, pat, m, var, P, o = key.split("|", 8)
        units.setdefault((split, int(size), int(C), pat), {}).setdefault((m, var, P, o), {})[i] = v
    out = ["| split | size | coils | pattern | method | prior / tiling | P | slices | PSNR | best classical PSNR | "
           "SSIM | best classical SSIM | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (split, size, C, pat), rows in sorted(units.items()):
        for (m, var, P, o), per in sorted(rows.items()):
            if m not in PRIOR_METHODS:
                continue
            sl = sorted(per)
            cls = [rows.get((c, "-", "P1", "{}"), {}) for c in ("tv", "l1wav")]
            cls = [c for c in cls if all(i in c for i in sl)]
            if not cls:
                continue
            avg = lambda d, f: float(np.mean([d[i][f] for i in sl]))  # noqa: E731
            bp, bs = max(avg(c, "psnr") for c in cls), max(avg(c, "ssim") for c in cls)
            p_, s_ = avg(per, "psnr"), avg(per, "ssim")
            verdict = "beats both" if p_ > bp and s_ > bs else ("PSNR only" if p_ > bp else
                                                                ("SSIM only" if s_ > bs else "loses"))
            opt = "" if o == "{}" else f" {o}"
            out.append(f"| {split} | {size} | {C} | {pat} | {m}{opt} | {var} | {P[1:]} | {len(sl)} | {p_:.2f} | {bp:.2f} | "
                       f"{s_:.3f} | {bs:.3f} | {verdict} |")
    return "Against the best of val-tuned TV / l1-wavelet on the same slices:\n\n" + "\n".join(out) + "\n"


def write_report(cache: Cache, path: Path) -> None:
    """One row per (split, size, coils, pattern, method, variant, P): mean PSNR / SSIM / s per slice."""
    rows: dict[tuple, list] = {}
    for key, v in cache.data.items():
        if key.startswith("lam|"):
            continue
        split, i, size, C, pat, m, var, P, o = key.split("|", 8)
        rows.setdefault((split, int(size), int(C), pat, m, var, P, o), []).append(v)
    lines = ["| split | size | coils | pattern | method | prior / tiling | P | options | slices | PSNR | SSIM | s/slice |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(rows):
        vs = rows[k]
        mean = lambda f: float(np.mean([x[f] for x in vs]))  # noqa: E731
        o = "" if k[7] == "{}" else k[7]
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {k[5]} | {k[6][1:]} | {o} | {len(vs)} | "
                     f"{mean('psnr'):.2f} | {mean('ssim'):.3f} | {mean('seconds'):.1f} |")
    lams = [f"{k[4:]}: {v['lam']:g}" for k, v in sorted(cache.data.items()) if k.startswith("lam|")]
    text = "\n".join(lines) + "\n\nLambdas chosen on val (PSNR): " + "; ".join(lams) + "\n"
    text += "\n" + verdicts(cache)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
