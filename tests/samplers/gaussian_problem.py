"""A 64x64 complex Gaussian posterior with a closed form: stationary prior, 8-coil SENSE, R = 4.

Coil maps vary along the phase-encode axis only and the mask is 1-D along it, so after an FFT along
the read-out axis the posterior covariance is block diagonal (one 64 x 64 block per read-out
frequency): exact per-pixel variances cost 64 small inversions.
"""
import math

import torch

from bayesmri.physics import MultiCoilMRI, fft2c
from bayesmri.priors import StationaryGaussianPrior
from bayesmri.samplers import Measurement

H = W = 64
C = 8


def _centred_dft(n, dtype):
    eye = torch.eye(n, dtype=dtype)
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(eye, dim=0), dim=0, norm="ortho"), dim=0)


def make_problem(nu=0.1, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    rdt = torch.float64 if dtype == torch.complex128 else torch.float32
    ky = torch.arange(H, dtype=rdt) - H // 2
    kx = torch.arange(W, dtype=rdt) - W // 2
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    power = 0.02 + 4.0 / (1 + k2 / 16.0)  # smooth images, unit-ish pixel variance
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=rdt), torch.linspace(-1, 1, W, dtype=rdt), indexing="ij")
    mean = ((xx**2 + yy**2) < 0.6).to(rdt) * torch.exp(1j * torch.pi / 4 * xx)
    prior = StationaryGaussianPrior(mean.to(dtype), power)
    # coil maps: Gaussian profiles along the phase-encode axis (last), normalised sum |S|^2 = 1
    centres = torch.linspace(-1, 1, C, dtype=rdt)
    prof = torch.exp(-((xx[None] - centres[:, None, None]) ** 2) / 0.3) * torch.exp(1j * torch.pi * centres[:, None, None])
    prof = prof / torch.sqrt((prof.abs() ** 2).sum(0, keepdim=True))
    maps = prof.to(dtype).unsqueeze(0)  # (1, C, H, W)
    mask = torch.zeros(W, dtype=torch.float32)
    mask[W // 2 - 4: W // 2 + 4] = 1  # 8 ACS lines
    mask[torch.arange(0, W, 8)] = 1  # + equispaced: 16 of 64 lines, R = 4
    op = MultiCoilMRI(maps, mask)
    x_true = prior.sample(1, g)
    noise = torch.view_as_complex(torch.randn(1, C, H, W, 2, generator=g, dtype=rdt)) * nu / math.sqrt(2)
    y = op.A(x_true) + op.mask * noise
    meas = Measurement(y, op, nu)
    return prior, op, meas, x_true, power, maps, mask


def exact_posterior(prior, meas, power, maps, mask):
    """Posterior mean ``(H, W)`` and per-pixel variance ``E|x - m|^2`` ``(H, W)`` (float64)."""
    nu = meas.sigma
    dt = torch.complex128
    Fw = _centred_dft(W, dt)
    Fh = _centred_dft(H, dt)
    s = maps[0, :, 0, :].to(dt)  # (C, W)
    m = mask.to(torch.float64)
    # G = sum_c diag(s_c)^* Fw^H diag(m) Fw diag(s_c)
    T = Fw.conj().T @ torch.diag(m.to(dt)) @ Fw
    G = sum(torch.diag(s[c].conj()) @ T @ torch.diag(s[c]) for c in range(C))
    # prior covariance after the FFT along H: for each k_h, Fw^H diag(p[k_h]) Fw
    p = power.to(torch.float64)
    Sinv = Fw.conj().T.unsqueeze(0) @ torch.diag_embed((1 / p).to(dt)) @ Fw.unsqueeze(0)  # (H, W, W)
    Q = Sinv + G.unsqueeze(0) / nu**2
    Cov = torch.linalg.inv(Q)  # (H, W, W) per k_h
    var = torch.diagonal(Cov, dim1=-2, dim2=-1).real.mean(0)  # (W,): (1/H) sum_kh C_kh[w, w]
    # mean: Q^{-1} (S^{-1} mu + A^H y / nu^2), in (k_h, w) coordinates
    mu = prior.mean.to(dt)
    AHy = meas.op.A_adjoint(meas.y.to(maps.dtype))[0].to(dt)
    rhs = prior.precision_apply(mu.unsqueeze(0))[0] + AHy / nu**2
    rhs_h = Fh @ rhs  # FFT along H (rows)
    mean_h = (Cov @ rhs_h.unsqueeze(-1)).squeeze(-1)
    mean = Fh.conj().T @ mean_h
    return mean, var.expand(H, W).clone(), torch.diagonal(Cov, dim1=-2, dim2=-1).real.sum()
