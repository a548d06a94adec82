"""Simulation-based calibration (SBC) of the posterior samplers: coverage, rank uniformity, P-gain.

Two priors the truths can be drawn from (``bayesmri.samplers.sbc.run_sbc``; ``docs/uncertainty.md``):

* ``--prior gmm`` (default): the exact 3-component Gaussian mixture on 8x8 complex images of
  ``tests/samplers/test_calibration.py`` (4-coil SENSE, R = 2, nu = 0.3). The truths are exact prior
  draws, so any miscalibration is the sampler's. Rows: the exact posterior (control) and each sampler
  variant (published defaults and the calibrated options).
* ``--prior score_small64``: the shipped learned prior. Truths are the network's own unconditional
  samples (``sample_prior(..., mean="prior")``, real 64x64 images; see the caveat in
  ``docs/uncertainty.md``), data through 8 birdcage coils and a GRO R = 4 mask, the samplers run on real
  images (``RealInput``, the prior acting on one real image, as at training).

Each row: 50/90/95 % coverage (nominal in brackets when L + 1 does not make it exact), the
replicate-clustered rank-uniformity p-value and Pearson's, the std ratio (RMS error of the sample mean
over the exact sampler's prediction), and the complex-PSNR gain of the P-sample mean over one sample
against 10 log10(2P/(P+1)).

Examples::

    python benchmarks/bench_calibration.py                                   # GMM table, all rows
    python benchmarks/bench_calibration.py --rows pula:n_levels=40 pula:n_levels=400
    python benchmarks/bench_calibration.py --prior score_small64 --replicates 8 --samples 19 \\
        --rows pula score-mri score-mri:likelihood=annealed
    python benchmarks/bench_calibration.py --test-split 3 --pattern gro:4 --rows pula    # prior mismatch
    python benchmarks/bench_calibration.py --test-split 3 --split val --rows cnf cinn --subspace   # flows
    python benchmarks/bench_calibration.py --prior pogmdm_mri --replicates 8 --rows pula:final_denoise=both

``--prior pogmdm_mri``: the shipped PoGMDM, truths from its own unconditional sampler (nu = 0.01).
``final_denoise=both`` in a row scores the same chains without and with the final Tweedie step.
``--truth-no-tweedie``: truths without the truth sampler's Tweedie step (draws of the prior smoothed to the
truth sampler's ``sigma_min``); with the samplers' ``sigma_min`` equal and their own step off, truths and
samples then come from the same smoothed density (``benchmarks/results/calibration.md`` section 5).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.physics import MultiCoilMRI, make_mask  # noqa: E402
from bayesmri.physics.coils import birdcage_maps  # noqa: E402
from bayesmri.physics.phase import RealInput  # noqa: E402
from bayesmri.priors import gaussian_mixture_image_prior  # noqa: E402
from bayesmri.samplers import PULA, ULA, AnnealedULA, ScoreMRI  # noqa: E402
from bayesmri.calibration import calibration_statistics  # noqa: E402
from bayesmri.samplers.sbc import gmm_exact_sampler, run_sbc  # noqa: E402

CLASSES = {"pula": PULA, "ula": ULA, "ula-annealed": AnnealedULA, "score-mri": ScoreMRI}

#: GMM problem: the settings of the tests (complex images, prior applied to the complex image).
GMM_BASE = {
    "pula": dict(n_levels=200, sigma_max=2.0),
    "ula": dict(n_levels=400),
    "ula-annealed": dict(n_levels=400),
    "score-mri": dict(n_levels=100, sigma_max=10.0, split_complex=False),
}
GMM_ROWS = ["exact", "pula:n_levels=40", "pula:n_levels=80", "pula", "pula:n_levels=400",
            "pula:n_levels=80,final_denoise=True", "ula", "ula-annealed", "ula-annealed:likelihood_schedule=additive",
            "score-mri", "score-mri:dc_cg_iter=5", "score-mri:likelihood=annealed"]

#: Learned prior (64x64, real images): the registered samplers' settings (``bayesmri.methods.diffusion``
#: ``DEFAULTS`` updated by the ``"bench"`` preset for pULA; Score-MRI at reduced cost: 100 levels from t0 = 0.3,
#: one corrector), in network units (scale 1: the truths are drawn at the training normalisation).
LEARNED_BASE = {
    "pula": dict(n_levels=80, sigma_max=1.0, sigma_min=0.03, cg_iter=10, final_denoise=True),
    "ula-annealed": dict(n_levels=480, sigma_max=1.0, sigma_min=0.03, gamma=1.5, final_denoise=True),
    "score-mri": dict(n_levels=100, n_corrector=1, sigma_max=30.0, sigma_min=0.03, t0=0.3, mode="real",
                      final_denoise=True),
}
#: PoGMDM (``--prior pogmdm_mri``): its training range sigma 0.01-10; the samplers end where its truths do.
POGMDM_BASE = {
    "pula": dict(n_levels=80, sigma_max=1.0, sigma_min=0.01, cg_iter=10, final_denoise=True),
    "score-mri": dict(n_levels=100, n_corrector=1, sigma_max=10.0, sigma_min=0.01, mode="real", final_denoise=True,
                      likelihood="annealed"),
}
LEARNED_ROWS = ["pula", "score-mri", "score-mri:likelihood=annealed"]


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def parse_row(spec: str, base: dict):
    """``name`` or ``name:key=value,key=value`` -> (name, options)."""
    name, _, rest = spec.partition(":")
    if name != "exact" and name not in CLASSES:
        raise SystemExit(f"unknown sampler {name!r}; choose from exact, {', '.join(CLASSES)}")
    opts = dict(base.get(name, {}))
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        opts[k] = _value(v)
    return name, opts


class LearnedTruths:
    """Truths from the learned prior's unconditional sampler (``sample_prior``, image mean from the weights)."""

    def __init__(self, prior, shape, n_levels=100, device="cpu", sigma_max=10.0, sigma_min=0.01, denoise_last=True):
        self.prior, self.shape, self.n_levels, self.device = prior, shape, n_levels, device
        self.sigma_max, self.sigma_min, self.denoise_last = sigma_max, sigma_min, denoise_last

    def sample(self, n, generator=None):
        from bayesmri.samplers.learned import sample_prior

        return sample_prior(self.prior, n, self.shape, n_levels=self.n_levels, mean="prior", generator=generator,
                            device=self.device, sigma_max=self.sigma_max, sigma_min=self.sigma_min,
                            denoise_last=self.denoise_last)


