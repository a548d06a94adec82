"""MRI physics: Fourier transforms, forward operators, sampling patterns, trajectories and coils."""
from .fft import fft2c, ifft2c
from .linop import LinearOperator, conjugate_gradient, cdot
from .cartesian import SingleCoilMRI, MultiCoilMRI, CoilImageMRI, as_mask4d

__all__ = [
    "fft2c",
    "ifft2c",
    "LinearOperator",
    "conjugate_gradient",
    "cdot",
    "SingleCoilMRI",
    "MultiCoilMRI",
    "CoilImageMRI",
    "as_mask4d",
]

from .masks import MASK_PATTERNS, acceleration_of, make_mask, seed_from_name

__all__ += ["MASK_PATTERNS", "acceleration_of", "make_mask", "seed_from_name"]
