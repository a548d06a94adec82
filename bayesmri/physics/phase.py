"""Smooth image phase: estimate it from data and demodulate operators by it.

MR images are complex, ``x = m exp(i phi)``, with a smooth phase ``phi`` (B0 inhomogeneity, coil and
receiver phase). Priors learned from **magnitude** images (Chung & Ye's score network, the cINN and
PoGMDM experts) describe real non-negative images; applied to the real and imaginary parts of ``x``
(Chung & Ye Alg. 3) they see ``m cos(phi)`` and ``m sin(phi)``, signed images they never saw. Estimating
``phi`` from the measured low frequencies (homodyne-style, Noll et al. 1991) and sampling
``x' = exp(-i phi_lr) x`` under the operator ``A diag(exp(i phi_lr))`` (:class:`PhaseModulated`) puts
the object back on the real axis: ``Re x' ~ m`` and ``Im x' ~ 0``.

**Phase-constrained** reconstruction (the classical partial-Fourier / homodyne assumption) goes one
step further and takes ``x'`` real: :class:`RealInput` restricts a complex operator to real images,
which halves the unknowns (measured k-space then also informs its conjugate-symmetric position).
"""
from __future__ import annotations

import torch

from .fft import fft2c, ifft2c
from .._validate import as_generator
from .linop import LinearOperator

__all__ = ["lowres_phase", "remove_lowres_phase", "PhaseModulated", "RealInput"]


