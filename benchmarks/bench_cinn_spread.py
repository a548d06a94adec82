"""Why the cINN's samples hardly differ: the radial base and a volume-preserving flow (issue 19).

For test slices of the demo's acquisitions (64x64, 8 coils, SNR 30 dB, GRO R=4 / Poisson R=8, true
maps) this measures, with the shipped multi-coil cINN (``cinn_mri64_mc``):

* the P-gain (complex-PSNR gain of the mean of P samples over one sample, ``bayesmri.metrics``) of the
  registered ``cinn`` method against ``10 log10(2P/(P+1))``;
* ``||z_true|| = ||f(x_true; y)||``, the base-space norm of the truth encoded by the flow, against the
  norms of the base's samples (radial Gaussian, Denker eq. 16: ``||z|| = |r|``, ``r ~ N(0, 1)``, whatever
  the dimension ``n = 4096``), and the log-determinant of the flow on truths and on samples
  (additive couplings: volume preserving, so the flow cannot widen the base's ~unit ball);
* the P-gain when the base samples are scaled by ``T = median ||z_true||`` (temperature), i.e. when the
  samples are drawn at the radius where the flow puts the truths, and the magnitude PSNR of the mean of 8
  samples at both temperatures;
* ``rel. spread / error`` = ``sqrt(tr Cov_samples / |mean_P - x|^2)``, ``sqrt(P / (P + 1)) = 0.97`` for an
  exact sampler at ``P = 16``.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_cinn_spread.py [--slices 4] [--P 16]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bayesmri.data.simulate import simulate_builtin  # noqa: E402
from bayesmri.flows.cinn import _repeat_cond, default_weights, load_cinn, mri_condition  # noqa: E402
from bayesmri.methods import prepare  # noqa: E402
from bayesmri.metrics import mean_gain_curve, mean_gain_reference, psnr  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--P", type=int, default=16)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, meta = load_cinn(default_weights())
    model.eval()
    P = args.P
    Ps = [p for p in (1, 2, 4, 8, 16, 32) if p <= P]
    print(f"# cINN {default_weights().name}: coupling {meta['config'].get('coupling')}, base {meta['config'].get('base')}, "
          f"n = {model.n_dims}; P = {P}, {args.slices} test slices per pattern")
    print("| pattern | T | gain P=8 (theory 2.50) | gain P=%d | median ||z_true|| | median ||z_sample|| | logdet truth | logdet samples | rel. spread / error | PSNR mean of 8 |" % Ps[-1])
    for pat, R in (("gro", 4), ("poisson", 8)):
        ss = simulate_builtin("test", args.slices, pat, R, 8, 30.0, 0, 64)
        rows = {}
        znorm_true, znorm_s, ld_t, ld_s = [], [], [], []
        conds = []
        for s in ss:
            sample, op, y = prepare(s, "cpu", "true")
            with torch.no_grad():
                zf = op.A_adjoint(y)
                c, scale, ph = mri_condition(zf, model.img_shape)
                cond = model.conditioning(c)
                xt = (s.target.to(torch.complex64) * ph.conj()[0]).real[None, None] / scale[0, 0, 0, 0]
                z, ld = model(xt, cond=cond)
                znorm_true.append(float(z.norm()))
                ld_t.append(float(ld))
                zs = model.base.sample(4, model.n_dims, generator=torch.Generator().manual_seed(0))
                rep = _repeat_cond(cond, 4)
                xs = model.inverse(zs, cond=rep)
                _, lds = model(xs, cond=rep)
                znorm_s.extend(zs.norm(dim=1).tolist())
                ld_s.extend(lds.tolist())
            conds.append((s, c, scale, ph))
        T_fit = float(torch.tensor(znorm_true).median())
        for T in (1.0, T_fit):
            gains, spread, err, ps = [], 0.0, 0.0, []
            for i, (s, c, scale, ph) in enumerate(conds):
                with torch.no_grad():
                    xs = model.sample(c, P, generator=torch.Generator().manual_seed(i), temperature=T) * scale
                xs = xs.reshape(P, *model.img_shape).to(torch.complex64) * ph[0].to(torch.complex64)
                tgt = s.target.to(torch.complex64)
                gains.append(mean_gain_curve(xs, tgt, Ps, n_repeats=8, generator=i))
                m = xs.mean(0)
                ps.append(float(psnr(xs[:8].mean(0).abs(), tgt.abs())))
                spread += float(((xs - m).abs() ** 2).sum() / (P - 1))
                err += float(((m - tgt).abs() ** 2).sum())
            g = torch.stack(gains).mean(0)
            gd = dict(zip(Ps, g.tolist()))
            print(f"| {pat} R={R} | {T:.2f} | {gd.get(8, float('nan')):.2f} | {gd[Ps[-1]]:.2f} "
                  f"(theory {mean_gain_reference(Ps[-1]):.2f}) | {T_fit:.2f} | "
                  f"{float(torch.tensor(znorm_s).median()):.2f} | {sum(ld_t) / len(ld_t):.3g} | "
                  f"{sum(ld_s) / len(ld_s):.3g} | {(spread / err) ** 0.5:.3f} | {sum(ps) / len(ps):.2f} |", flush=True)


if __name__ == "__main__":
    main()
