"""Random brain slices at a chosen pixel size, with the diversity of real scans (training data for priors).

:class:`BrainSliceSynthesizer` draws training crops from the MNI ICBM152 2009a volumes at their native
1 mm resolution (:mod:`bayesmri.data.volumes`), with

- **contrast synthesis** from the tissue probability maps: ``I = a_csf p_csf + a_gm p_gm + a_wm p_wm``
  with random T1-like (WM > GM > CSF), T2-like (CSF > GM > WM) or PD-like (flat) weights, or the T1
  template itself under a random gamma;
- **heads with and without skull**: a synthetic CSF rim, bone (dark, optional brighter diploe) and scalp
  (bright) grown outward from the brain with randomly modulated thicknesses;
- a smooth multiplicative **bias field**;
- **geometry**: pixel size log-uniform in ``pixel_mm`` (about 0.6-1.5 mm; anisotropic by up to 10 %),
  rotation, left-right flip and a smooth elastic displacement, resampled once from the 1 mm source with a
  Gaussian antialiasing pre-filter when the pixels are larger than 1 mm;
- **normalisation as at inference**: each slice is divided by the 95th percentile of its magnitude over a
  random square field of view, *before* cropping, so crops keep whole-image intensity units (the samplers
  divide by the 95th percentile of the zero-filled image); then a random intensity factor.

Every random number comes from the ``torch.Generator`` passed in, so the trainer's exact resume holds.
Colin27 (the test brain) is never read here.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..physics.intensity import intensity_scale
from .volumes import axial_slices, load_volume, mni_split_of, pad_to_square, tissue_slice_indices

__all__ = ["BrainSliceSynthesizer", "resample_slice"]

CANVAS = 256  # source canvas: 256 x 256 at 1 mm


def _uniform(g, lo, hi, n=()):
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _log_uniform(g, lo, hi, n=()):
    return torch.exp(_uniform(g, math.log(lo), math.log(hi), n))


def _smooth_field(g, size: int, grid: int = 4) -> torch.Tensor:
    """A smooth random field ``(size, size)`` with unit-scale values (bicubic upsampling of a coarse grid)."""
    coarse = torch.randn(1, 1, grid, grid, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)[0, 0]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(1, 1, H, W)`` with std ``sigma`` pixels (identity for sigma < 0.2)."""
    if sigma < 0.2:
        return x
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


