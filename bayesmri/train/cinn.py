"""cINN training plug-in (Denker et al. 2021): the three problems, the loss and the CLI.

Problems (:func:`make_problem`), each with its data made here and a fixed, seeded measurement per image:

* ``mri``: built-in magnitude slices (``load_slices``), single-coil Cartesian ``A = P F``, uniform random
  columns at R = 4 with 8 % centred ACS columns (``make_mask("uniform1d", ..., num_acs=round(0.08 W))``),
  complex k-space noise of std ``noise`` (default 0.01 of the unit-maximum image); inversion layer =
  zero-filled IFFT ``[re, im]``. Each pair is scaled by the 95th percentile of its zero-filled magnitude
  (GUIDE sec. 1: a statistic of the measured data only), targets = magnitude images.
* ``mri`` with ``sim="multicoil"``: the acquisitions of ``bayesmri demo`` (built-in simulation, 8 coils,
  SNR 30 dB, complex images), GRO R = 4 and Poisson-disc R = 8 alternately, ``repeats`` masks per
  training slice; inversion layer = SENSE adjoint with the true maps ``A^H y`` with its low-resolution
  phase removed (:func:`~bayesmri.flows.conditioning.remove_lowres_phase`), ``[re, im]``; targets =
  magnitude of the simulated image; each pair scaled by the 95th percentile of ``|A^H y|``.
* ``ct``: random ellipse phantoms, parallel-beam Radon transform (own sparse torch operator), 60 angles,
  post-log Poisson noise with 4096 photons per detector (LoDoPaB-CT's count) and attenuation
  ``mu = 0.5 * 81.35858 m^-1 * 0.26 m / N`` per pixel (an image value of 1 is half LoDoPaB's ``mu_max``, so
  soft tissue ~0.25 as in LoDoPaB); inversion layer = FBP with a Hann-apodised ramp.
* ``cs``: 28 x 28 digits, Gaussian ``A in R^{196 x 784}`` with entries ``N(0, 1/196)``, 10 % relative
  noise ``e ~ N(0, (0.1 ||Ax|| / sqrt(m))^2 I)``; inversion layer = pseudo-inverse ``A^+`` or the
  gradient-Tikhonov ("TV-regularised") ``(A^T A + lam D^T D)^{-1} A^T`` with ``lam`` chosen on training data.

Loss (:class:`CINNLoss`): negative log-likelihood per pixel (eq. 8), target noise ``N(0, 0.005)``
(default; ``noise_std=0`` turns it off) and conditional loss ``alpha MSE(H_theta(y), x)`` (eq. 20).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .._validate import as_generator

__all__ = ["CINNProblem", "make_problem", "build_model", "CINNLoss", "PairDataset", "evaluate",
           "cli_add_arguments", "cli_run", "PROBLEMS"]

PROBLEMS = ("mri", "ct", "cs")
LODOPAB_MU_MAX = 81.35858  # m^-1
LODOPAB_WIDTH = 0.26  # m


@dataclass
class CINNProblem:
    """A small inverse problem: ground truths, measurements, inversion layer and forward operator.

    ``x_*``: ``(N, 1, H, W)`` real targets; ``c_*``: ``(N, cond_in, H, W)`` inversion images; ``y_*``
    measurements; ``forward(x (B,1,H,W)) -> y`` (noise-free, for sample refinement); ``inversion(y) -> c``.
    """

    name: str
    x_train: torch.Tensor
    c_train: torch.Tensor
    x_test: torch.Tensor
    c_test: torch.Tensor
    y_test: torch.Tensor
    inversion: torch.nn.Module
    forward: object
    cond_in: int
    baseline_name: str
    scale_test: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    def baseline(self, c: torch.Tensor) -> torch.Tensor:
        """The inversion layer's own image estimate ``(B, 1, H, W)`` (magnitude for MRI)."""
        return c.norm(dim=1, keepdim=True) if c.shape[1] == 2 else c


