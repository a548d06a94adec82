"""MRI physics: Fourier transforms, forward operators, sampling patterns, trajectories and coils."""
from .fft import fft2c, ifft2c
from .linop import (Adjoint, DenseOperator, Diagonal, Identity, LinearOperator, Normal, Product, Scaled, Sum,
                    cdot, conjugate_gradient)
from .cartesian import SingleCoilMRI, MultiCoilMRI, CoilImageMRI, as_mask4d

__all__ = [
    "fft2c",
    "ifft2c",
    "LinearOperator",
    "conjugate_gradient",
    "cdot",
    "Identity",
    "Diagonal",
    "DenseOperator",
    "Adjoint",
    "Normal",
    "Product",
    "Sum",
    "Scaled",
    "SingleCoilMRI",
    "MultiCoilMRI",
    "CoilImageMRI",
    "as_mask4d",
]

from .masks import MASK_PATTERNS, acceleration_of, make_mask, seed_from_name

__all__ += ["MASK_PATTERNS", "acceleration_of", "make_mask", "seed_from_name"]

from .coils import (
    birdcage_maps,
    coil_combine,
    coil_energy_profile,
    noise_covariance,
    normalize_maps,
    prewhiten,
    rss,
    svd_coil_compression,
    whitening_matrix,
)
from .espirit import calibration_region, espirit_maps

__all__ += [
    "birdcage_maps",
    "coil_combine",
    "coil_energy_profile",
    "noise_covariance",
    "normalize_maps",
    "prewhiten",
    "rss",
    "svd_coil_compression",
    "whitening_matrix",
    "calibration_region",
    "espirit_maps",
]

from .nufft import NonCartesianMRI
from .trajectories import density_compensation, radial_trajectory, spiral_trajectory

__all__ += ["NonCartesianMRI", "density_compensation", "radial_trajectory", "spiral_trajectory"]

from .phase import PhaseModulated, RealInput, fit_smooth_phase, legendre_basis, lowres_phase, remove_lowres_phase

__all__ += ["PhaseModulated", "RealInput", "fit_smooth_phase", "legendre_basis", "lowres_phase", "remove_lowres_phase"]

from .coil_fourier import CartesianCoilFourier, CoilFourier, NonCartesianCoilFourier

__all__ += ["CartesianCoilFourier", "CoilFourier", "NonCartesianCoilFourier"]
