"""Learned diffusion prior end to end: pULA, annealed ULA and Score-MRI against TV and l1-wavelet.

Experiments (``--experiments``, default all, run in this order; each unit is cached in a JSON file so
that an interrupted run resumes where it stopped):

- ``prior``: unconditional samples of the score network (reverse-diffusion PC sampler) ->
  ``docs/figures/score_prior_samples.png`` (and a copy in ``benchmarks/results/``).
- ``main``: built-in ``test`` split (Colin27, never seen in training), 8 coils, SNR 30 dB, GRO R=4 and
  Poisson-disc R=8; TV and l1-wavelet with lambda tuned on ``val`` (small grid, this image size) and the
  three diffusion methods (P samples, ``BENCH_OPTIONS``: the defaults with the ``"bench"`` preset); PSNR, SSIM, NMSE, complex PSNR of the
  posterior mean, time per sample, NFE; P-sample complex-PSNR gain (P = 1, 2, 4, 8) against
  ``10 log10(2P/(P+1))`` and the std-map / error-map correlation.
- ``masks``: same weights on uniform 1-D R=4, Gaussian 2-D R=8 and radial (R=4 golden-angle) data.
- ``nfe``: PSNR against NFE for pULA and annealed ULA (NFE each needs to reach annealed ULA's final PSNR).
- ``coils``: pULA with its fixed step size (0.5) on 8, 4, 1 coils (GRO R=4) and radial, vs TV.

Coil maps: the simulation's (``maps="true"``), so the numbers compare priors, not ESPIRiT. Images are
``--size`` (64: the ``small64`` network's training size). Everything runs on the CPU with one thread.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_diffusion.py [--quick] [--slices 10] [--P 8]
        [--weights score_small64 | runs/score64/checkpoint.pt] [--max-minutes 60]

Writes ``benchmarks/results/diffusion.md``, ``diffusion_*.png`` and ``diffusion_cache.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bayesmri.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmri import metrics as M  # noqa: E402
from bayesmri.data import SimulatedBrainDataset  # noqa: E402
from bayesmri.methods import get_method  # noqa: E402
from bayesmri.priors.score import ScorePrior, load_default_score_prior  # noqa: E402
from bayesmri.samplers.learned import sample_prior  # noqa: E402
from bayesmri.methods import preset_options  # noqa: E402
from bayesmri.methods.diffusion import DEFAULTS, run_sampler  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIG = ROOT / "docs" / "figures" / "score_prior_samples.png"
DIFF = ("pula", "ula-annealed", "score-mri")
#: The diffusion methods' defaults with their "bench" preset (pULA: one CG setting for every operator).
BENCH_OPTIONS = {m: dict(DEFAULTS[m], **preset_options(m, "bench")) for m in DEFAULTS}
#: Ablation rows: a registered method run with other options (key -> (method, options)).
VARIANTS = {
    "pula-published": ("pula", dict(phase="none", final_denoise=False, cg_iter=10)),  # the paper: 10 CG iterations
}
#: Other learned posterior samplers shown beside them (own coil maps / defaults; P samples).
OTHERS = ("pogmdm-joint",)
MAIN_PATTERNS = (("gro", 4), ("poisson", 8))
MASK_PATTERNS = (("uniform1d", 4), ("gaussian2d", 8), ("radial", 4))
LAMBDA_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


# ------------------------------------------------------------------------------------------ helpers
def atomic_write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


class Cache:
    """Results per unit in a JSON file, tagged with the weights that made them (``_meta``)."""

    def __init__(self, path: Path, weights: str, fresh: bool = False):
        self.path = path
        self.d = json.loads(path.read_text()) if path.is_file() and not fresh else {}
        made = self.d.get("_meta", {}).get("weights")
        if made is not None and made != weights:
            raise SystemExit(f"{path} holds results of other weights ({made}); pass --fresh to discard them "
                             f"or --cache to use another file")
        self.d["_meta"] = {"weights": weights}

    def _absorb(self, other: dict, keep=lambda key: True, override: bool = False):
        for k, v in other.items():
            if k != "_meta" and keep(k) and (override or k not in self.d):
                self.d[k] = v
        atomic_write(self.path, json.dumps(self.d, indent=1).encode())

    def merge(self, path: Path, override: bool = False):
        """Add ``path``'s entries; ``override``: they replace this cache's (a rerun with new settings)."""
        other = json.loads(path.read_text())
        made = other.get("_meta", {}).get("weights")
        if made != self.d["_meta"]["weights"]:
            raise SystemExit(f"cannot merge {path}: its results are of other weights ({made})")
        self._absorb(other, override=override)

    def seed_classical(self, path: Path):
        """Copy the entries that do not depend on the score weights from a cache of other weights."""
        def weight_independent(key):
            parts = key.split("|")
            return parts[0] == "lam" or (len(parts) > 1 and parts[1] in ("tv", "l1wav", "pogmdm-joint"))

        self._absorb(json.loads(path.read_text()), weight_independent)

    def get(self, key):
        return self.d.get(key)

    def put(self, key, value):
        self.d[key] = value
        atomic_write(self.path, json.dumps(self.d, indent=1).encode())


def load_prior(weights: str | None) -> tuple[ScorePrior, str]:
    """Shipped/exported safetensors weights, or (while training runs) the trainer's EMA checkpoint."""
    if weights is None:
        try:
            prior = load_default_score_prior()
            steps = getattr(prior.model, "meta", {}).get("training", {}).get("steps")
            # the step is part of the label, so results of retrained shipped weights never mix in the cache
            return prior, f"score_small64 (shipped, step {steps})"
        except FileNotFoundError:
            weights = str(ROOT / "runs" / "score64" / "checkpoint.pt")
    if weights.endswith(".pt"):
        from bayesmri.priors.score_unet import ScoreUNet
        from bayesmri.train import load_checkpoint  # torch.load(weights_only=True): tensors only

        ck = load_checkpoint(weights)
        cfg = ck["model_config"]["config"] if "config" in ck["model_config"] else ck["model_config"]
        net = ScoreUNet(**cfg)
        net.load_state_dict(ck["ema"])
        return ScorePrior(net.eval()), f"{weights} (EMA, step {ck['step']})"
    return load_default_score_prior(weights), weights


