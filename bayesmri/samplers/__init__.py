"""Posterior samplers that work with any score function (analytic prior or trained network).

See ``docs/samplers.md`` for the conventions (noise level per real component, real-component
scores, whitened k-space noise) and the equations each sampler implements.
"""
from .base import (
    ComplexSplitScore,
    Measurement,
    Sampler,
    SamplerResult,
    ScoreCounter,
    TweedieScore,
    geometric_sigmas,
    white_noise,
)
from .pula import PULA, gaussian_posterior_draw
from .score_mri import ScoreMRI, data_consistency
from .ula import ULA, AnnealedULA

__all__ = [
    "Measurement",
    "Sampler",
    "SamplerResult",
    "ScoreCounter",
    "TweedieScore",
    "ComplexSplitScore",
    "geometric_sigmas",
    "white_noise",
    "PULA",
    "gaussian_posterior_draw",
    "ULA",
    "AnnealedULA",
    "ScoreMRI",
    "data_consistency",
]
