"""Classical reconstructions for any :class:`bayesmri.physics.LinearOperator`.

- :func:`zero_filled` (``A^H y``), :func:`cg_sense` (least squares / Tikhonov by CG),
- :func:`tv_recon` (isotropic TV by ADMM), :func:`l1_wavelet_recon` (l1-wavelet by MFISTA),
- building blocks in :mod:`bayesmri.recon.prox`.
"""
from .basic import cg_sense, zero_filled
from .prox import (
    WaveletTransform,
    finite_difference,
    finite_difference_adjoint,
    group_soft_threshold,
    project_l2_ball,
    soft_threshold,
    tv_norm,
)
from .tv import tv_objective, tv_recon
from .wavelet import l1_wavelet_objective, l1_wavelet_recon

__all__ = [
    "zero_filled",
    "cg_sense",
    "tv_recon",
    "tv_objective",
    "l1_wavelet_recon",
    "l1_wavelet_objective",
    "WaveletTransform",
    "soft_threshold",
    "group_soft_threshold",
    "project_l2_ball",
    "finite_difference",
    "finite_difference_adjoint",
    "tv_norm",
]