def lowres_phase(x: torch.Tensor, width: int = 8) -> torch.Tensor:
    """Unit-modulus phase ``exp(i arg(x_lr))`` of the low-pass filtered complex image ``x (B, H, W)``.

    ``x_lr`` is ``x`` filtered in k-space by a separable Hann window over the central
    ``2 width x 2 width`` frequencies (homodyne-style phase estimate), so for a zero-filled image only
    measured low frequencies set it. Where ``|x_lr|`` vanishes the phase is 1.
    """
    if not isinstance(x, torch.Tensor) or not x.is_complex() or x.ndim != 3:
        raise TypeError("x must be a complex tensor of shape (B, H, W)")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    H, W = x.shape[-2:]
    wy, wx = min(width, H // 2), min(width, W // 2)
    rdt, dev = x.real.dtype, x.device
    win = torch.zeros(H, W, dtype=rdt, device=dev)
    hy = torch.hann_window(2 * wy + 2, periodic=False, dtype=rdt, device=dev)[1:-1]
    hx = torch.hann_window(2 * wx + 2, periodic=False, dtype=rdt, device=dev)[1:-1]
    win[H // 2 - wy:H // 2 + wy, W // 2 - wx:W // 2 + wx] = hy[:, None] * hx[None, :]
    lr = ifft2c(fft2c(x) * win)
    mag = lr.abs()
    ok = mag > 1e-6 * mag.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    return torch.where(ok, lr / mag.clamp_min(1e-30), torch.ones_like(lr))


def remove_lowres_phase(x: torch.Tensor, width: int = 8) -> torch.Tensor:
    """``x * conj(lowres_phase(x))``: rotate a complex image ``(B, H, W)`` onto the real axis.

    For the zero-filled image of a real non-negative image the low-resolution phase is ~0 and this is
    ~the identity; for a complex image (a SENSE / ESPIRiT coil combination of an object with smooth
    phase) it maps the object back to the real axis. The MRI cINNs use it on their conditioning input.
    """
    return x * lowres_phase(x, width).conj()


class PhaseModulated(LinearOperator):
    """``A' = A diag(p)`` for a unit-modulus phase map ``p``: ``A'(x') = A(p x')``, ``A'^H = conj(p) A^H``.

    Sampling ``x'`` under ``A'`` and returning ``x = p x'`` is sampling ``x`` under ``A`` with the
    demodulated image ``x' = conj(p) x`` as the variable the prior sees (module docstring).
    ``normal`` is ``conj(p) A^H A (p x')``; ``||A'|| = ||A||``.

    Parameters
    ----------
    op : LinearOperator
        Image-domain operator, domain ``(B, *domain_shape)`` complex.
    phase : Tensor
        Complex, broadcastable against ``(B, *domain_shape)``; its modulus must be 1 (checked).
    """

    def __init__(self, op: LinearOperator, phase: torch.Tensor):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
        if not isinstance(phase, torch.Tensor) or not phase.is_complex():
            raise TypeError("phase must be a complex tensor")
        if not torch.allclose(phase.abs(), torch.ones((), dtype=phase.abs().dtype, device=phase.device), atol=1e-4):
            raise ValueError("phase must have unit modulus everywhere")
        try:
            torch.broadcast_shapes(phase.shape, (op.batch_size, *op.domain_shape))
        except RuntimeError:
            raise ValueError(f"phase of shape {tuple(phase.shape)} does not broadcast against the operator's "
                             f"domain {(op.batch_size, *op.domain_shape)}") from None
        self.op = op
        self.phase = phase.to(device=op.device, dtype=op.dtype if op.dtype.is_complex else phase.dtype)
        self.domain_shape, self.range_shape = op.domain_shape, op.range_shape
        self.batch_size, self.dtype, self.device = op.batch_size, op.dtype, op.device

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.A(self.phase * x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.phase.conj() * self.op.A_adjoint(y)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.phase.conj() * self.op.normal(self.phase * x)

    def to(self, device) -> "PhaseModulated":
        self.op.to(device)
        self.phase = self.phase.to(device)
        self.device = torch.device(device)
        return self


class RealInput(LinearOperator):
    """A complex operator restricted to real images: ``A_r(x) = A(x)`` for real ``x``.

    The domain is real (``float32``/``float64``) and the range that of ``op`` (complex). Under the real
    inner product ``<u, v> = Re(sum conj(u) v)`` the adjoint is ``A_r^H y = Re(A^H y)`` and the normal
    operator ``Re(A^H A x)``. With complex noise ``E|e|^2 = nu^2`` the log-likelihood gradient is
    ``(2 / nu^2) Re(A^H (y - A x))``, i.e. :meth:`Measurement.loglik_grad` with ``c = 2`` (set by the
    complex data), so every sampler runs on it unchanged.

    Parameters
    ----------
    op : LinearOperator
        Complex image-domain operator (e.g. :class:`PhaseModulated` of a SENSE operator).
    """

    def __init__(self, op: LinearOperator):
        if not isinstance(op, LinearOperator):
            raise TypeError(f"op must be a LinearOperator, got {type(op).__name__}")
        if not op.dtype.is_complex:
            raise TypeError("RealInput needs a complex operator (a real one is already real)")
        self.op = op
        self.domain_shape, self.range_shape = op.domain_shape, op.range_shape
        self.batch_size, self.device = op.batch_size, op.device
        self.dtype = torch.float64 if op.dtype == torch.complex128 else torch.float32

    def A(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_complex():
            raise TypeError("RealInput.A takes a real image")
        return self.op.A(x.to(self.op.dtype))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.op.A_adjoint(y).real

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.normal(x.to(self.op.dtype)).real

    def random_range(self, generator=None, batch: int | None = None) -> torch.Tensor:
        return self.op.random_range(generator, batch=batch or self.batch_size)

    @torch.no_grad()
    def adjointness_test(self, generator=None) -> float:
        """As :meth:`LinearOperator.adjointness_test`, with the real inner product of the domain."""
        g = as_generator(0 if generator is None else generator)
        x, y = self.random_domain(g), self.random_range(g)
        Ax = self.A(x)
        lhs = torch.sum(Ax.conj() * y).real
        rhs = torch.sum(x * self.A_adjoint(y))
        return float(abs(lhs - rhs) / (torch.linalg.vector_norm(Ax) * torch.linalg.vector_norm(y)).clamp_min(1e-30))

    def to(self, device) -> "RealInput":
        self.op.to(device)
        self.device = torch.device(device)
        return self