def _mri(size, n_train, n_test, seed, noise=0.01, **_):
    from ..data import load_slices
    from ..flows.conditioning import ZeroFilledInversion
    from ..physics.fft import fft2c

    from ..flows.cinn import mri_training_mask

    mask = mri_training_mask(size)
    inv = ZeroFilledInversion(mask, (size, size))
    op = inv.op

    def prep(split, n, s):
        x = load_slices(split, size=size)
        if n:
            x = x[:n]
        g = as_generator(s)
        k = fft2c(x.to(torch.complex64))
        nz = torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g)) * (noise / math.sqrt(2))
        y = op.mask * (k + nz)
        c = inv(y)
        scale = torch.quantile(c.norm(dim=1).flatten(1), 0.95, dim=1).clamp_min(1e-6)
        return x[:, None] / scale[:, None, None, None], c / scale[:, None, None, None], y / scale[:, None, None], scale

    xtr, ctr, _, _ = prep("train", n_train, seed)
    xte, cte, yte, ste = prep("test", n_test, seed + 1)

    def forward(x):
        return op.A(x[:, 0].to(torch.complex64))

    return CINNProblem("mri", xtr, ctr, xte, cte, yte, inv, forward, 2, "zero-filled", ste,
                       {"mask": mask, "acceleration": 4, "num_acs": max(1, round(0.08 * size)), "noise": noise})


#: Acquisitions of the multi-coil MRI problem (those of ``bayesmri demo``): (pattern, acceleration).
MULTICOIL_PATTERNS = (("gro", 4.0), ("poisson", 8.0))


def multicoil_condition(sample, maps="true"):
    """Inversion image of an :class:`~bayesmri.data.MRISample` for the multi-coil cINN.

    Returns ``(c (1, 2, H, W) [re, im] of the phase-normalised A^H y, scale)``, ``c`` divided by
    ``scale`` = the 95th percentile of ``|A^H y|`` (a statistic of the measured data only).
    """
    from ..flows.conditioning import remove_lowres_phase

    op = sample.operator(maps)
    zf = remove_lowres_phase(op.A_adjoint(sample.y))
    c = torch.stack([zf.real, zf.imag], 1).float()
    scale = torch.quantile(c.norm(dim=1).flatten(1), 0.95, dim=1).clamp_min(1e-6)
    return c / scale[:, None, None, None], scale


def _mri_multicoil(size, n_train, n_test, seed, repeats=4, coils=8, snr=30.0, **_):
    from ..data.simulate import simulate_builtin
    from ..data import num_slices

    def prep(split, n, reps, s0):
        xs, cs, scs = [], [], []
        for r in range(reps):
            for k, (pat, R) in enumerate(MULTICOIL_PATTERNS):
                for smp in simulate_builtin(split, n, pat, R, coils, snr, s0 + 100 * r + k, size):
                    c, sc = multicoil_condition(smp)
                    xs.append(smp.target.abs()[None, None] / sc)
                    cs.append(c)
                    scs.append(sc)
        return torch.cat(xs), torch.cat(cs), torch.cat(scs)

    xtr, ctr, _ = prep("train", n_train or num_slices("train"), repeats, seed + 1)
    xte, cte, ste = prep("test", n_test or 16, 1, seed + 50_000)

    def forward(x):  # pragma: no cover - refinement needs the per-sample operator
        raise NotImplementedError("the multi-coil MRI problem has per-sample operators; use the recon method")

    return CINNProblem("mri", xtr, ctr, xte, cte, torch.zeros(0), None, forward, 2, "zero-filled (SENSE adjoint)",
                       ste, {"sim": "multicoil", "patterns": [list(p) for p in MULTICOIL_PATTERNS], "coils": coils,
                             "snr_db": snr, "repeats": repeats})


def _ct(size, n_train, n_test, seed, n_angles=60, photons=4096, **_):
    from ..data.phantoms import random_ellipse_phantoms
    from ..flows.conditioning import FBPInversion
    from ..physics.radon import ParallelBeamRadon, poisson_log_noise

    radon = ParallelBeamRadon(size, n_angles)
    inv = FBPInversion(radon, "hann")
    mu = 0.5 * LODOPAB_MU_MAX * LODOPAB_WIDTH / size

    def prep(n, s):
        x = random_ellipse_phantoms(n, size, seed=s)
        y = poisson_log_noise(radon.A(x), photons=photons, mu=mu, generator=s + 7)
        return x[:, None], inv(y), y

    xtr, ctr, _ = prep(n_train or 1000, seed)
    xte, cte, yte = prep(n_test or 100, seed + 10_000)
    return CINNProblem("ct", xtr, ctr, xte, cte, yte, inv, lambda x: radon.A(x[:, 0]), 1, "FBP", None,
                       {"n_angles": n_angles, "photons": photons, "mu_per_pixel": mu})


