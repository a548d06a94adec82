"""Shared fixtures for the reconstruction tests: a Shepp-Logan phantom, smooth coil maps, PSNR."""
import numpy as np
import torch

try:  # the library metric (Wen eq. 20); a local copy of the formula while metrics.py is absent
    from bayesmri.metrics import psnr as _psnr
except ImportError:  # pragma: no cover - only before bayesmri.metrics exists
    _psnr = None


def psnr(x_hat: torch.Tensor, x_true: torch.Tensor) -> float:
    """Magnitude PSNR ``10 log10(D max|x|^2 / || |x_hat| - |x| ||^2)`` of the first batch entry."""
    if _psnr is not None:
        return float(torch.as_tensor(_psnr(x_hat, x_true)).reshape(-1)[0])
    a, b = x_hat.abs().double(), x_true.abs().double()
    return float(10 * torch.log10(b.max() ** 2 / ((a - b) ** 2).mean()))


# (intensity, a, b, x0, y0, angle in degrees): the modified Shepp-Logan of Toft (1996).
_ELLIPSES = [
    (1.0, 0.69, 0.92, 0.0, 0.0, 0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0),
]


def shepp_logan(n: int, smooth_phase: bool = True) -> torch.Tensor:
    """Modified Shepp-Logan ``(1, n, n)`` complex64, optionally with a smooth (linear) phase."""
    c = (np.arange(n) - n / 2 + 0.5) / (n / 2)
    yy, xx = np.meshgrid(-c, c, indexing="ij")
    img = np.zeros((n, n))
    for rho, a, b, x0, y0, ang in _ELLIPSES:
        t = np.deg2rad(ang)
        xr = (xx - x0) * np.cos(t) + (yy - y0) * np.sin(t)
        yr = -(xx - x0) * np.sin(t) + (yy - y0) * np.cos(t)
        img[(xr / a) ** 2 + (yr / b) ** 2 <= 1] += rho
    phase = np.exp(1j * np.pi * 0.3 * (xx + 0.5 * yy)) if smooth_phase else 1.0
    return torch.from_numpy((img * phase).astype(np.complex64))[None]


def smooth_maps(C: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    """Smooth random coil maps ``(1, C, H, W)`` with ``sum_c |S_c|^2 = 1`` everywhere."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    maps = []
    for c in range(C):
        ang = 2 * np.pi * c / C
        cy, cx = 1.2 * np.sin(ang), 1.2 * np.cos(ang)
        mag = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5)
        ph = torch.rand(3, generator=g) * 2 - 1
        maps.append(mag * torch.exp(1j * np.pi * (ph[0] + ph[1] * yy + ph[2] * xx)))
    S = torch.stack(maps)[None].to(torch.complex64)
    return S / torch.linalg.vector_norm(S, dim=1, keepdim=True)