class PoGMDMPrior:
    """The shipped PoGMDM as a score prior on real images (no autograd) with its own unconditional sampler.

    Truths: :func:`~bayesmri.samplers.learned.sample_prior` (predictor-corrector, Tweedie last step, no
    image-mean conditioning) with the ``--truth-*`` settings.
    """

    def __init__(self, name, shape, n_levels=100, sigma_max=10.0, sigma_min=0.01, denoise_last=True):
        from bayesmri.priors.pogmdm import load_pogmdm

        self.model = load_pogmdm(name).eval()
        for q in self.model.parameters():
            q.requires_grad_(False)
        self.shape, self.n_levels, self.sigma_max, self.sigma_min = shape, n_levels, sigma_max, sigma_min
        self.denoise_last = denoise_last

    def score(self, x, sigma):
        with torch.no_grad():
            return self.model.score(x.reshape(-1, *x.shape[-2:]), float(sigma)).reshape(x.shape)

    def sample(self, n, generator=None):
        from bayesmri.samplers.learned import sample_prior

        return sample_prior(self, n, self.shape, n_levels=self.n_levels, generator=generator,
                            sigma_max=self.sigma_max, sigma_min=self.sigma_min, denoise_last=self.denoise_last)


def problem(args):
    if args.prior == "gmm":
        prior = gaussian_mixture_image_prior((8, 8), dtype=torch.complex64)
        maps = birdcage_maps((4, 8, 8), dtype=torch.complex64).unsqueeze(0)
        op = MultiCoilMRI(maps, torch.tensor([0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.float32))
        return prior, prior, op, 0.3 if args.noise is None else args.noise, GMM_BASE, GMM_ROWS
    from bayesmri.priors.score import load_default_score_prior

    H = W = 64
    maps = birdcage_maps((8, H, W), dtype=torch.complex64).unsqueeze(0).to(args.device)
    mask = make_mask("gro", (H, W), 4).to(args.device)
    op = RealInput(MultiCoilMRI(maps, mask))
    if args.prior.startswith("pogmdm"):
        pp = PoGMDMPrior(args.prior, (H, W), args.truth_levels, *args.truth_sigma, not args.truth_no_tweedie)
        return pp, pp, op, 0.01 if args.noise is None else args.noise, POGMDM_BASE, list(POGMDM_BASE)
    sp = load_default_score_prior(args.prior, device=args.device)
    truths = LearnedTruths(sp, (H, W), args.truth_levels, args.device, *args.truth_sigma, not args.truth_no_tweedie)
    return truths, sp, op, 0.05 if args.noise is None else args.noise, LEARNED_BASE, LEARNED_ROWS


def fmt(rep) -> str:
    cov = " ".join(f"{rep.coverage[k]['coverage']:.3f}" if k in rep.coverage else "  -  " for k in (0.5, 0.9, 0.95))
    u = rep.uniformity
    P = rep.gain_P[-1] if rep.gain_P else 0
    g8 = dict(zip(rep.gain_P, rep.gain)).get(8, float("nan"))
    se = rep.coverage[0.9]["se"] if 0.9 in rep.coverage else float("nan")
    return (f"{cov} | {se:.4f} | {u['p_value']:9.2e} {u['p_pearson']:9.2e} | {rep.std_ratio:5.3f} | "
            f"{g8:5.2f} ({10 * math.log10(16 / 9):.2f}) | {rep.gain[-1]:5.2f} ({rep.gain_theory[-1]:.2f}) P={P} | "
            f"{rep.info['nfe']:4d} | {rep.info['wall_time']:7.1f}")


def subspace_std_ratios(smp, truth, xs):
    """Std ratio (as in the report) on the image's k-space columns the mask measures and on the others.

    ``F^H M F`` splits the complex image (``M`` = the slice's mask; with 8 coils at R = 4 the SENSE
    operator has no exact nullspace, so this is the single-coil split a flow's hard data consistency acts
    on). Returns ``(ratio_measured, ratio_unmeasured, error share measured)``, the share being the fraction
    of the L-sample mean's squared error on the measured columns.
    """
    from bayesmri.physics.fft import fft2c

    L = xs.shape[0]
    mask = smp.mask.to(torch.float32).reshape(-1, *xs.shape[-2:])[0] if smp.mask.ndim > 1 else smp.mask.float()
    k = fft2c(torch.cat([(xs.mean(0) - truth)[None], xs - xs.mean(0)], 0))
    out = []
    for w in (mask, 1 - mask):
        part = k * w
        err2 = float(part[0].abs().pow(2).sum())
        spread2 = float(part[1:].abs().pow(2).sum()) / (L - 1)
        out.append(math.sqrt(err2 / max((1 + 1 / L) * spread2, 1e-30)))
    return out[0], out[1], float((k[0] * mask).abs().pow(2).sum() / k[0].abs().pow(2).sum())


def test_split(args):
    """The same statistics on built-in slices (``--split test``: prior mismatch; ``val``): registered methods.

    Truth = the simulated complex image; samples = ``L`` draws of the registered method with the
    benchmark settings (the ``"bench"`` preset) updated by the row's options, true coil maps. Coverage and
    P-gain then mix sampler error with the prior's mismatch to the slices (``docs/uncertainty.md``). The
    last columns are the magnitude PSNR / SSIM of the mean of the first 8 samples (what ``recon`` reports
    at P = 8), averaged over the slices.
    """
    from bayesmri.metrics import psnr, ssim
    from bayesmri.data.simulate import simulate_builtin
    from bayesmri.methods import get_method
    from bayesmri.methods import preset_options

    pattern, R = args.pattern.split(":")
    ss = simulate_builtin(args.split, args.test_split, pattern, float(R), 8, 30.0, 0, 64)
    print(f"# {args.split} split: {len(ss)} slices, {pattern} R={R}, 8 coils, SNR 30 dB, 64x64, true maps, "
          f"L = {args.samples}, seed {args.seed}")
    print("| row | coverage 50 / 90 / 95 % | se(90) | p uniform (clustered, Pearson) | std ratio | gain P=8 (theory) "
          "| gain max P (theory) | NFE | s | PSNR / SSIM (P = 8) |")
    out = {}
    for spec in args.rows:
        name, _, rest = spec.partition(":")
        opts = preset_options(name, "bench")
        for kv in filter(None, rest.split(",")):
            k, _, v = kv.partition("=")
            opts[k] = _value(v)
        t0 = time.perf_counter()
        xs, truth, nfe, ps, ss_, sub = [], [], 0, [], [], []
        for i, smp in enumerate(ss):
            res = get_method(name)(smp, n_samples=args.samples, generator=args.seed + i, maps="true", **opts)
            xs.append(res.samples.reshape(args.samples, 64, 64).to(torch.complex64))
            truth.append(smp.target.to(torch.complex64))
            nfe = int(getattr(res, "nfe", 0) or 0)
            if args.subspace:
                sub.append(subspace_std_ratios(smp, truth[-1], xs[-1]))
            m8 = xs[-1][:8].mean(0).abs()
            ps.append(float(psnr(m8, truth[-1].abs())))
            ss_.append(float(ssim(m8, truth[-1].abs())))
        rep = calibration_statistics(torch.stack(truth), torch.stack(xs, 1), generator=args.seed,
                                     info={"nfe": nfe, "wall_time": time.perf_counter() - t0})
        q = f"{sum(ps) / len(ps):.2f} / {sum(ss_) / len(ss_):.3f}"
        print(f"| {spec} | {fmt(rep)} | {q} |", flush=True)
        if sub:
            print("  std ratio on measured / unmeasured k-space columns, error share measured: "
                  + "; ".join(f"{a:.2f} / {b:.2f}, {c:.2f}" for a, b, c in sub), flush=True)
        out[spec] = {"options": opts, "psnr": ps, "ssim": ss_, **rep.as_dict()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="gmm", help="'gmm' (exact, default) or shipped score weights, e.g. score_small64")
    ap.add_argument("--rows", nargs="*", help="sampler[:key=value,...] rows (default: a table per prior)")
    ap.add_argument("--replicates", type=int, default=100, help="R truths (default 100)")
    ap.add_argument("--samples", type=int, default=19, help="L posterior samples each (19: exact 50/90 %%; 39: also 95 %%)")
    ap.add_argument("--noise", type=float, default=None, help="k-space noise std nu (default 0.3 gmm, 0.05 learned)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=None, help="replicates per sampler call (memory)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="write the summaries here")
    ap.add_argument("--test-split", type=int, default=0, metavar="N",
                    help="instead of SBC: statistics on N built-in slices (--split) for registered methods (--rows)")
    ap.add_argument("--save-samples", type=Path, default=None, help="folder: truths and samples of each row (.pt)")
    ap.add_argument("--truth-levels", type=int, default=100, help="levels of the learned prior's truth sampler")
    ap.add_argument("--truth-sigma", type=float, nargs=2, default=(10.0, 0.01), metavar=("MAX", "MIN"),
                    help="noise range of the truth sampler (its last step is Tweedie at MIN; default 10 0.01)")
    ap.add_argument("--truth-no-tweedie", action="store_true",
                    help="truths keep the noise of the truth sampler's last level (no Tweedie step): draws of the "
                         "prior smoothed to MIN, the density a sampler without its own Tweedie step targets")
    ap.add_argument("--subspace", action="store_true",
                    help="with --test-split: std ratios on the measured and the unmeasured k-space columns")
    ap.add_argument("--split", default="test", choices=("test", "val"), help="built-in split for --test-split")
    ap.add_argument("--pattern", default="gro:4", help="mask for --test-split, pattern:acceleration")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.test_split:
        args.rows = args.rows or ["pula", "score-mri"]
        return test_split(args)
    truths, score_prior, op, nu, base, rows = problem(args)
    rows = args.rows or rows
    print(f"# SBC: prior {args.prior}, R = {args.replicates} replicates, L = {args.samples} samples, nu = {nu}, "
          f"seed {args.seed}, {torch.get_num_threads()} thread(s)")
    print("| row | coverage 50 / 90 / 95 % | se(90) | p uniform (clustered, Pearson) | std ratio | gain P=8 (theory) "
          "| gain max P (theory) | NFE | s |")
    out = {}
    for spec in rows:
        name, opts = parse_row(spec, base)
        if name == "exact":
            if args.prior != "gmm":
                continue
            sampler = gmm_exact_sampler(truths, op)
        else:
            sampler = CLASSES[name](**opts)
            if opts.get("final_denoise") == "both":
                sampler.final_denoise = False
        t0 = time.perf_counter()
        rep, x, samples, _ = run_sbc(sampler, truths, op, nu, n_replicates=args.replicates, n_samples=args.samples,
                                     generator=args.seed, sampler_prior=score_prior, chunk=args.chunk,
                                     return_samples=True)
        rep.info["total_time"] = time.perf_counter() - t0
        if args.save_samples:
            args.save_samples.mkdir(parents=True, exist_ok=True)
            torch.save({"truths": x, "samples": samples, "options": opts},
                       args.save_samples / (spec.replace(":", "_").replace(",", "_") + ".pt"))
        if opts.get("final_denoise") != "both":
            print(f"| {spec} | {fmt(rep)} |", flush=True)
            out[spec] = {"options": opts, **rep.as_dict()}
            continue
        # the same chains with and without the final Tweedie step x + sigma_min^2 s(x, sigma_min)
        print(f"| {spec} [no Tweedie] | {fmt(rep)} |", flush=True)
        out[spec + " [no Tweedie]"] = {"options": opts, **rep.as_dict()}
        smin = float(opts["sigma_min"])
        with torch.no_grad():
            flat = samples.reshape(-1, *samples.shape[2:])
            img = flat.reshape(flat.shape[0], *flat.shape[-2:])
            tw = flat + smin**2 * score_prior.score(img, smin).reshape(flat.shape)
        rep2 = calibration_statistics(x, tw.reshape(samples.shape).to(x.dtype), generator=args.seed,
                                      info=dict(rep.info, nfe=rep.info["nfe"] + 1))
        print(f"| {spec} [Tweedie] | {fmt(rep2)} |", flush=True)
        if args.save_samples:
            torch.save({"truths": x, "samples": samples, "tweedie": tw.reshape(samples.shape), "options": opts},
                       args.save_samples / (spec.replace(":", "_").replace(",", "_") + ".pt"))
        out[spec + " [Tweedie]"] = {"options": opts, **rep2.as_dict()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