class BrainSliceSynthesizer:
    """Draw random native-resolution training crops ``(B, 1, crop, crop)`` from the MNI volumes.

    Parameters
    ----------
    split : {"train", "val"}
        MNI slices of the built-in split rule (:func:`bayesmri.data.volumes.mni_split_of`).
    crop : int
        Output crop size in pixels (``crop = 0`` returns the whole field of view at the drawn pixel size,
        rounded to a multiple of 8; batch size 1 only).
    pixel_mm : (float, float)
        Range of the pixel size (log-uniform).
    fov_mm : (float, float)
        Range of the square field of view over which the 95th-percentile normalisation is computed.
    skull_prob : float
        Probability of a synthetic skull and scalp.
    max_rotation_deg, elastic_mm : float
        Rotation range and std of the elastic displacement (mm).
    bias : float
        Maximum amplitude of the log bias field.
    intensity : (float, float)
        Final random intensity factor (log-uniform), for the uncertainty of the normalisation.
    contrasts : sequence of str
        Drawn uniformly from ``template``, ``t1``, ``t2``, ``pd``.
    positions : bool
        Also return each crop's pixel coordinates in the frame of a field of view centred on the head
        (size drawn from ``fov_mm``), normalised so that field of view spans ``[-1, 1]`` in the crop's own
        axes (the patch position input of PaDIS; :func:`bayesmri.priors.score_unet.image_coordinates` is the
        same convention for a whole image).
    """

    def __init__(self, split: str = "train", crop: int = 64, pixel_mm=(0.6, 1.5), fov_mm=(200.0, 256.0),
                 skull_prob: float = 0.5, max_rotation_deg: float = 15.0, elastic_mm: float = 2.0,
                 bias: float = 0.3, intensity=(0.85, 1.2), contrasts=("template", "t1", "t2", "pd"),
                 positions: bool = False):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val' (Colin27 is held out), got {split!r}")
        if int(crop) < 0 or (0 < int(crop) < 8):
            raise ValueError(f"crop must be 0 (whole field of view) or >= 8 pixels, got {crop}")
        for name, rng in (("pixel_mm", pixel_mm), ("fov_mm", fov_mm), ("intensity", intensity)):
            if not (0 < rng[0] <= rng[1]):
                raise ValueError(f"{name} range must satisfy 0 < lo <= hi, got {rng}")
        bad = set(contrasts) - {"template", "t1", "t2", "pd"}
        if bad or not contrasts:
            raise ValueError(f"unknown contrasts {sorted(bad)}; choose from template, t1, t2, pd")
        self.split, self.crop = split, int(crop)
        self.pixel_mm = tuple(float(v) for v in pixel_mm)
        self.fov_mm = tuple(float(v) for v in fov_mm)
        self.skull_prob, self.max_rot = float(skull_prob), float(max_rotation_deg)
        self.elastic_mm, self.bias = float(elastic_mm), float(bias)
        self.intensity = tuple(float(v) for v in intensity)
        self.contrasts = tuple(contrasts)
        self.positions = bool(positions)

        t1v = load_volume("mni_t1")
        zs = [z for z in tissue_slice_indices(t1v) if mni_split_of(z) == split]
        self.slice_index = zs
        t1 = pad_to_square(axial_slices(t1v, zs), CANVAS)
        gm = np.clip(pad_to_square(axial_slices(load_volume("mni_gm"), zs), CANVAS), 0, 1)
        wm = np.clip(pad_to_square(axial_slices(load_volume("mni_wm"), zs), CANVAS), 0, 1)
        brain = (t1 > 0.02 * t1.max()).astype(np.float32)
        csf = brain * np.clip(1.0 - gm - wm, 0.0, 1.0)
        from scipy.ndimage import distance_transform_edt

        dist = np.stack([distance_transform_edt(b < 0.5) for b in brain]).astype(np.float32)
        self.t1 = torch.from_numpy(t1 / np.maximum(t1.reshape(len(t1), -1).max(1), 1e-12)[:, None, None])
        self.gm, self.wm, self.csf = (torch.from_numpy(a) for a in (gm, wm, csf))
        self.dist = torch.from_numpy(dist)  # mm outside the brain (0 inside)

    def __len__(self) -> int:
        return len(self.slice_index)

    def config(self) -> dict:
        """The settings, for the JSON exported with the weights."""
        return dict(source="MNI ICBM152 2009a (nilearn), 1 mm", split=self.split, n_slices=len(self),
                    crop=self.crop, pixel_mm=list(self.pixel_mm), fov_mm=list(self.fov_mm),
                    skull_prob=self.skull_prob, max_rotation_deg=self.max_rot, elastic_mm=self.elastic_mm,
                    bias=self.bias, intensity=list(self.intensity), contrasts=list(self.contrasts),
                    positions=self.positions)

    # ------------------------------------------------------------------ one slice at 1 mm
    def _contrast(self, i: int, g) -> tuple[torch.Tensor, dict]:
        kind = self.contrasts[int(torch.randint(len(self.contrasts), (1,), generator=g))]
        gm, wm, csf = self.gm[i], self.wm[i], self.csf[i]
        if kind == "template":
            gamma = float(_log_uniform(g, 0.75, 1.33))
            img = self.t1[i].clamp_min(0) ** gamma
            w = {"csf": 0.25 ** gamma, "gm": 0.6 ** gamma, "wm": 1.0}
        else:
            lo_hi = {"t1": ((0.08, 0.35), (0.5, 0.8), (1.0, 1.0)),
                     "t2": ((1.0, 1.0), (0.45, 0.75), (0.25, 0.5)),
                     "pd": ((0.75, 1.0), (0.75, 0.95), (0.55, 0.75))}[kind]
            a = [float(_uniform(g, lo, hi)) for lo, hi in lo_hi]
            w = {"csf": a[0], "gm": a[1], "wm": a[2]}
            img = w["csf"] * csf + w["gm"] * gm + w["wm"] * wm
        return img, {"kind": kind, **w}

    def _skull(self, img: torch.Tensor, i: int, w: dict, g) -> torch.Tensor:
        d = self.dist[i]
        mod = 1.0 + 0.3 * _smooth_field(g, CANVAS)  # thickness varies around the head
        t_csf = float(_uniform(g, 0.5, 3.0)) * mod
        t_bone = float(_uniform(g, 3.0, 8.0)) * mod
        t_scalp = float(_uniform(g, 3.0, 9.0)) * mod
        bone = float(_uniform(g, 0.0, 0.12))
        diploe = float(_uniform(g, 0.1, 0.6)) if float(torch.rand((), generator=g)) < 0.5 else bone
        scalp = float(_uniform(g, 0.4, 1.1))
        e1, e2, e3 = t_csf, t_csf + t_bone, t_csf + t_bone + t_scalp

        def step(edge):  # soft 1-pixel edges: 1 inside, 0 outside
            return (edge - d + 0.5).clamp(0, 1)

        mid = (d - t_csf - t_bone / 3).clamp(0, 1) * (t_csf + 2 * t_bone / 3 - d).clamp(0, 1)
        bone_val = bone + (diploe - bone) * mid
        out = step(e1) * w["csf"] + (step(e2) - step(e1)) * bone_val + (step(e3) - step(e2)) * scalp
        outside = (d > 0).to(img.dtype)
        return img * (1 - outside) + out * outside

    def slice_1mm(self, i: int, g: torch.Generator) -> torch.Tensor:
        """Slice ``i`` at 1 mm on the 256 x 256 canvas with random contrast, skull and bias field,
        normalised by the 95th percentile over a random field of view."""
        img, w = self._contrast(i, g)
        if float(torch.rand((), generator=g)) < self.skull_prob:
            img = self._skull(img, i, w, g)
        if self.bias > 0:
            img = img * torch.exp(float(_uniform(g, 0, self.bias)) * _smooth_field(g, CANVAS, 3))
        fov = int(round(min(float(_uniform(g, *self.fov_mm)), CANVAS)))
        o = (CANVAS - fov) // 2
        return img / intensity_scale(img[o:o + fov, o:o + fov].reshape(1, -1), 0.95, per_item=True)[0]

    # ------------------------------------------------------------------ crops
    def _warp(self, src: torch.Tensor, n: int, pix: torch.Tensor, centre: torch.Tensor, g):
        """Resample ``src`` (1 mm canvas) on an ``n x n`` grid of pixel size ``pix (2,)`` mm around ``centre``.

        Returns the image and ``(yy, xx)``: each output pixel's position in mm, in the output's axes,
        relative to the canvas centre (where the head is), for the patch position input."""
        ang = math.radians(float(_uniform(g, -self.max_rot, self.max_rot)))
        c, s = math.cos(ang), math.sin(ang)
        t = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2)
        yy, xx = torch.meshgrid(t * pix[0], t * pix[1], indexing="ij")
        flip = float(torch.rand((), generator=g)) < 0.5
        if flip:
            xx = -xx  # left-right flip
        px = c * xx - s * yy + centre[1]
        py = s * xx + c * yy + centre[0]
        # the same point seen from a grid centred on the canvas centre, rotated alike (inverse rotation)
        dx, dy = float(centre[1]) - (CANVAS - 1) / 2, float(centre[0]) - (CANVAS - 1) / 2
        pos_x, pos_y = xx + (c * dx + s * dy), yy + (-s * dx + c * dy)
        if flip:
            pos_x = -pos_x
        if self.elastic_mm > 0:
            px = px + self.elastic_mm * _smooth_field(g, n, 5)
            py = py + self.elastic_mm * _smooth_field(g, n, 5)
        grid = torch.stack([(px + 0.5) / CANVAS * 2 - 1, (py + 0.5) / CANVAS * 2 - 1], -1)[None]
        sigma = 0.45 * math.sqrt(max(float(pix.mean()) ** 2 - 1.0, 0.0))  # antialiasing for pixels > 1 mm
        src = _gaussian_blur(src[None, None], sigma)
        out = F.grid_sample(src, grid, mode="bicubic", padding_mode="zeros", align_corners=False)[0, 0]
        return out.clamp_min(0), (pos_y, pos_x)

    def __call__(self, batch_size: int, generator: torch.Generator):
        """``(B, 1, crop, crop)`` float32 crops (the trainer's ``batch_fn`` signature); with ``positions``
        a dict ``{"image": crops, "pos": coordinates (B, 2, crop, crop)}``."""
        g = generator
        if self.crop == 0 and batch_size != 1:
            raise ValueError("crop=0 (whole field of view) draws one slice at a time: use batch_size 1")
        out, coords = [], []
        for _ in range(int(batch_size)):
            i = int(torch.randint(len(self), (1,), generator=g))
            img = self.slice_1mm(i, g)
            p = float(_log_uniform(g, *self.pixel_mm))
            pix = p * _log_uniform(g, 0.95, 1.05, (2,))
            if self.crop:
                n = self.crop
                head = torch.nonzero(img > 0.05)
                lo, hi = head.min(0).values.float(), head.max(0).values.float()
                centre = lo + (hi - lo) * torch.rand(2, generator=g)
            else:
                n = max(8, int(round(float(_uniform(g, *self.fov_mm)) / p / 8)) * 8)
                centre = torch.full((2,), (CANVAS - 1) / 2)
            x, (py, px) = self._warp(img, n, pix, centre, g)
            x = x * float(_log_uniform(g, *self.intensity))
            out.append(x)
            if self.positions:
                # whole field of view: its own size; a crop: a field of view drawn around the head
                half = n * pix / 2 if not self.crop else float(_uniform(g, *self.fov_mm)) / 2 * torch.ones(2)
                coords.append(torch.stack([py / half[0], px / half[1]]))
        if self.positions:
            return {"image": torch.stack(out)[:, None], "pos": torch.stack(coords)}
        return torch.stack(out)[:, None]


def resample_slice(img, size: int, fov_px: int | None = None) -> torch.Tensor:
    """Square a native-resolution slice ``(H, W)`` (zero-pad to ``fov_px``, default the larger side) and
    resample it to ``size x size`` with the built-in antialiased bicubic kernel; maximum 1."""
    from .builtin import resize_magnitude

    sq = torch.as_tensor(pad_to_square(np.asarray(img, np.float32), fov_px))
    out = resize_magnitude(sq[None], size)[0].clamp_min(0) if sq.shape[-1] != size else sq
    return out / out.max().clamp_min(1e-12)