def cs_matrix(seed=0, m=196, n=784):
    """Gaussian ``A (m, n)`` with entries ``N(0, 1/m)`` (float64 generation, float32 out)."""
    g = torch.Generator().manual_seed(int(seed))
    return (torch.randn(m, n, generator=g, dtype=torch.float64) / math.sqrt(m)).float()


def _cs(size, n_train, n_test, seed, inversion="tv", lam=None, rel_noise=0.1, **_):
    from ..data.digits import load_digits28
    from ..flows.conditioning import MatrixInversion, gradient_tikhonov_matrix, pseudo_inverse_matrix

    A = cs_matrix(seed)

    def measure(x, s):
        ax = x.flatten(1) @ A.T
        g = as_generator(s)
        sig = rel_noise * ax.norm(dim=1, keepdim=True) / math.sqrt(A.shape[0])
        return ax + sig * torch.randn(ax.shape, generator=g)

    xtr = load_digits28("train")
    xte = load_digits28("test")
    if n_train:
        xtr = xtr[:n_train]
    if n_test:
        xte = xte[:n_test]
    ytr, yte = measure(xtr, seed), measure(xte, seed + 1)
    if inversion == "pinv":
        R = pseudo_inverse_matrix(A)
    elif inversion == "tv":
        if lam is None:  # pick lam on 200 training pairs (PSNR of R y)
            from ..metrics import psnr

            best = None
            for l in (0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
                Rl = gradient_tikhonov_matrix(A, l, (28, 28))
                p = float(psnr((ytr[:200] @ Rl.T).reshape(-1, 28, 28), xtr[:200], reduction="mean"))
                if best is None or p > best[0]:
                    best = (p, l, Rl)
            lam, R = best[1], best[2]
        else:
            R = gradient_tikhonov_matrix(A, lam, (28, 28))
    else:
        raise ValueError(f"cs inversion must be 'tv' or 'pinv', got {inversion!r}")
    inv = MatrixInversion(R, (28, 28))
    name = "pseudo-inverse" if inversion == "pinv" else "gradient-Tikhonov"
    return CINNProblem("cs", xtr[:, None], inv(ytr), xte[:, None], inv(yte), yte, inv,
                       lambda x: x.flatten(1) @ A.T, 1, name, None,
                       {"inversion": inversion, "lam": lam, "rel_noise": rel_noise, "m": 196})


def make_problem(problem: str, size: int | None = None, n_train: int | None = None, n_test: int | None = None,
                 seed: int = 0, **options) -> CINNProblem:
    """Build one of :data:`PROBLEMS` (see the module docstring). ``size``: 64 for mri/ct (cs is 28)."""
    if problem not in PROBLEMS:
        raise ValueError(f"unknown problem {problem!r}; choose one of {PROBLEMS}")
    if problem == "cs":
        return _cs(28, n_train, n_test, seed, **options)
    size = 64 if size is None else int(size)
    if problem == "mri" and options.pop("sim", "single") == "multicoil":
        return _mri_multicoil(size, n_train, n_test, seed, **options)
    options.pop("sim", None)
    return (_mri if problem == "mri" else _ct)(size, n_train, n_test, seed, **options)


def build_model(arch: str, problem: CINNProblem, base: str = "radial", **kw):
    """``arch="multiscale"`` or ``"iunet"`` sized for ``problem``; ``kw`` override the defaults."""
    from ..flows.cinn import MultiScaleCINN
    from ..flows.iunet import ConditionalIUNet

    size = problem.x_train.shape[-1]
    if arch == "multiscale":
        cfg = dict(n_levels=2 if size == 28 else 3, couplings=2, hidden=32, cond_channels=16, fc_couplings=2,
                   fc_hidden=256, cond_vec=64, downsampling="haar")
        cfg.update(kw)
        return MultiScaleCINN(size, problem.cond_in, base=base, **cfg)
    if arch == "iunet":
        cfg = dict(scales=2 if size == 28 else 3, couplings=2, hidden=32, unet_chans=16,
                   unet_pools=2 if size == 28 else 3, feat_ch=16)
        cfg.update(kw)
        return ConditionalIUNet(size, problem.cond_in, base=base, **cfg)
    raise ValueError(f"unknown architecture {arch!r}; choose 'multiscale' or 'iunet'")


class PairDataset(Dataset):
    """``{"x": (1, H, W), "c": (cond_in, H, W)}`` items; random flips for MRI/CT if ``augment``."""

    def __init__(self, x, c):
        if x.shape[0] != c.shape[0]:
            raise ValueError("x and c must have the same number of items")
        self.x, self.c = x, c

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return {"x": self.x[i], "c": self.c[i]}


class CINNLoss:
    """``NLL / pixel  (+ alpha MSE(H_theta(y), x))``, targets noised with ``N(0, noise_std^2)`` (sec. 4.2.3).

    Parameters
    ----------
    noise_std : float, optional
        Std of the training noise added to the targets; default ``TRAINING_NOISE_STD`` = ``sqrt(0.005)``,
        the paper's ``N(0, 0.005)``. Keep it on for flows that can change volume (affine couplings,
        the multi-scale cINN): when targets put a point mass on one value (the built-in MRI slices are
        exactly 0 on ~68 % of their pixels) the likelihood of such a flow is unbounded, and training
        spends its capacity expanding those directions to ``-inf`` NLL while its samples degrade
        (``benchmarks/results/cinn.md``: multi-scale MRI mean 16.67 dB without, 23.3 dB with the noise;
        zero-filled 17.59 dB). ``noise_std=0`` then warns.
    alpha : float
        Weight of the conditional loss (eq. 20).
    """

    #: fraction of target pixels tied at their image's minimum above which ``noise_std=0`` warns
    DEGENERATE_FRACTION = 0.1

    def __init__(self, noise_std: float | None = None, alpha: float = 0.0):
        if noise_std is None:
            from ..flows.cinn import TRAINING_NOISE_STD

            noise_std = TRAINING_NOISE_STD
        if noise_std < 0 or alpha < 0:
            raise ValueError("noise_std and alpha must be >= 0")
        self.noise_std, self.alpha = float(noise_std), float(alpha)
        self._checked = False

    def _check_degenerate(self, model, x):
        """Warn once if noise-free targets have a point mass and the flow is not volume preserving."""
        self._checked = True
        if getattr(model, "config", {}).get("coupling") == "additive":  # logdet = 0: cannot collapse
            return
        frac = float((x == x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)).float().mean())
        if frac > self.DEGENERATE_FRACTION:
            import warnings

            warnings.warn(
                f"CINNLoss(noise_std=0): {100 * frac:.0f}% of the target pixels equal their image's minimum "
                "exactly; the likelihood of a volume-changing flow is unbounded on such data and its samples "
                "degrade. Use the training noise (noise_std=TRAINING_NOISE_STD, the default).",
                UserWarning, stacklevel=3)

    def __call__(self, model, batch, generator):
        x, c = batch["x"], batch["c"]
        inner = model.module if hasattr(model, "module") else model
        if self.noise_std:
            x = x + self.noise_std * torch.randn(x.shape, generator=generator, device=x.device)
        elif not self._checked:
            self._check_degenerate(inner, x)
        cond = inner.conditioning(c)
        z, logdet = model(x, c, cond)
        nll = -(inner.base.log_prob(z) + logdet).mean() / inner.n_dims
        loss = nll
        mse = torch.zeros((), device=x.device)
        if self.alpha:
            mse = ((cond[2] - batch["x"]) ** 2).mean()
            loss = loss + self.alpha * mse
        return loss, {"nll": float(nll.detach()), "cond_mse": float(mse.detach())}


