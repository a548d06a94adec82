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

    def __init__(self, prior, shape, n_levels=100, device="cpu"):
        self.prior, self.shape, self.n_levels, self.device = prior, shape, n_levels, device

    def sample(self, n, generator=None):
        from bayesmri.samplers.learned import sample_prior

        return sample_prior(self.prior, n, self.shape, n_levels=self.n_levels, mean="prior", generator=generator,
                            device=self.device)


def problem(args):
    if args.prior == "gmm":
        prior = gaussian_mixture_image_prior((8, 8), dtype=torch.complex64)
        maps = birdcage_maps((4, 8, 8), dtype=torch.complex64).unsqueeze(0)
        op = MultiCoilMRI(maps, torch.tensor([0, 1, 0, 1, 1, 1, 0, 1], dtype=torch.float32))
        return prior, prior, op, 0.3 if args.noise is None else args.noise, GMM_BASE, GMM_ROWS
    from bayesmri.priors.score import load_default_score_prior

    sp = load_default_score_prior(args.prior, device=args.device)
    H = W = 64
    maps = birdcage_maps((8, H, W), dtype=torch.complex64).unsqueeze(0).to(args.device)
    mask = make_mask("gro", (H, W), 4).to(args.device)
    op = RealInput(MultiCoilMRI(maps, mask))
    return LearnedTruths(sp, (H, W), device=args.device), sp, op, 0.05 if args.noise is None else args.noise, \
        LEARNED_BASE, LEARNED_ROWS


def fmt(rep) -> str:
    cov = " ".join(f"{rep.coverage[k]['coverage']:.3f}" if k in rep.coverage else "  -  " for k in (0.5, 0.9, 0.95))
    u = rep.uniformity
    P = rep.gain_P[-1] if rep.gain_P else 0
    g8 = dict(zip(rep.gain_P, rep.gain)).get(8, float("nan"))
    se = rep.coverage[0.9]["se"] if 0.9 in rep.coverage else float("nan")
    return (f"{cov} | {se:.4f} | {u['p_value']:9.2e} {u['p_pearson']:9.2e} | {rep.std_ratio:5.3f} | "
            f"{g8:5.2f} ({10 * math.log10(16 / 9):.2f}) | {rep.gain[-1]:5.2f} ({rep.gain_theory[-1]:.2f}) P={P} | "
            f"{rep.info['nfe']:4d} | {rep.info['wall_time']:7.1f}")


def test_split(args):
    """The same statistics on built-in test slices (prior mismatch): registered methods, true coil maps.

    Truth = the simulated complex image; samples = ``L`` draws of the registered method with the
    benchmark settings (the ``"bench"`` preset) updated by the row's options. Coverage and P-gain then mix sampler
    error with the prior's mismatch to the test brain (``docs/uncertainty.md``).
    """
    from bayesmri.calibration import calibration_statistics
    from bayesmri.data.simulate import simulate_builtin
    from bayesmri.methods import get_method
    from bayesmri.methods import preset_options

    pattern, R = args.pattern.split(":")
    ss = simulate_builtin("test", args.test_split, pattern, float(R), 8, 30.0, 0, 64)
    print(f"# test split: {len(ss)} slices, {pattern} R={R}, 8 coils, SNR 30 dB, 64x64, true maps, "
          f"L = {args.samples}, seed {args.seed}")
    print("| row | coverage 50 / 90 / 95 % | se(90) | p uniform (clustered, Pearson) | std ratio | gain P=8 (theory) "
          "| gain max P (theory) | NFE | s |")
    out = {}
    for spec in args.rows:
        name, _, rest = spec.partition(":")
        opts = preset_options(name, "bench")
        for kv in filter(None, rest.split(",")):
            k, _, v = kv.partition("=")
            opts[k] = _value(v)
        t0 = time.perf_counter()
        xs, truth, nfe = [], [], 0
        for i, smp in enumerate(ss):
            res = get_method(name)(smp, n_samples=args.samples, generator=args.seed + i, maps="true", **opts)
            xs.append(res.samples.reshape(args.samples, 64, 64).to(torch.complex64))
            truth.append(smp.target.to(torch.complex64))
            nfe = int(res.nfe)
        rep = calibration_statistics(torch.stack(truth), torch.stack(xs, 1), generator=args.seed,
                                     info={"nfe": nfe, "wall_time": time.perf_counter() - t0})
        print(f"| {spec} | {fmt(rep)} |", flush=True)
        out[spec] = {"options": opts, **rep.as_dict()}
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
                    help="instead of SBC: the statistics on N built-in test slices for registered methods (--rows)")
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
        t0 = time.perf_counter()
        rep = run_sbc(sampler, truths, op, nu, n_replicates=args.replicates, n_samples=args.samples,
                      generator=args.seed, sampler_prior=score_prior, chunk=args.chunk)
        rep.info["total_time"] = time.perf_counter() - t0
        print(f"| {spec} | {fmt(rep)} |", flush=True)
        out[spec] = {"options": opts, **rep.as_dict()}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