def dataset(split, size, pattern, R, ncoils=8, indices=None):
    if pattern == "radial":
        return SimulatedBrainDataset(split, size=size, acceleration=R, ncoils=ncoils, trajectory="radial",
                                     indices=indices)
    return SimulatedBrainDataset(split, size=size, pattern=pattern, acceleration=R, ncoils=ncoils, indices=indices)


def metrics_of(x, ref) -> dict:
    return {"psnr": float(M.psnr(x, ref)), "ssim": float(M.ssim(x, ref)), "nmse": float(M.nmse(x, ref)),
            "cpsnr": float(M.complex_psnr(x, ref))}


def run_one(method, sample, P, seed, prior, opts) -> dict:
    if method in VARIANTS:
        method, extra = VARIANTS[method]
        opts = dict(opts, **extra)
    if method in DIFF:
        res = run_sampler(method, sample, n_samples=P, generator=torch.Generator().manual_seed(seed),
                          prior=prior, maps="true", **opts)
    elif method in OTHERS:
        res = get_method(method)(sample, maps="true", n_samples=P, generator=seed, **opts)
    else:
        res = get_method(method)(sample, maps="true", **opts)
        P = 1
    ref = sample.target
    row = metrics_of(res.mean, ref)
    row.update(time_per_sample=float(res.wall_time) / P, nfe=int(res.nfe), P=P)
    if (method in DIFF or method in OTHERS) and P > 1:
        Ps = [p for p in (1, 2, 4, 8) if p <= P]
        row["gain"] = dict(zip(map(str, Ps), M.mean_gain_curve(res.samples, ref, Ps, n_repeats=8, generator=0).tolist()))
        row["std_err_corr"] = float(M.std_error_correlation(res.std, (res.mean - ref).abs()))
        row["scale"] = float(res.diagnostics.get("scale", float("nan")))
    return row


def slice_indices(n_total, n):
    return sorted({int(round(v)) for v in np.linspace(n_total * 0.15, n_total * 0.85, n)})