@torch.no_grad()
def evaluate(model, problem: CINNProblem, n_samples: int = 100, n_test: int | None = None, generator=0,
             chunk: int = 25) -> dict:
    """PSNR/SSIM of the conditional mean (eq. 4) and of the inversion layer on the test split."""
    from ..flows.cinn import conditional_mean_std
    from ..metrics import psnr, ssim

    model.eval()
    n = problem.x_test.shape[0] if n_test is None else min(n_test, problem.x_test.shape[0])
    x, c = problem.x_test[:n], problem.c_test[:n]
    means, stds, nonfinite = [], [], 0
    g = as_generator(generator)
    for i in range(0, n, 20):
        m, s = conditional_mean_std(model, c[i : i + 20], n_samples, g, chunk=chunk)
        nonfinite += int((~torch.isfinite(m)).flatten(1).any(1).sum())
        means.append(torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0))
        stds.append(s)
    mean = torch.cat(means)
    base = problem.baseline(c)
    out = {
        "psnr_mean": float(psnr(mean[:, 0], x[:, 0], reduction="mean")),
        "ssim_mean": float(ssim(mean[:, 0], x[:, 0], reduction="mean")),
        "psnr_baseline": float(psnr(base[:, 0], x[:, 0], reduction="mean")),
        "ssim_baseline": float(ssim(base[:, 0], x[:, 0], reduction="mean")),
        "n_test": n, "n_samples": n_samples, "nonfinite_items": nonfinite,
    }
    return out


