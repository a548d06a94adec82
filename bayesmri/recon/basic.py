"""Zero-filled and CG-SENSE reconstructions for any :class:`~bayesmri.physics.LinearOperator`.

Forward model ``y = A x + n``; images ``x: (B, H, W)`` complex, measurements ``y`` in the operator's
range (``(B, C, H, W)`` Cartesian multi-coil, ``(B, H, W)`` single-coil, ``(B, C, K)`` non-Cartesian).
"""
from __future__ import annotations

from typing import Callable

import torch

from .._validate import check_complex, check_finite
from ..physics.linop import LinearOperator, conjugate_gradient

__all__ = ["zero_filled", "cg_sense", "check_recon_inputs", "iterate"]


def check_recon_inputs(op, y, name: str = "y") -> torch.Tensor:
    """Validate ``op`` (a LinearOperator) and ``y`` (complex, finite, shaped ``(B, *op.range_shape)``)."""
    if not isinstance(op, LinearOperator):
        raise TypeError(f"op must be a bayesmri LinearOperator, got {type(op).__name__}")
    check_complex(y, name)
    check_finite(y, name)
    rs = tuple(op.range_shape)
    if rs and (y.ndim != len(rs) + 1 or tuple(y.shape[1:]) != rs):
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, rs))}), got {tuple(y.shape)}")
    return y


def _check_positive(value, name: str, allow_zero: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not (v >= 0 if allow_zero else v > 0) or v != v or v == float("inf"):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


def _check_iters(max_iter, name: str = "max_iter") -> int:
    if not isinstance(max_iter, int) or isinstance(max_iter, bool) or max_iter < 0:
        raise ValueError(f"{name} must be a non-negative int, got {max_iter!r}")
    return max_iter


def iterate(n: int, progress: bool, desc: str):
    """``range(n)``, wrapped in a tqdm bar when ``progress`` is true."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(range(n), desc=desc, leave=False)
    return range(n)


@torch.no_grad()
def zero_filled(op: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """Zero-filled reconstruction ``A^H y`` (gridding ``A^H W y`` for non-Cartesian data).

    For Cartesian single-coil data this is the inverse FFT of the zero-filled k-space; for SENSE
    (``A = P F S``) it is the coil combination ``S^H F^H P^T y`` of the zero-filled coil images. For a
    non-Cartesian operator with density compensation ``W`` (``op.dcf``) it is the density-compensated
    adjoint (``op.gridding``): the plain adjoint over-weights the densely sampled centre.

    Parameters
    ----------
    op : LinearOperator
    y : Tensor ``(B, *op.range_shape)`` complex

    Returns
    -------
    Tensor ``(B, H, W)`` complex.
    """
    check_recon_inputs(op, y)
    if getattr(op, "dcf", None) is not None and hasattr(op, "gridding"):
        return op.gridding(y)
    return op.A_adjoint(y)


@torch.no_grad()
def cg_sense(
    op: LinearOperator,
    y: torch.Tensor,
    lam: float = 0.0,
    max_iter: int = 30,
    tol: float = 1e-6,
    x0: torch.Tensor | None = None,
    progress: bool = False,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """CG-SENSE: ``argmin_x 0.5 ||A x - y||^2 + 0.5 lam ||x||^2`` by conjugate gradients.

    Solves the normal equations ``(A^H A + lam I) x = A^H y`` (Pruessmann et al. 2001), batched over B,
    each system stopping when ``||r|| <= tol ||A^H y||``.

    Parameters
    ----------
    op : LinearOperator
    y : Tensor ``(B, *op.range_shape)`` complex
    lam : float, >= 0
        Tikhonov weight.
    max_iter : int
    tol : float
    x0 : Tensor ``(B, H, W)``, optional
        Warm start.
    progress : bool
        Show a tqdm bar over iterations.
    callback : callable ``(iteration, x)``, optional
        Called after every iteration with the current iterate.

    Returns
    -------
    Tensor ``(B, H, W)`` complex.
    """
    check_recon_inputs(op, y)
    lam = _check_positive(lam, "lam")
    _check_iters(max_iter)
    rhs = op.A_adjoint(y)
    if x0 is not None:
        check_complex(x0, "x0")
        if x0.shape != rhs.shape:
            raise ValueError(f"x0 must have shape {tuple(rhs.shape)}, got {tuple(x0.shape)}")

    def M(v):
        return op.normal(v) + lam * v if lam else op.normal(v)

    return conjugate_gradient(M, rhs, x0, max_iter, tol, callback=callback, progress="CG-SENSE" if progress else False)
