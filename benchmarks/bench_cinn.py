"""cINN experiments of Denker et al. 2021 at CPU scale: trains small models and writes a results table.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_cinn.py --budget-scale 1.0

Each run trains for a wall-clock budget (steps = budget / measured step time) with the shared Trainer
(checkpoints in runs/cinn_<name>/), then evaluates the conditional mean of P samples (eq. 4) against the
inversion layer on held-out data. Results: benchmarks/results/cinn.md (+ cinn.json). Runs: compressed
sensing (radial vs Gaussian base, gradient-Tikhonov vs pseudo-inverse conditioning, refinement sweep),
MRI (multi-scale vs iUNet additive; iUNet affine for stability), CT (FBP vs cINN mean).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bayesmri.flows.cinn import load_cinn, refine_sample, save_cinn  # noqa: E402
from bayesmri.metrics import psnr, ssim  # noqa: E402
from bayesmri.train import Trainer  # noqa: E402
from bayesmri.train.cinn import CINNLoss, PairDataset, build_model, evaluate, make_problem  # noqa: E402


def train(name, prob, arch, base, budget, batch=8, lr=1e-3, **kw):
    out = ROOT / "runs" / f"cinn_{name}"
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(0)
    model = build_model(arch, prob, base=base, **kw)
    loss = CINNLoss()
    # time a few steps to turn the wall-clock budget into a step count
    m2 = build_model(arch, prob, base=base, **kw)
    opt = torch.optim.Adam(m2.parameters(), 1e-4)
    t0 = time.perf_counter()
    for i in range(3):
        l, _ = loss(m2, {"x": prob.x_train[:batch], "c": prob.c_train[:batch]}, torch.Generator().manual_seed(i))
        opt.zero_grad(); l.backward(); opt.step()
    dt = (time.perf_counter() - t0) / 3
    steps = max(20, int(budget / dt))
    tr = Trainer(model, loss, PairDataset(prob.x_train, prob.c_train), out, steps=steps, batch_size=batch, lr=lr,
                 warmup_steps=min(50, steps // 10), ema_decay=0.99, checkpoint_every=max(steps // 2, 1), progress=False)
    t0 = time.perf_counter()
    res = tr.fit(export=False)
    wall = time.perf_counter() - t0
    stem = out / "model_ema"
    tr.export(stem)
    m, _ = load_cinn(stem)
    print(f"[{name}] {steps} steps in {wall:.0f}s, last loss {res.last_loss:.4f}", flush=True)
    return m, {"steps": steps, "train_s": round(wall, 1), "last_nll": round(res.last_loss, 4),
               "params": sum(p.numel() for p in model.parameters())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-scale", type=float, default=1.0)
    ap.add_argument("--only", default="cs,mri,ct")
    a = ap.parse_args()
    S = a.budget_scale
    R = {}
    outj = ROOT / "benchmarks/results/cinn.json"
    if outj.exists():
        R = json.loads(outj.read_text())

    def dump():
        outj.write_text(json.dumps(R, indent=2))

    torch.set_num_threads(1)
    only = a.only.split(",")
    if "cs" in only:
        for inv in ("tv", "pinv"):
            prob = make_problem("cs", inversion=inv, n_test=100)
            bases = ("radial", "gaussian") if inv == "tv" else ("radial",)
            for base in bases:
                name = f"cs_{inv}_{base}"
                m, info = train(name, prob, "multiscale", base, 150 * S)
                info["lam"] = prob.info["lam"]
                for P in (1, 10, 100):
                    info[f"P{P}"] = evaluate(m, prob, n_samples=P, n_test=100)
                R[name] = info
                dump()
                if name == "cs_tv_radial":  # sample refinement sweep (eq. 22), 20 test items, 1 sample init
                    x, c, y = prob.x_test[:20], prob.c_test[:20], prob.y_test[:20]
                    x0 = m.sample(c, 1, generator=5)[0]
                    sweep = {}
                    for lam in (0.0, 0.01, 0.1, 1.0):
                        xr = refine_sample(m, prob.forward, y, c, x0, lam=lam, steps=50, lr=1e-2)
                        sweep[str(lam)] = {"psnr": float(psnr(xr[:, 0], x[:, 0], reduction="mean")),
                                           "ssim": float(ssim(xr[:, 0], x[:, 0], reduction="mean"))}
                    sweep["init_sample"] = {"psnr": float(psnr(x0[:, 0], x[:, 0], reduction="mean")),
                                            "ssim": float(ssim(x0[:, 0], x[:, 0], reduction="mean"))}
                    R["cs_refinement"] = sweep
                    dump()
    if "mri" in only:
        prob = make_problem("mri", size=64, n_test=16)
        for name, arch, kw, bud in (("mri_ms_radial", "multiscale", {}, 240),
                                    ("mri_iunet_additive", "iunet", {"coupling": "additive"}, 180),
                                    ("mri_iunet_affine", "iunet", {"coupling": "affine"}, 120)):
            m, info = train(name, prob, arch, "radial", bud * S, batch=4, **kw)
            info["P32"] = evaluate(m, prob, n_samples=32, n_test=16, chunk=8)
            # stability of the inverse pass: max |x| of samples and reconstruction error of T^{-1}(T(x))
            with torch.no_grad():
                z, _ = m(prob.x_test[:8], prob.c_test[:8])
                rec = m.inverse(z, prob.c_test[:8])
                info["inverse_err_max"] = float((rec - prob.x_test[:8]).abs().max())
                s = m.sample(prob.c_test[:8], 8, generator=1)
                info["sample_abs_max"] = float(s.abs().max())
            R[name] = info
            dump()
            if name == "mri_ms_radial":
                save_cinn(m, ROOT / "bayesmri/weights/cinn_mri64",
                          {"cinn": {"problem": "mri", "mask": "uniform1d R=4, 8% ACS (round(0.08 W)) seed 0",
                                    "normalisation": "95th percentile of the zero-filled magnitude",
                                    "noise": prob.info["noise"], "train_steps": info["steps"]}})
    if "ct" in only:
        prob = make_problem("ct", size=64, n_train=1000, n_test=16)
        m, info = train("ct_ms_radial", prob, "multiscale", "radial", 240 * S, batch=4)
        info["P32"] = evaluate(m, prob, n_samples=32, n_test=16, chunk=8)
        R["ct_ms_radial"] = info
        dump()
    print(json.dumps(R, indent=1))


if __name__ == "__main__":
    main()
