"""Linear operator base class and a batched complex conjugate-gradient solver.

Every forward model in bayesmri derives from :class:`LinearOperator` and uses deepinv's names:
``A``, ``A_adjoint``, ``normal`` (``A^H A``), ``A_dagger`` (least squares by CG, optional Tikhonov
term), ``compute_norm`` (``||A||^2`` by power iteration) and ``adjointness_test``.

Operators broadcast over the leading batch axis: an operator built with coil maps of batch size 1 can
be applied to ``P`` chains at once, which is what the samplers rely on.
"""
from __future__ import annotations

from typing import Callable

import torch

from .._validate import as_generator

__all__ = ["LinearOperator", "conjugate_gradient", "cdot", "rdot", "sqnorm"]


def cdot(a: torch.Tensor, b: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    """Batched inner product ``<a, b> = sum conj(a) b`` over all but the first ``batch_dims`` axes."""
    prod = torch.conj(a) * b
    if prod.ndim <= batch_dims:
        return prod
    return prod.flatten(batch_dims).sum(-1)


def _real_view(a: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(a.resolve_conj()) if a.is_complex() else a


def rdot(a: torch.Tensor, b: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    """``Re <a, b>`` over all but the first ``batch_dims`` axes (real dtype).

    Computed on the real views (one multiply and one sum of real numbers): ~2x faster than
    ``cdot(a, b).real`` on CPU, which forms the complex product first.
    """
    ra, rb = _real_view(a), _real_view(b)
    return (ra * rb).flatten(batch_dims).sum(-1)


def sqnorm(a: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    """``||a||^2`` over all but the first ``batch_dims`` axes (real dtype).

    On CPU ``torch.linalg.vector_norm`` of a complex tensor is ~30x slower than this (it is not
    vectorised for complex inputs; 1.9 ms against 0.07 ms for one 320x320 image).
    """
    r = _real_view(a)
    return (r * r).flatten(batch_dims).sum(-1)


def _bshape(v: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (ref.ndim - v.ndim))


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-6,
    r0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Solve ``M x = rhs`` for Hermitian positive (semi-)definite ``M`` by CG, batched over axis 0.

    Parameters
    ----------
    normal : callable
        Applies ``M`` to a tensor shaped like ``rhs``.
    rhs : Tensor, complex or real, shape ``(B, ...)``
        Right-hand side; each batch entry is an independent system.
    x0 : Tensor, optional
        Warm start (same shape as ``rhs``); zeros by default.
    max_iter : int
        Maximum number of iterations.
    tol : float
        Stop when every system has ``||r|| <= tol * ||rhs||``.
    r0 : Tensor, optional
        The warm start's residual ``rhs - M x0`` when the caller already has it (saves one ``M``).

    Returns
    -------
    Tensor shaped like ``rhs``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    if r0 is not None:
        r = r0.clone()
    else:
        r = rhs - normal(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = sqnorm(r)
    rhs_norm2 = sqnorm(rhs).clamp_min(torch.finfo(rs.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= (tol**2) * rhs_norm2).all()):
            break
        Mp = normal(p)
        pMp = rdot(p, Mp)
        # Converged systems have rs == 0 and pMp == 0; keep them fixed instead of dividing by zero.
        alpha = torch.where(pMp > 0, rs / pMp.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        x = x + _bshape(alpha, x).to(x.dtype) * p
        r = r - _bshape(alpha, r).to(r.dtype) * Mp
        rs_new = sqnorm(r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        p = r + _bshape(beta, p).to(p.dtype) * p
        rs = rs_new
    return x


class LinearOperator:
    """Base class of linear forward models ``y = A x``.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`, and set ``domain_shape`` /
    ``range_shape`` (shapes without the batch axis) and ``batch_size`` (the batch of the operator's own
    parameters, usually 1 or the number of slices).
    """

    domain_shape: tuple = ()
    range_shape: tuple = ()
    batch_size: int = 1
    dtype: torch.dtype = torch.complex64
    device: torch.device = torch.device("cpu")

    # --- the two methods a subclass provides -------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- derived operations ----------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.A_adjoint(self.A(x))

    def A_dagger(
        self,
        y: torch.Tensor,
        x0: torch.Tensor | None = None,
        lam: float = 0.0,
        max_iter: int = 50,
        tol: float = 1e-6,
    ) -> torch.Tensor:
        """Least-squares (Tikhonov-regularised if ``lam > 0``) inverse by CG.

        Solves ``(A^H A + lam I) x = A^H y``; with ``lam = 0`` this is CG-SENSE.
        """
        rhs = self.A_adjoint(y)
        if lam:
            return conjugate_gradient(lambda v: self.normal(v) + lam * v, rhs, x0, max_iter, tol)
        return conjugate_gradient(self.normal, rhs, x0, max_iter, tol)

    def random_domain(self, generator=None, batch: int | None = None) -> torch.Tensor:
        """A standard complex Gaussian element of the domain, shape ``(batch, *domain_shape)``."""
        return self._randn((batch or self.batch_size, *self.domain_shape), generator)

    def random_range(self, generator=None, batch: int | None = None) -> torch.Tensor:
        """A standard complex Gaussian element of the range, shape ``(batch, *range_shape)``."""
        return self._randn((batch or self.batch_size, *self.range_shape), generator)

    def _randn(self, shape, generator) -> torch.Tensor:
        g = as_generator(generator)
        real_dtype = torch.float64 if self.dtype == torch.complex128 else torch.float32
        if not self.dtype.is_complex:
            return torch.randn(shape, generator=g, dtype=self.dtype).to(self.device)
        z = torch.randn((*shape, 2), generator=g, dtype=real_dtype) / 2**0.5
        return torch.view_as_complex(z).to(self.device)

    @torch.no_grad()
    def compute_norm(self, n_iter: int = 100, tol: float = 1e-6, generator=None) -> float:
        """``||A||^2`` (largest eigenvalue of ``A^H A``) by power iteration.

        The start vector comes from ``generator`` (default: seed 0), so a method that derives a step size
        from it gives the same result in every process (torch seeds its global generator at random)."""
        x = self.random_domain(0 if generator is None else generator, batch=1)
        x = x / sqnorm(x, 0).sqrt()
        lam = 0.0
        for _ in range(n_iter):
            z = self.normal(x)
            lam_new = float(rdot(x, z, batch_dims=0))
            x = z / sqnorm(z, 0).sqrt().clamp_min(1e-30)
            if abs(lam_new - lam) <= tol * max(abs(lam_new), 1e-30):
                lam = lam_new
                break
            lam = lam_new
        return lam

    @torch.no_grad()
    def adjointness_test(self, generator=None) -> float:
        """Relative adjointness error ``|<Ax, y> - <x, A^H y>| / (||Ax|| ||y||)`` for random x, y."""
        g = as_generator(0 if generator is None else generator)
        x = self.random_domain(g)
        y = self.random_range(g)
        Ax = self.A(x)
        lhs = cdot(Ax, y, batch_dims=0)
        rhs = cdot(x, self.A_adjoint(y), batch_dims=0)
        denom = torch.linalg.vector_norm(Ax) * torch.linalg.vector_norm(y)
        return float(abs(lhs - rhs) / denom.clamp_min(1e-30))

    def to(self, device) -> "LinearOperator":
        """Move every tensor attribute to ``device`` (in place) and return ``self``."""
        device = torch.device(device)
        for k, v in list(vars(self).items()):
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(device))
        self.device = device
        return self
