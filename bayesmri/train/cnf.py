"""Training plug-in for the conditional normalising flow (Wen et al. 2023): ``bayesmri train cnf``.

Two phases, each a :class:`bayesmri.train.Trainer` run with its own checkpoint (so both resume):

1. ``OUT/pretrain``: the UNet of the conditioning network by MSE on the flow target (the nullspace part
   ``(I - A^+A) x`` with nullspace learning, else ``x``), ``--pretrain-steps`` steps;
2. ``OUT``: joint NLL (bits per dimension) of flow + feature extractor + UNet on the target plus
   ``N(0, 0.005^2)`` dequantisation noise (``--train-noise``), ``--steps`` steps, exported
   as ``OUT/model_ema.safetensors`` + ``.json``.

Data (:class:`CNFDataset`): built-in magnitude slices (``bayesmri.data.load_slices``) turned into
multi-coil acquisitions per item with a seed fixed by the item index: smooth random phase, birdcage coil
maps (8 coils), a GRO mask, complex Gaussian k-space noise at ``snr_db``; random flips. Everything is
divided by the 95th percentile of the zero-filled RSS (Wen sec. 3.2; never the ground truth).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..flows.cnf import ConditionalNF, zero_filled_and_scale
from ..physics.fft import fft2c, ifft2c

__all__ = ["CNFDataset", "simulate_coil_acquisition", "smooth_phase", "CNFLoss", "cnf_loss", "cnf_pretrain_loss",
           "data_init", "cli_add_arguments", "cli_run", "SIZES"]

#: model sizes: "small" fits a CPU run of minutes at 64x64; "paper" is Wen et al.'s L = 3, B = 20.
SIZES = {
    "tiny": dict(num_levels=2, num_blocks=1, unet_chans=4, unet_pools=2, cond_chans=4, hidden=8),
    "small": dict(num_levels=3, num_blocks=4, unet_chans=8, unet_pools=4, cond_chans=16, hidden=32),
    "paper": dict(num_levels=3, num_blocks=20, unet_chans=32, unet_pools=4, cond_chans=64, hidden=128),
}


def smooth_phase(shape, generator: torch.Generator, max_phase: float = math.pi / 2, cutoff: int = 3):
    """A smooth random phase map ``(H, W)``: low-pass Gaussian noise scaled to ``max|phi| = max_phase``."""
    H, W = shape
    spec = torch.zeros(H, W, dtype=torch.complex64)
    c0, c1 = H // 2, W // 2
    blk = torch.randn(2 * cutoff + 1, 2 * cutoff + 1, 2, generator=generator)
    spec[c0 - cutoff : c0 + cutoff + 1, c1 - cutoff : c1 + cutoff + 1] = torch.view_as_complex(blk)
    phi = ifft2c(spec).real
    return phi * (max_phase / phi.abs().max().clamp_min(1e-12))


def simulate_coil_acquisition(mag: torch.Tensor, maps: torch.Tensor, mask: torch.Tensor, generator, snr_db=30.0):
    """Ground-truth coil images and measured k-space of one magnitude slice.

    ``x_c = S_c |m| e^{i phi}``, ``k = M (F x + n)``, ``n ~ CN(0, sigma^2)`` with
    ``sigma = rms(F x) 10^(-snr/20)``. Returns ``(coil_images (C, H, W), kspace (C, H, W), sigma)``.
    """
    img = mag.to(torch.complex64) * torch.exp(1j * smooth_phase(mag.shape, generator))
    x = maps * img
    k_full = fft2c(x)
    sigma = float(k_full.abs().pow(2).mean().sqrt()) * 10 ** (-snr_db / 20)
    noise = torch.view_as_complex(torch.randn(*k_full.shape, 2, generator=generator)) * (sigma / math.sqrt(2))
    return x, mask * (k_full + noise), sigma


class CNFDataset(Dataset):
    """Simulated multi-coil training items for the CNF, normalised by the zero-filled 95th percentile.

    Item ``i`` (``i < len(slices) * repeats``) is slice ``i % N`` with phase, noise and flips drawn from a
    generator seeded by ``(seed, i)``, so the data are the same on every run and resume.
    Returns a dict ``x`` (ground-truth coil images), ``zf`` (zero-filled), ``mask`` ``(1, 1, W)``.
    """

    def __init__(self, slices: torch.Tensor, ncoils: int = 8, acceleration: float = 4, pattern: str = "gro",
                 snr_db: float = 30.0, repeats: int = 8, seed: int = 0, flips: bool = True):
        from ..physics import make_mask
        from ..physics.coils import birdcage_maps

        if slices.ndim != 3:
            raise ValueError(f"slices must have shape (N, H, W), got {tuple(slices.shape)}")
        self.slices = slices.float()
        H, W = slices.shape[-2:]
        self.maps = birdcage_maps((ncoils, H, W))
        self.mask = make_mask(pattern, (H, W), acceleration).float()
        self.snr_db, self.repeats, self.seed, self.flips = snr_db, int(repeats), int(seed), flips

    def __len__(self):
        return self.slices.shape[0] * self.repeats

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, int(i)]).generate_state(1)[0]))
        mag = self.slices[i % self.slices.shape[0]]
        if self.flips:
            f = torch.randint(0, 4, (1,), generator=g).item()
            mag = torch.flip(mag, [0]) if f & 1 else mag
            mag = torch.flip(mag, [1]) if f & 2 else mag
        mask = self.mask.reshape(1, 1, -1)
        x, k, _ = simulate_coil_acquisition(mag, self.maps, mask, g, self.snr_db)
        zf, scale, _ = zero_filled_and_scale(k[None], mask)
        s = scale[0]
        return {"x": x / s, "zf": zf[0] / s, "mask": mask}


class CNFLoss:
    """Joint NLL in bits per dimension (Trainer ``loss_fn``), target perturbed by ``N(0, noise_std^2)``.

    The perturbation (dequantisation, as Denker et al.'s training noise) keeps the NLL bounded: the
    nullspace target is exactly zero on the measured k-space and the images on their background.
    """

    def __init__(self, noise_std: float = 0.01):
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)

    def __call__(self, model, batch, generator):
        x = batch["x"]
        noise = None
        if self.noise_std > 0:
            B, C, H, W = x.shape
            noise = self.noise_std * torch.randn(B, 2 * C, H, W, generator=generator, device=x.device)
        return model(x, batch["zf"], batch["mask"], mode="nll", noise=noise)


cnf_loss = CNFLoss(0.0)


def cnf_pretrain_loss(model, batch, generator):
    """UNet MSE on the flow target (Trainer ``loss_fn`` of the pretraining phase)."""
    return model(batch["x"], batch["zf"], batch["mask"], mode="mse")


@torch.no_grad()
def data_init(model: ConditionalNF, dataset, n: int = 16):
    """Data-dependent ActNorm initialisation on the first ``n`` items (deterministic)."""
    from torch.utils.data import default_collate

    b = default_collate([dataset[i] for i in range(min(n, len(dataset)))])
    was = model.training
    model.train()
    model(b["x"], b["zf"], b["mask"], mode="nll")
    model.train(was)


def cli_add_arguments(parser) -> None:
    """Options of ``bayesmri train cnf``."""
    parser.add_argument("--size-preset", default="small", choices=sorted(SIZES), help="model size (default small)")
    parser.add_argument("--img-size", type=int, default=None, help="image size (default 64 on CPU, 128 on GPU)")
    parser.add_argument("--ncoils", type=int, default=8)
    parser.add_argument("--levels", type=int, default=None, help="flow levels L (overrides the preset)")
    parser.add_argument("--blocks", type=int, default=None, help="coupling blocks per level B (overrides the preset)")
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--base", default="gaussian", choices=["gaussian", "radial"])
    parser.add_argument("--mean-shift", action="store_true",
                        help="flow models u - UNet(y) (a conditional translation; not in the paper)")
    parser.add_argument("--no-nullspace", action="store_true", help="ablation: model x instead of (I - A^+A) x")
    parser.add_argument("--pretrain-steps", type=int, default=200, help="UNet MSE pretraining steps (0 = none)")
    parser.add_argument("--train-noise", type=float, default=0.005,
                        help="std of the dequantisation noise on the flow target (normalised units, default 0.005)")
    parser.add_argument("--export-dtype", default="float32", choices=["float32", "float16"])


def cli_run(args, cfg) -> int:
    """Pretrain the UNet, then train the CNF jointly; export EMA weights."""
    from dataclasses import replace

    from ..data import load_slices
    from . import Trainer

    size = args.img_size or (128 if str(cfg.device).startswith("cuda") else 64)
    kw = dict(SIZES[args.size_preset])
    if args.levels:
        kw["num_levels"] = args.levels
    if args.blocks:
        kw["num_blocks"] = args.blocks
    torch.manual_seed(cfg.seed)
    model = ConditionalNF(ncoils=args.ncoils, img_size=(size, size), base=args.base,
                          nullspace=not args.no_nullspace, seed=cfg.seed,
                          mean_shift=args.mean_shift, **kw)
    data = CNFDataset(load_slices("train", size), ncoils=args.ncoils, acceleration=args.acceleration, seed=cfg.seed)
    out = Path(args.out)
    meta = {"cnf": {"acceleration": args.acceleration, "pattern": "gro", "image_size": [size, size],
                    "normalisation": "95th percentile of the zero-filled RSS", "data": "builtin train",
                    "pretrain_steps": args.pretrain_steps, "size_preset": args.size_preset,
                    "train_noise": args.train_noise}}
    joint_ckpt = out / "checkpoint.pt"
    dtype = torch.float16 if args.export_dtype == "float16" else None
    stem = getattr(args, "export_to", None) or out / "model_ema"
    if getattr(args, "export_only", False):
        if not joint_ckpt.is_file():
            raise FileNotFoundError(f"--export-only: no checkpoint in {out}")
        trainer = Trainer(model, CNFLoss(args.train_noise), data, out, cfg, resume=True, export_metadata=meta)
        print(f"step {trainer.step}: exported {trainer.export(stem, dtype=dtype)}")
        return 0
    if args.pretrain_steps > 0 and not joint_ckpt.exists():
        data_init(model, data)
        pre = Trainer(model, cnf_pretrain_loss, data, out / "pretrain",
                      replace(cfg, steps=args.pretrain_steps, ema_decay=0.0, checkpoint_every=min(cfg.checkpoint_every, args.pretrain_steps)),
                      resume=(out / "pretrain" / "checkpoint.pt").exists())
        pre.fit(export=False)
        model = pre.model
    elif not joint_ckpt.exists():
        data_init(model, data)
    trainer = Trainer(model, CNFLoss(args.train_noise), data, out, cfg, resume=args.resume or joint_ckpt.exists(),
                      export_metadata=meta)
    res = trainer.fit(export=False)
    path = trainer.export(stem, dtype=dtype)
    print(f"step {res.step}: last loss {res.last_loss:.4g} bits/dim; exported {path}")
    return 0