# ------------------------------------------------------------------------------------------ experiments
def exp_prior(prior, cache, args):
    """Unconditional samples of the two-stage model ``p(mean) p(x | mean)``, and of the network alone.

    The image mean is the one quantity the network hardly sees: run alone, most samples keep the initial
    noise's offset and come out empty or negative. The weights carry the training images' mean
    distribution (``prior.image_mean_quantiles``); ``sample_prior(..., mean="prior")`` draws the mean
    from it and the rest from the network. "empty": max < 0.2 (training slices: 95th percentile 1).
    """
    done = cache.get("prior")
    if done and done.get("weights") == args.weights_label and "two_stage" in done and FIG.is_file():
        return  # redrawn whenever the weights change
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayesmri.train.score import load_training_images

    n, size = 8, args.size
    smax = prior.sigma_range[1] if prior.sigma_range else 30.0
    train = load_training_images("builtin", size=size)  # normalised as the network was trained
    kw = dict(n_levels=args.prior_levels, sigma_max=smax, sigma_min=0.01, n_corrector=1, progress=True)
    t0 = time.perf_counter()
    x2 = sample_prior(prior, n, (size, size), generator=2, mean="prior", **kw)
    dt = time.perf_counter() - t0
    x = sample_prior(prior, n, (size, size), generator=0, **kw)
    shown = train[torch.linspace(0, len(train) - 1, 4).long()]
    fig, ax = plt.subplots(5, 4, figsize=(8, 10.5))
    for row0, xs, name in ((0, x2, "uncond."), (2, x, "network alone")):
        for k in range(8):
            a = ax[row0 + k // 4, k % 4]
            a.imshow(xs[k].numpy(), cmap="gray", vmin=0, vmax=max(float(xs[k].max()), 1e-3))
            a.set_title(f"{name} {k}: [{float(xs[k].min()):.2f}, {float(xs[k].max()):.2f}]", fontsize=7)
    for k in range(4):
        ax[4, k].imshow(shown[k].numpy(), cmap="gray", vmin=0, vmax=float(shown[k].max()))
        ax[4, k].set_title("training slice", fontsize=7)
    for a in ax.flat:
        a.axis("off")
    fig.suptitle(f"Score prior {args.weights_label}: PC sampler, {args.prior_levels} levels, sigma {smax:.3g} -> 0.01\n"
                 "rows 1-2 unconditional (image mean drawn from the training distribution the weights carry)\n"
                 "rows 3-4 the network alone (no mean model); row 5 training slices", fontsize=7)
    fig.tight_layout()
    FIG.parent.mkdir(parents=True, exist_ok=True)
    for p in (FIG, RESULTS / "diffusion_prior_samples.png"):
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".png")
        os.close(fd)
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, p)
    plt.close(fig)
    empty = lambda v: int((v.flatten(1).amax(1) < 0.2).sum())  # noqa: E731
    means = lambda v: [round(float(u), 4) for u in v.mean(dim=(1, 2))]  # noqa: E731
    cache.put("prior", {"n": n, "levels": args.prior_levels, "seconds": dt, "weights": args.weights_label,
                        "two_stage": {"empty": empty(x2), "min": float(x2.min()), "max": float(x2.max()),
                                      "image_means": means(x2)},
                        "network_alone": {"empty": empty(x), "min": float(x.min()), "max": float(x.max()),
                                          "image_means": means(x)}})


def tune_lambdas(cache, args):
    out = {}
    for pat, R in MAIN_PATTERNS + MASK_PATTERNS:
        key = f"lam|{pat}{R}|{args.size}"
        if cache.get(key) is None:
            ds = dataset("val", args.size, pat, R)
            idx = slice_indices(len(ds), 3)
            best = {}
            for m in ("tv", "l1wav"):
                scores = {}
                for lam in LAMBDA_GRID:
                    scores[lam] = float(np.mean([metrics_of(get_method(m)(ds[i], maps="true", lam=lam).mean,
                                                            ds[i].target)["psnr"] for i in idx]))
                best[m] = max(scores, key=scores.get)
            cache.put(key, best)
        out[(pat, R)] = cache.get(key)
    return out


def selected(patterns, wanted):
    """``patterns`` ((name, R) pairs) whose ``f"{name}{R}"`` is in ``wanted``; all when ``wanted`` is None."""
    return tuple((p, R) for p, R in patterns if wanted is None or f"{p}{R}" in wanted)


