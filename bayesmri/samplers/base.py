"""Sampler interface shared by every posterior sampler in bayesmri.

Conventions (one for the whole library; see ``docs/samplers.md``)
-----------------------------------------------------------------
* **Noise level of the prior.** ``sigma`` is the standard deviation of the diffusion noise *per real
  component*: ``p_sigma = p * N(0, sigma^2 I)`` on ``R^n``, and on ``C^n`` the real and imaginary parts
  each get variance ``sigma^2`` (so a complex pixel has ``E|n|^2 = 2 sigma^2``). This is the noise a
  denoiser sees when it is trained on ``[re, im]`` channels with ``x + sigma z``, ``z ~ N(0, I)``
  (GUIDE sec. 4, training loss eq. 17 of Chung & Ye), so Tweedie reads ``s = (D(x) - x) / sigma^2``.
* **Score.** ``prior.score(x, sigma)`` returns the gradient of ``log p_sigma`` with respect to the real
  components, packed as a tensor like ``x``: for complex ``x`` it is ``d/dRe + i d/dIm`` (twice the
  Wirtinger derivative ``d/d conj(x)``).
* **Measurement noise.** ``Measurement.sigma`` is the k-space noise standard deviation: complex data
  have ``E|e|^2 = sigma^2`` per sample (``sigma = 1`` after prewhitening, as BART assumes), real data
  have variance ``sigma^2`` per sample. The log-likelihood gradient (real components) is therefore
  ``c / sigma^2 * A^H (y - A x)`` with ``c = 2`` for complex and ``c = 1`` for real data.
* **Langevin noise.** With these conventions every Langevin step is the real-space Euler-Maruyama
  step ``x + eps * g + sqrt(2 eps) * xi`` with ``xi`` white with unit variance *per real component*
  (complex ``E|xi|^2 = 2``), see :func:`white_noise`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .._validate import as_generator, check_finite
from ..metrics import posterior_mean_std
from ..physics.linop import LinearOperator

__all__ = [
    "Measurement",
    "SamplerResult",
    "Sampler",
    "ScoreCounter",
    "TweedieScore",
    "ComplexSplitScore",
    "white_noise",
    "geometric_sigmas",
    "likelihood_constant",
    "ChainLoop",
]


def white_noise(shape, dtype: torch.dtype, device, generator=None) -> torch.Tensor:
    """White Gaussian noise with unit variance per real component.

    Real dtype: ``N(0, 1)`` entries. Complex dtype: ``xi = a + i b`` with ``a, b ~ N(0, 1)``, so
    ``E|xi|^2 = 2`` (a *standard* complex Gaussian ``CN(0, 1)`` is ``xi / sqrt(2)``).
    """
    if dtype.is_complex:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        z = torch.randn((*shape, 2), generator=generator, dtype=real, device=device)
        return torch.view_as_complex(z)
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> torch.Tensor:
    """``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` at ``t = i / n`` for ``i = n-1 .. 0``.

    Chung & Ye eq. 19 / BART's exponential schedule: the sampler is initialised at ``sigma(1) =
    sigma_max`` and then visits ``n`` levels ending at ``sigma_min``. Returns a float64 tensor ``(n,)``
    in decreasing order.
    """
    if n < 1:
        raise ValueError(f"number of noise levels must be >= 1, got {n}")
    if not (sigma_max > 0 and sigma_min > 0):
        raise ValueError(f"sigma_max and sigma_min must be positive, got {sigma_max}, {sigma_min}")
    t = torch.arange(n - 1, -1, -1, dtype=torch.float64) / n
    return sigma_min * (sigma_max / sigma_min) ** t


def likelihood_constant(dtype: torch.dtype) -> float:
    """``c`` in ``grad log L = c / sigma^2 A^H (y - A x)``: 2 for complex data, 1 for real data."""
    return 2.0 if dtype.is_complex else 1.0


@dataclass
class Measurement:
    """A linear measurement ``y = A x + e``.

    Parameters
    ----------
    y : Tensor ``(1 | B, *op.range_shape)``
        Measured data (k-space). Batch 1 is broadcast over the P chains.
    op : LinearOperator
        Forward model (``SingleCoilMRI``, ``MultiCoilMRI``, ``NonCartesianMRI``, ``DenseOperator``...).
    sigma : float
        Noise standard deviation: ``E|e|^2 = sigma^2`` per complex sample (1 after prewhitening), or
        the per-sample std for real data. Must be positive.
    """

    y: torch.Tensor
    op: LinearOperator
    sigma: float = 1.0

    def __post_init__(self):
        if not isinstance(self.y, torch.Tensor):
            raise TypeError(f"Measurement.y must be a torch.Tensor, got {type(self.y).__name__}")
        if not isinstance(self.op, LinearOperator):
            raise TypeError(f"Measurement.op must be a LinearOperator, got {type(self.op).__name__}")
        check_finite(self.y, "Measurement.y")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"Measurement.sigma (noise std) must be a positive number, got {self.sigma!r}")
        rs = tuple(self.op.range_shape)
        if rs and tuple(self.y.shape[-len(rs):]) != rs:
            raise ValueError(
                f"Measurement.y has shape {tuple(self.y.shape)}, expected (B, {', '.join(map(str, rs))}) "
                "to match the operator's range"
            )

    @property
    def is_complex(self) -> bool:
        return self.y.is_complex()

    @property
    def c(self) -> float:
        return likelihood_constant(self.y.dtype)

    def AHy(self) -> torch.Tensor:
        """``A^H y`` (batch of the data)."""
        return self.op.A_adjoint(self.y)

    def loglik_grad(self, x: torch.Tensor, AHy: torch.Tensor | None = None, normal_x=None) -> torch.Tensor:
        """``grad_x log p(y | x) = c / sigma^2 A^H (y - A x)`` (real-component gradient)."""
        AHy = self.AHy() if AHy is None else AHy
        nx = self.op.normal(x) if normal_x is None else normal_x
        return (self.c / self.sigma**2) * (AHy - nx)


@dataclass
class SamplerResult:
    """What a sampler (and every registered method) returns.

    Shapes: ``samples (P, *image_shape)``; ``mean``, ``std`` and ``std_magnitude`` ``image_shape``. A
    registered method run on one slice has ``image_shape = (H, W)`` (``bayesmri.methods``), so
    ``samples (P, H, W)`` and ``mean (H, W)``; a sampler called on a batch keeps the batch axes in
    ``image_shape`` (e.g. ``(P, B, H, W)``).

    The posterior summaries are computed in one place, :meth:`from_samples` (``docs/uncertainty.md``):

    * ``mean = (1/P) sum_p x_p`` (Wen eq. 19), complex for complex samples;
    * ``std = sqrt( sum_p |x_p - mean|^2 / (P - 1) )``: the posterior std of the *complex* image (the
      real and imaginary variances add; for real samples the usual std), so that ``std^2`` is the
      expected squared complex error of one sample about the posterior mean;
    * ``std_magnitude = std_p(|x_p|)`` with the same ``P - 1`` correction: the spread of the magnitude
      image that a radiologist sees, smaller than ``std`` where the phase uncertainty dominates.

    Attributes
    ----------
    samples : Tensor ``(P, *image_shape)``
    mean : Tensor ``image_shape``
        Posterior mean (or a method's point estimate, e.g. PoGMDM's MAP refinement, when it says so).
    std : Tensor ``image_shape`` (real) or None
        Complex posterior std (above); ``None`` for deterministic methods; zeros for ``P = 1``.
    nfe : int
        Number of score (network) evaluations per chain, i.e. calls of ``prior.score`` on the batch.
    wall_time, score_time : float
        Seconds for the whole run and spent inside the score.
    diagnostics : dict
        Sampler-specific extras (noise levels, CG iterations, trajectory, ``interrupted``...).
    std_magnitude : Tensor ``image_shape`` (real) or None
        Std of the magnitude ``|x_p|`` (above).
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor | None
    nfe: int
    wall_time: float
    score_time: float = 0.0
    diagnostics: dict = field(default_factory=dict)
    std_magnitude: torch.Tensor | None = None

    @classmethod
    def from_samples(cls, samples: torch.Tensor, *, nfe: int = 0, wall_time: float = 0.0,
                     **kw) -> "SamplerResult":
        """Result with ``mean``, ``std`` and ``std_magnitude`` computed from ``samples (P, ...)``.

        The one definition of the posterior std in bayesmri (class docstring, ``docs/uncertainty.md``);
        the formula is :func:`bayesmri.metrics.posterior_mean_std` (complex deviation, ``P - 1``
        correction, zeros for ``P = 1``). Other keywords are the dataclass fields.
        """
        if not isinstance(samples, torch.Tensor) or samples.ndim < 1 or samples.shape[0] < 1:
            raise ValueError("samples must be a tensor (P, ...) with P >= 1")
        mean, std = posterior_mean_std(samples)
        _, std_mag = posterior_mean_std(samples.abs())
        return cls(samples=samples, mean=mean, std=std, nfe=nfe, wall_time=wall_time,
                   std_magnitude=std_mag, **kw)

    @property
    def trajectory(self):
        return self.diagnostics.get("trajectory")


class ScoreCounter:
    """Wrap a prior's ``score`` to count evaluations (NFE) and time spent in it."""

    def __init__(self, prior):
        if not hasattr(prior, "score") or not callable(prior.score):
            raise TypeError(
                f"prior must expose score(x, sigma) -> tensor like x, got {type(prior).__name__}; "
                "wrap a denoiser with TweedieScore"
            )
        self.prior = prior
        self.nfe = 0
        self.time = 0.0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        sync = x.is_cuda
        if sync:
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            s = self.prior.score(x, float(sigma))
        if sync:
            torch.cuda.synchronize(x.device)
        self.time += time.perf_counter() - t0
        self.nfe += 1
        if s.shape != x.shape:
            raise ValueError(f"prior.score returned shape {tuple(s.shape)} for input {tuple(x.shape)}")
        return s


class TweedieScore:
    """Turn a denoiser ``D(x, sigma)`` into a score by Tweedie: ``s = (D(x, sigma) - x) / sigma^2``.

    ``sigma`` is the per-real-component noise std the denoiser was trained with (GUIDE sec. 4).
    """

    def __init__(self, denoiser: Callable[[torch.Tensor, float], torch.Tensor]):
        if not callable(denoiser):
            raise TypeError("denoiser must be callable as denoiser(x, sigma)")
        self.denoiser = denoiser
        self.nfe = 0

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        return (self.denoiser(x, sigma) - x) / sigma**2


class ComplexSplitScore:
    """Apply a real-valued prior to the real and imaginary parts separately (Chung & Ye, Alg. 3).

    The complex image ``x = a + i b`` gets the score ``s(a, sigma) + i s(b, sigma)``; ``a`` and ``b``
    are stacked along the batch axis so that **one** call of the inner score (on a batch of ``2P``)
    serves both parts: the sampler counts it as one NFE, and ``inner_calls`` counts the inner calls.
    Real input is passed through unchanged.
    """

    def __init__(self, prior):
        self.prior = prior
        self.inner_calls = 0

    def score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.inner_calls += 1
        if not x.is_complex():
            return self.prior.score(x, sigma)
        n = x.shape[0]
        s = self.prior.score(torch.cat([x.real, x.imag], 0).contiguous(), sigma)
        return torch.complex(s[:n], s[n:])


class _Stop(Exception):
    pass


class ChainLoop:
    """The loop every sampler shares: a progress bar over the levels, Ctrl-C and ``max_time`` stops that keep
    the chains as they are, the level count, an optional trajectory and the wall time.

    ::

        with ChainLoop("name", progress, max_time, total=n_levels) as loop:
            for i in range(n_levels):
                x = ...
                loop.step(x, sigma)        # raises a private stop once max_time is spent
        loop.x, loop.interrupted, loop.levels_done, loop.wall_time

    A ``KeyboardInterrupt`` or the time budget ends the ``with`` block without an exception
    (``interrupted`` is then True); any other exception propagates.
    """

    def __init__(self, name: str, progress: bool = False, max_time: float | None = None, *,
                 total: int | None = None, trajectory_every: int = 0):
        self.name, self.progress, self.max_time, self.traj_every = name, bool(progress), max_time, int(trajectory_every)
        self.x = None
        self.levels_done = 0
        self.trajectory: list = []
        self.interrupted = False
        self.wall_time = 0.0
        self.pbar = None
        self._total = total

    def __enter__(self) -> "ChainLoop":
        self.t0 = time.perf_counter()
        if self._total is not None:
            self.levels(self._total)
        return self

    def levels(self, n: int) -> range:
        """``range(n)``, opening the progress bar (of ``n`` steps) when progress is on."""
        if self.progress and self.pbar is None:
            from tqdm.auto import tqdm

            self.pbar = tqdm(total=n, desc=self.name, leave=False)
        return range(n)

    def step(self, x: torch.Tensor | None = None, sigma: float | None = None) -> None:
        """Record the chains ``x`` after one level; stop once the time budget is spent."""
        if x is not None:
            self.x = x
        self.levels_done += 1
        if self.pbar is not None:
            self.pbar.update(1)
            if sigma is not None:
                self.pbar.set_postfix(sigma=f"{sigma:.3g}", refresh=False)
        if self.traj_every and self.levels_done % self.traj_every == 0:
            self.trajectory.append(x.detach().clone())
        if self.max_time is not None and time.perf_counter() - self.t0 > self.max_time:
            raise _Stop

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.pbar is not None:
            self.pbar.close()
        self.wall_time = time.perf_counter() - self.t0
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, _Stop)):
            self.interrupted = True
            return True
        return False


class Sampler:
    """Base class: subclasses implement :meth:`_run`; :meth:`sample` handles the common parts.

    ``sample`` validates inputs, seeds the randomness, counts NFE and score time, shows a tqdm progress
    bar, and stops early on ``KeyboardInterrupt`` or after ``max_time`` seconds, returning the chains
    as they are (``diagnostics["interrupted"] = True``).
    """

    name = "sampler"
    #: Replace the final chains by their Tweedie estimate ``x + sigma^2 s(x, sigma)`` at the last level
    #: (one more NFE): the last level's target is the posterior under the prior *smoothed* by
    #: ``N(0, sigma_min^2)``; Tweedie removes that residual noise (Song et al. 2021's ``denoise=True``;
    #: Chung & Ye return the noise-free predictor mean). Off by default (the samplers as published).
    final_denoise: bool = False

    def sample(
        self,
        measurement: Measurement,
        prior,
        n_samples: int = 1,
        generator=None,
        progress: bool = False,
        x_init: torch.Tensor | None = None,
        max_time: float | None = None,
        trajectory_every: int = 0,
    ) -> SamplerResult:
        """Draw ``n_samples`` chains at once (a batch of ``P`` images) and return a :class:`SamplerResult`.

        Parameters
        ----------
        measurement : Measurement
        prior : object with ``score(x, sigma)`` (e.g. ``GaussianMixturePrior``, ``TweedieScore``)
        n_samples : int
            Number of chains ``P``.
        generator : torch.Generator or int, optional
            Seed; the same seed gives the same samples.
        progress : bool
            Show a tqdm bar over noise levels.
        x_init : Tensor, optional
            Initial reconstruction for samplers that accept one (CCDF start of Score-MRI).
        max_time : float, optional
            Stop after this many seconds and keep what has been computed.
        trajectory_every : int
            If > 0, store the chains every this many noise levels in ``diagnostics["trajectory"]``.
        """
        if not isinstance(measurement, Measurement):
            raise TypeError(f"measurement must be a Measurement, got {type(measurement).__name__}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
        if trajectory_every < 0:
            raise ValueError("trajectory_every must be >= 0")
        g = as_generator(generator, device=measurement.y.device)
        score = ScoreCounter(prior)
        diag: dict = {}
        with ChainLoop(self.name, progress, max_time, trajectory_every=trajectory_every) as loop:
            self._loop = loop
            self._run(measurement, score, n_samples, g, progress, x_init, diag)
        x = loop.x
        if x is None:
            raise RuntimeError("sampler was interrupted before its first sample existed")
        out = self._output(x, diag)
        diag["interrupted"] = loop.interrupted
        diag["levels_done"] = loop.levels_done
        if trajectory_every:
            diag["trajectory"] = loop.trajectory
        return SamplerResult.from_samples(out, nfe=score.nfe, wall_time=loop.wall_time, score_time=score.time,
                                          diagnostics=diag)

    # --- helpers for subclasses ------------------------------------------------------------
    def _output(self, x, diag):
        return x

    def _levels(self, n: int, progress: bool):
        return self._loop.levels(n)

    def _level_done(self, x: torch.Tensor, sigma: float | None = None):
        """Record the state after one noise level; stop if the time budget is spent."""
        self._loop.step(x, sigma)

    def _denoise_last(self, x: torch.Tensor, score_fn, sigma: float, diag: dict) -> torch.Tensor:
        """Tweedie step of :attr:`final_denoise` (a no-op when it is off)."""
        if not self.final_denoise:
            return x
        x = x + float(sigma) ** 2 * score_fn(x, float(sigma))
        self._loop.x = x
        diag["final_denoise_sigma"] = float(sigma)
        return x

    def _run(self, measurement, score, n, g, progress, x_init, diag):  # pragma: no cover - abstract
        raise NotImplementedError


def batch_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-chain l2 norm, shaped to broadcast against ``x``."""
    n = torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1)
    return n.reshape((-1,) + (1,) * (x.ndim - 1))
