"""28 x 28 handwritten digits for the compressed-sensing experiment of Denker et al. (sec. 4.1).

Source: scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten Digits" set
(1797 images of 8 x 8, 16 grey levels; ships inside the wheel, no download, CC BY 4.0). Each image is
resampled to 20 x 20 (bicubic, antialiased) and zero-padded to 28 x 28 so that, as in MNIST, the digit
fills a centred 20 x 20 box. Values are scaled to ``[0, 1]``.

Splits (fixed, seed-independent): a permutation with seed 0 of all 1797 images; the first 1497 are
``"train"``, the last 300 ``"test"``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["load_digits28", "digits_available", "N_TEST"]

N_TEST = 300


def digits_available() -> bool:
    """True when scikit-learn (which ships the digits) can be imported."""
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


def load_digits28(split: str = "train", return_labels: bool = False):
    """Digits as ``(N, 28, 28)`` float32 in ``[0, 1]`` (and labels ``(N,)`` int64 if asked).

    Raises
    ------
    ValueError
        Unknown split.
    ImportError
        scikit-learn is missing (``pip install scikit-learn``).
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data set needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    img = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    img = F.interpolate(img, size=(20, 20), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    img = F.pad(img, (4, 4, 4, 4))[:, 0]
    lab = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(img.shape[0]))
    img, lab = img[perm], lab[perm]
    sel = slice(None) if split == "all" else (slice(None, -N_TEST) if split == "train" else slice(-N_TEST, None))
    img, lab = img[sel].contiguous(), lab[sel].contiguous()
    return (img, lab) if return_labels else img
