"""Training plug-in for the PoGMDM prior (Zach et al. 2024; Nagler, Zach, Pock 2025 sec. 3.2).

Denoising score matching (Nagler eq. 4 with ``2t = sigma^2``, weighted by ``sigma^2``)::

    L(theta) = E_{sigma, x, z} || sigma s_theta(x + sigma z, sigma) + z ||^2 / (H W),

``sigma ~ U(0.02 sigma_max, sigma_max]``, ``sigma_max = 0.4`` (the issue's range ``(0, 0.4]``; the lower
cut avoids the ill-conditioned ``sigma -> 0`` end), on random ``patch x patch`` crops (left-right
flips) of magnitude training slices scaled to max 1. Optimiser: projected AdaBelief
(:class:`bayesmri.train.optim.ProjectedAdaBelief`, projections in :meth:`PoGMDM.project`), EMA 0.999,
run by the common :class:`bayesmri.train.Trainer` (atomic checkpoints, exact resume, CSV log).

``--data native``: random ``crop x crop`` crops of 1 mm MNI slices at a drawn pixel size in ``--pixel-mm``
(contrast synthesis, skull, bias field, rotation, elastic: :class:`bayesmri.data.synth.BrainSliceSynthesizer`,
as ``bayesmri train score --data native``), divided by one constant (:class:`NativeCrops`) so that whole
slices have their 99.5th percentile at about 1, the units in which :mod:`bayesmri.samplers.pogmdm_joint`
evaluates the prior.

CLI: ``bayesmri train pogmdm --out runs/pogmdm --steps 2000 --batch-size 16 --lr 5e-3 --warmup 0 --grad-clip 0``
(``--data native --crop 64 --pixel-mm 0.6,2.0`` for native-resolution crops; hooks
``cli_add_arguments(parser)``, ``cli_run(args, cfg)``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

__all__ = ["PoGMDMLoss", "CropBatches", "NativeCrops", "builtin_slices", "train_pogmdm", "export_checkpoint", "cli_add_arguments",
           "cli_run"]

SIGMA_MAX = 0.4


def _resize(vol_slices: np.ndarray, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(vol_slices), dtype=torch.float32)
    n, a, b = t.shape
    s = max(a, b)
    pad = torch.zeros(n, s, s)
    pad[:, (s - a) // 2:(s - a) // 2 + a, (s - b) // 2:(s - b) // 2 + b] = t
    return F.interpolate(pad[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[:, 0]


def builtin_slices(split: str = "train", size: int = 128) -> torch.Tensor:
    """Magnitude slices ``(N, size, size)`` float32, each scaled to max 1.

    Uses ``bayesmri.data.load_slices(split, size)`` when that module exists; otherwise the same sources
    directly: nilearn's bundled MNI152 T1 template (``train``) and Debian mricron's Colin27
    ``ch2bet.nii.gz`` (``test``/``val``; a different brain), axial slices through the brain.
    """
    try:
        from bayesmri.data import load_slices  # type: ignore[attr-defined]

        imgs = torch.as_tensor(np.asarray(load_slices(split, size=size)))
    except (ImportError, AttributeError):
        import nibabel as nib

        if split == "train":
            from nilearn import datasets

            vol = np.asarray(datasets.load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
            zs = range(40, 150, 2)
        elif split in ("test", "val"):
            vol = np.asarray(nib.load("/usr/share/mricron/templates/ch2bet.nii.gz").get_fdata(), dtype=np.float32)
            zs = range(60, 140, 8) if split == "test" else range(64, 140, 8)
        else:
            raise ValueError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
        sl = np.stack([np.rot90(vol[:, :, z]) for z in zs])
        imgs = _resize(sl, size)
    imgs = imgs.abs() if imgs.is_complex() else imgs.clamp_min(0)
    return (imgs / imgs.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]).float()


class CropBatches:
    """``batch_fn(batch_size, generator)``: random ``patch x patch`` crops with left-right flips."""

    def __init__(self, images: torch.Tensor, patch: int = 64):
        if images.ndim != 3:
            raise ValueError(f"images must be (N, H, W), got {tuple(images.shape)}")
        if patch > min(images.shape[-2:]):
            raise ValueError(f"patch {patch} larger than the images {tuple(images.shape[-2:])}")
        self.images, self.patch = images.float().contiguous(), int(patch)

    def __call__(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        N, H, W = self.images.shape
        p = self.patch
        i = torch.randint(N, (batch_size,), generator=generator)
        r = torch.randint(H - p + 1, (batch_size,), generator=generator)
        c = torch.randint(W - p + 1, (batch_size,), generator=generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        out = torch.stack([self.images[a, b:b + p, d:d + p] for a, b, d in zip(i.tolist(), r.tolist(), c.tolist())])
        return torch.where(flip[:, None, None], out.flip(-1), out)


class NativeCrops:
    """``batch_fn(batch_size, generator)``: crops ``(B, crop, crop)`` of a
    :class:`~bayesmri.data.synth.BrainSliceSynthesizer` divided by ``scale``.

    The synthesiser normalises each slice by its 95th percentile; the joint sampler scales the
    zero-filled image to its 99.5th percentile = 1 (the units of the max-1 slices of the first
    PoGMDM). :meth:`from_synth` sets ``scale`` to the median 99.5th percentile of whole synthesised
    slices, so the crops come in those units.
    """

    def __init__(self, synth, scale: float = 1.0):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.synth, self.scale = synth, float(scale)

    @classmethod
    def from_synth(cls, synth, n: int = 32, seed: int = 12345) -> "NativeCrops":
        from bayesmri.data.synth import BrainSliceSynthesizer

        whole = BrainSliceSynthesizer(synth.split, crop=0, pixel_mm=synth.pixel_mm)
        g = torch.Generator().manual_seed(seed)
        q = torch.stack([torch.quantile(whole(1, g).flatten(), 0.995) for _ in range(n)])
        return cls(synth, float(q.median()))

    def __call__(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.synth(batch_size, generator)[:, 0] / self.scale


def _parse_range(text) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--pixel-mm must be 'LO,HI' in mm, got {text!r}") from None
    return lo, hi


class PoGMDMLoss:
    """DSM loss ``mean || sigma s(x + sigma z, sigma) + z ||^2`` for the trainer (see module docstring)."""

    def __init__(self, sigma_max: float = SIGMA_MAX, sigma_min_frac: float = 0.02):
        if not (sigma_max > 0 and 0 < sigma_min_frac < 1):
            raise ValueError("need sigma_max > 0 and 0 < sigma_min_frac < 1")
        self.sigma_max, self.sigma_min = float(sigma_max), float(sigma_max * sigma_min_frac)

    def __call__(self, model, batch, generator):
        x = batch if batch.ndim == 3 else batch[:, 0]
        # one sigma per batch: the experts' tables are then built once per step (B-fold cheaper)
        sigma = self.sigma_min + (self.sigma_max - self.sigma_min) * torch.rand((), generator=generator)
        z = torch.randn(x.shape, generator=generator)
        sigma, z = sigma.to(x), z.to(x)
        s = model(x + sigma * z, sigma)
        loss = (sigma * s + z).pow(2).mean()
        # 1 - loss is the fraction of the noise power that the Tweedie denoiser removes
        return loss, {"sigma": float(sigma)}


def _filter_keys(n_shears: int, lowpass: bool) -> list:
    """``(cone, band, shear)`` of each filter of a :class:`~bayesmri.priors.pogmdm.PoGMDM`, in its order
    (vertical then horizontal cone; coarse then fine band; shears ``-n_shears//2 .. n_shears//2``; low-pass last)."""
    ns = n_shears // 2
    keys = [(c, b, s) for c in range(2) for b in range(2) for s in range(-ns, ns + 1)]
    return keys + ([("lowpass", None, None)] if lowpass else [])


def _warm_start(model, path) -> None:
    """Copy parameters from a safetensors file (its JSON config beside it, if any, gives its ``n_shears``).

    Shared parameters (``h``, ``P``) are copied. Per-expert parameters (``gamma``, ``w_half``) are copied
    expert by expert: an expert missing from the source (the low-pass expert of a 20-expert model, or a
    shear beyond the source's range when ``n_shears`` grows) starts from the source expert of the same
    cone and band with the nearest shear, its ``gamma`` rescaled so that its peak response ``gamma eta``
    equals that expert's; without a source expert of its kind it keeps its initialisation.
    """
    from safetensors.torch import load_file

    src = load_file(str(path))
    cfg_path = Path(str(path)).with_suffix(".json")
    src_cfg = json.loads(cfg_path.read_text()).get("config", {}) if cfg_path.is_file() else {}
    src_ns = int(src_cfg.get("n_shears", model.config["n_shears"]))
    src_lp = src["gamma"].shape[0] > 4 * src_ns if "gamma" in src else model.lowpass_expert
    dst_keys = _filter_keys(model.config["n_shears"], model.lowpass_expert)
    src_keys = _filter_keys(src_ns, src_lp)
    if "gamma" in src and src["gamma"].shape[0] != len(src_keys):
        raise ValueError(f"cannot warm-start from {path}: {src['gamma'].shape[0]} experts do not match "
                         f"n_shears={src_ns}")
    if "w_half" in src and src["w_half"].shape[1:] != model.w_half.shape[1:]:
        raise ValueError(f"cannot warm-start w_half: shape {tuple(src['w_half'].shape)} vs {tuple(model.w_half.shape)}")
    # destination expert -> (source expert, whether it is the same filter)
    mapping = []
    for key in dst_keys:
        if key in src_keys:
            mapping.append((src_keys.index(key), True))
            continue
        c, b, s = key
        cands = [(abs(k[2] - s), i) for i, k in enumerate(src_keys) if k[0] == c and k[1] == b and c != "lowpass"]
        mapping.append((min(cands)[1], False) if cands else (None, False))
    with torch.no_grad():
        for name in ("h", "P"):
            if name in src:
                p = getattr(model, name)
                if src[name].shape != p.shape:
                    raise ValueError(f"cannot warm-start {name}: shape {tuple(src[name].shape)} vs {tuple(p.shape)}")
                p.copy_(src[name].to(p.dtype))
        model.clear_cache()
        eta = model.filter_spectra(64, 64).abs().flatten(1).amax(1).float()
        for j, (i, same) in enumerate(mapping):
            if i is None:
                continue
            if "w_half" in src:
                model.w_half[j].copy_(src["w_half"][i])
            if "gamma" in src:
                g = float(src["gamma"][i])
                if not same and src_keys[i] in dst_keys:  # the same peak response as the copied expert
                    g *= float(eta[dst_keys.index(src_keys[i])] / eta[j])
                model.gamma[j] = g
    model.project()


def train_pogmdm(out_dir, steps: int = 2000, batch_size: int = 16, patch: int = 64, lr: float = 5e-3,
                 size: int = 128, seed: int = 0, resume: bool = False, progress: bool = True, cfg=None,
                 init=None, lowpass_expert: bool = True, data: str = "builtin", crop: int = 64,
                 pixel_mm=(0.6, 2.0), n_shears: int = 5):
    """Train a :class:`~bayesmri.priors.pogmdm.PoGMDM` with the common trainer; returns the ``Trainer``.

    ``init``: safetensors file to warm-start from (:func:`_warm_start`). The export
    ``out_dir/model_ema.safetensors`` + ``.json`` holds the EMA weights. ``data="builtin"``: ``patch``
    crops of whole ``size`` slices; ``"native"``: ``crop`` crops of 1 mm slices at ``pixel_mm``
    (:class:`NativeCrops`; ``patch`` and ``size`` unused). ``n_shears``: shears per cone and scale (odd; 5 gives
    the paper's 21 experts, 9 gives 37); a warm start from a model with fewer shears copies the nearest shear.
    """
    from bayesmri.priors.pogmdm import PoGMDM
    from bayesmri.train import TrainConfig, Trainer
    from bayesmri.train.optim import ProjectedAdaBelief

    if data not in ("builtin", "native"):
        raise ValueError(f"data must be 'builtin' or 'native', got {data!r}")
    if data == "native":
        from bayesmri.data.synth import BrainSliceSynthesizer

        batches = NativeCrops.from_synth(BrainSliceSynthesizer("train", crop=crop, pixel_mm=tuple(pixel_mm)))
    else:
        images = builtin_slices("train", size)
        batches = CropBatches(images, patch)
    torch.manual_seed(seed)
    model = PoGMDM(lowpass_expert=lowpass_expert, n_shears=n_shears)
    if init is not None and not resume:
        _warm_start(model, init)
    cfg = cfg or TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=0, grad_clip=None,
                             ema_decay=0.999, checkpoint_every=100, seed=seed, progress=progress)
    # per-group learning rates relative to cfg.lr: the parameters live on very different scales
    # (w ~ 1e-2 on the simplex, P ~ 3e-3 with ||P||_1 = 1, h ~ 0.1, gamma ~ 1 / eta ~ 2..20)
    groups = [{"params": [model.w_half], "lr": cfg.lr * 0.2}, {"params": [model.P], "lr": cfg.lr * 0.1},
              {"params": [model.h], "lr": cfg.lr * 0.2}, {"params": [model.gamma], "lr": cfg.lr * 10}]
    opt = ProjectedAdaBelief(groups, lr=cfg.lr, betas=(0.9, 0.999), project=model.project)
    if data == "native":
        meta = {"prior": {"kind": "pogmdm", "sigma_max": SIGMA_MAX, "data": "native", "training_crop": [crop, crop],
                          "pixel_mm": list(batches.synth.pixel_mm), "image_size": None,
                          "normalisation": "each whole slice divided by its 95th percentile over a random field of "
                                           f"view, cropped, then divided by {batches.scale:.4g} (median 99.5th "
                                           "percentile of whole slices)",
                          "intensity_scale": batches.scale, "synthesis": batches.synth.config(),
                          "init": None if init is None else str(init)}}
    else:
        meta = {"prior": {"kind": "pogmdm", "sigma_max": SIGMA_MAX, "patch": patch, "image_size": [size, size],
                          "normalisation": "each training slice divided by its maximum magnitude",
                          "n_train_images": int(images.shape[0])}}
    return Trainer(model, PoGMDMLoss(), batches, out_dir, cfg, optimizer=opt,
                   resume=resume, export_metadata=meta)


