"""Priors: analytic ones with exact scores (this package) and learned ones (score networks)."""
from .analytic import (
    DenseOperator,
    GaussianMixturePrior,
    GaussianPrior,
    StationaryGaussianPrior,
    gaussian_mixture_image_prior,
)

__all__ = ["DenseOperator", "GaussianMixturePrior", "GaussianPrior", "StationaryGaussianPrior",
           "gaussian_mixture_image_prior"]