def grid(args, cache, prior, lams, patterns, methods, n_slices, tag, deadline, bar):
    for pat, R in patterns:
        ds = dataset("test", args.size, pat, R)
        for i in slice_indices(len(ds), n_slices):
            for m in methods:
                key = f"{tag}|{m}|{pat}{R}|{i}|P{args.P}|{args.size}"
                if cache.get(key) is not None:
                    bar.update(1)
                    continue
                if time.time() > deadline:
                    return False
                base = VARIANTS[m][0] if m in VARIANTS else m
                if base in OTHERS:
                    opts = {}
                else:
                    opts = dict(BENCH_OPTIONS[base]) if base in DIFF else {"lam": lams[(pat, R)][m]}
                cache.put(key, run_one(m, ds[i], args.P, i, prior, opts))
                bar.update(1)
    return True


def exp_nfe(args, cache, prior, deadline):
    ds = dataset("test", args.size, "gro", 4)
    idx = slice_indices(len(ds), args.nfe_slices)
    # Level counts halve from each method's benchmark setting (its "final" PSNR is the last point).
    n_ann, n_pula = BENCH_OPTIONS["ula-annealed"]["n_levels"], BENCH_OPTIONS["pula"]["n_levels"]
    runs = [("ula-annealed", n_ann // 2**k) for k in (4, 3, 2, 1, 0)] + [("pula", n_pula // 2**k) for k in (4, 3, 2, 1, 0)]
    runs = [(m, n) for m, n in runs if m in args.methods]
    for i in idx:
        for m, n in runs:
            key = f"nfe|{m}|{n}|{i}|P{args.P}|{args.size}"
            if cache.get(key) is not None:
                continue
            if time.time() > deadline:
                return False
            cache.put(key, run_one(m, ds[i], args.P, i, prior, dict(BENCH_OPTIONS[m], n_levels=n)))
    return True


def exp_coils(args, cache, prior, lams, deadline):
    setups = [("gro", 4, 8), ("gro", 4, 4), ("gro", 4, 1), ("radial", 4, 8)]
    for pat, R, C in setups:
        ds = dataset("test", args.size, pat, R, ncoils=C)
        for i in slice_indices(len(ds), args.coil_slices):
            for m in ("tv", "pula"):
                if m not in ("tv",) + args.methods:
                    continue
                key = f"coils|{m}|{pat}{R}|C{C}|{i}|P{args.P}|{args.size}"
                if cache.get(key) is not None:
                    continue
                if time.time() > deadline:
                    return False
                opts = dict(BENCH_OPTIONS[m]) if m in DIFF else {"lam": lams[(pat, R)][m]}
                cache.put(key, run_one(m, ds[i], args.P, i, prior, opts))
    return True


# ------------------------------------------------------------------------------------------ report
def collect(cache, prefix, size, P):
    rows = {}
    for k, v in cache.d.items():
        parts = k.split("|")
        if parts[0] != prefix or not k.endswith(f"|{size}"):
            continue
        if f"P{P}" not in parts:
            continue
        rows.setdefault(tuple(parts[1:-3]), []).append(dict(v, slice=int(parts[-3])))
    return rows


def fmt_table(rows, methods, patterns):
    out = ["| method | pattern | slices | PSNR | SSIM | NMSE | complex PSNR | time/sample (s) | NFE |",
           "|---|---|---|---|---|---|---|---|---|"]
    for pat, R in patterns:
        for m in methods:
            v = rows.get((m, f"{pat}{R}"))
            if not v:
                continue
            mean = lambda f: float(np.mean([r[f] for r in v]))  # noqa: E731
            out.append(f"| {m} | {pat} R={R} | {len(v)} | {mean('psnr'):.2f} | {mean('ssim'):.3f} | "
                       f"{mean('nmse'):.4f} | {mean('cpsnr'):.2f} | {mean('time_per_sample'):.3g} | {v[0]['nfe']} |")
    return "\n".join(out)


def verdicts(rows, patterns):
    lines = []
    for pat, R in patterns:
        base = {m: rows.get((m, f"{pat}{R}")) for m in ("tv", "l1wav")}
        base = {m: v for m, v in base.items() if v}
        if not base:
            continue
        for m in DIFF + tuple(VARIANTS):
            v = rows.get((m, f"{pat}{R}"))
            if not v:
                continue
            # Baselines on the same slices as the method (runs may have stopped part-way).
            mine = {r["slice"] for r in v}
            same = {b: [r for r in bv if r["slice"] in mine] for b, bv in base.items()}
            same = {b: bv for b, bv in same.items() if {r["slice"] for r in bv} == mine}
            if not same:
                continue
            bp = max(float(np.mean([r["psnr"] for r in bv])) for bv in same.values())
            bs = max(float(np.mean([r["ssim"] for r in bv])) for bv in same.values())
            p, s = float(np.mean([r["psnr"] for r in v])), float(np.mean([r["ssim"] for r in v]))
            ok = "beats" if (p > bp and s > bs) else "does NOT beat"
            lines.append(f"- {pat} R={R}: {m} {ok} the best classical baseline "
                         f"(PSNR {p:.2f} vs {bp:.2f} dB, SSIM {s:.3f} vs {bs:.3f}; the same {len(v)} slices).")
    return "\n".join(lines)


def plot_calibration(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    Ps = np.array([1, 2, 4, 8])
    ax.plot(Ps, 10 * np.log10(2 * Ps / (Ps + 1)), "k--", label="2P/(P+1)")
    lines = []
    for (m, pat), v in sorted(rows.items()):
        if m not in DIFF:
            continue
        g = [r["gain"] for r in v if "gain" in r]
        if not g:
            continue
        ks = sorted(g[0], key=int)
        mean = [float(np.mean([x[k] for x in g])) for k in ks]
        ax.plot([int(k) for k in ks], mean, "o-", label=f"{m} {pat}")
        corr = float(np.mean([r["std_err_corr"] for r in v if "std_err_corr" in r]))
        lines.append(f"| {m} | {pat} | " + " | ".join(f"{x:.2f}" for x in mean) + f" | {corr:.2f} |")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("P")
    ax.set_ylabel("complex-PSNR gain of the P-mean (dB)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.chmod(tmp, 0o644)
    os.replace(tmp, RESULTS / "diffusion_calibration.png")
    plt.close(fig)
    return lines


def nfe_section(cache, args):
    by = {}
    for k, v in cache.d.items():
        parts = k.split("|")
        if parts[0] != "nfe" or not k.endswith(f"|P{args.P}|{args.size}"):
            continue
        by.setdefault((parts[1], int(parts[2])), []).append(v["psnr"])
    if not by:
        return "(not run)"
    out = ["| method | levels = NFE | slices | PSNR |", "|---|---|---|---|"]
    for (m, n), v in sorted(by.items()):
        out.append(f"| {m} | {n} | {len(v)} | {np.mean(v):.2f} |")
    ann = sorted((n, np.mean(v)) for (m, n), v in by.items() if m == "ula-annealed")
    pul = sorted((n, np.mean(v)) for (m, n), v in by.items() if m == "pula")
    if ann and pul:
        target = ann[-1][1]
        need_p = next((n for n, p in pul if p >= target), None)
        need_a = next((n for n, p in ann if p >= target - 1e-9), None)
        out.append(f"\nAnnealed ULA's final PSNR ({ann[-1][0]} NFE): {target:.2f} dB. NFE to reach it: "
                   f"annealed ULA {need_a}, pULA {need_p if need_p is not None else f'> {pul[-1][0]} (not reached)'}.")
    return "\n".join(out)


def coils_section(cache, args):
    by = {}
    for k, v in cache.d.items():
        parts = k.split("|")
        if parts[0] != "coils" or not k.endswith(f"|P{args.P}|{args.size}"):
            continue
        by.setdefault((parts[2], parts[3], parts[1]), []).append(v["psnr"])
    if not by:
        return "(not run)"
    out = ["| pattern | coils | TV PSNR | pULA PSNR (step 0.5) | slices |", "|---|---|---|---|---|"]
    for pat, C in sorted({(a, b) for a, b, _ in by}):
        t, p = by.get((pat, C, "tv"), []), by.get((pat, C, "pula"), [])
        out.append(f"| {pat} | {C[1:]} | {np.mean(t) if t else float('nan'):.2f} | "
                   f"{np.mean(p) if p else float('nan'):.2f} | {len(p)} |")
    return "\n".join(out)


def write_report(cache, args, lams):
    main = collect(cache, "main", args.size, args.P)
    masks = collect(cache, "masks", args.size, args.P)
    cal = plot_calibration(main) if main else []
    pr = cache.get("prior") or {}
    txt = [
        "# Learned diffusion prior: end-to-end benchmark",
        "",
        args.note.read_text().strip() if args.note else
        f"Generated by `OMP_NUM_THREADS=1 python benchmarks/bench_diffusion.py {' '.join(sys.argv[1:])}`.",
        f"Network: {args.weights_label}. Image size {args.size}x{args.size}, P = {args.P} samples, "
        "simulated 8-coil data at SNR 30 dB, true coil maps; CPU, 1 thread, shared machine (times are "
        "indicative only). Diffusion settings: `DEFAULTS` with the 'bench' preset in `bayesmri/methods/diffusion.py`: "
        + "; ".join(f"{m}: {dict(DEFAULTS[m], **BENCH_OPTIONS[m])}" for m in DIFF) + ".",
        f"TV / l1-wavelet lambda tuned on `val` (3 slices, grid {list(LAMBDA_GRID)}): "
        + ", ".join(f"{p}{R}: {v}" for (p, R), v in lams.items()) + ".",
        "",
        "## Unconditional samples",
        f"![prior samples](diffusion_prior_samples.png) ({pr.get('levels', '?')} PC levels, "
        f"{pr.get('seconds', float('nan')):.0f} s for 8 samples).",
        "",
        *([f"Empty samples (max < 0.2): {pr['two_stage']['empty']} of {pr['n']} unconditional samples (rows 1-2; "
           f"image means {pr['two_stage']['image_means']}, drawn from the training distribution the weights "
           f"carry), {pr['network_alone']['empty']} of {pr['n']} from the network alone (rows 3-4; image means "
           f"{pr['network_alone']['image_means']}). The network hardly sees a constant offset (GroupNorm, "
           "zero-mean noise at every level), so run alone most samples keep the offset of the initial noise "
           "(std sigma_max / 64 = 0.47). The shipped weights therefore carry the 1-D distribution of the "
           "training images' means (`prior.image_mean_quantiles`); `sample_prior(..., mean=\"prior\")` draws "
           "the mean from it and projects each update onto it (two-stage model p(mean) p(x | mean)). "
           "Posterior sampling always has the k-space centre in its data.", ""] if "two_stage" in pr else []),
        "## Test split (Colin27), posterior mean",
        fmt_table(main, ("tv", "l1wav") + DIFF + tuple(VARIANTS) + OTHERS, MAIN_PATTERNS) if main else "(not run)",
        "",
        "`pula-published`: pULA as published (Chung & Ye's real/imaginary split on the raw complex image, no "
        "final Tweedie step, the paper's 10 CG iterations); the other diffusion rows demodulate the "
        "fitted smooth phase (`phase=\"fit\"`, since session 7) and end with a Tweedie step (`phase`, "
        "`final_denoise` in `bayesmri/methods/diffusion.py`). `pogmdm-joint`: the "
        "PoGMDM prior with jointly estimated coil maps (its own defaults, P samples), for comparison.",
        "",
        verdicts(main, MAIN_PATTERNS),
        "",
        "## Mask-agnostic: same weights, other patterns",
        fmt_table(masks, ("tv",) + DIFF + tuple(VARIANTS), MASK_PATTERNS) if masks else "(not run)",
        "",
        verdicts(masks, MASK_PATTERNS),
        "",
        "## pULA against annealed ULA: PSNR against NFE (GRO R=4)",
        nfe_section(cache, args),
        "",
        "## Robustness of pULA's fixed step size",
        coils_section(cache, args),
        "",
        "## Calibration (complex PSNR gain of the P-sample mean; reference 0, 1.25, 2.04, 2.55 dB)",
        "![calibration](diffusion_calibration.png)",
        "",
        "| method | pattern | P=1 | P=2 | P=4 | P=8 | corr(std, error) |",
        "|---|---|---|---|---|---|---|",
        *cal,
        "",
    ]
    atomic_write(RESULTS / "diffusion.md", "\n".join(txt).encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=None, help="weights name/path, or a trainer checkpoint.pt")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--slices", type=int, default=10)
    ap.add_argument("--mask-slices", type=int, default=5)
    ap.add_argument("--nfe-slices", type=int, default=2)
    ap.add_argument("--coil-slices", type=int, default=3)
    ap.add_argument("--P", type=int, default=8)
    ap.add_argument("--prior-levels", type=int, default=100)
    ap.add_argument("--experiments", default="prior,main,masks,nfe,coils")
    ap.add_argument("--main-patterns", default=None, type=lambda v: set(v.split(",")),
                    help="only these patterns in `main` (gro4,poisson8), e.g. to split them over processes")
    ap.add_argument("--mask-patterns", default=None, type=lambda v: set(v.split(",")),
                    help="only these patterns in `masks` (uniform1d4,gaussian2d8,radial4)")
    ap.add_argument("--max-minutes", type=float, default=600.0, help="stop starting new units after this")
    ap.add_argument("--quick", action="store_true", help="2 slices, P=4, 40 prior levels")
    ap.add_argument("--cache", type=Path, default=RESULTS / "diffusion_cache.json")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="discard the cache (e.g. after retraining)")
    ap.add_argument("--methods", default=",".join(DIFF + tuple(VARIANTS)),
                    help="diffusion methods to run (comma list); split them over processes with --cache")
    ap.add_argument("--note", type=Path, default=None,
                    help="markdown file that replaces the 'Generated by' line (e.g. the commands of merged runs)")
    ap.add_argument("--merge", type=Path, nargs="*", default=[], help="other caches (same weights) to merge in")
    ap.add_argument("--override", type=Path, nargs="*", default=[],
                    help="caches (same weights) whose entries replace this cache's (reruns with new BENCH_OPTIONS)")
    ap.add_argument("--seed-classical", type=Path, default=None,
                    help="a cache of OTHER weights: copy its weight-independent entries (TV / l1-wavelet rows, "
                         "their lambdas, pogmdm-joint) so that retrained weights do not rerun them")
    args = ap.parse_args(argv)
    args.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    bad = set(args.methods) - set(DIFF) - set(VARIANTS) - set(OTHERS)
    if bad:
        ap.error(f"unknown method(s) {sorted(bad)}; choose from {DIFF + tuple(VARIANTS) + OTHERS}")
    if args.quick:
        args.slices, args.mask_slices, args.nfe_slices, args.coil_slices = 2, 1, 1, 1
        args.P, args.prior_levels = 4, 40
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    RESULTS.mkdir(parents=True, exist_ok=True)
    prior, args.weights_label = load_prior(args.weights)
    cache = Cache(args.cache, args.weights_label, fresh=args.fresh)
    if args.seed_classical is not None:
        cache.seed_classical(args.seed_classical)
    for other in args.merge:
        cache.merge(other)
    for other in args.override:
        cache.merge(other, override=True)
    if prior.sigma_range is None:
        prior.sigma_range = (0.01, 30.4)  # checkpoint: the trainer's sigma range is in its stdout only
    deadline = time.time() + 60 * args.max_minutes
    exps = [e.strip() for e in args.experiments.split(",") if e.strip()]
    from tqdm.auto import tqdm

    lams = tune_lambdas(cache, args)
    try:
        if not args.report_only:
            if "prior" in exps:
                exp_prior(prior, cache, args)
            if "main" in exps:
                ms = ("tv", "l1wav") + args.methods
                pats = selected(MAIN_PATTERNS, args.main_patterns)
                with tqdm(total=len(pats) * args.slices * len(ms), desc="main") as bar:
                    grid(args, cache, prior, lams, pats, ms, args.slices, "main", deadline, bar)
            if "masks" in exps:
                ms = ("tv",) + tuple(m for m in args.methods if m in DIFF or m in VARIANTS)
                pats = selected(MASK_PATTERNS, args.mask_patterns)
                with tqdm(total=len(pats) * args.mask_slices * len(ms), desc="masks") as bar:
                    grid(args, cache, prior, lams, pats, ms, args.mask_slices, "masks", deadline, bar)
            if "nfe" in exps:
                exp_nfe(args, cache, prior, deadline)
            if "coils" in exps:
                exp_coils(args, cache, prior, lams, deadline)
    except KeyboardInterrupt:
        print("interrupted: writing the report from the cache", file=sys.stderr)
    write_report(cache, args, lams)
    print((RESULTS / "diffusion.md").read_text())


if __name__ == "__main__":
    main()