def export_checkpoint(checkpoint, stem, extra: dict | None = None):
    """Export the EMA weights of a trainer checkpoint (e.g. of a run stopped by a time limit) as
    ``stem.safetensors`` + ``stem.json``; returns the safetensors path."""
    from bayesmri.priors.loading import save_model
    from bayesmri.train import load_checkpoint

    ck = load_checkpoint(checkpoint)
    mc = ck["model_config"]
    tc = ck["train_config"]
    training = {"steps": int(ck["step"]), "batch_size_per_process": tc["batch_size"], "lr": tc["lr"],
                "ema_decay": tc["ema_decay"], "optimizer": "projected AdaBelief", "weights": "ema", "seed": tc["seed"]}
    meta = {"prior": {"kind": "pogmdm", "sigma_max": SIGMA_MAX,
                      "normalisation": "each training slice divided by its maximum magnitude"}}
    meta.update(extra or {})
    return save_model(ck["ema"], stem, model_type=mc["model_type"], config=mc["config"], training=training,
                      metadata=meta)


def cli_add_arguments(parser) -> None:
    """Options of ``bayesmri train pogmdm`` (common ones come from the train command)."""
    parser.add_argument("--patch", type=int, default=64, help="training crop size (default 64)")
    parser.add_argument("--size", type=int, default=128, help="slice size before cropping (default 128)")
    parser.add_argument("--init", default=None, help="safetensors file to warm-start from")
    parser.add_argument("--no-lowpass-expert", action="store_true", help="20 experts, 1578 parameters")
    parser.add_argument("--n-shears", type=int, default=5,
                        help="shears per cone and scale, odd (default 5: 21 experts; 9: 37 experts). --init from a "
                             "model with fewer shears starts each new expert from the nearest shear")
    parser.add_argument("--data", default="builtin", choices=["builtin", "native"],
                        help="builtin: --patch crops of whole --size slices; native: --crop crops of 1 mm MNI slices "
                             "at a pixel size in --pixel-mm with contrast, skull, bias and elastic augmentation "
                             "(bayesmri.data.synth), as for 'train score --data native'")
    parser.add_argument("--crop", type=int, default=64, help="crop size in pixels with --data native (default 64)")
    parser.add_argument("--pixel-mm", default="0.6,2.0",
                        help="with --data native: range of the drawn pixel size in mm, 'LO,HI' (default 0.6,2.0)")


def cli_run(args, cfg) -> int:
    """Train with the common :class:`~bayesmri.train.TrainConfig` ``cfg`` (AdaBelief uses ``cfg.lr``)."""
    data = getattr(args, "data", "builtin")
    trainer = train_pogmdm(args.out, patch=args.patch, size=args.size, resume=args.resume, cfg=cfg, init=args.init,
                           lowpass_expert=not args.no_lowpass_expert, data=data, crop=getattr(args, "crop", 64),
                           pixel_mm=_parse_range(getattr(args, "pixel_mm", "0.6,2.0")),
                           n_shears=getattr(args, "n_shears", 5))
    res = trainer.fit()
    print(f"done: step {res.step}, loss {res.last_loss:.4g}, {res.steps_per_second:.3g} steps/s; weights {res.export}")
    return 0
