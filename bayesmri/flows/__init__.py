"""Conditional normalising flows: base distributions, invertible layers, the UNet and the CNF (Wen et al.).

``import bayesmri.flows.cnf`` registers the ``cnf`` reconstruction method and model type.
"""
from .base import BaseDistribution, RadialGaussian, StandardGaussian, log_unit_sphere_area, make_base
from .layers import (ActNorm, AdditiveCoupling, AffineCoupling, FixedOrthogonal1x1, InvertibleModule,
                     InvertibleSequential, Squeeze, soft_clamp)
from .unet import UNet

__all__ = [
    "BaseDistribution", "StandardGaussian", "RadialGaussian", "log_unit_sphere_area", "make_base",
    "InvertibleModule", "ActNorm", "FixedOrthogonal1x1", "Squeeze", "AffineCoupling", "AdditiveCoupling",
    "InvertibleSequential", "soft_clamp", "UNet",
]
