"""Training plug-in for the VE-SDE score prior (Chung & Ye 2022, eq. 17; Song & Ermon 2020).

Denoising score matching with ``lambda(sigma) = sigma^2`` (Chung & Ye eq. 17)::

    L(theta) = E_{sigma, x, z} || sigma s_theta(x + sigma z, sigma) + z ||^2 / (H W)
             = E || F_theta(x + sigma z, sigma) + z ||^2 / (H W)      (s = F / sigma, see score_unet)

averaged over pixels (so the loss is O(1) at every image size: 1.0 for the zero-initialised network),
with ``log sigma ~ U(log sigma_min, log sigma_max)`` (the continuous VE-SDE's ``t ~ U(0, 1)`` under
``sigma(t) = sigma_min (sigma_max / sigma_min)^t``), ``sigma_min = 0.01`` and ``sigma_max`` the largest
pairwise Euclidean distance between training images (Song & Ermon 2020, "Improved techniques",
technique 1). The loss is also logged per sigma band (decades of sigma).

Images: real magnitude ``(N, H, W)``, each divided by its own 95th percentile (``normalize_images``),
matching the inference-time normalisation by the 95th percentile of the zero-filled magnitude
(GUIDE section 1). The JSON exported with the weights records ``sigma_min``, ``sigma_max`` and this
normalisation under ``"prior"``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = [
    "ScoreMatchingLoss",
    "MRIAugment",
    "ImageDataset",
    "sigma_max_from_data",
    "normalize_images",
    "smooth_random_images",
    "load_training_images",
    "DEFAULT_BANDS",
    "cli_add_arguments",
    "cli_run",
]

SIGMA_MIN = 0.01
DEFAULT_BANDS = (0.01, 0.1, 1.0, 10.0)  # band edges; the last band is [10, sigma_max]


def _check_images(images, name="images") -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.is_complex():
        raise TypeError(f"{name} must be real magnitude images, got complex dtype {images.dtype}")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), got {tuple(images.shape)}")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values")
    return images


def normalize_images(images, q: float = 0.95) -> torch.Tensor:
    """Divide each image by its ``q``-quantile of ``|x|`` (images that are all zero are left as they are)."""
    images = _check_images(images)
    s = torch.quantile(images.abs().reshape(images.shape[0], -1), q, dim=1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return images / s[:, None, None]


def sigma_max_from_data(images, chunk: int = 512) -> float:
    """Largest pairwise Euclidean distance ``max_ij ||x_i - x_j||_2`` between images (Song & Ermon 2020).

    ``images``: ``(N, H, W)`` real; computed exactly in chunks of ``chunk`` rows (float64).
    """
    x = _check_images(images)
    x = x.reshape(x.shape[0], -1).double()
    if x.shape[0] < 2:
        raise ValueError("sigma_max_from_data needs at least 2 images")
    best = 0.0
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i : i + chunk], x)
        best = max(best, float(d.max()))
    return best


class ImageDataset(Dataset):
    """Real images ``(N, H, W)`` served as ``(1, H, W)`` float32 tensors."""

    def __init__(self, images):
        self.images = _check_images(images).contiguous()

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i][None]


class MRIAugment:
    """Augmentation for magnitude MR slices, all draws from the given generator.

    Applied in this order, to ``(B, 1, H, W)`` real images on a zero background:

    1. left-right flips (brains are nearly symmetric; up-down flips are off by default because
       anatomy is not);
    2. one geometric warp, resampled once (bilinear, zero fill outside): rotation by
       ``+-max_rotation_deg``, anisotropic zoom (a log-uniform factor in ``zoom`` per axis) and a smooth
       elastic displacement field (Gaussian values on an ``elastic_grid x elastic_grid`` lattice,
       bicubically interpolated, std ``elastic`` as a fraction of the field of view);
    3. a contrast change ``x -> x^gamma`` (``gamma`` log-uniform in ``gamma``; the images are normalised
       to a 95th percentile of 1, so this changes the grey/white/CSF ratios, not the overall scale);
    4. intensity scaling by a log-uniform factor in ``intensity``;
    5. with ``downsample = k > 1``, antialiased resampling to ``(H/k, W/k)``
       (:func:`bayesmri.data.builtin.resize_magnitude`, the built-in loader's own kernel). Feed images
       at ``k`` times the training size: the warp's bilinear interpolation then does not blur the
       training images, which would teach the prior that brains are blurrier than they are.

    The defaults are the augmentation of the shipped ``score_small64`` (flips, rotations, intensity);
    :meth:`strong` adds zoom, elastic deformation and contrast changes, against the overfitting measured
    on ``val`` when training continued on the 154 training slices (docs/training.md).
    """

    def __init__(self, flip_lr: bool = True, flip_ud: bool = False, max_rotation_deg: float = 10.0,
                 intensity: tuple[float, float] = (0.8, 1.25), zoom: tuple[float, float] = (1.0, 1.0),
                 elastic: float = 0.0, elastic_grid: int = 4, gamma: tuple[float, float] = (1.0, 1.0),
                 downsample: int = 1):
        if max_rotation_deg < 0:
            raise ValueError("max_rotation_deg must be >= 0")
        for name, rng in (("intensity", intensity), ("zoom", zoom), ("gamma", gamma)):
            if not (0 < rng[0] <= rng[1]):
                raise ValueError(f"{name} range must satisfy 0 < lo <= hi, got {rng}")
        if elastic < 0 or int(elastic_grid) < 2:
            raise ValueError(f"need elastic >= 0 and elastic_grid >= 2, got {elastic}, {elastic_grid}")
        if int(downsample) < 1:
            raise ValueError(f"downsample must be a positive integer, got {downsample}")
        self.flip_lr, self.flip_ud = flip_lr, flip_ud
        self.max_rot = float(max_rotation_deg)
        self.intensity = (float(intensity[0]), float(intensity[1]))
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.elastic, self.elastic_grid = float(elastic), int(elastic_grid)
        self.gamma = (float(gamma[0]), float(gamma[1]))
        self.downsample = int(downsample)

    @classmethod
    def strong(cls, downsample: int = 1) -> "MRIAugment":
        """Flips, rotations +-10 deg, zoom 0.9-1.1 per axis, elastic 1.5 % of the FOV, gamma 0.75-1.33,
        intensity 0.8-1.25."""
        return cls(max_rotation_deg=10.0, zoom=(0.9, 1.1), elastic=0.015, gamma=(0.75, 1.33),
                   downsample=downsample)

    def config(self) -> dict:
        """The settings, for the JSON exported with the weights."""
        return dict(flip_lr=self.flip_lr, flip_ud=self.flip_ud, max_rotation_deg=self.max_rot,
                    intensity=list(self.intensity), zoom=list(self.zoom), elastic=self.elastic,
                    elastic_grid=self.elastic_grid, gamma=list(self.gamma), downsample=self.downsample)

    @staticmethod
    def _log_uniform(u: torch.Tensor, rng: tuple[float, float]) -> torch.Tensor:
        lo, hi = rng
        return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x``: ``(B, 1, H, W)`` real; returns an augmented copy (``(B, 1, H/k, W/k)`` with
        ``downsample = k``)."""
        B = x.shape[0]
        dev = x.device
        if x.shape[-2] % self.downsample or x.shape[-1] % self.downsample:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by downsample={self.downsample}")
        u = torch.rand(B, 4, generator=generator, device=generator.device).to(dev)
        if self.flip_lr:
            x = torch.where((u[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
        if self.flip_ud:
            x = torch.where((u[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
        zooming = self.zoom != (1.0, 1.0)
        if self.max_rot > 0 or zooming or self.elastic > 0:
            ang = (2 * u[:, 2] - 1) * math.radians(self.max_rot)
            c, s = torch.cos(ang), torch.sin(ang)
            theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], -1),
                                 torch.stack([s, c, torch.zeros_like(c)], -1)], 1)
            if zooming:  # output pixel -> input coordinate: divide by the magnification
                uz = torch.rand(B, 2, generator=generator, device=generator.device).to(dev)
                theta[:, :, :2] = theta[:, :, :2] / self._log_uniform(uz, self.zoom)[:, None, :]
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            if self.elastic > 0:
                n = self.elastic_grid
                coarse = torch.randn(B, 2, n, n, generator=generator, device=generator.device).to(dev, x.dtype)
                disp = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=True)
                grid = grid + 2 * self.elastic * disp.permute(0, 2, 3, 1)  # grid units: FOV = 2
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.gamma != (1.0, 1.0):
            ug = torch.rand(B, generator=generator, device=generator.device).to(dev)
            x = x.clamp_min(0) ** self._log_uniform(ug, self.gamma).to(x.dtype)[:, None, None, None]
        lo, hi = self.intensity
        if hi > lo:
            x = x * self._log_uniform(u[:, 3], self.intensity).to(x.dtype)[:, None, None, None]
        if self.downsample > 1:
            from bayesmri.data.builtin import resize_magnitude

            H, W = x.shape[-2:]
            x = resize_magnitude(x[:, 0], (H // self.downsample, W // self.downsample))[:, None].to(x.dtype)
        return x


class ScoreMatchingLoss:
    """Denoising score-matching loss of Chung & Ye eq. 17 for the trainer.

    ``loss_fn(model, batch, generator) -> (loss, logs)``; ``batch`` is ``(B, 1, H, W)`` or ``(B, H, W)``,
    or a dict ``{"image": ..., "pos": (B, 2, H, W)}`` for a network with a patch position input;
    ``model(x, sigma[, pos])`` returns ``F_theta = sigma * score``. ``logs`` holds the mean loss per sigma band
    (``loss_sigma_<lo>-<hi>``, NaN when no sample of the batch fell in the band) and the batch's mean
    ``log10 sigma``.
    """

    def __init__(self, sigma_max: float, sigma_min: float = SIGMA_MIN, augment: MRIAugment | None = None,
                 bands=DEFAULT_BANDS):
        if not (0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.augment = augment
        edges = [b for b in bands if sigma_min <= b < sigma_max]
        if not edges or edges[0] > sigma_min:
            edges = [sigma_min] + edges
        self.edges = edges + [sigma_max]
        self.band_names = [f"loss_sigma_{lo:g}-{hi:.3g}" for lo, hi in zip(self.edges[:-1], self.edges[1:])]

    def sample_sigma(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=generator.device).to(device)
        return torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def __call__(self, model, batch, generator: torch.Generator):
        pos = None
        if isinstance(batch, dict):
            x, pos = batch["image"], batch.get("pos")
        else:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if x.ndim == 3:
            x = x[:, None]
        if self.augment is not None:
            if pos is not None:
                raise ValueError("augmentation would move the pixels away from their positions; use augment=None")
            x = self.augment(x, generator)
        sigma = self.sample_sigma(x.shape[0], generator, x.device).to(x.dtype)
        z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
        xn = x + sigma[:, None, None, None] * z
        out = model(xn, sigma) if pos is None else model(xn, sigma, pos)
        per = (out.float() + z.float()).pow(2).mean(dim=(1, 2, 3))  # eq. 17 per sample, per pixel
        loss = per.mean()
        logs = {"log10_sigma_mean": float(torch.log10(sigma).mean())}
        per_d = per.detach()
        for name, lo, hi in zip(self.band_names, self.edges[:-1], self.edges[1:]):
            m = (sigma >= lo) & (sigma < hi) if hi < self.sigma_max else (sigma >= lo)
            logs[name] = float(per_d[m].mean()) if bool(m.any()) else float("nan")
        return loss, logs


# ---------------------------------------------------------------------------------------------- data
def smooth_random_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Random smooth non-negative test images ``(n, size, size)`` float32 (for development and tests).

    Gaussian blobs on a zero background inside an ellipse, a stand-in for brain slices.
    """
    g = torch.Generator().manual_seed(int(seed))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.zeros(n, size, size)
    for i in range(n):
        a, b = 0.6 + 0.3 * torch.rand(2, generator=g)
        support = ((xx / a) ** 2 + (yy / b) ** 2 <= 1).float()
        img = 0.5 * support
        for _ in range(6):
            c = (torch.rand(2, generator=g) - 0.5) * 1.2
            w = 0.05 + 0.25 * torch.rand(1, generator=g)
            amp = torch.rand(1, generator=g)
            img = img + amp * torch.exp(-((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * w**2)) * support
        out[i] = img
    return out


def image_mean_quantiles(images: torch.Tensor, n: int = 21) -> list[float]:
    """``n`` equally spaced quantiles (0 .. 1) of the per-image means of ``images (N, H, W)``.

    Stored with the weights (``prior.image_mean_quantiles``): a convolutional score network hardly
    models the image mean, so unconditional sampling draws it from this distribution
    (:func:`bayesmri.samplers.learned.sample_prior` with ``mean="prior"``).
    """
    m = images.reshape(images.shape[0], -1).real.double().mean(1)
    return [round(float(v), 6) for v in torch.quantile(m, torch.linspace(0, 1, n, dtype=torch.float64))]


def load_training_images(source: str = "builtin", size: int = 64, n_synthetic: int = 256, seed: int = 0):
    """Training images ``(N, size, size)`` normalised by their 95th percentile.

    ``source="builtin"``: ``bayesmri.data.load_slices("train", size=size)`` (MNI152 slices);
    ``"synthetic"``: :func:`smooth_random_images`.
    """
    if source == "builtin":
        try:
            from bayesmri.data import load_slices
        except ImportError:
            try:
                from bayesmri.data.builtin import load_slices
            except ImportError as exc:
                raise ValueError(f"the built-in dataset is not available ({exc}); use --data synthetic") from exc
        imgs = load_slices("train", size=size)
        imgs = torch.as_tensor(np.asarray(imgs))
        if imgs.is_complex():
            imgs = imgs.abs()
    elif source == "synthetic":
        imgs = smooth_random_images(n_synthetic, size, seed)
    else:
        raise ValueError(f"unknown data source {source!r}; use 'builtin' or 'synthetic'")
    return normalize_images(imgs)


# ---------------------------------------------------------------------------------------------- CLI
def cli_add_arguments(parser) -> None:
    """Options of ``bayesmri train score`` (the common ones are added by the train command)."""
    from bayesmri.priors.score_unet import CONFIGS

    parser.add_argument("--config", default="small64", choices=sorted(CONFIGS), help="network size (default small64)")
    parser.add_argument("--size", type=int, default=None, help="image size (default: 64 for small64, 128 for default128)")
    parser.add_argument("--data", default="builtin", choices=["builtin", "synthetic", "native"],
                        help="training images: builtin (whole 64/128-px slices), synthetic (blobs), or native: "
                             "random crops of 1 mm MNI slices with contrast, skull, bias, zoom (0.6-1.5 mm) and "
                             "elastic augmentation (bayesmri.data.synth), for priors that work at every matrix size")
    parser.add_argument("--crop", type=int, default=64, help="crop size in pixels with --data native (default 64)")
    parser.add_argument("--pixel-mm", default="0.6,2.0",
                        help="with --data native: range of the drawn pixel size in mm, 'LO,HI' (default 0.6,2.0: "
                             "320 px at 0.7 mm to 128 px at 1.75 mm)")
    parser.add_argument("--position", action="store_true",
                        help="with --data native: give the network each crop's position in the field of view "
                             "(two coordinate channels, PaDIS); --init-from may then name a network without them")
    parser.add_argument("--init-from", default=None,
                        help="start from these weights (shipped name or .safetensors path, same architecture)")
    parser.add_argument("--sigma-min", type=float, default=SIGMA_MIN)
    parser.add_argument("--sigma-max", type=float, default=None, help="default: largest pairwise distance of the data")
    parser.add_argument("--augment", default="basic", choices=["none", "basic", "strong"],
                        help="basic: flips, rotations, intensity scaling (the shipped score_small64); strong: also "
                             "zoom, elastic deformation and gamma contrast changes (MRIAugment.strong)")
    parser.add_argument("--no-augment", action="store_true", help="same as --augment none")
    parser.add_argument("--supersample", type=int, default=1,
                        help="load the training slices at K times --size, warp them there and resample to --size "
                             "with antialiasing (keeps rotated/elastic images sharp; default 1)")
    parser.add_argument("--export-dtype", default="float32", choices=["float32", "float16"],
                        help="dtype of the exported safetensors (float16 halves the file)")


def cli_run(args, cfg) -> int:
    """Train the score UNet with the common :class:`~bayesmri.train.TrainConfig` ``cfg``."""
    from bayesmri.priors.score_unet import build_score_unet

    if args.data == "native":
        return _run_native(args, cfg)
    if getattr(args, "position", False):
        raise ValueError("--position needs --data native (crops with known positions in the field of view)")
    size = args.size or (128 if args.config == "default128" else 64)
    ss = int(getattr(args, "supersample", 1) or 1)
    if ss < 1:
        raise ValueError(f"--supersample must be a positive integer, got {ss}")
    images = load_training_images(args.data, size=size, seed=cfg.seed)
    sigma_max = args.sigma_max or sigma_max_from_data(images)  # at the training size, also when supersampling
    train_images = images if ss == 1 else load_training_images(args.data, size=size * ss, seed=cfg.seed)
    torch.manual_seed(cfg.seed)  # network initialisation
    model = build_score_unet(args.config)
    kind = "none" if args.no_augment else getattr(args, "augment", "basic")
    if kind == "none" and ss > 1:
        raise ValueError("--supersample needs augmentation (it resamples inside MRIAugment); drop --augment none")
    augment = {"none": None, "basic": MRIAugment(downsample=ss), "strong": MRIAugment.strong(downsample=ss)}[kind]
    loss = ScoreMatchingLoss(sigma_max, args.sigma_min, augment=augment)
    meta = {
        "prior": {
            "kind": "ve_sde_score",
            "parametrisation": "score = model(x, sigma) / sigma",
            "sigma_min": loss.sigma_min,
            "sigma_max": loss.sigma_max,
            "image_size": [size, size],
            "normalisation": "each training image divided by its 95th percentile magnitude",
            "config_name": args.config,
            "data": args.data,
            "n_train_images": int(images.shape[0]),
            "image_mean_quantiles": image_mean_quantiles(images),
            "augment": None if augment is None else augment.config(),
        }
    }
    return _fit(args, cfg, model, loss, ImageDataset(train_images), meta,
                f"{images.shape[0]} images {size}x{size}")


def _init_weights(model, source) -> None:
    """Copy the weights of a saved model of the same architecture into ``model`` (``--init-from``)."""
    from bayesmri.priors.loading import load_model

    src = load_model(source)
    src_cfg, cfg = dict(getattr(src, "config", {}) or {}), dict(getattr(model, "config", {}) or {})
    if src_cfg.get("position_channels", 0) == 0 and cfg.get("position_channels", 0):
        # a position-free network into one with a position input: zero weights on the coordinate channels,
        # so training starts from exactly the source network
        cfg.pop("position_channels")
        if src_cfg == cfg:
            state = src.state_dict()
            w = state["conv_in.weight"]
            extra = torch.zeros(w.shape[0], model.position_channels, *w.shape[2:], dtype=w.dtype)
            state["conv_in.weight"] = torch.cat([w, extra], 1)
            model.load_state_dict(state)
            return
    if src_cfg != dict(getattr(model, "config", {}) or {}):
        raise ValueError(f"--init-from {source}: its config {src.config} differs from the model's {model.config}")
    model.load_state_dict(src.state_dict())


def _run_native(args, cfg) -> int:
    """``--data native``: random crops of 1 mm slices (:class:`bayesmri.data.synth.BrainSliceSynthesizer`)."""
    from bayesmri.data.synth import BrainSliceSynthesizer
    from bayesmri.priors.score_unet import build_score_unet

    try:
        lo, hi = (float(v) for v in str(args.pixel_mm).split(","))
    except ValueError:
        raise ValueError(f"--pixel-mm must be 'LO,HI' in mm, got {args.pixel_mm!r}") from None
    position = bool(getattr(args, "position", False))
    synth = BrainSliceSynthesizer("train", crop=args.crop, pixel_mm=(lo, hi), positions=position)
    g = torch.Generator().manual_seed(cfg.seed + 12345)
    probe = synth(256, g)
    probe = (probe["image"] if position else probe)[:, 0]
    sigma_max = args.sigma_max or sigma_max_from_data(probe)
    whole = BrainSliceSynthesizer("train", crop=0, pixel_mm=(lo, hi))
    means = torch.stack([whole(1, g)[0, 0].mean() for _ in range(64)])
    torch.manual_seed(cfg.seed)
    model = build_score_unet(args.config, **({"position_channels": 2} if position else {}))
    if args.init_from and not (Path(args.out) / "checkpoint.pt").is_file():
        _init_weights(model, args.init_from)
    loss = ScoreMatchingLoss(sigma_max, args.sigma_min, augment=None)
    meta = {
        "prior": {
            "kind": "ve_sde_score",
            "parametrisation": "score = model(x, sigma) / sigma",
            "sigma_min": loss.sigma_min,
            "sigma_max": loss.sigma_max,
            "image_size": None,
            "training_crop": [args.crop, args.crop],
            "pixel_mm": list(synth.pixel_mm),
            "fully_convolutional": True,
            "position_input": position,
            "normalisation": "each whole slice divided by its 95th percentile magnitude over a random field of "
                             "view, then cropped",
            "config_name": args.config,
            "data": "native",
            "synthesis": synth.config(),
            "init_from": args.init_from,
            "image_mean_quantiles": image_mean_quantiles(means[:, None, None]),
        }
    }
    return _fit(args, cfg, model, loss, synth, meta, f"random {args.crop}x{args.crop} crops of {len(synth)} "
                f"1 mm slices")


def _fit(args, cfg, model, loss, data, meta, what: str) -> int:
    from bayesmri.train import Trainer, dist_info

    export_only = getattr(args, "export_only", False)
    if export_only and not (Path(args.out) / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"--export-only: no checkpoint in {args.out}")
    trainer = Trainer(model, loss, data, args.out, cfg, resume=args.resume or export_only,
                      export_metadata=meta)
    dtype = torch.float16 if args.export_dtype == "float16" else None
    stem = getattr(args, "export_to", None) or Path(trainer.out_dir) / "model_ema"
    if export_only:
        if dist_info().is_main:
            out = trainer.export(stem, dtype=dtype)
            print(f"exported the EMA weights of step {trainer.step} to {out} (+ .json)")
        return 0
    if dist_info().is_main:
        n = sum(p.numel() for p in model.parameters())
        print(f"score UNet {args.config}: {n} parameters; {what}; "
              f"sigma in [{loss.sigma_min:g}, {loss.sigma_max:.4g}]; start at step {trainer.step}")
    res = trainer.fit(export=False)
    if dist_info().is_main:
        out = trainer.export(stem, dtype=dtype)
        print(f"done: step {res.step}, loss {res.last_loss:.4g}, {res.steps_per_second:.3g} steps/s; "
              f"weights {out} (+ .json), log {res.log}")
    return 0
