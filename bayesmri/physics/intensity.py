"""The one intensity-normalisation statistic of bayesmri: a quantile of an image's magnitude.

Every method and the data loaders scale images by :func:`intensity_scale` of a magnitude image computed
from the measured data only (never the ground truth); they differ only in which image and which quantile,
each the one its prior or network was trained with (``docs/normalisation.md``):

- data (simulator, fastMRI/ISMRMRD/BART inputs, ``recon``): 95th percentile of the zero-filled RSS (Wen sec. 3.2);
- diffusion samplers: 95th percentile of ``|A^+ y|`` (the score networks' training images: slice / 95th percentile);
- CNF: 95th percentile of the zero-filled RSS at the model's matrix; cINN: of the phase-removed adjoint image;
- PoGMDM-joint: 99.5th percentile of the zero-filled RSS (a robust maximum: its training images had a peak of 1).
"""
from __future__ import annotations

import math

import torch

__all__ = ["intensity_scale"]


def intensity_scale(magnitude: torch.Tensor, q: float = 0.95, *, per_item: bool = False):
    """The ``q`` quantile of ``magnitude`` (a real, non-negative image), the scale an image is divided by.

    ``per_item=False``: one float over all entries (computed in float64 on the CPU); ``per_item=True``: a tensor
    ``(B,)`` over all but the first axis, in ``magnitude``'s dtype and device. A scale that is not positive
    and finite (an all-zero measurement) is 1.
    """
    if not 0 < q < 1:
        raise ValueError(f"q must be in (0, 1), got {q}")
    m = magnitude.detach()
    if per_item:
        s = torch.quantile(m.reshape(m.shape[0], -1), q, dim=1)
        return torch.where(torch.isfinite(s) & (s > 0), s, torch.ones_like(s))
    s = float(torch.quantile(m.reshape(-1).double().cpu(), q))
    return s if s > 0 and math.isfinite(s) else 1.0