# ---------------------------------------------------------------------------------------------- CLI
def cli_add_arguments(parser) -> None:
    """Options of ``bayesmri train cinn``."""
    import argparse

    parser.add_argument("--problem", required=True, choices=PROBLEMS, help="mri (zero-filled), ct (FBP), cs (digits)")
    parser.add_argument("--mri-sim", default="single", choices=["single", "multicoil"],
                        help="mri data: single-coil fixed random-column mask, or the demo's multi-coil GRO/Poisson")
    parser.add_argument("--arch", default="multiscale", choices=["multiscale", "iunet"])
    parser.add_argument("--base", default="radial", choices=["radial", "gaussian"], help="base distribution (eq. 16)")
    parser.add_argument("--size", type=int, default=None, help="image size for mri/ct (default 64)")
    parser.add_argument("--n-train", type=int, default=None, help="number of training images (default: all)")
    parser.add_argument("--cs-inversion", default="tv", choices=["tv", "pinv"], help="cs inversion layer")
    parser.add_argument("--coupling", default="additive", choices=["additive", "affine"], help="iUNet couplings")
    parser.add_argument("--downsampling", default="haar", choices=["haar", "checkerboard", "learned"])
    parser.add_argument("--hidden", type=int, default=32, help="coupling subnet width")
    parser.add_argument("--train-noise", action=argparse.BooleanOptionalAction, default=True,
                        help="add N(0, 0.005) to the targets (sec. 4.2.3; default on: without it the likelihood "
                             "of affine/multi-scale flows is unbounded on images with exact-zero background)")
    parser.add_argument("--alpha", type=float, default=0.0, help="conditional loss weight (eq. 20)")
    parser.add_argument("--eval-samples", type=int, default=100, help="samples for the final evaluation (0: none)")


def cli_run(args, cfg) -> int:
    """Train a cINN with the common :class:`~bayesmri.train.TrainConfig` ``cfg``, then evaluate it."""
    import json

    from ..flows.cinn import TRAINING_NOISE_STD
    from . import Trainer, dist_info

    opts = {"inversion": args.cs_inversion} if args.problem == "cs" else {}
    if args.problem == "mri":
        opts["sim"] = getattr(args, "mri_sim", "single")
    prob = make_problem(args.problem, size=args.size, n_train=args.n_train, seed=cfg.seed, **opts)
    torch.manual_seed(cfg.seed)
    kw = {"hidden": args.hidden}
    if args.arch == "iunet":
        kw["coupling"] = args.coupling
    else:
        kw["downsampling"] = args.downsampling
    model = build_model(args.arch, prob, base=args.base, **kw)
    loss = CINNLoss(TRAINING_NOISE_STD if args.train_noise else 0.0, args.alpha)
    meta = {"cinn": {"problem": args.problem, "baseline": prob.baseline_name,
                     "info": {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in prob.info.items()},
                     "conditioning": ("multicoil_sense_adjoint_phase_normalised"
                                      if prob.info.get("sim") == "multicoil" else "single_coil_zero_filled"),
                     "normalisation": "mri: pair divided by the 95th percentile of the zero-filled magnitude"}}
    export_only = getattr(args, "export_only", False)
    trainer = Trainer(model, loss, PairDataset(prob.x_train, prob.c_train), args.out, cfg,
                      resume=args.resume or export_only, export_metadata=meta)
    stem = getattr(args, "export_to", None) or Path(trainer.out_dir) / "model_ema"
    if not export_only:
        if dist_info().is_main:
            n = sum(p.numel() for p in model.parameters())
            print(f"cINN {args.arch} on {args.problem}: {n} parameters, {prob.x_train.shape[0]} training pairs")
        trainer.fit(export=False)
    if dist_info().is_main:
        out = trainer.export(stem)
        print(f"weights {out} (+ .json)")
        if args.eval_samples:
            from ..flows.cinn import load_cinn

            m, _ = load_cinn(stem)
            res = evaluate(m, prob, n_samples=args.eval_samples)
            print(json.dumps(res, indent=2))
    return 0
