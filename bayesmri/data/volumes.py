"""Source brain volumes at their native resolution (1 mm; macaque 0.5 mm), read from installed packages.

The built-in dataset (:mod:`bayesmri.data.builtin`) ships 128 x 128 slices, about 1.8 mm per pixel.
Priors for real scans (256-384 px at 0.5-1 mm) need the anatomy at its native resolution; this module
reads the same source volumes the built-in dataset was derived from, from the packages that install
them (nothing is downloaded):

==============  ================================================================  ==========================
name            file                                                              package
==============  ================================================================  ==========================
``mni_t1``      ``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``              nilearn (PyPI)
``mni_gm``      ``mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz``              nilearn
``mni_wm``      ``mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz``              nilearn
``colin``       ``ch2bet.nii.gz`` (Colin27, skull-stripped): the **test** brain   Debian ``mricron-data``
``colin_head``  ``ch2.nii.gz`` (Colin27 with skull and scalp): out of distribution  Debian ``mricron-data``
``macaque``     ``inia19-t1-brain.nii.gz`` (0.5 mm): out of distribution          Debian ``mricron-data``
==============  ================================================================  ==========================

Provenance and licences: ``bayesmri/data/builtin/README.md``. Slices follow the built-in convention:
axial (third axis), anterior up (``flipud(vol[:, :, z].T)``), the MNI train/val split by ``z % 20``
(:func:`mni_split_of`), slices with less than 20 % of the largest axial tissue area skipped.
"""
from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["VOLUMES", "volume_path", "load_volume", "axial_slices", "mni_split_of", "tissue_slice_indices",
           "native_slices", "pad_to_square"]

MRICRON_DIR = os.environ.get("BAYESMRI_MRICRON_DIR", "/usr/share/mricron/templates")

# name -> (package, file name, voxel size in mm)
VOLUMES = {
    "mni_t1": ("nilearn", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", 1.0),
    "mni_gm": ("nilearn", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", 1.0),
    "mni_wm": ("nilearn", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", 1.0),
    "colin": ("mricron-data", "ch2bet.nii.gz", 1.0),
    "colin_head": ("mricron-data", "ch2.nii.gz", 1.0),
    "macaque": ("mricron-data", "inia19-t1-brain.nii.gz", 0.5),
}
MIN_AREA_FRACTION = 0.20


def volume_path(name: str) -> str:
    """Path of the installed source volume ``name`` (see :data:`VOLUMES`); a clear error if missing."""
    if name not in VOLUMES:
        raise ValueError(f"unknown volume {name!r}; choose one of {sorted(VOLUMES)}")
    package, fname, _ = VOLUMES[name]
    if package == "nilearn":
        try:
            import nilearn
        except ImportError as exc:
            raise FileNotFoundError(
                f"volume {name!r} comes with nilearn, which is not installed (pip install nilearn)") from exc
        path = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data", fname)
    else:
        path = os.path.join(MRICRON_DIR, fname)
    if not os.path.exists(path):
        hint = "pip install nilearn" if package == "nilearn" else "apt-get install mricron-data"
        raise FileNotFoundError(f"volume {name!r} not found at {path} ({hint})")
    return path


@functools.lru_cache(maxsize=8)
def load_volume(name: str) -> np.ndarray:
    """The volume as float32 ``(X, Y, Z)`` in its native voxel size (cached; treat as read-only)."""
    import nibabel as nib

    vol = np.asarray(nib.load(volume_path(name)).get_fdata(dtype=np.float32))
    if name in ("mni_gm", "mni_wm") and vol.max() > 1.5:
        vol = vol / 255.0  # nilearn stores the probability maps as 0..255
    vol.setflags(write=False)
    return vol


def axial_slices(vol: np.ndarray, zs) -> np.ndarray:
    """Axial slices ``(N, Y, X)``, anterior up: ``flipud(vol[:, :, z].T)``."""
    return np.stack([np.flipud(vol[:, :, int(z)].T) for z in zs]).astype(np.float32)


def tissue_slice_indices(vol: np.ndarray) -> list[int]:
    """Axial indices whose tissue area (``> 5 %`` of the maximum) is at least 20 % of the largest."""
    area = (vol > 0.05 * float(vol.max())).sum(axis=(0, 1))
    return [int(z) for z in np.nonzero(area >= MIN_AREA_FRACTION * area.max())[0]]


def mni_split_of(z: int) -> str | None:
    """The built-in dataset's MNI split rule: ``z % 20`` in 8..11 -> val, {6, 7, 12, 13} guard, else train."""
    r = int(z) % 20
    if 8 <= r <= 11:
        return "val"
    if r in (6, 7, 12, 13):
        return None
    return "train"


def pad_to_square(img: np.ndarray, size: int | None = None) -> np.ndarray:
    """Zero-pad (or centre-crop) the last two axes to ``size x size`` (default: the larger side)."""
    h, w = img.shape[-2:]
    n = int(size or max(h, w))
    out = np.zeros(img.shape[:-2] + (n, n), np.float32)
    sh, sw = min(h, n), min(w, n)
    ih, iw = (h - sh) // 2, (w - sw) // 2
    oh, ow = (n - sh) // 2, (n - sw) // 2
    out[..., oh:oh + sh, ow:ow + sw] = img[..., ih:ih + sh, iw:iw + sw]
    return out


def native_slices(split: str, volume: str | None = None) -> tuple[np.ndarray, float]:
    """Native-resolution axial magnitude slices of a split, each with maximum 1.

    Parameters
    ----------
    split : {"train", "val", "test", "ood"}
        ``train``/``val``: MNI T1 slices of that split; ``test``: Colin27 (``colin``); ``ood``: ``volume``
        (``colin_head`` by default, or ``macaque``).
    volume : str, optional
        Override the volume (any name of :data:`VOLUMES`).

    Returns
    -------
    slices : ndarray, float32 ``(N, Y, X)`` (not padded)
    voxel_mm : float
    """
    if volume is None:
        volume = {"train": "mni_t1", "val": "mni_t1", "test": "colin", "ood": "colin_head"}.get(split)
        if volume is None:
            raise ValueError(f"unknown split {split!r}; choose train, val, test or ood")
    vol = load_volume(volume)
    zs = tissue_slice_indices(vol)
    if volume.startswith("mni") and split in ("train", "val"):
        zs = [z for z in zs if mni_split_of(z) == split]
    sl = axial_slices(vol, zs)
    sl = sl / np.maximum(sl.reshape(len(sl), -1).max(1), 1e-12)[:, None, None]
    return sl, VOLUMES[volume][2]
