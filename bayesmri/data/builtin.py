"""The built-in brain dataset: axial magnitude slices shipped inside the package.

The slices are derived by ``scripts/build_builtin_dataset.py`` from freely redistributable templates
(provenance and licences in ``bayesmri/data/builtin/README.md``):

===========  =========================================================================================
split        content
===========  =========================================================================================
``train``    MNI ICBM152 2009a (nilearn), T1 and a synthetic T2-like contrast, axial slices whose
             ``z % 20`` is in ``0..5`` or ``14..19``
``val``      the same volumes, held-out axial slices ``z % 20 in 8..11``; slices with
             ``z % 20 in {6, 7, 12, 13}`` are a guard band used by neither split, so every ``val``
             slice is at least 3 mm from every ``train`` slice
``test``     Colin27 skull-stripped (``ch2bet``, Holmes et al. 1998): a different brain, T1
``ood``      Colin27 with skull (``ch2``) and the macaque INIA19 T1 brain template
===========  =========================================================================================

Each slice is padded to a square field of view, resampled with antialiasing to ``128 x 128`` and
normalised so that its maximum magnitude is 1. Stored as float16, one ``<split>.npz`` per split with
per-slice provenance (``source`` file name, ``slice_index`` along the volume's third axis,
``contrast``).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "SPLITS",
    "DEFAULT_SIZE",
    "DATA_DIR",
    "list_splits",
    "load_slices",
    "slice_info",
    "num_slices",
    "SliceInfo",
    "resize_magnitude",
]

SPLITS = ("train", "val", "test", "ood")
DEFAULT_SIZE = 128
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")


@dataclass(frozen=True)
class SliceInfo:
    """Provenance of one stored slice."""

    split: str
    index: int  # position within the split
    source: str  # file name of the source volume
    slice_index: int  # index along the source volume's third (axial) axis
    contrast: str  # "T1" or "T2-like"


def list_splits() -> tuple[str, ...]:
    """Names of the built-in splits: ``("train", "val", "test", "ood")``."""
    return SPLITS


def _check_split(split) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; built-in splits are {', '.join(SPLITS)}")
    return split


@functools.lru_cache(maxsize=None)
def _load_npz(split: str) -> dict:
    path = os.path.join(DATA_DIR, f"{split}.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"built-in split file {path} is missing; rebuild it with `python scripts/build_builtin_dataset.py`"
        )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def resize_magnitude(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resample real images ``(N, H, W)`` to ``size`` with antialiasing.

    Downsampling uses an antialiased bicubic kernel (``F.interpolate(..., antialias=True)``, which
    widens the kernel by the scale factor, i.e. a proper low-pass before decimation); upsampling is
    plain bicubic. Negative overshoot is clipped to 0.
    """
    if isinstance(size, int):
        size = (size, size)
    if tuple(img.shape[-2:]) == tuple(size):
        return img.clone()
    out = F.interpolate(img[:, None].float(), size=size, mode="bicubic", align_corners=False, antialias=True)
    return out[:, 0].clamp_min(0.0)


def _normalise_max(x: torch.Tensor) -> torch.Tensor:
    m = x.flatten(1).amax(dim=1).clamp_min(1e-12)
    return x / m[:, None, None]


def _select(split: str, contrast: str | None) -> np.ndarray:
    d = _load_npz(split)
    idx = np.arange(d["images"].shape[0])
    if contrast is not None:
        contrasts = sorted(set(d["contrast"].tolist()))
        if contrast not in contrasts:
            raise ValueError(f"split {split!r} has no contrast {contrast!r}; available: {', '.join(contrasts)}")
        idx = idx[d["contrast"] == contrast]
    return idx


def load_slices(split: str = "train", size: int | tuple[int, int] = DEFAULT_SIZE, contrast: str | None = None,
                indices=None) -> torch.Tensor:
    """Load built-in magnitude slices.

    Parameters
    ----------
    split : {"train", "val", "test", "ood"}
    size : int or (H, W)
        Output size; the stored resolution is 128. Other sizes are resampled with
        :func:`resize_magnitude` (antialiased) and re-normalised to maximum 1 per slice.
    contrast : {"T1", "T2-like"} or None
        Keep only one contrast (``None``: all slices of the split, in stored order).
    indices : sequence of int, optional
        Positions within the (contrast-filtered) split to return.

    Returns
    -------
    Tensor ``(N, H, W)`` float32, real, non-negative, ``max = 1`` per slice.

    Raises
    ------
    ValueError
        Unknown split or contrast, out-of-range indices, invalid size.
    """
    _check_split(split)
    if isinstance(size, int):
        size = (size, size)
    if len(size) != 2 or any((not isinstance(s, int)) or s < 8 for s in size):
        raise ValueError(f"size must be an int >= 8 or a pair of such ints, got {size!r}")
    sel = _select(split, contrast)
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < -len(sel) or indices.max() >= len(sel)):
            raise ValueError(f"indices out of range for split {split!r} with {len(sel)} slices")
        sel = sel[indices]
    imgs = torch.from_numpy(_load_npz(split)["images"][sel].astype(np.float32))
    if tuple(imgs.shape[-2:]) != tuple(size):
        imgs = _normalise_max(resize_magnitude(imgs, size))
    return imgs


def slice_info(split: str, contrast: str | None = None) -> list[SliceInfo]:
    """Provenance of every slice returned by ``load_slices(split, contrast=contrast)``, in order."""
    _check_split(split)
    d = _load_npz(split)
    sel = _select(split, contrast)
    return [
        SliceInfo(split, int(i), str(d["source"][j]), int(d["slice_index"][j]), str(d["contrast"][j]))
        for i, j in enumerate(sel)
    ]


def num_slices(split: str, contrast: str | None = None) -> int:
    """Number of slices in a split (optionally of one contrast)."""
    _check_split(split)
    return int(len(_select(split, contrast)))
