"""Training plug-in for the conditional normalising flow (Wen et al. 2023): ``bayesmri train cnf``.

Two phases, each a :class:`bayesmri.train.Trainer` run with its own checkpoint (so both resume):

1. ``OUT/pretrain``: the UNet of the conditioning network by MSE on the flow target (the nullspace part
   ``(I - A^+A) x`` with nullspace learning, else ``x``), ``--pretrain-steps`` steps;
2. ``OUT``: joint NLL (bits per dimension) of flow + feature extractor + UNet on the nullspace target of
   ``x + n``, ``n`` image-domain training noise of std ``--train-noise`` (default
   :data:`bayesmri.flows.cnf.TRAINING_NOISE_STD` = 0.01, see :class:`CNFLoss`), ``--steps`` steps, exported
   as ``OUT/model_ema.safetensors`` + ``.json``.

Data (:class:`CNFDataset`): built-in ``train`` slices acquired by :func:`bayesmri.data.simulate_acquisition`
(the simulator of the test split: same coil maps, phase, SNR) with a mask frame and noise drawn per item;
random flips. Everything is divided by the 95th percentile of the zero-filled RSS (Wen sec. 3.2; never
the ground truth).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..flows.cnf import TRAINING_NOISE_STD, ConditionalNF, zero_filled_and_scale

__all__ = ["CNFDataset", "CNFLoss", "cnf_loss", "cnf_pretrain_loss",
           "data_init", "cli_add_arguments", "cli_run", "SIZES"]

#: model sizes: "small" fits a CPU run of minutes at 64x64; "paper" is Wen et al.'s L = 3, B = 20.
SIZES = {
    "tiny": dict(num_levels=2, num_blocks=1, unet_chans=4, unet_pools=2, cond_chans=4, hidden=8),
    "small": dict(num_levels=3, num_blocks=4, unet_chans=8, unet_pools=4, cond_chans=16, hidden=32),
    "paper": dict(num_levels=3, num_blocks=20, unet_chans=32, unet_pools=4, cond_chans=64, hidden=128),
}


class CNFDataset(Dataset):
    """Simulated multi-coil training items for the CNF, drawn by the project's one simulator.

    Item ``i`` (``i < N * repeats``, ``N`` slices of ``split``) is slice ``i % N``, optionally flipped,
    acquired by :func:`bayesmri.data.simulate_acquisition` exactly as :class:`bayesmri.data.
    SimulatedBrainDataset` does (its coil maps, smooth phase, SNR definition, normalisation) but with a
    mask and an acquisition seed of its own per *item*: ``derive_seed("cnf-mask", seed, i)`` picks the GRO
    frame (or the random pattern), so the model sees the mask variety of the test split, where every slice
    has its own frame (session 1 trained on frame 0 only and lost 5 dB on other frames).
    Deterministic for a given ``(split, seed)``, so runs resume on the same data.

    ``augment="strong"`` adds :meth:`bayesmri.train.score.MRIAugment.strong` (rotation, zoom, elastic
    deformation, gamma contrast; warped at twice the size and resampled, so the slices stay sharp)
    before the flips.

    Returns a dict ``x`` (ground-truth coil images ``(C, H, W)``), ``zf`` (zero-filled ``A^+ y``), both
    divided by the 95th percentile of the zero-filled RSS (:func:`bayesmri.flows.cnf.zero_filled_and_scale`,
    the normalisation used at inference), and ``mask`` ``(1, 1, W)`` (1-D patterns) or ``(1, H, W)``.
    """

    def __init__(self, split: str = "train", size: int = 64, ncoils: int = 8, acceleration: float = 4,
                 pattern: str = "gro", snr_db: float = 30.0, repeats: int = 8, seed: int = 0, flips: bool = True,
                 fixed_mask: bool = False, num_acs=None, augment: str = "flips"):
        from ..data.simulate import SimulatedBrainDataset

        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
        if augment not in ("flips", "strong"):
            raise ValueError(f"augment must be 'flips' or 'strong', got {augment!r}")
        self.sim = SimulatedBrainDataset(split, size=size, pattern=pattern, acceleration=acceleration,
                                         ncoils=ncoils, snr_db=snr_db, seed=seed)
        self.maps = self.sim.maps
        self.size, self.pattern, self.acceleration = int(size), pattern, float(acceleration)
        self.snr_db, self.repeats, self.seed, self.flips = snr_db, int(repeats), int(seed), flips
        self.fixed_mask, self.num_acs = bool(fixed_mask), num_acs
        self._hires, self._warp = None, None
        if augment == "strong":
            from ..data.builtin import load_slices
            from .score import MRIAugment

            # the same slices at twice the size: warped there, resampled to `size` (sharp, see MRIAugment)
            self._hires = load_slices(split, size=2 * self.size)
            self._warp = MRIAugment.strong(downsample=2)

    def __len__(self):
        return len(self.sim.images) * self.repeats

    def mask_for(self, i: int) -> torch.Tensor:
        from ..data.simulate import derive_seed
        from ..physics import make_mask

        ms = derive_seed("cnf-mask", self.seed) if self.fixed_mask else derive_seed("cnf-mask", self.seed, int(i))
        return make_mask(self.pattern, (self.size, self.size), self.acceleration, num_acs=self.num_acs, seed=ms)

    def __getitem__(self, i):
        from ..data.simulate import derive_seed, simulate_acquisition

        if not 0 <= int(i) < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        g = torch.Generator().manual_seed(derive_seed("cnf-acq", self.seed, int(i)))
        mag = self.sim.images[int(i) % len(self.sim.images)]
        if self._warp is not None:
            hi = self._hires[int(i) % len(self.sim.images)]
            mag = self._warp(hi[None, None], g)[0, 0].clamp_min(0)
            mag = mag / mag.max().clamp_min(1e-12)
        if self.flips:
            f = int(torch.randint(0, 4, (1,), generator=g))
            mag = torch.flip(mag, [0]) if f & 1 else mag
            mag = torch.flip(mag, [1]) if f & 2 else mag
        mask = self.mask_for(i)
        s = simulate_acquisition(mag, mask=mask, maps=self.maps, snr_db=self.snr_db, seed=g,
                                 phase_max=self.sim.phase_max)
        m = mask.reshape(1, 1, -1) if mask.ndim == 1 else mask[None]
        zf, scale, _ = zero_filled_and_scale(s.kspace[None], m)
        sc = scale[0]
        return {"x": s.coil_images / sc, "zf": zf[0] / sc, "mask": m}


class CNFLoss:
    """Joint NLL in bits per dimension (Trainer ``loss_fn``) of the flow target of ``x + n``.

    ``n`` is complex Gaussian image-domain noise, ``noise_std`` per real channel (default
    :data:`bayesmri.flows.cnf.TRAINING_NOISE_STD`), drawn from the step generator and added *before* the
    nullspace projection, so the target ``(I - A^+A)(x + n)`` stays in the nullspace. Without it the
    target is exactly zero on the image rows outside the head and the flow lowers its NLL by stretching
    those directions (measured on the shipped weights trained with noise only after the projection,
    std 0.005: log-determinant 4.6 nats per dimension, latent stretch 160x along background
    directions vs 105x along foreground ones; docs/cnf.md). ``noise_std=0`` warns on such targets.
    """

    def __init__(self, noise_std: float | None = None):
        noise_std = TRAINING_NOISE_STD if noise_std is None else noise_std
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)
        self._warned = False

    def __call__(self, model, batch, generator):
        x = batch["x"]
        noise = None
        if self.noise_std > 0:
            # E|n|^2 = 2 noise_std^2: std noise_std on the real and on the imaginary part
            noise = (self.noise_std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                     * 2**0.5)
        elif not self._warned and bool((x.abs().sum(1) == 0).all(-1).any()):
            import warnings

            warnings.warn("CNFLoss(noise_std=0) on targets with exactly-zero image rows: the NLL of the flow is "
                          "unbounded below along them; use the training noise (the default)", UserWarning,
                          stacklevel=2)
            self._warned = True
        return model(x, batch["zf"], batch["mask"], mode="nll", noise=noise)


cnf_loss = CNFLoss()


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
    parser.add_argument("--unet-chans", type=int, default=None, help="UNet width (overrides the preset)")
    parser.add_argument("--pretrain-lr", type=float, default=None, help="peak learning rate of the UNet pretraining (default --lr)")
    parser.add_argument("--snr", type=float, default=30.0, help="simulated k-space SNR in dB (default 30, as the test split)")
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--base", default="gaussian", choices=["gaussian", "radial"])
    parser.add_argument("--mean-shift", action="store_true",
                        help="flow models u - UNet(y) (a conditional translation; not in the paper)")
    parser.add_argument("--augment", default="flips", choices=["flips", "strong"],
                        help="flips (default) or strong: also rotation, zoom, elastic deformation and gamma contrast "
                             "(MRIAugment.strong, warped at twice the size)")
    parser.add_argument("--no-nullspace", action="store_true", help="ablation: model x instead of (I - A^+A) x")
    parser.add_argument("--pretrain-steps", type=int, default=200, help="UNet MSE pretraining steps (0 = none)")
    parser.add_argument("--train-noise", type=float, default=TRAINING_NOISE_STD,
                        help="std per real channel of the image-domain training noise added to x before the nullspace "
                             "projection (normalised units; default bayesmri.flows.cnf.TRAINING_NOISE_STD = 0.01; 0 = none)")
    parser.add_argument("--export-dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--pretrain-only", action="store_true",
                        help="stop after the UNet pretraining phase (e.g. to resume it later with a lower --pretrain-lr)")


def cli_run(args, cfg) -> int:
    """Pretrain the UNet, then train the CNF jointly; export EMA weights."""
    from dataclasses import replace

    from . import Trainer

    size = args.img_size or (128 if str(cfg.device).startswith("cuda") else 64)
    kw = dict(SIZES[args.size_preset])
    if args.levels:
        kw["num_levels"] = args.levels
    if args.blocks:
        kw["num_blocks"] = args.blocks
    if args.unet_chans:
        kw["unet_chans"] = args.unet_chans
    torch.manual_seed(cfg.seed)
    model = ConditionalNF(ncoils=args.ncoils, img_size=(size, size), base=args.base,
                          nullspace=not args.no_nullspace, seed=cfg.seed,
                          mean_shift=args.mean_shift, **kw)
    data = CNFDataset("train", size, ncoils=args.ncoils, acceleration=args.acceleration, snr_db=args.snr, seed=cfg.seed,
                      augment=getattr(args, "augment", "flips"))
    out = Path(args.out)
    meta = {"cnf": {"acceleration": args.acceleration, "pattern": "gro", "image_size": [size, size],
                    "normalisation": "95th percentile of the zero-filled RSS", "snr_db": args.snr,
                    "data": "builtin train, bayesmri.data.simulate_acquisition, GRO frame per item",
                    "pretrain_steps": args.pretrain_steps, "pretrain_lr": args.pretrain_lr or cfg.lr, "size_preset": args.size_preset,
                    "train_noise": args.train_noise, "augment": getattr(args, "augment", "flips"),
                    "train_noise_domain": "image, before the nullspace projection"}}
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
                      replace(cfg, steps=args.pretrain_steps, ema_decay=0.0, lr=args.pretrain_lr or cfg.lr, checkpoint_every=min(cfg.checkpoint_every, args.pretrain_steps)),
                      resume=(out / "pretrain" / "checkpoint.pt").exists())
        pre.fit(export=False)
        if getattr(args, "pretrain_only", False):
            print(f"pretraining at step {pre.step}; --pretrain-only: stopping before the joint phase")
            return 0
        model = pre.model
    elif not joint_ckpt.exists():
        data_init(model, data)
    trainer = Trainer(model, CNFLoss(args.train_noise), data, out, cfg, resume=args.resume or joint_ckpt.exists(),
                      export_metadata=meta)
    res = trainer.fit(export=False)
    path = trainer.export(stem, dtype=dtype)
    print(f"step {res.step}: last loss {res.last_loss:.4g} bits/dim; exported {path}")
    return 0
